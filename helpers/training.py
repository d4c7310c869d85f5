"""The training loop: lean on the GPU, resumable after a disconnect, loud about anything wrong.

Checks before the first step are in preflight.py; the checkpoint's life (lock, resume, writes) in
run_checkpoint.py. What is left here is the loop itself and what it records.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F

from .checkpoint import CheckpointError, another_path, error_text
from .checks import check_count
from .environment import get_device
from .evaluation import Precision, evaluate
from .figure_style import accuracy_text, note_training, num_images
from .history import History
from .loaders import data_signature, is_augmented
from .preflight import (
    REBUILD,
    amp_dtype,
    check_fresh_start,
    check_loaders,
    check_optimizer,
    check_shapes,
    non_finite_tensors,
)
from .progress import EpochProgress
from .reproducibility import capture_rng_states, restore_rng_states
from .run_checkpoint import NoCheckpoint, RunCheckpoint, weights_copy
from .scheduling import current_lrs, restore_state, saveable_state, step_scheduler, steps_every_batch

# A cross-entropy loss this large means logits millions apart: the run has diverged, NaN or not.
MAX_LOSS = 1e6


class NonFiniteLossError(FloatingPointError):
    """Training diverged: the loss, a weight or a buffer became NaN, infinite or absurdly large."""


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


def train_model(model, num_epochs, train_loader, valid_loader, test_loader, optimizer, device=None,
                logging_interval=50, scheduler=None, checkpoint_path=None, *, amp=None, channels_last=None,
                compile_model=False, exact_train_accuracy=False, loss_fn=F.cross_entropy) -> History:
    """Train, validate every epoch, keep the best weights, and test them at the end (test_loader=None: no test).

    With checkpoint_path, every epoch is saved and running the same call again resumes where it
    stopped; a finished run loads at once. On CUDA, mixed precision and channels-last are on by
    default (amp=False / channels_last=False switch them off; amp=torch.float16 or torch.bfloat16
    picks the type); compile_model=True uses torch.compile.
    """
    num_epochs = check_count("num_epochs", num_epochs, example=10)
    logging_interval = check_count("logging_interval", logging_interval, example=50)
    check_loaders(train_loader, valid_loader, test_loader)
    check_optimizer(model, optimizer, scheduler, num_epochs * len(train_loader))
    device = get_device(device)
    note_training(num_epochs, train_loader)  # what a smoke run's banner says from now on
    channels_last = device.type == "cuda" if channels_last is None else bool(channels_last)
    settings = TrainingSettings(num_epochs, device, Precision(amp_dtype(device, amp), channels_last),
                                logging_interval, loss_fn, exact_train_accuracy, compile_model)
    model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    check_shapes(model, train_loader, settings.precision, device)
    checkpoint = NoCheckpoint() if checkpoint_path is None else RunCheckpoint(
        Path(checkpoint_path).expanduser(), model, optimizer, scheduler, train_loader, valid_loader, loss_fn)
    with checkpoint:
        state = checkpoint.load()
        if state is None:
            check_fresh_start(model, optimizer, scheduler)
        run = _Run(model, optimizer, scheduler, (train_loader, valid_loader, test_loader), settings, checkpoint)
        if state is not None:
            run.resume(state)
        try:
            return run.train()
        except KeyboardInterrupt:
            print(checkpoint.interrupted(run.stage))
            raise


class _Run:
    """One training run: what it trains, how (its settings), what it recorded, and its checkpoint."""

    def __init__(self, model, optimizer, scheduler, loaders, settings: TrainingSettings, checkpoint):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.train_loader, self.valid_loader, self.test_loader = loaders
        self.settings, self.checkpoint = settings, checkpoint
        self.scaler = torch.amp.GradScaler(settings.device.type) if settings.precision.amp_dtype == torch.float16 \
            else _NoScaler()
        self.history = History(iter_per_epoch=len(self.train_loader), augmented=is_augmented(self.train_loader))
        self.best_state = None
        self.tested_on = None  # the test data's signature when history.test_acc was measured
        self.rng = None  # the random states at the end of the last finished epoch
        self.stage = "before training started"  # where a Ctrl-C would stop it, for its message

    def resume(self, state: dict) -> None:
        try:
            self._restore(state)
        except CheckpointError:
            raise
        except Exception as error:  # content the checkpoint's checks could not foresee: say so, keep the file
            problem = f"its state could not be loaded ({error_text(error)})"
            raise CheckpointError(f"{self.checkpoint.bad_content_message(problem)} The model or the optimizer may be "
                                  f"part-loaded: {REBUILD}.") from error

    def _restore(self, state: dict) -> None:
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
        self.rng = state["rng"]
        restore_rng_states(state["rng"], [self.train_loader])

    def _saved_history(self, saved) -> History:
        if not isinstance(saved, dict) or set(saved) != {item.name for item in fields(History)}:
            path = self.checkpoint.path
            raise CheckpointError(f"The history in {path} is not in the layout train_model writes. It was "
                                  f"left untouched. To start a new run beside it, {another_path(path)}.")
        return History(**saved)

    def train(self) -> History:
        done, wanted = self.history.num_epochs, self.settings.num_epochs
        if done >= wanted:
            return self.finish(already_done=True)
        self.stage = f"before epoch {done + 1}"
        self.checkpoint.check_room(self.model, self.optimizer)
        if done:
            print(self.checkpoint.resuming(done))
        step_model = torch.compile(self.model) if self.settings.compile_model else self.model
        for epoch in range(done + 1, wanted + 1):
            self.stage = f"during epoch {epoch}"
            self._train_epoch(step_model, epoch)
        return self.finish()

    def _train_epoch(self, step_model, epoch: int) -> None:
        start = time.perf_counter()
        lr = current_lrs(self.optimizer)[0]
        progress = EpochProgress(len(self.train_loader), f"Epoch {epoch}/{self.settings.num_epochs}")
        try:
            losses, train_acc, train_images = self._fit(step_model, epoch, lr, progress)
            (valid_loss, valid_acc), exact = self._validate(epoch, lr)
        except BaseException:
            progress.abandon()
            raise
        if exact is not None:
            train_acc = exact[1]
        step_scheduler(self.scheduler, valid_acc)
        self._record_epoch({
            "batch_losses": losses, "train_loss": sum(losses) / len(losses), "train_acc": train_acc,
            "valid_loss": valid_loss, "valid_acc": valid_acc, "learning_rates": lr,
            "epoch_times": time.perf_counter() - start, "train_images": train_images,
        })
        self.rng = capture_rng_states([self.train_loader])
        # Every epoch, the last one too, is saved before anything else can fail (the final test): a rerun then
        # tests it again instead of training it again.
        self.checkpoint.save(self._parts(), epoch, after=f"epoch {epoch}")
        progress.finish(f"Epoch {epoch:03d}/{self.settings.num_epochs:03d} | loss {self.history.train_loss[-1]:.4f} | "
                        f"train {train_acc:.2f}% | valid {valid_acc:.2f}% | {self.history.epoch_times[-1]:.1f} s")
        new_lr = current_lrs(self.optimizer)[0]
        # After the last epoch the new rate would train nothing: saying it only confuses a one-epoch run.
        if new_lr != lr and not steps_every_batch(self.scheduler) and epoch < self.settings.num_epochs:
            print(f"Learning rate {lr:g} -> {new_lr:g}")

    def _validate(self, epoch: int, lr: float):
        """((validation loss, accuracy), (training loss, accuracy) when asked for an exact pass, else None)."""
        bad = non_finite_tensors(self.model)
        if bad:
            raise self._diverged(f"After epoch {epoch} (learning rate {lr:g}) these weights or buffers are NaN "
                                 f"or infinite: {', '.join(bad)}")
        precision = self.settings.precision
        exact = None
        if self.settings.exact_train_accuracy:
            exact = self._without_random_draws(lambda: evaluate(self.model, self.train_loader, precision))
        valid_loss, valid_acc = evaluate(self.model, self.valid_loader, precision)
        if not math.isfinite(valid_loss):
            raise self._diverged(f"The validation loss became {valid_loss} after epoch {epoch} (learning rate {lr:g})")
        return (valid_loss, valid_acc), exact

    def _without_random_draws(self, task):
        """Run task leaving every random state as it was: an extra pass must not change the training that follows."""
        generator = getattr(self.train_loader, "generator", None)
        state = generator.get_state() if isinstance(generator, torch.Generator) else None
        with torch.random.fork_rng(devices=[self.settings.device] if self.settings.device.type == "cuda" else []):
            result = task()
        if state is not None:
            generator.set_state(state)
        return result

    def _fit(self, step_model, epoch: int, lr: float, progress: EpochProgress) -> tuple[list[float], float, int]:
        """One pass of optimisation: (batch losses, running accuracy, images trained on).

        Losses, hits and a check of the inputs stay on the device until a logging point, the one sync.
        """
        settings = self.settings
        batch_scheduler = self.scheduler if steps_every_batch(self.scheduler) else None
        self.model.train()
        pending, losses = [], []
        correct = torch.zeros((), dtype=torch.long, device=settings.device)
        broken_input = torch.zeros((), dtype=torch.bool, device=settings.device)
        seen = 0
        for batch, (features, targets) in enumerate(self.train_loader, start=1):
            targets = targets.to(settings.device, non_blocking=True)
            loss, logits, features = self._step(step_model, features, targets)
            if batch_scheduler is not None:
                batch_scheduler.step()
            pending.append(loss.detach())
            broken_input |= ~torch.isfinite(features).all()
            correct += (logits.argmax(1) == targets).sum()
            seen += len(targets)
            if batch % settings.logging_interval == 0 or batch == len(self.train_loader):
                losses.extend(self._checked_losses(pending, broken_input, epoch, batch, lr))
                pending = []
                progress.update(batch, losses[-1])
        return losses, 100.0 * correct.item() / seen, seen

    def _step(self, step_model, features, targets) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Forward, backward and one optimizer step, in the run's precision; returns (loss, logits, inputs)."""
        device, precision = self.settings.device, self.settings.precision
        features = precision.prepare(features, device)
        with precision.autocast(device):
            logits = step_model(features)
            loss = self.settings.loss_fn(logits, targets)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss, logits, features

    def _checked_losses(self, pending, broken_input, epoch: int, batch: int, lr: float) -> list[float]:
        values = torch.stack(pending).float().cpu().tolist()
        first = batch - len(values) + 1
        if broken_input.item():
            raise self._broken_data(epoch, first, batch)
        for offset, value in enumerate(values):
            if not math.isfinite(value) or value > MAX_LOSS:
                became = f"became {value}" if not math.isfinite(value) else f"reached {value:.3g}"
                raise self._diverged(f"The loss {became} in epoch {epoch}, batch {first + offset} "
                                     f"(learning rate {lr:g})")
        return values

    def _broken_data(self, epoch: int, first: int, last: int) -> NonFiniteLossError:
        where = f"batch {first}" if first == last else f"one of batches {first} to {last}"
        return NonFiniteLossError(
            f"An image of {where} in epoch {epoch} holds NaN or infinite values: the data is broken, not the "
            f"learning rate. Training stopped, and this epoch was not saved. {self.checkpoint.diverged()}.\n"
            f"Check the images (and the recipe's mean and std) the training loader is built from; then {REBUILD}."
        )

    def _diverged(self, what: str) -> NonFiniteLossError:
        return NonFiniteLossError(
            f"{what}; training stopped, and this epoch was not saved. {self.checkpoint.diverged()}.\nThe model's "
            f"weights are no longer usable: {REBUILD}. Then try a smaller learning rate (a tenth of it is a good "
            "first try), which is a new run: give it a new checkpoint_path."
        )

    def _record_epoch(self, stats: dict) -> None:
        history = self.history
        history.batch_losses.extend(stats.pop("batch_losses"))
        for key, value in stats.items():
            getattr(history, key).append(value)
        if not history.best_epoch or history.valid_acc[-1] > history.best_valid_acc:
            history.best_epoch = history.num_epochs
            self.best_state = weights_copy(self.model)

    def _parts(self, model_weights: dict | None = None) -> dict:
        """Everything but the signature, as the checkpoint stores it; the model's weights unless others are given."""
        return {
            "model": model_weights if model_weights is not None else self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": saveable_state(self.scheduler),
            "scaler": self.scaler.state_dict(),
            "history": asdict(self.history),
            "best_model": self.best_state,
            "rng": self.rng,
            "test_data": self.tested_on,
        }

    def finish(self, already_done: bool = False) -> History:
        history = self.history
        if already_done:
            print(self.checkpoint.finished(history.num_epochs))
        test_data = data_signature(self.test_loader) if self.test_loader is not None else None
        retest = self.test_loader is not None and (
            not already_done or history.test_acc is None or test_data != self.tested_on)
        # The checkpoint keeps the last epoch's weights, so that a longer run continues exactly.
        last_weights = weights_copy(self.model) if retest else None
        self.model.load_state_dict(self.best_state)
        print(f"Best validation accuracy {accuracy_text(history.best_valid_acc, num_images(self.valid_loader))} "
              f"at epoch {history.best_epoch}; "
              "the model now has those weights.")
        if retest:
            self.stage = "during the final test"
            history.test_acc = evaluate(self.model, self.test_loader, self.settings.precision)[1]
            self.tested_on = test_data
        if history.test_acc is not None:
            print(f"Test accuracy: {accuracy_text(history.test_acc, num_images(self.test_loader))}")
        if retest:
            self._save_final(last_weights, already_done)
        return history

    def _save_final(self, last_weights: dict, already_done: bool) -> None:
        try:
            self.checkpoint.save(self._parts(last_weights), self.history.num_epochs, after="the final test")
        except CheckpointError as error:
            if not already_done:
                raise
            # A finished run, loaded from a folder we may not write (a shared copy): the result stands.
            print(f"The test accuracy could not be saved in {self.checkpoint.path} ({error.reason or error}), "
                  "so loading this run again will test it again.")


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
