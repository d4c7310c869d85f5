"""A second kernel, for the tests of two kernels on one checkpoint, in its own process.

usage: python tests/two_kernels_job.py hold CHECKPOINT     take the checkpoint's lock, say "locked", then wait
       python tests/two_kernels_job.py save CHECKPOINT K   60 times: save a checkpoint full of K, read it back
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from helpers.checkpoint import save_checkpoint  # noqa: E402
from helpers.checkpoint_lock import CheckpointLock  # noqa: E402


def hold(checkpoint: Path) -> None:
    with CheckpointLock(checkpoint):
        print("locked", flush=True)
        time.sleep(600)  # until the test kills this process


def save_and_read(checkpoint: Path, value: int) -> None:
    for _ in range(60):
        save_checkpoint({"w": torch.full((200_000,), value)}, checkpoint)
        saved = torch.load(checkpoint, weights_only=True)["w"]  # whichever writer's file it is, it is whole
        assert saved.shape == (200_000,) and bool((saved == saved[0]).all()), "a checkpoint mixed from two writes"


if __name__ == "__main__":
    task, path = sys.argv[1], Path(sys.argv[2])
    hold(path) if task == "hold" else save_and_read(path, int(sys.argv[3]))
