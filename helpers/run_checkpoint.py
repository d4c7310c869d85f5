"""A training run's checkpoint, from the first look to the last write: lock, resume, save, and what to tell.

train_model talks to one object: a RunCheckpoint when it was given a checkpoint_path, else a
NoCheckpoint that does nothing (as _NoScaler stands in for the gradient scaler), so that the
training loop never asks whether there is a file.
"""

from __future__ import annotations

import torch

from .checkpoint import (
    CheckpointError,
    abandoned_partials,
    another_path,
    check_folder,
    check_name,
    check_room,
    checkpoint_contents,
    load_checkpoint,
    room_needed,
    save_checkpoint,
    write_fix,
    write_problem,
)
from .checkpoint_content import content_problem
from .checkpoint_lock import STALE_S, CheckpointLock
from .scheduling import current_lrs
from .signature import code_sources, describe_differences, run_signature, unchecked

REBUILD = "rerun the cell that builds the model and its optimizer, then this one"
_NOTES_SAID: set[str] = set()  # the resume notes printed so far in this Python session


class RunCheckpoint:
    """The checkpoint file of one run: refuses another run's file, writes every epoch, keeps the last good one."""

    def __init__(self, path, model, optimizer, scheduler, train_loader, valid_loader, loss_fn):
        self.path = path
        check_name(path)
        self.signature = run_signature(model, optimizer, scheduler, train_loader, valid_loader, loss_fn)
        self.sources = code_sources(model)
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        # Checked before this call steps them: an earlier call (cut short by Ctrl-C, say) may have moved them on.
        self._moved_on = any(optimizer.state.values()) or getattr(scheduler, "last_epoch", 0) > 0
        self.saved_epochs = 0  # what the file holds
        self._lock = CheckpointLock(path)
        self._not_writable = None  # why the folder takes no file: a finished run there can still be shown

    def __enter__(self) -> RunCheckpoint:
        try:
            check_folder(self.path)
        except CheckpointError as error:
            self._not_writable = error
            return self
        self._lock.acquire()
        for leftover in abandoned_partials(self.path, older_than_s=STALE_S):  # a killed writer's, not a live one's
            leftover.unlink(missing_ok=True)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._not_writable is None:
            self._lock.release()

    def load(self) -> dict | None:
        """The saved state of this same run, None when there is no file; another run's file is refused."""
        if not self.path.exists():
            return None
        state = load_checkpoint(self.path)
        differences = describe_differences(state["signature"], self.signature, state["sources"], self.sources)
        if differences and self._moved_on:
            raise CheckpointError(self._moved_on_message(state))
        if differences:
            raise CheckpointError(self._another_run_message(state, differences))
        problem = content_problem(state, self.model, self.optimizer, self.scheduler)
        if problem:
            raise CheckpointError(self.bad_content_message(problem))
        self.saved_epochs = _epochs(state)
        return state

    def check_room(self, model, optimizer) -> None:
        if self._not_writable is not None:
            raise self._not_writable
        check_room(self.path, room_needed(model, optimizer, self.path))

    def save(self, parts: dict, epochs: int, after: str) -> None:
        """Write the run as it stands after `epochs` epochs; on failure the previous file stays, and we say so."""
        if self._not_writable is not None:
            raise self._not_writable
        self._lock.check_owned()  # a kernel paused past the lock's timeout may have lost it: then it writes nothing
        first = not self.path.exists()
        try:
            save_checkpoint(checkpoint_contents(signature=self.signature, sources=self.sources, **parts), self.path)
        except (OSError, RuntimeError) as error:  # torch reports some failed writes as RuntimeError
            reason = write_problem(error, self.path.parent)
            raise CheckpointError(
                f"The checkpoint {self.path} could not be written after {after} ({reason}). {self.kept()}; the "
                f"unfinished file was removed. {write_fix(reason)}, then run this cell again.",
                reason,
            ) from error
        self.saved_epochs = epochs
        notes = [note for note in unchecked(self.signature) if note not in _NOTES_SAID]
        if first and notes:
            # Once per session: a notebook that trains four networks of the same code says it once, not four times.
            _NOTES_SAID.update(notes)
            print("Note: on a resume, these parts of this run cannot be checked against the checkpoint:\n"
                  + "\n".join(f"  {note}" for note in notes))

    def kept(self) -> str:
        if self.saved_epochs:
            return f"{self.path} still holds epoch {self.saved_epochs}, the last good one, and is safe"
        return "No epoch of this run had been saved yet"

    def resuming(self, epochs: int) -> str:
        return f"Resuming from {self.path} after epoch {epochs}."

    def finished(self, epochs: int) -> str:
        return (f"{self.path} holds a finished run ({epochs} epochs): loaded it instead of training. To train from "
                f"scratch instead, {another_path(self.path)}.")

    def diverged(self) -> str:
        if self.saved_epochs:
            return f"{self.path} still holds epoch {self.saved_epochs}, saved before this happened"
        return "No checkpoint of this run was written"

    def interrupted(self, stage: str) -> str:
        if not self.saved_epochs:
            return (f"Training stopped {stage}, before any epoch was saved to {self.path}. The model is "
                    f"part-trained: to start again, {REBUILD}.")
        return (f"Training stopped {stage}. {self.path} keeps epoch {self.saved_epochs}: to resume from there, run "
                "this cell again (first the cell that builds the model, if it is another one).")

    def bad_content_message(self, problem: str) -> str:
        return (f"The checkpoint {self.path} passes its checksums, but {problem}: it was changed after train_model "
                "wrote it, or written by other code. It was left untouched, and nothing was trained. To start a new "
                f"run beside it, {another_path(self.path)}.")

    def _moved_on_message(self, state: dict) -> str:
        groups = state["signature"].get("optimizer", {}).get("groups") or [{}]  # a hand-edited file may lack them
        started = groups[0].get("lr")
        now = current_lrs(self.optimizer)[0]
        changed = isinstance(started, (int, float)) and started != now
        lr = f" (the learning rate is now {now:g}; the run started at {started:g})" if changed else ""
        return (f"The optimizer and scheduler given to this call have already trained: an earlier train_model call "
                f"(interrupted, or finished) moved them on{lr}, so they no longer match the run in {self.path} "
                f"({_epochs(state)} epoch(s)), which was left untouched. To resume it, rerun the cell that builds "
                "the model, its optimizer and its scheduler, then this one: the checkpoint puts back their state.")

    def _another_run_message(self, state: dict, differences: list[str]) -> str:
        return (f"The checkpoint {self.path} holds {_epochs(state)} epoch(s) of another run. "
                f"This call differs from it in {sum(not line.startswith('      ') for line in differences)} "
                "place(s):\n" + "\n".join(differences)
                + "\nThe checkpoint was left untouched. To continue that run, undo these changes. To start a new "
                f"run beside it, {another_path(self.path)}.")


def _epochs(state: dict) -> int:
    return len(state["history"].get("valid_acc", [])) if isinstance(state["history"], dict) else 0


class NoCheckpoint:
    """Stands in for RunCheckpoint when train_model has no checkpoint_path: nothing is read or written."""

    saved_epochs = 0

    def __enter__(self) -> NoCheckpoint:
        return self

    def __exit__(self, *exc_info) -> None:
        pass

    def load(self) -> None:
        return None

    def check_room(self, model, optimizer) -> None:
        pass

    def save(self, parts: dict, epochs: int, after: str) -> None:
        pass

    def diverged(self) -> str:
        return "No checkpoint of this run was written"

    def interrupted(self, stage: str) -> str:
        return (f"Training stopped {stage}; nothing was saved, and the model is part-trained. Pass "
                "checkpoint_path= to train_model to be able to resume next time.")


def weights_copy(model: torch.nn.Module) -> dict:
    """The model's weights and buffers, copied to the CPU: they stay as they are while the model changes."""
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in model.state_dict().items()}
