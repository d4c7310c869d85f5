"""The training loop: lean on the GPU, resumable after a disconnect, loud about anything wrong."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .checkpoint import (
    CheckpointError,
    capture_rng_states,
    describe_differences,
    load_checkpoint,
    restore_rng_states,
    save_checkpoint,
)
from .data import class_names, sample_images
from .environment import get_device, is_smoke_test
from .evaluation import autocast, compute_accuracy, eval_mode, evaluate
from .scheduling import current_lrs, step_scheduler, steps_every_batch

CHECKPOINT_FORMAT = 1


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


@dataclass
class History:
    """What a run recorded: per-batch losses, per-epoch metrics, and the final test accuracy."""

    batch_losses: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    valid_loss: list[float] = field(default_factory=list)
    valid_acc: list[float] = field(default_factory=list)
    learning_rates: list[float] = field(default_factory=list)
    epoch_times: list[float] = field(default_factory=list)
    iter_per_epoch: int = 0
    best_epoch: int = 0
    test_acc: float | None = None

    @property
    def num_epochs(self) -> int:
        return len(self.valid_acc)

    @property
    def best_valid_acc(self) -> float:
        return self.valid_acc[self.best_epoch - 1] if self.best_epoch else float("nan")


@dataclass
class _Precision:
    """Mixed precision: bf16 where the GPU has it, fp16 with a gradient scaler (a T4), else off."""

    dtype: torch.dtype | None
    scaler: torch.amp.GradScaler


def _precision(device: torch.device, amp: bool | None) -> _Precision:
    dtype = None
    if device.type == "cuda" and amp is not False:
        # is_bf16_supported() also says yes for emulated bf16 on a T4, which is slow; ask for Ampere+.
        dtype = torch.bfloat16 if torch.cuda.get_device_capability(device) >= (8, 0) else torch.float16
    elif amp:
        raise ValueError(f"amp=True needs a CUDA GPU; this run is on {device.type}. Leave amp unset.")
    enabled = dtype == torch.float16
    return _Precision(dtype, torch.amp.GradScaler("cuda", enabled=enabled) if enabled else _NoScaler())


class _NoScaler:
    """Stands in for GradScaler when no scaling is needed, without warnings on CPU-only machines."""

    def scale(self, loss):
        return loss

    def step(self, optimizer):
        optimizer.step()

    def update(self):
        pass

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def train_model(model, num_epochs, train_loader, valid_loader, test_loader=None, optimizer=None,
                device=None, logging_interval=50, scheduler=None, checkpoint_path=None, *,
                amp=None, channels_last=None, compile_model=False, exact_train_accuracy=False,
                loss_fn=F.cross_entropy) -> History:
    """Train, validate every epoch, keep the best weights, and test them at the end.

    With checkpoint_path, every epoch is saved and running the same call again resumes where it
    stopped; a finished run loads at once. On CUDA, mixed precision and channels-last are on by
    default (amp=False / channels_last=False switch them off); compile_model=True uses torch.compile.
    In smoke mode (SMOKE_TEST=1) only one epoch runs.
    """
    _check_arguments(num_epochs, optimizer, logging_interval, valid_loader)
    if is_smoke_test() and num_epochs > 1:
        print(f"Smoke test: training 1 epoch instead of {num_epochs}.")
        num_epochs = 1
    device = get_device(device)
    channels_last = device.type == "cuda" if channels_last is None else channels_last
    model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    _preflight(model, train_loader, device, channels_last)
    precision = _precision(device, amp)
    run = _Run(model, optimizer, scheduler, precision, train_loader, checkpoint_path)

    if run.history.num_epochs >= num_epochs:
        return run.finish(test_loader, device, channels_last, already_done=True)
    if run.history.num_epochs:
        print(f"Resuming from {run.path} after epoch {run.history.num_epochs}.")
    step_model = torch.compile(model) if compile_model else model
    for epoch in range(run.history.num_epochs + 1, num_epochs + 1):
        try:
            _train_epoch(run, step_model, epoch, num_epochs, train_loader, valid_loader, device,
                         logging_interval, channels_last, exact_train_accuracy, loss_fn)
        except KeyboardInterrupt:
            print(run.interrupted_message(epoch))
            raise
    return run.finish(test_loader, device, channels_last)


def _check_arguments(num_epochs, optimizer, logging_interval, valid_loader) -> None:
    if not isinstance(num_epochs, int) or num_epochs < 1:
        raise ValueError(f"num_epochs must be a whole number of at least 1 (got {num_epochs!r}).")
    if optimizer is None:
        raise ValueError("train_model needs an optimizer, e.g. torch.optim.SGD(model.parameters(), lr=0.01).")
    if logging_interval < 1:
        raise ValueError(f"logging_interval must be at least 1 batch (got {logging_interval}).")
    if valid_loader is None:
        raise ValueError("train_model needs a valid_loader: it picks the best epoch by validation accuracy. "
                         "The get_dataloaders_* functions return (train_loader, valid_loader, test_loader).")


def _preflight(model, loader, device, channels_last) -> None:
    """Run two images through the model first, to turn shape mistakes into plain messages."""
    num_classes = len(class_names(loader))
    images = sample_images(loader).to(device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    try:
        with eval_mode(model):
            logits = model(images)
    except RuntimeError as error:
        raise ValueError(
            f"The model cannot process images of shape {tuple(images.shape[1:])} (channels, height, "
            f"width): {str(error).splitlines()[0]}\nThe images may be too small for this network's "
            "downsampling, or have the wrong number of channels: resize them (ImageRecipe(resize=...)) "
            "or change the network's first layer."
        ) from error
    if logits.ndim != 2 or logits.shape[1] != num_classes:
        raise ValueError(
            f"The model outputs {tuple(logits.shape[1:])} values per image, but the data has "
            f"{num_classes} classes. Make its last layer output {num_classes} values, e.g. "
            f"nn.Linear(in_features, {num_classes})."
        )


class _Run:
    """The state of one training run that outlives an epoch, and its checkpoint."""

    def __init__(self, model, optimizer, scheduler, precision, train_loader, checkpoint_path):
        self.model, self.optimizer, self.scheduler, self.precision = model, optimizer, scheduler, precision
        self.loaders = [train_loader]
        self.path = Path(checkpoint_path) if checkpoint_path is not None else None
        self.signature = _signature(model, optimizer, scheduler, train_loader)
        self.history = History(iter_per_epoch=len(train_loader))
        self.best_state = None
        if self.path is not None and self.path.exists():
            self._resume(load_checkpoint(self.path))

    def _resume(self, state: dict) -> None:
        differences = describe_differences(state["signature"], self.signature)
        if differences:
            raise CheckpointError(
                f"The checkpoint {self.path} was saved by a different run:\n" + "\n".join(differences)
                + "\nIt was left untouched. To keep it, pass another checkpoint_path for this run; "
                "to start over, delete it."
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.precision.scaler.load_state_dict(state["scaler"])
        self.history = History(**state["history"])
        self.best_state = state["best_model"]
        restore_rng_states(state["rng"], self.loaders)

    def record_epoch(self, stats: dict) -> None:
        history = self.history
        history.batch_losses.extend(stats.pop("batch_losses"))
        for key, value in stats.items():
            getattr(history, key).append(value)
        if not history.best_epoch or history.valid_acc[-1] > history.best_valid_acc:
            history.best_epoch = history.num_epochs
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}

    def save(self) -> None:
        if self.path is None:
            return
        if not all(torch.isfinite(p).all() for p in self.model.parameters()):
            raise NonFiniteLossError(
                f"The weights became NaN or infinite in epoch {self.history.num_epochs}; they were not "
                f"saved, so {self.path} keeps the last good epoch. Try a smaller learning rate."
            )
        save_checkpoint({
            "format": CHECKPOINT_FORMAT,
            "signature": self.signature,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.precision.scaler.state_dict(),
            "history": asdict(self.history),
            "best_model": self.best_state,
            "rng": capture_rng_states(self.loaders),
        }, self.path)

    def _save_test_accuracy(self) -> None:
        # Only the history changes: the weights, optimizer and random states stay the last epoch's,
        # so that a run extended to more epochs continues exactly where it stopped.
        if self.path is None:
            return
        state = load_checkpoint(self.path)
        state["history"] = asdict(self.history)
        save_checkpoint(state, self.path)

    def interrupted_message(self, epoch: int) -> str:
        done = self.history.num_epochs
        if self.path is None:
            return (f"Training stopped during epoch {epoch}; nothing was saved. Pass checkpoint_path= "
                    "to train_model to be able to resume next time.")
        if done == 0:
            return f"Training stopped during epoch {epoch}, before any epoch was saved to {self.path}."
        return (f"Training stopped during epoch {epoch}. {self.path} keeps epoch {done}: run this cell "
                "again to resume from there.")

    def finish(self, test_loader, device, channels_last, already_done=False) -> History:
        history = self.history
        if already_done:
            print(f"{self.path} holds a finished run ({history.num_epochs} epochs): loaded it "
                  "instead of training. Delete the file to train again.")
        self.model.load_state_dict(self.best_state)
        print(f"Best validation accuracy {history.best_valid_acc:.2f}% at epoch {history.best_epoch}; "
              "the model now has those weights.")
        if test_loader is not None and (history.test_acc is None or not already_done):
            history.test_acc = evaluate(self.model, test_loader, device, self.precision.dtype, channels_last)[1]
            self._save_test_accuracy()
        if history.test_acc is not None:
            print(f"Test accuracy: {history.test_acc:.2f}%")
        return history


def _signature(model, optimizer, scheduler, train_loader) -> dict:
    """What must match for a checkpoint to belong to this run (taken before any training step)."""
    hyperparameters = [
        {key: list(value) if isinstance(value, tuple) else value for key, value in group.items()
         if key not in ("params", "initial_lr") and isinstance(value, (int, float, bool, str, tuple, type(None)))}
        for group in optimizer.param_groups
    ]
    return {
        "model": type(model).__name__,
        "parameters": {name: list(p.shape) for name, p in model.state_dict().items()},
        "optimizer": type(optimizer).__name__,
        "hyperparameters": hyperparameters,
        "scheduler": type(scheduler).__name__ if scheduler is not None else None,
        "batches_per_epoch": len(train_loader),
    }


def _train_epoch(run, step_model, epoch, num_epochs, train_loader, valid_loader, device,
                 logging_interval, channels_last, exact_train_accuracy, loss_fn) -> None:
    start = time.perf_counter()
    lr = current_lrs(run.optimizer)[0]
    losses, train_acc = _fit_one_epoch(run, step_model, epoch, num_epochs, train_loader, device,
                                       logging_interval, channels_last, loss_fn, lr)
    if exact_train_accuracy:
        train_acc = compute_accuracy(run.model, train_loader, device)
    valid_loss, valid_acc = evaluate(run.model, valid_loader, device, run.precision.dtype, channels_last)
    step_scheduler(run.scheduler, valid_acc)
    new_lr = current_lrs(run.optimizer)[0]
    run.record_epoch({
        "batch_losses": losses, "train_loss": sum(losses) / len(losses), "train_acc": train_acc,
        "valid_loss": valid_loss, "valid_acc": valid_acc, "learning_rates": lr,
        "epoch_times": time.perf_counter() - start,
    })
    run.save()
    history = run.history
    print(f"Epoch {epoch:03d}/{num_epochs:03d} | loss {history.train_loss[-1]:.4f} | "
          f"train {train_acc:.2f}% | valid {valid_acc:.2f}% | {history.epoch_times[-1]:.1f} s")
    if new_lr != lr and not steps_every_batch(run.scheduler):
        print(f"Learning rate {lr:g} -> {new_lr:g}")


def _fit_one_epoch(run, step_model, epoch, num_epochs, loader, device, logging_interval,
                   channels_last, loss_fn, lr) -> tuple[list[float], float]:
    """One pass of optimisation. Losses and hits stay on the device until a logging point."""
    model, optimizer, precision = run.model, run.optimizer, run.precision
    batch_scheduler = run.scheduler if steps_every_batch(run.scheduler) else None
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.train()
    pending, losses = [], []
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen = 0
    progress = tqdm(loader, desc=f"Epoch {epoch}/{num_epochs}", leave=False, unit="batch")
    for batch, (features, targets) in enumerate(progress, start=1):
        features = features.to(device, non_blocking=True).contiguous(memory_format=memory_format)
        targets = targets.to(device, non_blocking=True)
        with autocast(device, precision.dtype):
            logits = step_model(features)
            loss = loss_fn(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        precision.scaler.scale(loss).backward()
        precision.scaler.step(optimizer)
        precision.scaler.update()
        if batch_scheduler is not None:
            batch_scheduler.step()
        pending.append(loss.detach())
        correct += (logits.argmax(1) == targets).sum()
        seen += len(targets)
        if batch % logging_interval == 0 or batch == len(loader):
            losses.extend(_checked_losses(pending, epoch, batch, lr, run))  # the one sync point
            pending = []
            progress.set_postfix(loss=f"{losses[-1]:.4f}")
    return losses, 100.0 * correct.item() / seen


def _checked_losses(pending, epoch, batch, lr, run) -> list[float]:
    values = torch.stack(pending).float().cpu().tolist()
    for offset, value in enumerate(values):
        if not math.isfinite(value):
            bad_batch = batch - len(values) + offset + 1
            kept = (f"{run.path} still holds epoch {run.history.num_epochs}, saved before this happened"
                    if run.path is not None and run.history.num_epochs else "No checkpoint was written")
            raise NonFiniteLossError(
                f"The loss became {value} in epoch {epoch}, batch {bad_batch} (learning rate {lr:g}); "
                f"training stopped. {kept}.\nThe model's weights are no longer usable. Try a smaller "
                "learning rate (a tenth of it is a good first try), and start a new run with a new "
                "checkpoint_path."
            )
    return values

