"""Notebook 05's networks on real CIFAR-10 (a JPEG copy) for longer than a test can: a whole schedule, and
ResNet-56's first 1,000 steps at the paper's learning rate, with and without its warm-up and with one thing
changed at a time. scripts/measure_real_cifar.py runs them and records every number; the tests read the
records (they never train this long).

The runs use bfloat16 mixed precision and channels-last on the CPU: what train_model does on a GPU with
bfloat16, and 2.4 times faster than float32 on the 2-core machine that measured them.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from helpers import set_all_seeds
from helpers.evaluation import evaluate
from tests.real_cifar import WHY_RESIDUAL_NOTEBOOK, batches, notebook_settings

CHANCE_ERROR = 90.0        # 10 classes
LEFT_CHANCE_ERROR = 80.0   # the paper's warm-up criterion: training error below 80%
ERROR_WINDOW = 50          # steps averaged when reading a training error off single batches
WARMUP_RATE = 0.01         # the paper's section 4.2, for ResNet-110


def recipe() -> dict:
    """Notebook 05's optimiser settings, read from its Settings cell."""
    return notebook_settings(WHY_RESIDUAL_NOTEBOOK, ("LEARNING_RATE", "MOMENTUM", "WEIGHT_DECAY"))


def mixed_precision():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def window_errors(errors: list[float], window: int = ERROR_WINDOW) -> list[float]:
    """The mean training error of the last `window` steps, at every step from `window` on."""
    return [sum(errors[end - window:end]) / window for end in range(window, len(errors) + 1)]


def steps_at_chance(errors: list[float], window: int = ERROR_WINDOW, below: float = LEFT_CHANCE_ERROR) -> int | None:
    """The first step at which the mean error of the last `window` steps is below `below`%, or None."""
    for offset, error in enumerate(window_errors(errors, window)):
        if error < below:
            return offset + window
    return None


def train(model: nn.Module, loader, optimizer, num_steps: int, rate_at, *, momentum_at=None,
          on_epoch=None, steps_per_epoch: int | None = None) -> dict:
    """num_steps SGD steps; rate_at(step, errors) gives each step's learning rate, momentum_at(step) its
    momentum. Every step's loss, error (%) and learning rate; on_epoch(epoch) after each whole epoch."""
    model.train().to(memory_format=torch.channels_last)
    losses, errors, rates = [], [], []
    for step, (images, labels) in zip(range(1, num_steps + 1), batches(loader)):
        rate = rate_at(step, errors)
        for group in optimizer.param_groups:
            group["lr"] = rate
            if momentum_at is not None:
                group["momentum"] = momentum_at(step)
        with mixed_precision():
            outputs = model(images.contiguous(memory_format=torch.channels_last))
            loss = F.cross_entropy(outputs, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(round(loss.item(), 4))
        errors.append(round(100.0 * (outputs.argmax(1) != labels).float().mean().item(), 2))
        rates.append(rate)
        if on_epoch is not None and steps_per_epoch and step % steps_per_epoch == 0:
            on_epoch(step // steps_per_epoch)
            model.train()
    return {"losses": losses, "errors": errors, "rates": rates}


def new_network(notebook: dict, depth: int, shortcuts: bool, seed: int, init: str = "notebook") -> nn.Module:
    """Notebook 05's CifarResNet from `seed`. init="zero_residual": each block's last BatchNorm scale starts at 0
    (torchvision's zero_init_residual); init="reproduction": Kaiming's fan_in for every convolution and for the
    linear layer, as the trained networks of shared/models were initialised."""
    set_all_seeds(seed)
    model = notebook["CifarResNet"](depth, shortcuts=shortcuts)
    if init == "zero_residual":
        for name, module in model.named_modules():
            if name.endswith("bn2"):
                nn.init.zeros_(module.weight)
    elif init == "reproduction":
        set_all_seeds(seed)
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)
    elif init != "notebook":
        raise ValueError(f"unknown init {init!r}")
    return model


def sgd(model: nn.Module, momentum: float | None = None) -> torch.optim.SGD:
    settings = recipe()
    return torch.optim.SGD(model.parameters(), lr=settings["LEARNING_RATE"],
                           momentum=settings["MOMENTUM"] if momentum is None else momentum,
                           weight_decay=settings["WEIGHT_DECAY"])


def whole_schedule(notebook: dict, loaders, depth: int, shortcuts: bool, seed: int, num_epochs: int) -> dict:
    """The notebook's recipe for num_epochs epochs: lr 0.1, divided by 10 after half and after three quarters of
    the steps (the paper's 32k and 48k of 64k iterations). Per step: loss, error, rate; per epoch: training
    error (mean over its batches) and validation accuracy; at the end: test accuracy."""
    train_loader, valid_loader, test_loader = loaders
    model = new_network(notebook, depth, shortcuts, seed)
    steps_per_epoch = len(train_loader)
    num_steps = num_epochs * steps_per_epoch
    milestones = (num_steps // 2, num_steps * 3 // 4)
    base = recipe()["LEARNING_RATE"]
    valid_accuracy = []
    start = time.perf_counter()
    run = train(model, train_loader, sgd(model), num_steps,
                lambda step, errors: base * 0.1 ** sum(step > milestone for milestone in milestones),
                on_epoch=lambda epoch: valid_accuracy.append(round(evaluate(model, valid_loader)[1], 2)),
                steps_per_epoch=steps_per_epoch)
    epoch_errors = [round(sum(run["errors"][e * steps_per_epoch:(e + 1) * steps_per_epoch]) / steps_per_epoch, 2)
                    for e in range(num_epochs)]
    test_loss, test_accuracy = evaluate(model, test_loader)
    return {**run, "milestones": list(milestones), "steps_per_epoch": steps_per_epoch,
            "epoch_train_error": epoch_errors, "valid_accuracy": valid_accuracy,
            "test_accuracy": round(test_accuracy, 2), "test_loss": round(test_loss, 4),
            "seconds": round(time.perf_counter() - start), "model": model}


FIRST_STEPS_VARIANTS = {
    # name: (what changes, the settings of first_steps_run)
    "lr 0.1": ("the notebook's recipe", {}),
    "warm-up": ("0.01 until the training error of the last 50 steps is below 80%, then 0.1 (the paper's "
                "ResNet-110 recipe)", {"warmup": True}),
    "zero-init residual": ("each block's last BatchNorm scale starts at 0", {"init": "zero_residual"}),
    "reproduction init": ("Kaiming fan_in for convolutions and the linear layer", {"init": "reproduction"}),
    "no momentum first 100": ("momentum 0 for the first 100 steps, then 0.9", {"momentum_from": 101}),
    "other data order": ("the weights of this seed, the batches of seed + 100", {"data_seed_offset": 100}),
}


def first_steps_run(notebook: dict, loader, seed: int, num_steps: int, *, warmup: bool = False,
                    init: str = "notebook", momentum_from: int = 1, data_seed_offset: int | None = None) -> dict:
    """ResNet-56 at the notebook's constant learning rate for num_steps steps, with one thing changed."""
    model = new_network(notebook, 56, True, seed, init)
    if data_seed_offset is not None:
        torch.manual_seed(seed + data_seed_offset)  # the loader's order and crops follow the global generator
    base, momentum = recipe()["LEARNING_RATE"], recipe()["MOMENTUM"]
    switched = []

    def rate_at(step, errors):
        if warmup and not switched:
            if len(errors) >= ERROR_WINDOW and sum(errors[-ERROR_WINDOW:]) / ERROR_WINDOW < LEFT_CHANCE_ERROR:
                switched.append(step)
            else:
                return WARMUP_RATE
        return base

    start = time.perf_counter()
    run = train(model, loader, sgd(model), num_steps, rate_at,
                momentum_at=lambda step: momentum if step >= momentum_from else 0.0)
    return {**run, "warmup_ended_at": switched[0] if switched else None,
            "seconds": round(time.perf_counter() - start)}


# ---------------------------------------------------------------- the tables the README and notebook 05 quote

SCHEDULE_NAMES = ("plain-20", "ResNet-20", "plain-56", "ResNet-56")


def whole_schedule_table(record: dict) -> str:
    """Markdown rows, a network and seed each: the training error of every epoch (mean over its batches, as
    trained on), the validation accuracy after the last epoch, and the test error at the end."""
    rows = ["| network | seed | training error, epoch by epoch | validation error at the end | test error |",
            "|---|---|---|---|---|"]
    for name in SCHEDULE_NAMES:
        for seed, runs in sorted(record["seeds"].items()):
            if name in runs:
                run = runs[name]
                epochs = " / ".join(f"{error:.1f}%" for error in run["epoch_train_error"])
                rows.append(f"| {name} | {seed} | {epochs} | {100 - run['valid_accuracy'][-1]:.2f}% | "
                            f"{100 - run['test_accuracy']:.2f}% |")
    return "\n".join(rows)


def first_steps_56_table(record: dict, variants=None) -> str:
    """Markdown rows, a run each: the step at which ResNet-56 left chance (the mean training error of the last 50
    steps first below 80%), the highest loss of its first 20 steps, and the mean training error of its last 50."""
    rows = ["| run | seed | left chance at step | highest loss, steps 1-20 | training error, last 50 steps |",
            "|---|---|---|---|---|"]
    for seed, runs in sorted(record["seeds"].items()):
        for variant, run in runs.items():
            if not isinstance(run, dict) or "losses" not in run or (variants and variant not in variants):
                continue
            left = steps_at_chance(run["errors"])
            left = f"not in {len(run['errors']):,}" if left is None else f"{left:,}"
            rows.append(f"| {variant} | {seed} | {left} | "
                        f"{max(run['losses'][:20]):.2f} | {sum(run['errors'][-ERROR_WINDOW:]) / ERROR_WINDOW:.1f}% |")
    return "\n".join(rows)


def _compare(deeper: float, shallower: float) -> str:
    return "higher than" if deeper > shallower else "lower than" if deeper < shallower else "the same as"


def whole_schedule_findings(record: dict) -> str:
    """Markdown bullets, one per question of the paper that the record can answer, with the numbers behind each:
    the last epoch's training error of the two networks compared, at every seed that has both."""
    questions = (("plain-56", "plain-20",
                  "Does the deeper plain network end with a higher training error (degradation)?"),
                 ("ResNet-56", "plain-56", "Does ResNet-56 end below its plain twin?"),
                 ("ResNet-56", "ResNet-20", "Does ResNet-56 end below ResNet-20?"))
    bullets = []
    for first, second, question in questions:
        answers = []
        for seed, runs in sorted(record["seeds"].items()):
            if first in runs and second in runs:
                a, b = runs[first]["epoch_train_error"][-1], runs[second]["epoch_train_error"][-1]
                answers.append(f"at seed {seed}, {first} ends at {a:.1f}%, {_compare(a, b)} {second}'s {b:.1f}%")
        if answers:
            bullets.append(f"- *{question}* Training error of the last epoch: {'; '.join(answers)}.")
    return "\n".join(bullets)


def first_steps_56_findings(record: dict) -> str:
    """One sentence per seed: the step at which ResNet-56 left chance at lr 0.1 and with the paper's warm-up."""
    sentences = []
    for seed, runs in sorted(record["seeds"].items()):
        if "lr 0.1" in runs and "warm-up" in runs:
            at_rate, warmed = (steps_at_chance(runs[name]["errors"]) for name in ("lr 0.1", "warm-up"))
            ended = runs["warm-up"]["warmup_ended_at"]
            warm = f"0.01 for its first {ended - 1} steps, then 0.1" if ended else "0.01 throughout"
            sentences.append(f"Seed {seed}: at 0.1 from the start, step {at_rate if at_rate else 'none of 1,000'}; "
                             f"warmed up ({warm}), step {warmed if warmed else 'none of 1,000'}.")
    return " ".join(sentences)
