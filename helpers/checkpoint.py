"""Checkpoint files: their layout and format, atomic writes, reading them back, and room on the disk.

A write goes to a temporary file of its own in the same folder, then replaces the checkpoint in one
rename: a failure mid-write (a full disk, Ctrl-C, a killed kernel) leaves the previous file intact,
and two writers never share a temporary file. Which run a file belongs to is signature.py's job;
keeping a second kernel away from a file that one is training into is checkpoint_lock.py's.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import torch

# Version 2 added the full run signature, 3 the images per epoch, the augmentation and the model's source.
# A file of another version is refused, never rewritten.
CHECKPOINT_FORMAT = 3
CHECKPOINT_PARTS = ("signature", "sources", "model", "optimizer", "scheduler", "scaler", "history", "best_model",
                    "rng", "test_data")
MAX_NAME_BYTES = 250  # most file systems allow 255; the lock file adds ".lock"


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used or written: unreadable, another run's, or no room to write it."""

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason  # a failed write's cause in a few words ("the disk is full"), where there is one


def checkpoint_contents(**parts) -> dict:
    """A checkpoint's dictionary in this format: the format number and every part."""
    assert set(parts) == set(CHECKPOINT_PARTS), sorted(set(parts) ^ set(CHECKPOINT_PARTS))
    return {"format": CHECKPOINT_FORMAT, **parts}


# --------------------------------------------------------------------------- writing and reading


def save_checkpoint(state: dict, path: str | os.PathLike) -> None:
    """Write to a temporary file of this write's own, then rename: the previous file stays intact until then."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_atomically(state, path, prefix=partial_prefix(path), suffix=".partial")


def save_atomically(obj, path: Path, prefix: str, suffix: str) -> None:
    """torch.save to a temporary file (prefix..suffix, beside path) then rename it over path, so that a reader
    never sees half a file; the temporary file is removed when the write fails or is interrupted."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=suffix)
    try:
        with os.fdopen(descriptor, "wb") as file:
            torch.save(obj, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)  # atomic on POSIX and Windows
    except BaseException:  # a full disk, or Ctrl-C: never leave half a file behind
        Path(temporary).unlink(missing_ok=True)
        raise


def partial_prefix(path: Path) -> str:
    """How the temporary files of one checkpoint start: short, whatever the length of its name."""
    return f".{hashlib.sha1(path.name.encode()).hexdigest()[:12]}-"


def leftover_partials(path: Path) -> list[Path]:
    """Temporary files of this checkpoint that a killed writer left behind (only the lock holder may delete them)."""
    return sorted(path.parent.glob(f"{partial_prefix(path)}*.partial"))


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint saved by train_model in this format, or raise CheckpointError saying what to do."""
    path = Path(path)
    try:
        _check_checksums(path)
        # weights_only: a checkpoint holds tensors and plain values, so nothing runs on load.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(
            f"The checkpoint {path} cannot be read ({error_text(error)}); it may have been cut short or damaged. "
            f"It was left untouched. To start a new run beside it, {another_path(path)}."
        ) from error
    if not isinstance(state, dict) or not isinstance(state.get("format"), int):
        raise CheckpointError(f"{path} is not a checkpoint written by train_model. It was left untouched. To "
                              f"train beside it, {another_path(path)}.")
    _check_format(path, state)
    return state


def error_text(error: BaseException, limit: int = 100) -> str:
    """An error as "TypeName: its first line", short enough for a sentence."""
    lines = str(error).splitlines()
    return f"{type(error).__name__}: {lines[0][:limit]}" if lines else type(error).__name__


def _check_checksums(path: Path) -> None:
    """torch.load reads damaged tensor data without a word; the file's own CRC-32 checksums catch it."""
    with zipfile.ZipFile(path) as archive:
        damaged = archive.testzip()
    if damaged is not None:
        raise OSError(f"the data of {damaged} fails its checksum")


def _check_format(path: Path, state: dict) -> None:
    found = state["format"]
    if found > CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} was written by a newer version of these helpers (checkpoint format {found}; this version "
            f"reads format {CHECKPOINT_FORMAT}). It was left untouched. Update the helpers to continue that run, "
            f"or, to start a new run beside it, {another_path(path)}."
        )
    if found < CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} was written by an older version of these helpers (checkpoint format {found}), which did "
            "not record enough of the run to be sure that this call continues it. It was left untouched. "
            f"To start a new run beside it, {another_path(path)}."
        )
    missing = [part for part in CHECKPOINT_PARTS if part not in state]
    if missing:
        raise CheckpointError(
            f"{path} says it has checkpoint format {found} but lacks {', '.join(missing)}: it was not written "
            f"by train_model, or was changed since. It was left untouched. To start a new run beside it, "
            f"{another_path(path)}."
        )


def another_path(path: Path) -> str:
    """The advice that keeps a checkpoint: start the new run under a new name, beside the old file."""
    return f"pass another checkpoint_path, e.g. checkpoint_path={str(free_name(path))!r}"


def free_name(path: Path) -> Path:
    """path with -2, -3, ... added to its name: the first that no file uses yet."""
    number = 2
    while (candidate := path.with_name(f"{path.stem}-{number}{path.suffix}")).exists():
        number += 1
    return candidate


# --------------------------------------------------------------------------- room to write


def check_name(path: Path) -> None:
    """A file name the file system takes, said before anything else happens."""
    length = len(path.name.encode())
    if length > MAX_NAME_BYTES:
        raise CheckpointError(f"The checkpoint's file name is {length} bytes long, more than the {MAX_NAME_BYTES} "
                              f"this helper allows (file systems take 255): choose a shorter checkpoint_path.")


def check_folder(path: Path) -> None:
    """Fail before training, not after it: the checkpoint's folder must exist, or be made, and take a file."""
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        descriptor, probe = tempfile.mkstemp(dir=folder, prefix=".write-test-")
        os.close(descriptor)
        os.unlink(probe)
    except OSError as error:
        reason = write_problem(error)
        raise CheckpointError(
            f"Checkpoints cannot be written to {folder} ({reason}). Nothing was trained. Make "
            "the folder writable, or pass a checkpoint_path in a folder you can write to.", reason
        ) from error


def check_room(path: Path, needed_bytes: int) -> None:
    """Fail before training, not after it: the disk must have room for the checkpoints."""
    folder = path.parent
    free = shutil.disk_usage(folder).free
    if free < needed_bytes:
        raise CheckpointError(
            f"The disk holding {folder} has {file_size(free)} free, but this run's checkpoints need about "
            f"{file_size(needed_bytes)} (each new file is written in full before the old one is replaced). "
            "Nothing was trained. Free some space, or pass a checkpoint_path on another disk."
        )


def room_needed(model: torch.nn.Module, optimizer: torch.optim.Optimizer, path: Path) -> int:
    """Free space a run needs: a new file beside the old one (the first file and the second beside it)."""
    existing = path.stat().st_size if path.exists() else 0
    estimate = max(checkpoint_estimate(model, optimizer), existing)
    return estimate if existing else 2 * estimate


def checkpoint_estimate(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """A generous size of one checkpoint: the weights, the best epoch's weights, the optimizer's state."""
    weights = sum(tensor.numel() * tensor.element_size() for tensor in model.state_dict().values())
    trained = sum(p.numel() * p.element_size() for group in optimizer.param_groups for p in group["params"])
    return int(1.1 * (2 * weights + optimizer_copies(optimizer) * trained)) + 2**20


def optimizer_copies(optimizer: torch.optim.Optimizer) -> int:
    """How many values per weight the optimizer keeps (momentum, Adam's two averages...): 3 when unknown."""
    settings = optimizer.defaults
    if isinstance(optimizer, torch.optim.SGD):
        return 1 if settings.get("momentum") else 0
    if isinstance(optimizer, torch.optim.RMSprop):
        return 1 + bool(settings.get("momentum")) + bool(settings.get("centered"))
    if isinstance(optimizer, (torch.optim.Adagrad, torch.optim.Rprop)):
        return 2 if isinstance(optimizer, torch.optim.Rprop) else 1
    if isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW, torch.optim.NAdam, torch.optim.RAdam,
                              torch.optim.Adamax, torch.optim.Adadelta)):
        return 2 + bool(settings.get("amsgrad"))
    return 3


def file_size(num_bytes: float) -> str:
    """A size in its natural unit: "512 bytes", "44 kB", "1.5 MB", "2.1 GB"."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:.1f} {unit}" if num_bytes < 10 * scale else f"{num_bytes / scale:,.0f} {unit}"
    return f"{num_bytes:.0f} bytes"


def write_problem(error: BaseException, folder: Path | None = None) -> str:
    """A failed write in a student's words."""
    number = getattr(error, "errno", None)
    # torch reports a short write as "[enforce fail at inline_container.cc] ... unexpected pos": a full disk.
    if number in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)) or "unexpected pos" in str(error):
        free = f", {file_size(shutil.disk_usage(folder).free)} free" if folder is not None and folder.exists() else ""
        return f"the disk is full{free}"
    if number in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "the folder is not writable"
    if number == errno.ENAMETOOLONG:
        return "the file name is too long for this file system"
    return error_text(error)
