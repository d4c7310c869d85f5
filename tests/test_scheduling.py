"""Scheduler state in checkpoints: plain types any supported torch's safe loader reads, restored faithfully."""

from __future__ import annotations

import collections
import io

import pytest
import torch
from torch.optim import lr_scheduler

from helpers.scheduling import describe_step_schedule, restore_state, saveable_state

PLAIN = (dict, list, tuple, str, int, float, bool, type(None), torch.Tensor)


def new_optimizer() -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1, momentum=0.9)


SCHEDULERS = {
    "MultiStepLR": lambda opt: lr_scheduler.MultiStepLR(opt, milestones=[3, 5, 5], gamma=0.1),
    "OneCycleLR": lambda opt: lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=12, anneal_strategy="linear"),
    "SequentialLR of MultiStepLR": lambda opt: lr_scheduler.SequentialLR(
        opt, [lr_scheduler.LinearLR(opt, start_factor=0.5, total_iters=2),
              lr_scheduler.MultiStepLR(opt, milestones=[2, 4], gamma=0.5)], milestones=[2]),
    "ReduceLROnPlateau": lambda opt: lr_scheduler.ReduceLROnPlateau(opt, mode="max", patience=0),
    "StepLR": lambda opt: lr_scheduler.StepLR(opt, step_size=2, gamma=0.5),
}


def step(scheduler, times: int) -> list[float]:
    """Step `times` times (a plateau scheduler sees a flat accuracy); the learning rate after each step."""
    rates = []
    for _ in range(times):
        scheduler.optimizer.step()
        scheduler.step(0.5) if isinstance(scheduler, lr_scheduler.ReduceLROnPlateau) else scheduler.step()
        rates.append(scheduler.optimizer.param_groups[0]["lr"])
    return rates


def non_plain(value, where="state") -> list[str]:
    """Where in a nested state a value is not of a plain type."""
    if type(value) not in PLAIN and not isinstance(value, torch.Tensor):
        return [f"{where}: {type(value).__name__}"]
    if isinstance(value, dict):
        return [found for key, item in value.items() for found in non_plain(item, f"{where}[{key!r}]")]
    if isinstance(value, (list, tuple)):
        return [found for i, item in enumerate(value) for found in non_plain(item, f"{where}[{i}]")]
    return []


@pytest.mark.parametrize("kind", SCHEDULERS)
def test_saved_state_is_plain_and_resumes_to_the_same_learning_rates(kind):
    uninterrupted = SCHEDULERS[kind](new_optimizer())
    expected = step(uninterrupted, 10)

    first = SCHEDULERS[kind](new_optimizer())
    before = step(first, 4)
    state = saveable_state(first)
    assert non_plain(state) == []
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    optimizer = new_optimizer()
    optimizer.load_state_dict(first.optimizer.state_dict())
    resumed = SCHEDULERS[kind](optimizer)
    restore_state(resumed, torch.load(buffer, weights_only=True))
    assert before + step(resumed, 6) == pytest.approx(expected)


def test_multistep_milestones_come_back_as_the_same_counter():
    scheduler = SCHEDULERS["MultiStepLR"](new_optimizer())
    state = saveable_state(scheduler)
    assert not isinstance(state["milestones"], collections.Counter)
    resumed = SCHEDULERS["MultiStepLR"](new_optimizer())
    resumed.milestones = collections.Counter()  # so that only the restore can put them back
    restore_state(resumed, state)
    assert type(resumed.milestones) is collections.Counter and resumed.milestones == collections.Counter([3, 5, 5])


def test_no_scheduler_saves_none():
    assert saveable_state(None) is None


@pytest.mark.parametrize("milestones, num_epochs, sentence", [
    ((10, 15), 20, "Learning rate 0.1 for 20 epochs: 0.01 after epoch 10, 0.001 after epoch 15."),
    ((2, 2), 3, "Learning rate 0.1 for 3 epochs: 0.001 after epoch 2."),  # one epoch twice: one drop of 100
    # A smoke run's one epoch: no "divided after epoch 1 and again after epoch 1".
    ((1, 1), 1, "Learning rate 0.1 throughout this run of 1 epoch: its schedule would first lower it after "
                "epoch 1, when no epoch is left to train."),
    ((), 3, "Learning rate 0.1 throughout this run of 3 epochs."),
])
def test_a_step_schedule_is_described_for_the_run_it_has(milestones, num_epochs, sentence):
    assert describe_step_schedule(0.1, milestones, num_epochs) == sentence
