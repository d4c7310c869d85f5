"""One training epoch of the MNIST projection-shortcut network: train_model vs the classic loop.

The network is the course's residual-blocks part 2 (17,986 parameters), trained on Fashion-MNIST
(the same 1x28x28 shape and 10 classes as MNIST; MNIST itself cannot be downloaded here) with batch
128 and Adam lr 0.01, from the same seeded initial weights.

- classic: the course's way. PIL images through ToTensor in a DataLoader with 2 workers, loss.item()
  after every step, and after the epoch a full eval pass over the training set for the training
  accuracy, then the validation pass.
- ours: helpers.train_model with the device pipeline (get_dataloaders_fashion_mnist's default): the
  training accuracy comes from the training batches, losses are fetched at logging points only.

Both run in this one process, alternately, ROUNDS times; the best (smallest) wall time of each is kept,
the one least disturbed by other work on the machine. Target: ours <= 0.5 x classic.

Run: .venv/bin/python benchmarks/bench_epoch.py
"""

from __future__ import annotations

import contextlib
import io
import json
import time

import torch
import torch.nn.functional as F
from side_by_side import alternate
from torch import nn

from helpers import (
    DatasetUnavailableError,
    ImageData,
    get_dataloaders_fashion_mnist,
    load_dataset,
    set_all_seeds,
    train_model,
)

RANDOM_SEED = 123
BATCH_SIZE = 128
LEARNING_RATE = 0.01
LOGGING_INTERVAL = 50  # batches between log lines, in both loops
NUM_WORKERS = 2  # the classic DataLoader's workers, as in the course
ROUNDS = 2
# None: torch's default (one thread per core), what a student gets. Measure on a quiet machine: on a
# busy one, threads stall each other; 1 there gives steadier (but less realistic) numbers.
TORCH_THREADS = None
TARGET = 0.5  # ours / classic wall time, at most
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"  # where Debian's dataset-fashion-mnist puts it


class ResidualBlock(nn.Module):
    """Conv 3x3 stride 2 and Conv 1x1, with a Conv 1x1 stride 2 projection shortcut."""

    def __init__(self, channels):
        super().__init__()
        c0, c1, c2 = channels
        self.block = nn.Sequential(
            nn.Conv2d(c0, c1, kernel_size=3, stride=2, padding=1),
            nn.BatchNorm2d(c1),
            nn.ReLU(),
            nn.Conv2d(c1, c2, kernel_size=1),
            nn.BatchNorm2d(c2),
        )
        self.shortcut = nn.Sequential(nn.Conv2d(c0, c2, kernel_size=1, stride=2), nn.BatchNorm2d(c2))

    def forward(self, x):
        return F.relu(self.block(x) + self.shortcut(x))


def make_model() -> nn.Module:
    """The seeded network: 1x28x28 -> 8x14x14 -> 32x7x7 -> 10 logits."""
    set_all_seeds(RANDOM_SEED)
    return nn.Sequential(
        ResidualBlock([1, 4, 8]), ResidualBlock([8, 16, 32]), nn.Flatten(), nn.Linear(7 * 7 * 32, 10)
    )


def classic_accuracy(model, loader) -> float:
    """The course's accuracy: eval mode, no gradients, one pass over the loader."""
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for features, targets in loader:
            correct += (model(features).argmax(1) == targets).sum()
            total += len(targets)
    return 100.0 * correct.float() / total


def classic_epoch(model, optimizer, train_loader, valid_loader) -> None:
    """One epoch the course's way: .item() every step, then train and validation accuracy passes."""
    model.train()
    for batch, (features, targets) in enumerate(train_loader):
        loss = F.cross_entropy(model(features), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss_value = loss.item()
        if batch % LOGGING_INTERVAL == 0:
            print(f"Batch {batch:04d}/{len(train_loader):04d} | loss {loss_value:.4f}")
    train_acc = classic_accuracy(model, train_loader)
    valid_acc = classic_accuracy(model, valid_loader)
    print(f"train {train_acc:.2f}% | valid {valid_acc:.2f}%")


def real_fashion_mnist() -> ImageData:
    """Fashion-MNIST from $DATA_DIR or data/ (torchvision's copy), else from Debian's package."""
    try:
        return load_dataset("fashion_mnist", download=False, smoke_test=False)
    except DatasetUnavailableError:
        return load_dataset("fashion_mnist", data_dir=DEBIAN_FASHION_MNIST, download=False, smoke_test=False)


def time_classic(data: ImageData) -> float:
    train_loader, valid_loader, _ = get_dataloaders_fashion_mnist(
        BATCH_SIZE, pipeline="classic", num_workers=NUM_WORKERS, seed=RANDOM_SEED, data=data)
    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    start = time.perf_counter()
    classic_epoch(model, optimizer, train_loader, valid_loader)
    return time.perf_counter() - start


def time_ours(data: ImageData) -> float:
    train_loader, valid_loader, _ = get_dataloaders_fashion_mnist(BATCH_SIZE, device="cpu", seed=RANDOM_SEED, data=data)
    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    start = time.perf_counter()
    train_model(model, 1, train_loader, valid_loader, None, optimizer, "cpu", logging_interval=LOGGING_INTERVAL)
    return time.perf_counter() - start


def quietly(function):
    """Run function with its log lines and progress bars captured (both loops log the same way)."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        return function()


def main() -> None:
    if TORCH_THREADS is not None:
        torch.set_num_threads(TORCH_THREADS)
    data = real_fashion_mnist()
    train_loader = get_dataloaders_fashion_mnist(BATCH_SIZE, device="cpu", data=data)[0]
    print(f"Data: real Fashion-MNIST (MNIST's shape), {train_loader.num_images} training images, "
          f"batch {BATCH_SIZE}; torch threads: {torch.get_num_threads()}")
    classic_times, our_times = alternate(ROUNDS, lambda: quietly(lambda: time_classic(data)),
                                         lambda: quietly(lambda: time_ours(data)),
                                         lambda seconds: f"{seconds:.1f} s")
    classic, ours = min(classic_times), min(our_times)
    ratio = ours / classic
    print(f"One epoch (best of {ROUNDS}): classic {classic:.1f} s, ours {ours:.1f} s, "
          f"ours/classic {ratio:.2f}x (target <= {TARGET}x)")
    print("RESULT " + json.dumps({
        "benchmark": "epoch: MNIST projection-shortcut net, 1 epoch (wall time)",
        "classic": f"{classic:.1f} s", "ours": f"{ours:.1f} s", "ratio": f"{ratio:.2f}x",
        "target": f"<= {TARGET}x",
    }))


if __name__ == "__main__":
    main()
