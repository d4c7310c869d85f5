"""The code behind the long real-CIFAR runs of notebook 05 (tests/long_runs.py), on a few steps of synthetic data:
the schedule's milestones, the paper's warm-up, the one-change variants, and reading "left chance" off a run."""

import pytest
import torch

from helpers.datasets import make_synthetic_data
from tests import long_runs, real_cifar
from tests.notebook_code import notebook_namespace


@pytest.fixture(scope="module")
def notebook() -> dict:
    return notebook_namespace(real_cifar.WHY_RESIDUAL_NOTEBOOK)


@pytest.fixture(scope="module")
def loaders():
    """Notebook 05's loaders over 256 synthetic training images: two batches of 128 per epoch (less validation)."""
    return real_cifar.why_residual_loaders(make_synthetic_data("cifar10", num_train=320, num_test=64), batch_size=128)


def test_left_chance_is_the_first_step_whose_last_50_steps_average_below_80_percent():
    errors = [90.0] * 100 + [70.0] * 100
    # Steps 76-125 average exactly 80% (25 at 90%, 25 at 70%), which is not below; steps 77-126 are.
    assert long_runs.steps_at_chance(errors) == 126
    assert long_runs.steps_at_chance([90.0] * 300) is None
    assert long_runs.steps_at_chance([10.0] * 49) is None  # fewer steps than one window: nothing to read


def test_the_whole_schedule_divides_the_rate_after_half_and_three_quarters_of_its_steps(notebook, loaders,
                                                                                       one_cpu_thread):
    run = long_runs.whole_schedule(notebook, loaders, 20, True, seed=1, num_epochs=2)
    steps = 2 * len(loaders[0])
    assert run["milestones"] == [steps // 2, steps * 3 // 4]
    assert run["rates"] == pytest.approx([0.1 if step <= steps // 2 else 0.01 if step <= steps * 3 // 4 else 0.001
                                          for step in range(1, steps + 1)])
    assert len(run["valid_accuracy"]) == len(run["epoch_train_error"]) == 2
    assert 0 <= run["test_accuracy"] <= 100


def test_the_warm_up_stays_at_0_01_until_the_training_error_of_50_steps_is_below_80_percent(notebook, loaders,
                                                                                           one_cpu_thread):
    run = long_runs.first_steps_run(notebook, loaders[0], seed=1, num_steps=3, warmup=True)
    assert run["rates"] == [0.01, 0.01, 0.01] and run["warmup_ended_at"] is None  # fewer than 50 steps so far
    plain = long_runs.first_steps_run(notebook, loaders[0], seed=1, num_steps=3)
    assert plain["rates"] == [0.1, 0.1, 0.1]


def test_each_change_changes_only_what_it_names(notebook):
    reference = long_runs.new_network(notebook, 56, True, seed=1)
    zero = long_runs.new_network(notebook, 56, True, seed=1, init="zero_residual")
    last_scales = [name for name in reference.state_dict() if name.endswith("bn2.weight")]
    assert len(last_scales) == 27 and all(zero.state_dict()[name].eq(0).all() for name in last_scales)
    assert all(torch.equal(zero.state_dict()[name], value) for name, value in reference.state_dict().items()
               if name not in last_scales)
    fan_in = long_runs.new_network(notebook, 56, True, seed=1, init="reproduction")
    convolution = "layer2.0.conv1.weight"  # 16 -> 32 channels: fan_in 144, fan_out 288
    assert fan_in.state_dict()[convolution].std() > 1.2 * reference.state_dict()[convolution].std()
    with pytest.raises(ValueError, match="unknown init"):
        long_runs.new_network(notebook, 56, True, seed=1, init="orthogonal")
