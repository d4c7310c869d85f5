"""Seeds, deterministic algorithms and saved random states, so that a run can be repeated and resumed."""

from __future__ import annotations

import os
import random
import warnings

import numpy as np
import torch

_CUBLAS_SETTING = ":4096:8"


def set_all_seeds(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_deterministic(allow_tf32: bool = True) -> None:
    """Ask for deterministic algorithms on CPU and CUDA, warning (not failing) where none exists.

    TF32 is a separate, explicit choice: it changes precision, not run-to-run determinism.
    """
    if os.environ.get("CUBLAS_WORKSPACE_CONFIG") is None:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = _CUBLAS_SETTING
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            warnings.warn(
                "CUDA was already in use, so cuBLAS may not pick up CUBLAS_WORKSPACE_CONFIG. "
                "Restart the kernel and call set_deterministic() before any GPU work.",
                stacklevel=2,
            )
    # warn_only: ops without a deterministic kernel (AdaptiveAvgPool2d's CUDA backward) warn.
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    torch.backends.cudnn.allow_tf32 = allow_tf32


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
