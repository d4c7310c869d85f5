"""A training run for test_training, in its own process: it can die by SIGKILL part-way through.

usage: python tests/resume_job.py CHECKPOINT RESULT {none,mid-epoch,mid-save} [DEVICE]

On CUDA it first calls set_deterministic(), before anything touches the GPU, as a notebook would.
"""

from __future__ import annotations

import io
import os
import signal
import sys
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from helpers import DeviceLoader, set_all_seeds, set_deterministic, train_model  # noqa: E402
from tests.support import tiny_loaders, tiny_model  # noqa: E402

NUM_EPOCHS = 3


def tiny_loaders_on(device: str, **options) -> tuple:
    """tests.support's tiny loaders (options as there), with their images on the given device."""
    return tuple(
        DeviceLoader(loader.images, loader.labels, loader.batch_size, loader.recipe, loader.classes,
                     train=loader.train, shuffle=loader.shuffle, drop_last=loader.drop_last,
                     seed=0 if loader.generator is not None else None, device=device)
        for loader in tiny_loaders(**options)
    )


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def kill_during_epoch_two(loader) -> None:
    """Die three batches into epoch 2 (after the preflight's one call and epoch 1's batches)."""
    prepare, calls = loader.prepare, [0]

    def counting_prepare(images, *args):
        calls[0] += 1
        if calls[0] == 1 + len(loader) + 3:
            die()
        return prepare(images, *args)

    loader.prepare = counting_prepare


def kill_during_second_save() -> None:
    """Write half of the second checkpoint, then die: as a crash or power cut would."""
    save, calls = torch.save, [0]

    def half_save(obj, file, *args, **kwargs):
        calls[0] += 1
        if calls[0] < 2:
            return save(obj, file, *args, **kwargs)
        buffer = io.BytesIO()
        save(obj, buffer)
        file.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        file.flush()
        os.fsync(file.fileno())
        die()

    torch.save = half_save


def main(checkpoint: str, result: str, kill: str, device: str = "cpu") -> None:
    torch.set_num_threads(1)
    if device.startswith("cuda"):
        set_deterministic()
    set_all_seeds(0)
    train_loader, valid_loader, test_loader = tiny_loaders_on(device)
    model = tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    if kill == "mid-epoch":
        kill_during_epoch_two(train_loader)
    elif kill == "mid-save":
        kill_during_second_save()
    history = train_model(model, NUM_EPOCHS, train_loader, valid_loader, test_loader, optimizer, device,
                          scheduler=scheduler, checkpoint_path=checkpoint)
    torch.save({"model": model.state_dict(), "history": asdict(history)}, result)


if __name__ == "__main__":
    main(*sys.argv[1:5])
