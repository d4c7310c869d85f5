"""train_model fails before training, not after: bad arguments, broken weights, and runs that diverge."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import helpers.training
from helpers import NonFiniteLossError, train_model
from helpers.evaluation import Precision
from helpers.loaders import DeviceLoader, ImageRecipe
from tests.support import tiny_loaders, tiny_model
from tests.test_training import run

LR_SCHEDULER = torch.optim.lr_scheduler


def snapshot(model) -> dict:
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


def unchanged(model, before: dict) -> bool:
    return all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())


# ----------------------------------------------------------------- arguments


def test_a_numpy_integer_is_a_number_of_epochs():
    _, history = run(num_epochs=np.int64(2))
    assert history.num_epochs == 2


@pytest.mark.parametrize("value", ["10", 2.5, None])
def test_a_logging_interval_that_is_no_whole_number_is_an_error(value):
    with pytest.raises(TypeError, match=f"logging_interval must be a whole number of at least 1, e.g. 50 "
                                        f"\\(got {value!r}, a {type(value).__name__}\\)"):
        run(num_epochs=1, logging_interval=value)


def test_an_empty_training_loader_is_an_error():
    _, valid_loader, _ = tiny_loaders()
    empty = DeviceLoader(torch.zeros(0, 1, 28, 28, dtype=torch.uint8), torch.zeros(0, dtype=torch.long), 32,
                         ImageRecipe(), valid_loader.classes, device="cpu")
    model = tiny_model()
    with pytest.raises(ValueError, match="The training loader gives no batches: its dataset is empty"):
        train_model(model, 1, empty, valid_loader, None, torch.optim.SGD(model.parameters(), lr=0.1), "cpu")


def test_a_plateau_scheduler_in_min_mode_is_refused_before_training():
    model = tiny_model()
    before = snapshot(model)
    with pytest.raises(ValueError, match="mode='max'"):
        run(num_epochs=1, model=model, scheduler_factory=lambda opt: LR_SCHEDULER.ReduceLROnPlateau(opt, mode="min"))
    assert unchanged(model, before)


def test_a_scheduler_of_another_optimizer_is_refused():
    other = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="scheduler was built for another optimizer"):
        run(num_epochs=1, scheduler_factory=lambda opt: LR_SCHEDULER.StepLR(other, 1))


def test_exact_train_accuracy_uses_the_precision_and_layout_of_validation(monkeypatch):
    real_evaluate, calls = helpers.training.evaluate, []

    def spy(model, loader, precision=None):
        calls.append((loader, precision))
        return real_evaluate(model, loader, precision)

    monkeypatch.setattr(helpers.training, "evaluate", spy)
    loaders = tiny_loaders()
    run(num_epochs=1, loaders=(*loaders[:2], None), channels_last=True, exact_train_accuracy=True)
    assert [loader for loader, _ in calls] == list(loaders[:2])
    assert calls[0][1] == calls[1][1] == Precision(amp_dtype=None, channels_last=True)


# ----------------------------------------------------------------- broken weights


@pytest.mark.parametrize("name", ["features.0.weight", "features.1.running_var"])
def test_non_finite_weights_or_buffers_are_refused_before_training(name):
    model = tiny_model()
    model.state_dict()[name].view(-1)[0] = float("nan") if name.endswith("weight") else float("inf")
    with pytest.raises(ValueError) as error:
        run(num_epochs=1, model=model)
    message = str(error.value)
    assert f"The model's {name} is NaN or infinite before training" in message
    assert "rerun the cell that builds the model" in message


# ----------------------------------------------------------------- divergence


def test_a_huge_learning_rate_is_stopped_even_without_a_nan(tmp_path):
    path = tmp_path / "run.pt"
    with pytest.raises(NonFiniteLossError, match="The loss (reached|became) .* in epoch 1, batch .* \\(learning rate "
                                                 "1e\\+06\\)(.|\n)*No checkpoint of this run was written"):
        run(num_epochs=2, lr=1e6, checkpoint_path=path)
    assert not path.exists()


class BrokenStatistics(nn.Module):
    """Passes images through, but its running statistic overflows in training: BatchNorm's, diverged."""

    def __init__(self):
        super().__init__()
        self.register_buffer("running_var", torch.ones(1))

    def forward(self, x):
        if self.training:
            self.running_var.mul_(1e30)
        return x


def test_a_buffer_that_became_infinite_is_never_saved_as_a_finished_run(tmp_path):
    path = tmp_path / "run.pt"
    model = tiny_model()
    model.features.insert(0, BrokenStatistics())
    with pytest.raises(NonFiniteLossError, match="After epoch 1 .* NaN or infinite: features.0.running_var"):
        run(num_epochs=1, model=model, checkpoint_path=path)
    assert not path.exists()


def test_a_nan_in_a_later_epoch_keeps_the_last_good_one_and_says_to_rebuild(tmp_path):
    def explode_in_epoch_two(optimizer):
        return LR_SCHEDULER.LambdaLR(optimizer, lambda epoch: 1.0 if epoch == 0 else 1e30)

    with pytest.raises(NonFiniteLossError) as error:
        run(num_epochs=3, scheduler_factory=explode_in_epoch_two, checkpoint_path=tmp_path / "run.pt")
    message = str(error.value)
    assert "epoch 2" in message and "still holds epoch 1" in message
    assert "rerun the cell that builds the model" in message


@pytest.mark.parametrize("amp", [True, torch.float16, torch.bfloat16])
def test_mixed_precision_on_a_cpu_is_a_clear_error(amp):
    with pytest.raises(ValueError, match=f"amp={amp} needs a CUDA GPU; this run is on cpu"):
        run(num_epochs=1, amp=amp)


def test_an_unknown_amp_setting_is_a_clear_error():
    with pytest.raises(ValueError, match="amp must be None \\(automatic\\), True, False, torch.float16 or "
                                         "torch.bfloat16 \\(got 'fp16'\\)"):
        run(num_epochs=1, amp="fp16")
