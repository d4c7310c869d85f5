"""Checkpoints that survive crashes: atomic writes, clear errors, and every random state a run needs."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used: unreadable, or written by a different run."""


def save_checkpoint(state: dict, path: str | os.PathLike) -> None:
    """Write to a temporary file, then rename: a crash mid-write leaves the previous file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".partial")
    with open(temporary, "wb") as file:
        torch.save(state, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)  # atomic on POSIX and Windows


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint saved by save_checkpoint, or raise CheckpointError saying what to do."""
    path = Path(path)
    try:
        # weights_only: a checkpoint holds tensors and plain values, so nothing runs on load.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(
            f"The checkpoint {path} cannot be read ({type(error).__name__}); it may have been cut short "
            "or damaged. It was left untouched. Move or delete it to train from scratch, or pass "
            "another checkpoint_path."
        ) from error
    if not isinstance(state, dict) or "format" not in state:
        raise CheckpointError(
            f"{path} is not a checkpoint written by train_model. It was left untouched; pass another "
            "checkpoint_path."
        )
    return state


def describe_differences(saved: dict, current: dict) -> list[str]:
    """Human-readable lines for each part of a run signature that differs."""
    lines = []
    for key in sorted(set(saved) | set(current)):
        if saved.get(key) != current.get(key):
            lines.append(f"  {key}: checkpoint has {_brief(saved.get(key))}, this run has {_brief(current.get(key))}")
    return lines


def _brief(value) -> str:
    text = repr(value)
    return text if len(text) <= 160 else text[:157] + "..."


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
    """Put back the random states captured by capture_rng_states."""
    random.setstate(_as_tuples(states["python"]))
    kind, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    for loader, state in zip(loaders, states["loaders"]):
        generator = _loader_generator(loader)
        if generator is not None and state is not None:
            generator.set_state(state)


def _loader_generator(loader) -> torch.Generator | None:
    return getattr(loader, "generator", None)


def _as_tuples(value):
    return tuple(_as_tuples(item) for item in value) if isinstance(value, (list, tuple)) else value
