"""Checkpoints: their layout, the run signature they are checked by, atomic writes, and random states.

A checkpoint belongs to one run. "The same run" means the same run signature (see run_signature):
the same model (every layer's type and settings, every tensor's shape, the code of the model's own
classes), the same optimizer and scheduler settings, the same loss, and the same training and
validation data (dataset, content, recipe, batch size), in a file of this CHECKPOINT_FORMAT. The
number of epochs is not part of it: the same run may go on for longer. Nor are the device, the
precision and the memory layout: a run saved on one machine resumes on another.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import inspect
import io
import os
import random
import shutil
import sys
import tempfile
import textwrap
import tokenize
from pathlib import Path

import numpy as np
import torch

from .loaders import data_signature
from .scheduling import scheduler_settings

# Version 2 added the full run signature, 3 the images per epoch and the augmentation in the history.
# A file of another version is refused, never rewritten.
CHECKPOINT_FORMAT = 3
CHECKPOINT_PARTS = ("signature", "model", "optimizer", "scheduler", "scaler", "history", "best_model", "rng",
                    "test_data")

# Optimizer settings that choose an implementation, not the arithmetic: they may change between sessions.
_IMPLEMENTATION = {"params", "initial_lr", "foreach", "fused", "differentiable", "capturable"}
_MISSING = object()


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used or written: unreadable, another run's, or no room to write it."""


# --------------------------------------------------------------------------- files


def checkpoint_contents(**parts) -> dict:
    """A checkpoint's dictionary in this format: the format number and every part."""
    assert set(parts) == set(CHECKPOINT_PARTS), sorted(set(parts) ^ set(CHECKPOINT_PARTS))
    return {"format": CHECKPOINT_FORMAT, **parts}


def save_checkpoint(state: dict, path: str | os.PathLike) -> None:
    """Write to a temporary file, then rename: a failure mid-write leaves the previous file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = partial_path(path)
    try:
        with open(temporary, "wb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)  # atomic on POSIX and Windows
    except BaseException:  # a full disk, or Ctrl-C: never leave half a file behind
        temporary.unlink(missing_ok=True)
        raise


def partial_path(path: Path) -> Path:
    """Where save_checkpoint writes before the rename."""
    return path.with_name(path.name + ".partial")


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint saved by train_model in this format, or raise CheckpointError saying what to do."""
    path = Path(path)
    try:
        # weights_only: a checkpoint holds tensors and plain values, so nothing runs on load.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(
            f"The checkpoint {path} cannot be read ({type(error).__name__}); it may have been cut short "
            f"or damaged. It was left untouched. To start a new run beside it, {another_path(path)}."
        ) from error
    if not isinstance(state, dict) or not isinstance(state.get("format"), int):
        raise CheckpointError(f"{path} is not a checkpoint written by train_model. It was left untouched. To "
                              f"train beside it, {another_path(path)}.")
    _check_format(path, state)
    return state


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


def check_writable(path: Path, needed_bytes: int) -> None:
    """Fail before training, not after it: the folder must take a file, and have room for a checkpoint."""
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        descriptor, probe = tempfile.mkstemp(dir=folder, prefix=".write-test-")
        os.close(descriptor)
        os.unlink(probe)
    except OSError as error:
        raise CheckpointError(
            f"Checkpoints cannot be written to {folder} ({write_problem(error)}). Nothing was trained. Make "
            "the folder writable, or pass a checkpoint_path in a folder you can write to."
        ) from error
    partial_path(path).unlink(missing_ok=True)  # left by a crash mid-write: never a valid checkpoint
    free = shutil.disk_usage(folder).free
    if free < needed_bytes:
        raise CheckpointError(
            f"The disk holding {folder} has {free / 1e6:,.0f} MB free, but a checkpoint of this run needs "
            f"about {needed_bytes / 1e6:,.0f} MB. Nothing was trained. Free some space, or pass a "
            "checkpoint_path on another disk."
        )


def checkpoint_size(model: torch.nn.Module, path: Path) -> int:
    """Room for one more checkpoint: the current file's size, or a generous estimate before the first."""
    tensors = sum(tensor.numel() * tensor.element_size() for tensor in model.state_dict().values())
    # The weights, the best epoch's weights, and up to two optimizer values per weight (Adam).
    estimate = 4 * tensors
    return max(estimate, path.stat().st_size) if path.exists() else estimate


def write_problem(error: BaseException) -> str:
    """A failed write in a student's words."""
    if getattr(error, "errno", None) in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):  # no quotas on Windows
        return "the disk is full"
    if getattr(error, "errno", None) in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "the folder is not writable"
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'no details'}"


# --------------------------------------------------------------------------- the run signature


def run_signature(model, optimizer, scheduler, train_loader, valid_loader, loss_fn) -> dict:
    """What makes a run this run, as plain values; taken before the run's first step."""
    return {
        "model": _model_description(model),
        "optimizer": _optimizer_description(optimizer, model),
        "scheduler": scheduler_settings(scheduler),
        "loss": _callable_description(loss_fn),
        "data": {"training": data_signature(train_loader), "validation": data_signature(valid_loader),
                 "batches_per_epoch": len(train_loader)},
    }


def describe_differences(saved: dict, current: dict) -> list[str]:
    """One line per value that differs between two signatures, each shown in full."""
    saved, current = _flatten(saved), _flatten(current)
    keys = list(current) + [key for key in saved if key not in current]
    return [f"  {key}: checkpoint has {_show(saved.get(key, _MISSING))}, this run has "
            f"{_show(current.get(key, _MISSING))}"
            for key in keys if saved.get(key, _MISSING) != current.get(key, _MISSING)]


def _flatten(value, prefix: str = "") -> dict:
    """{'model / layers / features.2': 'ReLU()', ...}: every leaf of nested dicts and lists of dicts."""
    if isinstance(value, dict) and value:
        items = value.items()
    elif isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        items = enumerate(value)
    else:
        return {prefix: value}
    flat = {}
    for key, item in items:
        flat.update(_flatten(item, f"{prefix} / {key}" if prefix else str(key)))
    return flat


def _show(value) -> str:
    return "nothing" if value is _MISSING else repr(value)


def _model_description(model: torch.nn.Module) -> dict:
    return {
        "class": type(model).__qualname__,
        "layers": {name or "(the model)": _layer_description(module) for name, module in model.named_modules()},
        "parameters": {name: list(tensor.shape) for name, tensor in model.state_dict().items()},
        "code": {cls.__qualname__: _source_fingerprint(cls) for cls in _own_classes(model)},
    }


def _layer_description(module: torch.nn.Module) -> str:
    """Type and settings: 'Dropout(p=0.2, inplace=False)'; for your own classes, their plain attributes too."""
    text = f"{type(module).__name__}({module.extra_repr()})"
    if not _is_library(type(module)):
        settings = {key: value for key, value in vars(module).items()
                    if not key.startswith("_") and key != "training" and _is_plain(value)}
        text += f" {settings}" if settings else ""
    return text


def _own_classes(model: torch.nn.Module) -> list[type]:
    """The model's classes that are not torch's (a notebook's ResidualBlock, say), and their bases."""
    classes = {cls for module in model.modules() for cls in type(module).__mro__ if not _is_library(cls)}
    return sorted(classes, key=lambda cls: cls.__qualname__)


def _is_library(function_or_class) -> bool:
    """True for torch's, torchvision's and Python's own code: a new release must not make another run."""
    package = (getattr(function_or_class, "__module__", None) or "builtins").split(".")[0]
    return package in ("torch", "torchvision") or package in sys.stdlib_module_names


def _source_fingerprint(obj) -> str:
    """A short hash of the code of a function or of a class's methods, comments and layout left out."""
    functions = [("", obj)] if inspect.isfunction(obj) else sorted(
        (name, getattr(member, "__func__", member)) for name, member in vars(obj).items()
        if inspect.isfunction(getattr(member, "__func__", member)))
    digest = hashlib.sha256()
    for name, function in functions:
        digest.update(f"{name}\n{_code_text(function)}\n".encode())
    return f"code {digest.hexdigest()[:16]}"


def _code_text(function) -> str:
    try:
        source = textwrap.dedent(inspect.getsource(function))
        tokens = tokenize.generate_tokens(io.StringIO(source).readline)
        skipped = (tokenize.COMMENT, tokenize.NL, tokenize.ENDMARKER)
        return " ".join(tokenize.tok_name[token.type] if token.type in (tokenize.INDENT, tokenize.DEDENT)
                        else token.string for token in tokens if token.type not in skipped)
    except (OSError, TypeError, tokenize.TokenError, IndentationError):
        return "(source not available)"


def _optimizer_description(optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> dict:
    names = {id(parameter): name for name, parameter in model.named_parameters()}
    groups = []
    for group in optimizer.param_groups:
        settings = {key: _plain(value) for key, value in group.items()
                    if key not in _IMPLEMENTATION and _is_plain(value)}
        settings["parameters"] = [names.get(id(parameter), "(not the model's)") for parameter in group["params"]]
        groups.append(settings)
    return {"type": type(optimizer).__name__, "groups": groups}


def _callable_description(function) -> str:
    """'torch.nn.functional.cross_entropy', "CrossEntropyLoss {'label_smoothing': 0.1, ...}", a partial..."""
    if isinstance(function, torch.nn.Module):
        settings = {key: value for key, value in sorted(vars(function).items())
                    if not key.startswith("_") and key != "training" and _is_plain(value)}
        return f"{type(function).__name__} {settings}"
    if isinstance(function, functools.partial):
        return (f"partial({_callable_description(function.func)}, args={_plain(function.args)}, "
                f"keywords={ {key: _plain(value) for key, value in sorted(function.keywords.items())} })")
    name = f"{getattr(function, '__module__', None)}.{getattr(function, '__qualname__', type(function).__name__)}"
    if _is_library(function) or not inspect.isfunction(function):
        return name
    return f"{name} {_source_fingerprint(function)}"


def _is_plain(value) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_is_plain(item) for item in value)
    return value is None or isinstance(value, (bool, int, float, str))


def _plain(value):
    return [_plain(item) for item in value] if isinstance(value, (list, tuple)) else value


# --------------------------------------------------------------------------- random states


def capture_rng_states(loaders) -> dict:
    """Every random state the next epoch depends on: Python, NumPy, torch (CPU, CUDA) and the loaders."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (kind, keys.tolist(), position, has_gauss, cached),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "loaders": [_loader_generator(loader).get_state() if _loader_generator(loader) is not None else None
                    for loader in loaders],
    }


def restore_rng_states(states: dict, loaders) -> None:
    """Put back the random states captured by capture_rng_states.

    The GPUs' states come back only on a machine with as many GPUs: a run saved on the CPU (or on
    another machine) resumes on a GPU, from a fresh GPU random state.
    """
    random.setstate(_as_tuples(states["python"]))
    kind, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])
    for loader, state in zip(loaders, states["loaders"]):
        generator = _loader_generator(loader)
        if generator is not None and state is not None:
            generator.set_state(state)


def _loader_generator(loader) -> torch.Generator | None:
    return getattr(loader, "generator", None)


def _as_tuples(value):
    return tuple(_as_tuples(item) for item in value) if isinstance(value, (list, tuple)) else value
