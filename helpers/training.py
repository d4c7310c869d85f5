"""The training loop: lean on the GPU, resumable after a disconnect, loud about anything wrong."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .checkpoint import (
    CheckpointError,
    another_path,
    capture_rng_states,
    check_writable,
    checkpoint_contents,
    checkpoint_size,
    describe_differences,
    load_checkpoint,
    restore_rng_states,
    run_signature,
    save_checkpoint,
    write_problem,
)
from .environment import get_device
from .evaluation import Precision, eval_mode, evaluate
from .loaders import check_count, class_names, data_signature, is_augmented, sample_images
from .scheduling import check_scheduler, current_lrs, restore_state, saveable_state, step_scheduler, steps_every_batch

# A cross-entropy loss this large means logits millions apart: the run has diverged, NaN or not.
MAX_LOSS = 1e6

REBUILD = "rerun the cell that builds the model and its optimizer, then this one"


class NonFiniteLossError(FloatingPointError):
    """Training diverged: the loss, a weight or a buffer became NaN, infinite or absurdly large."""


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
    train_images: list[int] = field(default_factory=list)  # images trained on in each epoch
    iter_per_epoch: int = 0
    augmented: bool | None = None  # were the training batches randomly cropped or flipped (None: unknown)
    best_epoch: int = 0
    test_acc: float | None = None

    @property
    def num_epochs(self) -> int:
        return len(self.valid_acc)

    @property
    def best_valid_acc(self) -> float:
        return self.valid_acc[self.best_epoch - 1] if self.best_epoch else float("nan")


@dataclass(frozen=True)
class TrainingSettings:
    """How a call to train_model trains, besides what it trains."""

    num_epochs: int
    device: torch.device
    precision: Precision
    logging_interval: int
    loss_fn: Callable
    exact_train_accuracy: bool
    compile_model: bool


def train_model(model, num_epochs, train_loader, valid_loader, test_loader=None, optimizer=None,
                device=None, logging_interval=50, scheduler=None, checkpoint_path=None, *,
                amp=None, channels_last=None, compile_model=False, exact_train_accuracy=False,
                loss_fn=F.cross_entropy) -> History:
    """Train, validate every epoch, keep the best weights, and test them at the end.

    With checkpoint_path, every epoch is saved and running the same call again resumes where it
    stopped; a finished run loads at once. On CUDA, mixed precision and channels-last are on by
    default (amp=False / channels_last=False switch them off; amp=torch.float16 or torch.bfloat16
    picks the type); compile_model=True uses torch.compile.
    """
    num_epochs = check_count("num_epochs", num_epochs, example=10)
    logging_interval = check_count("logging_interval", logging_interval, example=50)
    _check_arguments(model, optimizer, scheduler, train_loader, valid_loader, num_epochs)
    device = get_device(device)
    channels_last = device.type == "cuda" if channels_last is None else bool(channels_last)
    settings = TrainingSettings(num_epochs, device, Precision(_amp_dtype(device, amp), channels_last),
                                logging_interval, loss_fn, exact_train_accuracy, compile_model)
    model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    _preflight(model, train_loader, settings)
    _check_finite_weights(model)
    run = _Run(model, optimizer, scheduler, (train_loader, valid_loader, test_loader), settings, checkpoint_path)
    try:
        return run.train()
    except KeyboardInterrupt:
        print(run.interrupted_message())
        raise


# --------------------------------------------------------------------------- checks before training


def _check_arguments(model, optimizer, scheduler, train_loader, valid_loader, num_epochs) -> None:
    if optimizer is None:
        raise ValueError("train_model needs an optimizer, e.g. torch.optim.SGD(model.parameters(), lr=0.01).")
    if valid_loader is None:
        raise ValueError("train_model needs a valid_loader: it picks the best epoch by validation accuracy. "
                         "The get_dataloaders_* functions return (train_loader, valid_loader, test_loader).")
    for role, loader in (("training", train_loader), ("validation", valid_loader)):
        if len(loader) == 0:
            raise ValueError(f"The {role} loader gives no batches: its dataset is empty, or smaller than one "
                             "batch with drop_last=True. Check the data it was built from, and the batch size.")
    _check_optimizer(model, optimizer, scheduler)
    check_scheduler(scheduler, optimizer, num_epochs * len(train_loader))


def _check_optimizer(model, optimizer, scheduler) -> None:
    """The optimizer must update this model, and start fresh: the checkpoint, not memory, carries a run on."""
    own = {id(parameter) for parameter in model.parameters()}
    foreign = [p for group in optimizer.param_groups for p in group["params"] if id(p) not in own]
    if foreign:
        raise ValueError(
            f"The optimizer updates {len(foreign)} tensor(s) that are not this model's parameters: it was built "
            "for another model (one built by an earlier run of a cell, perhaps). Build it from this model, "
            "e.g. torch.optim.SGD(model.parameters(), lr=0.01)."
        )
    if any(optimizer.state.values()) or getattr(scheduler, "last_epoch", 0) > 0:
        raise ValueError(
            "This optimizer (or its scheduler) has already trained: an earlier or interrupted train_model call "
            f"left its state, so the model is part-trained too. To start clean, {REBUILD}; with a "
            "checkpoint_path, training then resumes from the last saved epoch."
        )


def _amp_dtype(device: torch.device, amp) -> torch.dtype | None:
    """Mixed precision: bf16 where the GPU has it, fp16 with a gradient scaler (a T4), else off."""
    if amp in (torch.float16, torch.bfloat16):
        if device.type != "cuda":
            raise ValueError(f"amp={amp} needs a CUDA GPU; this run is on {device.type}. Leave amp unset.")
        return amp
    if amp not in (None, True, False):
        raise ValueError(f"amp must be None (automatic), True, False, torch.float16 or torch.bfloat16 (got {amp!r}).")
    if device.type == "cuda" and amp is not False:
        # is_bf16_supported() also says yes for emulated bf16 on a T4, which is slow; ask for Ampere+.
        return torch.bfloat16 if torch.cuda.get_device_capability(device) >= (8, 0) else torch.float16
    if amp:
        raise ValueError(f"amp=True needs a CUDA GPU; this run is on {device.type}. Leave amp unset.")
    return None


def _preflight(model, loader, settings: TrainingSettings) -> None:
    """Run two images through the model first, to turn shape mistakes into plain messages."""
    num_classes = len(class_names(loader))
    images = settings.precision.prepare(sample_images(loader), settings.device)
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


def _check_finite_weights(model) -> None:
    bad = non_finite_tensors(model)
    if bad:
        raise ValueError(
            f"The model's {', '.join(bad)} {'is' if len(bad) == 1 else 'are'} NaN or infinite before training: "
            f"an earlier run diverged and left them so. A smaller learning rate cannot help these weights: {REBUILD}."
        )


def non_finite_tensors(model) -> list[str]:
    """Names of the weights and buffers (BatchNorm's running statistics too) holding NaN or infinity."""
    state = {name: tensor for name, tensor in model.state_dict().items() if tensor.is_floating_point()}
    if not state:
        return []
    device = next(iter(state.values())).device
    finite = torch.stack([torch.isfinite(tensor).all().to(device) for tensor in state.values()]).tolist()
    return [name for name, ok in zip(state, finite) if not ok]


# --------------------------------------------------------------------------- the run


class _Run:
    """One training run: what it trains, how (its settings), what it recorded, and its checkpoint."""

    def __init__(self, model, optimizer, scheduler, loaders, settings: TrainingSettings, checkpoint_path):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.train_loader, self.valid_loader, self.test_loader = loaders
        self.settings = settings
        self.scaler = torch.amp.GradScaler(settings.device.type) if settings.precision.amp_dtype == torch.float16 \
            else _NoScaler()
        self.path = Path(checkpoint_path).expanduser() if checkpoint_path is not None else None
        # Only a checkpoint needs the signature, and it reads the source of the model's own classes.
        self.signature = None if self.path is None else run_signature(
            model, optimizer, scheduler, self.train_loader, self.valid_loader, settings.loss_fn)
        self.history = History(iter_per_epoch=len(self.train_loader), augmented=is_augmented(self.train_loader))
        self.best_state = None
        self.tested_on = None  # the test data's signature when history.test_acc was measured
        self.stage = "before training started"  # where a Ctrl-C would stop it, for its message
        if self.path is not None and self.path.exists():
            self._resume(load_checkpoint(self.path))
        self.saved_epochs = self.history.num_epochs  # what the checkpoint file holds

    def _resume(self, state: dict) -> None:
        differences = describe_differences(state["signature"], self.signature)
        if differences:
            raise CheckpointError(self._another_run_message(state, differences))
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            restore_state(self.scheduler, state["scheduler"])
        # A run saved on the CPU or in bf16 has no scaler state: under fp16 the fresh scaler starts over.
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.history = self._saved_history(state["history"])
        self.best_state = state["best_model"]
        self.tested_on = state["test_data"]
        restore_rng_states(state["rng"], [self.train_loader])

    def _another_run_message(self, state: dict, differences: list[str]) -> str:
        epochs = len(state["history"].get("valid_acc", [])) if isinstance(state["history"], dict) else 0
        return (f"The checkpoint {self.path} holds {epochs} epoch(s) of another run. This call differs from it "
                f"in {len(differences)} place(s):\n" + "\n".join(differences)
                + "\nThe checkpoint was left untouched. To continue that run, undo these changes. To start a "
                f"new run beside it, {another_path(self.path)}.")

    def _saved_history(self, saved) -> History:
        if not isinstance(saved, dict) or set(saved) != {item.name for item in fields(History)}:
            raise CheckpointError(f"The history in {self.path} is not in the layout train_model writes. It was "
                                  f"left untouched. To start a new run beside it, {another_path(self.path)}.")
        return History(**saved)

    def train(self) -> History:
        done, wanted = self.history.num_epochs, self.settings.num_epochs
        if done >= wanted:
            return self.finish(already_done=True)
        self.stage = f"before epoch {done + 1}"
        if self.path is not None:
            check_writable(self.path, checkpoint_size(self.model, self.path))
        if done:
            print(f"Resuming from {self.path} after epoch {done}.")
        step_model = torch.compile(self.model) if self.settings.compile_model else self.model
        for epoch in range(done + 1, wanted + 1):
            self.stage = f"during epoch {epoch}"
            self._train_epoch(step_model, epoch)
        return self.finish()

    def _train_epoch(self, step_model, epoch: int) -> None:
        start = time.perf_counter()
        lr = current_lrs(self.optimizer)[0]
        losses, train_acc, train_images = self._fit(step_model, epoch, lr)
        bad = non_finite_tensors(self.model)
        if bad:
            raise self._diverged(f"After epoch {epoch} (learning rate {lr:g}) these weights or buffers are NaN "
                                 f"or infinite: {', '.join(bad)}")
        precision = self.settings.precision
        if self.settings.exact_train_accuracy:
            train_acc = evaluate(self.model, self.train_loader, precision)[1]
        valid_loss, valid_acc = evaluate(self.model, self.valid_loader, precision)
        if not math.isfinite(valid_loss):
            raise self._diverged(f"The validation loss became {valid_loss} after epoch {epoch} (learning rate {lr:g})")
        step_scheduler(self.scheduler, valid_acc)
        self._record_epoch({
            "batch_losses": losses, "train_loss": sum(losses) / len(losses), "train_acc": train_acc,
            "valid_loss": valid_loss, "valid_acc": valid_acc, "learning_rates": lr,
            "epoch_times": time.perf_counter() - start, "train_images": train_images,
        })
        self._save()
        print(f"Epoch {epoch:03d}/{self.settings.num_epochs:03d} | loss {self.history.train_loss[-1]:.4f} | "
              f"train {train_acc:.2f}% | valid {valid_acc:.2f}% | {self.history.epoch_times[-1]:.1f} s")
        new_lr = current_lrs(self.optimizer)[0]
        if new_lr != lr and not steps_every_batch(self.scheduler):
            print(f"Learning rate {lr:g} -> {new_lr:g}")

    def _fit(self, step_model, epoch: int, lr: float) -> tuple[list[float], float, int]:
        """One pass of optimisation: (batch losses, running accuracy, images trained on).

        Losses and hits stay on the device until a logging point."""
        settings = self.settings
        batch_scheduler = self.scheduler if steps_every_batch(self.scheduler) else None
        self.model.train()
        pending, losses = [], []
        correct = torch.zeros((), dtype=torch.long, device=settings.device)
        seen = 0
        progress = tqdm(self.train_loader, desc=f"Epoch {epoch}/{settings.num_epochs}", leave=False, unit="batch")
        for batch, (features, targets) in enumerate(progress, start=1):
            targets = targets.to(settings.device, non_blocking=True)
            loss, logits = self._step(step_model, features, targets)
            if batch_scheduler is not None:
                batch_scheduler.step()
            pending.append(loss.detach())
            correct += (logits.argmax(1) == targets).sum()
            seen += len(targets)
            if batch % settings.logging_interval == 0 or batch == len(self.train_loader):
                losses.extend(self._checked_losses(pending, epoch, batch, lr))  # the one sync point
                pending = []
                progress.set_postfix(loss=f"{losses[-1]:.4f}")
        return losses, 100.0 * correct.item() / seen, seen

    def _step(self, step_model, features, targets) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward, backward and one optimizer step, in the run's precision; returns (loss, logits)."""
        device, precision = self.settings.device, self.settings.precision
        with precision.autocast(device):
            logits = step_model(precision.prepare(features, device))
            loss = self.settings.loss_fn(logits, targets)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss, logits

    def _checked_losses(self, pending, epoch: int, batch: int, lr: float) -> list[float]:
        values = torch.stack(pending).float().cpu().tolist()
        for offset, value in enumerate(values):
            if not math.isfinite(value) or value > MAX_LOSS:
                became = f"became {value}" if not math.isfinite(value) else f"reached {value:.3g}"
                bad_batch = batch - len(values) + offset + 1
                raise self._diverged(f"The loss {became} in epoch {epoch}, batch {bad_batch} (learning rate {lr:g})")
        return values

    def _diverged(self, what: str) -> NonFiniteLossError:
        kept = (f"{self.path} still holds epoch {self.saved_epochs}, saved before this happened"
                if self.path is not None and self.saved_epochs else "No checkpoint of this run was written")
        return NonFiniteLossError(
            f"{what}; training stopped, and this epoch was not saved. {kept}.\nThe model's weights are no longer "
            f"usable: {REBUILD}. Then try a smaller learning rate (a tenth of it is a good first try), "
            "which is a new run: give it a new checkpoint_path."
        )

    def _record_epoch(self, stats: dict) -> None:
        history = self.history
        history.batch_losses.extend(stats.pop("batch_losses"))
        for key, value in stats.items():
            getattr(history, key).append(value)
        if not history.best_epoch or history.valid_acc[-1] > history.best_valid_acc:
            history.best_epoch = history.num_epochs
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}

    def _save(self) -> None:
        if self.path is None:
            return
        self._write(checkpoint_contents(
            signature=self.signature,
            model=self.model.state_dict(),
            optimizer=self.optimizer.state_dict(),
            scheduler=saveable_state(self.scheduler),
            scaler=self.scaler.state_dict(),
            history=asdict(self.history),
            best_model=self.best_state,
            rng=capture_rng_states([self.train_loader]),
            test_data=self.tested_on,
        ), after=f"epoch {self.history.num_epochs}")
        self.saved_epochs = self.history.num_epochs

    def _save_test_accuracy(self) -> None:
        # Only the history changes: the weights, optimizer and random states stay the last epoch's,
        # so that a run extended to more epochs continues exactly where it stopped.
        if self.path is None:
            return
        state = load_checkpoint(self.path)
        state["history"], state["test_data"] = asdict(self.history), self.tested_on
        self._write(state, after="the final test")

    def _write(self, state: dict, after: str) -> None:
        try:
            save_checkpoint(state, self.path)
        except (OSError, RuntimeError) as error:  # torch reports some failed writes as RuntimeError
            kept = (f"{self.path} still holds epoch {self.saved_epochs}, the last good one, and is safe"
                    if self.saved_epochs else "No epoch of this run had been saved yet")
            raise CheckpointError(
                f"The checkpoint {self.path} could not be written after {after} ({write_problem(error)}). {kept}; "
                "the unfinished file was removed. Free some space or make the folder writable, then run this "
                "cell again."
            ) from error

    def interrupted_message(self) -> str:
        if self.path is None:
            return (f"Training stopped {self.stage}; nothing was saved, and the model is part-trained. Pass "
                    "checkpoint_path= to train_model to be able to resume next time.")
        if not self.saved_epochs:
            return (f"Training stopped {self.stage}, before any epoch was saved to {self.path}. The model is "
                    f"part-trained: to start again, {REBUILD}.")
        return (f"Training stopped {self.stage}. {self.path} keeps epoch {self.saved_epochs}: to resume from "
                "there, run this cell again (first the cell that builds the model, if it is another one).")

    def finish(self, already_done: bool = False) -> History:
        history = self.history
        if already_done:
            print(f"{self.path} holds a finished run ({history.num_epochs} epochs): loaded it instead of "
                  f"training. To train from scratch instead, {another_path(self.path)}.")
        self.model.load_state_dict(self.best_state)
        print(f"Best validation accuracy {history.best_valid_acc:.2f}% at epoch {history.best_epoch}; "
              "the model now has those weights.")
        if self.test_loader is not None:
            test_data = data_signature(self.test_loader)
            if history.test_acc is None or not already_done or test_data != self.tested_on:
                self.stage = "during the final test"
                history.test_acc = evaluate(self.model, self.test_loader, self.settings.precision)[1]
                self.tested_on = test_data
                self._save_test_accuracy()
        if history.test_acc is not None:
            print(f"Test accuracy: {history.test_acc:.2f}%")
        return history


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
