"""Learning-rate schedulers: checked before training, described for checkpoints, stepped as documented."""

from __future__ import annotations

import collections

import torch

# Scheduler fields that change as it steps. Everything else a scheduler keeps is its configuration.
_PROGRESS = {"last_epoch", "_step_count", "_is_initial", "_get_lr_called_within_step", "_last_lr",
             "best", "num_bad_epochs", "cooldown_counter", "verbose"}


def is_plateau(scheduler) -> bool:
    """True for schedulers that decide from a metric (ReduceLROnPlateau), not from the epoch count."""
    return isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)


def steps_every_batch(scheduler) -> bool:
    """True for schedulers whose documentation steps them after every batch (OneCycleLR, CyclicLR)."""
    return isinstance(scheduler, (torch.optim.lr_scheduler.OneCycleLR, torch.optim.lr_scheduler.CyclicLR))


def current_lrs(optimizer: torch.optim.Optimizer) -> list[float]:
    """The learning rate of each parameter group."""
    return [float(group["lr"]) for group in optimizer.param_groups]


def check_scheduler(scheduler, optimizer, total_batches: int) -> None:
    """Refuse, before any training, a scheduler that would fail or mislead part-way through a run."""
    if scheduler is None:
        return
    if getattr(scheduler, "optimizer", optimizer) is not optimizer:
        raise ValueError("The scheduler was built for another optimizer: build it from the optimizer you pass "
                         "to train_model, e.g. StepLR(optimizer, step_size=10).")
    if is_plateau(scheduler) and scheduler.mode != "max":
        raise ValueError("ReduceLROnPlateau watches validation accuracy here, which should go up: "
                         "create it with mode='max'.")
    if isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR) and scheduler.total_steps < total_batches:
        raise ValueError(
            f"This OneCycleLR plans {scheduler.total_steps} steps, but the run takes {total_batches} "
            "(num_epochs x batches per epoch). Build it with epochs=num_epochs and "
            "steps_per_epoch=len(train_loader)."
        )


def scheduler_settings(scheduler) -> dict:
    """A scheduler's type and configuration (T_max, gamma, total_steps...) as plain values."""
    if scheduler is None:
        return {"type": None}
    return {"type": type(scheduler).__name__, **_configuration(scheduler.state_dict())}


def _configuration(state: dict) -> dict:
    return {key: _plain(value) for key, value in state.items() if key not in _PROGRESS}


def _plain(value):
    """Numbers, strings and lists of them; a chained scheduler's parts are described the same way."""
    if isinstance(value, collections.Counter):  # MultiStepLR's milestones
        return sorted(value.elements())
    if isinstance(value, dict):
        return _configuration(value)
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return type(value).__name__  # a function (LambdaLR's lambda) can only be named, not compared


# How a Counter (MultiStepLR's milestones) is saved: torch 2.3's weights_only loader refuses collections.Counter.
_COUNTER = "collections.Counter"


def saveable_state(scheduler) -> dict | None:
    """scheduler.state_dict() in plain types that every supported torch's weights_only loader reads.

    A Counter becomes a tagged dict; a method (torch 2.3's OneCycleLR keeps its annealing function in its
    state) is left out: the scheduler that loads the state was built with the same settings, so it has it.
    """
    return None if scheduler is None else _saveable(scheduler.state_dict())


def restore_state(scheduler, state: dict) -> None:
    """Put back a state saved by saveable_state, with its Counters as Counters (MultiStepLR reads them by key)."""
    scheduler.load_state_dict(_restored(state))


def _saveable(value):
    if isinstance(value, collections.Counter):
        return {_COUNTER: dict(value)}
    if isinstance(value, dict):
        return {key: _saveable(item) for key, item in value.items() if not callable(item)}
    if isinstance(value, list):
        return [_saveable(item) for item in value]
    return value


def _restored(value):
    if isinstance(value, dict):
        if set(value) == {_COUNTER}:
            return collections.Counter(value[_COUNTER])
        return {key: _restored(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_restored(item) for item in value]
    return value


def step_scheduler(scheduler, valid_acc: float) -> None:
    """The end-of-epoch step: plateau schedulers read the validation accuracy, the others the epoch.

    Passing the accuracy to StepLR & co. would be read as an epoch number, and the rate collapses.
    Per-batch schedulers are stepped by the training loop instead, and skipped here.
    """
    if scheduler is None or steps_every_batch(scheduler):
        return
    if is_plateau(scheduler):
        scheduler.step(valid_acc)
    else:
        scheduler.step()


def describe_step_schedule(lr: float, milestones, num_epochs: int, gamma: float = 0.1) -> str:
    """A MultiStepLR schedule in one sentence, for this run's length: "Learning rate 0.1 for 20 epochs: 0.01
    after epoch 10, 0.001 after epoch 15." Drops at or after the last epoch train nothing, and are left out."""
    epochs = f"{num_epochs} epoch{'' if num_epochs == 1 else 's'}"
    counts = collections.Counter(milestones)
    within = sorted(milestone for milestone in counts if milestone < num_epochs)
    if not within:
        later = f": its schedule would first lower it after epoch {min(counts)}, when no epoch is left to train" \
            if counts else ""
        return f"Learning rate {lr:g} throughout this run of {epochs}{later}."
    drops, rate = [], lr
    for milestone in within:
        rate *= gamma ** counts[milestone]
        drops.append(f"{rate:g} after epoch {milestone}")
    return f"Learning rate {lr:g} for {epochs}: {', '.join(drops)}."
