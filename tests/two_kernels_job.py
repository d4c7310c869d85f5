"""A second kernel, for the tests of two kernels on one checkpoint, in its own process.

usage: python tests/two_kernels_job.py hold CHECKPOINT HEARTBEAT_S  take the lock, say "locked", then wait
       python tests/two_kernels_job.py save CHECKPOINT K   60 times: save a checkpoint full of K, read it back
       python tests/two_kernels_job.py save-slowly CHECKPOINT  write half a checkpoint, say "writing", wait for a
                                                               line on stdin, then finish the write
       python tests/two_kernels_job.py train CHECKPOINT HOST   train the tiny run as a kernel on machine HOST with a
                                                               fast heartbeat; in epoch 2 say "in epoch 2" and wait
                                                               for a line on stdin
"""

from __future__ import annotations

import io
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import helpers.checkpoint_lock  # noqa: E402
from helpers.checkpoint import save_checkpoint  # noqa: E402
from helpers.checkpoint_lock import CheckpointLock  # noqa: E402

FAST_HEARTBEAT_S = 0.05


def hold(checkpoint: Path, heartbeat_s: float) -> None:
    helpers.checkpoint_lock.HEARTBEAT_S = heartbeat_s
    with CheckpointLock(checkpoint):
        print("locked", flush=True)
        time.sleep(600)  # until the test kills this process


def save_slowly(checkpoint: Path) -> None:
    """A save caught half-way, as a kernel paused (or slow, on a network drive) in the middle of a write is."""
    real_save = torch.save

    def half_then_wait(obj, file, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(obj, buffer)
        data = buffer.getvalue()
        file.write(data[: len(data) // 2])
        file.flush()
        print("writing", flush=True)
        sys.stdin.readline()
        file.write(data[len(data) // 2:])

    torch.save = half_then_wait
    save_checkpoint({"w": torch.full((1000,), 7)}, checkpoint)


def train_as(checkpoint: Path, host: str) -> None:
    """The tiny run of tests/support.py, as a kernel on another machine that is paused during epoch 2."""
    from tests.support import run, tiny_loaders

    socket.gethostname = lambda: host
    helpers.checkpoint_lock.HEARTBEAT_S = FAST_HEARTBEAT_S
    loaders = tiny_loaders()
    prepare, calls = loaders[0].prepare, [0]

    def wait_in_epoch_two(images, *args):
        calls[0] += 1
        if calls[0] == 1 + len(loaders[0]) + 1:  # the preflight's call, epoch 1, then the first batch of epoch 2
            print("in epoch 2", flush=True)
            sys.stdin.readline()
        return prepare(images, *args)

    loaders[0].prepare = wait_in_epoch_two
    run(num_epochs=3, loaders=loaders, checkpoint_path=checkpoint)


def save_and_read(checkpoint: Path, value: int) -> None:
    for _ in range(60):
        save_checkpoint({"w": torch.full((200_000,), value)}, checkpoint)
        saved = torch.load(checkpoint, weights_only=True)["w"]  # whichever writer's file it is, it is whole
        assert saved.shape == (200_000,) and bool((saved == saved[0]).all()), "a checkpoint mixed from two writes"


if __name__ == "__main__":
    task, path = sys.argv[1], Path(sys.argv[2])
    if task == "hold":
        hold(path, float(sys.argv[3]) if len(sys.argv) > 3 else helpers.checkpoint_lock.HEARTBEAT_S)
    elif task == "save-slowly":
        save_slowly(path)
    elif task == "train":
        train_as(path, sys.argv[3])
    else:
        save_and_read(path, int(sys.argv[3]))
