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
import re
import shutil
import tempfile
import time
import zipfile
from pathlib import Path

import torch

from .processes import machine_tag, process_alive

# Version 2 added the full run signature, 3 the images per epoch, the augmentation and the model's source.
# A file of another version is refused, never rewritten.
CHECKPOINT_FORMAT = 3
CHECKPOINT_PARTS = ("signature", "sources", "model", "optimizer", "scheduler", "scaler", "history", "best_model",
                    "rng", "test_data")
MAX_NAME_BYTES = 250  # most file systems allow 255; the lock file adds ".lock"
# Errors of the disk or the network drive, not of the file's content.
DRIVE_ERRORS = {getattr(errno, name) for name in ("EIO", "ENXIO", "ENODEV", "ESTALE", "ENOTCONN", "ETIMEDOUT",
                                                  "EHOSTDOWN", "ENOMEDIUM") if hasattr(errno, name)}
FILE_SIZE_LIMITED = "larger than this process may write"


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
    """Write to a temporary file of this write's own, then rename: the previous file stays intact until then.

    The temporary file's name carries this machine and process, so that a leftover is removed only once the
    process that wrote it has ended (abandoned_partials), never while its write is still going on.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_atomically(state, path, prefix=f"{partial_prefix(path)}{machine_tag()}-{os.getpid()}-", suffix=".partial")


def save_atomically(obj, path: Path, prefix: str, suffix: str) -> None:
    """torch.save to a temporary file (prefix..suffix, beside path) then rename it over path, so that a reader
    never sees half a file; the temporary file is removed when the write fails or is interrupted.

    The file gets the permissions a plain open() would give it (0o666 less the umask), not mkstemp's private
    0o600: a checkpoint in a shared folder is readable by whom the folder's owner lets read files there.
    """
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=suffix)
    try:
        os.chmod(temporary, 0o666 & ~current_umask())
        with os.fdopen(descriptor, "wb") as file:
            torch.save(obj, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)  # atomic on POSIX and Windows
    except BaseException:  # a full disk, or Ctrl-C: never leave half a file behind
        Path(temporary).unlink(missing_ok=True)
        raise


def current_umask() -> int:
    """The process's umask, read without changing it where Linux shows it (os.umask would, for every thread)."""
    try:
        with open("/proc/self/status") as status:
            return int(next(line for line in status if line.startswith("Umask:")).split()[1], 8)
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o022)
        os.umask(mask)
        return mask


def partial_prefix(path: Path) -> str:
    """How the temporary files of one checkpoint start: short, whatever the length of its name."""
    return f".{hashlib.sha1(path.name.encode()).hexdigest()[:12]}-"


def leftover_partials(path: Path) -> list[Path]:
    """Temporary files of this checkpoint, whether a write is still going on in them or not."""
    return sorted(path.parent.glob(f"{partial_prefix(path)}*.partial"))


def abandoned_partials(path: Path, older_than_s: float) -> list[Path]:
    """The temporary files of this checkpoint that no process is writing any more.

    A file of this machine is abandoned when its process has ended (or is this one, which writes nothing
    now); a file of another machine, or with a name of an older version, when it is older than older_than_s.
    """
    named = re.compile(re.escape(partial_prefix(path)) + r"([0-9a-f]{8})-(\d+)-")
    abandoned = []
    for partial in leftover_partials(path):
        match, alive = named.match(partial.name), None  # None: nobody can say, so the file's age decides
        if match and match[1] == machine_tag():
            alive = int(match[2]) != os.getpid() and process_alive(int(match[2]))
        if alive is False or (alive is None and _age_s(partial) > older_than_s):
            abandoned.append(partial)
    return abandoned


def _age_s(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0  # gone already: nothing to remove


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint saved by train_model in this format, or raise CheckpointError saying what to do."""
    path = Path(path)
    try:
        _check_checksums(path)
        # weights_only: a checkpoint holds tensors and plain values, so nothing runs on load.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except IsADirectoryError as error:
        raise CheckpointError(f"{path} is a folder, not a checkpoint file. It was left untouched. To train beside "
                              f"it, {another_path(path)}.") from error
    except PermissionError as error:
        raise CheckpointError(
            f"The checkpoint {path} cannot be read: this user account has no permission to read it (it is "
            f"{_owner_and_mode(path)}). Nothing is wrong with the file, and it was left untouched. Ask its owner to "
            f"make it readable to you (`chmod a+r {path}`), then run this cell again."
        ) from error
    except OSError as error:
        if error.errno not in DRIVE_ERRORS:  # the checksum test's, or a seek past the end: the content is damaged
            raise _damaged(path, error) from error
        raise CheckpointError(
            f"The checkpoint {path} cannot be read ({error_text(error)}): the disk or network drive did not give "
            "its content. It was left untouched. Check that the drive is there (on Colab, that Google Drive is "
            "mounted), then run this cell again."
        ) from error
    except Exception as error:
        raise _damaged(path, error) from error
    if not isinstance(state, dict) or not isinstance(state.get("format"), int):
        raise CheckpointError(f"{path} is not a checkpoint written by train_model. It was left untouched. To "
                              f"train beside it, {another_path(path)}.")
    _check_format(path, state)
    return state


def _damaged(path: Path, error: BaseException) -> CheckpointError:
    return CheckpointError(
        f"The checkpoint {path} cannot be read ({error_text(error)}); it may have been cut short or damaged. "
        f"It was left untouched. To start a new run beside it, {another_path(path)}."
    )


def _owner_and_mode(path: Path) -> str:
    """"owned by user 1001, mode rw-------" (numbers where no user name is known)."""
    try:
        status = path.stat()
    except OSError:
        return "in a folder this account may not look into"
    try:
        import pwd  # Unix only

        owner = pwd.getpwuid(status.st_uid).pw_name
    except (ImportError, KeyError):
        owner = str(status.st_uid)
    mode = "".join(letter if status.st_mode & bit else "-" for letter, bit in zip(
        "rwxrwxrwx", (0o400, 0o200, 0o100, 0o040, 0o020, 0o010, 0o004, 0o002, 0o001)))
    return f"owned by user {owner}, mode {mode}"


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


def file_size_limit() -> int | None:
    """The largest file this process may write (ulimit -f), in bytes; None when there is no limit."""
    try:
        import resource  # Unix only
    except ImportError:
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else soft


def write_fix(reason: str) -> str:
    """The one thing to do about a failed write, for its reason as write_problem says it."""
    if FILE_SIZE_LIMITED in reason:
        return ("Raise the limit (`ulimit -f unlimited` in the shell, then restart Jupyter from it), or ask the "
                "administrator who set it")
    if reason.startswith("the disk is full"):
        return "Free some space, or pass a checkpoint_path on another disk"
    if reason == "the folder is not writable":
        return "Make the folder writable, or pass a checkpoint_path in a folder you can write to"
    return "Free some space or make the folder writable"


def write_problem(error: BaseException, folder: Path | None = None) -> str:
    """A failed write in a student's words."""
    number = getattr(error, "errno", None)
    free = shutil.disk_usage(folder).free if folder is not None and folder.exists() else None
    limit = file_size_limit()
    # torch reports any short write as "[enforce fail at inline_container.cc] ... unexpected pos", whether the disk
    # is full or the file reached the process's size limit (ulimit -f), which a full disk cannot explain when it
    # leaves more room than that.
    short_write = "unexpected pos" in str(error)
    if limit is not None and (number == errno.EFBIG or (short_write and (free is None or free > limit))):
        return (f"the file would be {FILE_SIZE_LIMITED}: its file-size limit is {file_size(limit)} (set by "
                "`ulimit -f` in the shell that started it)")
    if number == errno.EFBIG:
        return "the file is larger than this file system takes (FAT32, for one, stops at 4 GB)"
    if number in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)) or short_write:
        return "the disk is full" + (f", {file_size(free)} free" if free is not None else "")
    if number in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "the folder is not writable"
    if number == errno.ENAMETOOLONG:
        return "the file name is too long for this file system"
    return error_text(error)
