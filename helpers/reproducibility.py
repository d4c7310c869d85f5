"""Seeds and deterministic algorithms, so that a run can be repeated."""

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
