"""Learning-rate schedulers, each stepped the way its documentation says."""

from __future__ import annotations

import torch


def is_plateau(scheduler) -> bool:
    """True for schedulers that decide from a metric (ReduceLROnPlateau), not from the epoch count."""
    return isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)


def steps_every_batch(scheduler) -> bool:
    """True for schedulers whose documentation steps them after every batch (OneCycleLR, CyclicLR)."""
    return isinstance(scheduler, (torch.optim.lr_scheduler.OneCycleLR, torch.optim.lr_scheduler.CyclicLR))


def current_lrs(optimizer: torch.optim.Optimizer) -> list[float]:
    """The learning rate of each parameter group."""
    return [float(group["lr"]) for group in optimizer.param_groups]


def step_scheduler(scheduler, valid_acc: float) -> None:
    """The end-of-epoch step: plateau schedulers read the validation accuracy, the others the epoch.

    Passing the accuracy to StepLR & co. would be read as an epoch number, and the rate collapses.
    Per-batch schedulers are stepped by the training loop instead, and skipped here.
    """
    if scheduler is None or steps_every_batch(scheduler):
        return
    if is_plateau(scheduler):
        if scheduler.mode != "max":
            raise ValueError("ReduceLROnPlateau watches validation accuracy here, which should go up: "
                             "create it with mode='max'.")
        scheduler.step(valid_acc)
    else:
        scheduler.step()
