"""Training-loader throughput for CIFAR-10 at 70 -> 64: the device pipeline vs the classic PIL pipeline.

- classic: get_dataloaders_cifar10(pipeline="classic", num_workers=2), the course's way: every image,
  every epoch, goes through PIL Resize((70, 70)), RandomCrop(64), ToTensor and Normalize in 2 workers
  (started afresh each epoch, as in the course).
- ours: get_dataloaders_cifar10(device="cpu"), the default: the images are resized once when the
  loaders are built (a one-time set-up cost, reported apart), then each batch is cropped and
  normalised as a whole.

Both iterate the training loader in this one process, alternately, ROUNDS times; the best throughput
of each is kept, the one least disturbed by other work on the machine. Target: ours >= 10 x classic.
Also reported: the peak memory of building the loaders for the full CIFAR-10 (60,000 images) at 70x70.

CIFAR-10 is used when it is already on disk (data/ or $DATA_DIR). Otherwise, as on a machine without
internet, both pipelines read the same synthetic uint8 images of CIFAR-10's shape and count: random
pixels cost PIL and torch exactly as much as photographs do, since nothing here decodes JPEG.

Run: .venv/bin/python benchmarks/bench_data.py
"""

from __future__ import annotations

import json
import resource
import time

import torch
from side_by_side import alternate

from helpers import DatasetUnavailableError, ImageData, ImageRecipe, get_dataloaders_cifar10, load_dataset
from helpers.datasets import DATASETS

BATCH_SIZE = 256
RECIPE = ImageRecipe(resize=70, crop=64, mean=(0.5,) * 3, std=(0.5,) * 3)
NUM_WORKERS = 2  # the classic DataLoader's workers, as in the course
NUM_TRAIN, NUM_TEST = 50_000, 10_000  # CIFAR-10's sizes; 10% of the training images go to validation
ROUNDS = 3
MIN_SECONDS = 3.0  # each measurement runs whole epochs until at least this long
# None: torch's default (one thread per core), what a student gets. Measure on a quiet machine: on a
# busy one, threads stall each other; 1 there gives steadier (but less realistic) numbers.
TORCH_THREADS = None
TARGET = 10.0  # ours / classic images per second, at least
MB = 1e6


def cifar10_or_synthetic() -> ImageData:
    """CIFAR-10 if it is on disk, else seeded random uint8 images of its shape, classes and size."""
    try:
        return load_dataset("cifar10", download=False, smoke_test=False)
    except DatasetUnavailableError:
        generator = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (NUM_TRAIN + NUM_TEST, 3, 32, 32), dtype=torch.uint8, generator=generator)
        labels = torch.randint(0, 10, (NUM_TRAIN + NUM_TEST,), generator=generator)
        classes = DATASETS["cifar10"].classes
        return ImageData(images[:NUM_TRAIN], labels[:NUM_TRAIN], images[NUM_TRAIN:], labels[NUM_TRAIN:],
                         classes, synthetic=True)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB


def throughput(loader) -> float:
    """Images per second over whole epochs of a training loader, for at least MIN_SECONDS."""
    count = 0
    start = time.perf_counter()
    while count == 0 or time.perf_counter() - start < MIN_SECONDS:
        for _images, labels in loader:
            count += len(labels)
    return count / (time.perf_counter() - start)


def build_ours(data):
    """The device pipeline's loaders, their build time (resize once) and the peak memory after it."""
    start = time.perf_counter()
    loaders = get_dataloaders_cifar10(BATCH_SIZE, recipe=RECIPE, device="cpu", data=data)
    return loaders, time.perf_counter() - start, peak_rss_mb()


def build_classic(data):
    return get_dataloaders_cifar10(BATCH_SIZE, recipe=RECIPE, pipeline="classic", num_workers=NUM_WORKERS,
                                   device="cpu", data=data)


def report_memory(data, loaders, baseline_mb, peak_mb) -> dict:
    """Print the memory of the full data set's loaders and return it as a RESULT row."""
    count = len(data.train_labels) + len(data.test_labels)
    raw_mb = (data.train_images.nbytes + data.test_images.nbytes) / MB
    resized_mb = sum(loader.images.nbytes for loader in loaders) / MB
    print(f"Memory for all {count:,} images: uint8 tensors {raw_mb:.0f} MB at 32x32, {resized_mb:.0f} MB "
          f"at 70x70 (what the loaders hold). Peak RSS {peak_mb:.0f} MB ({peak_mb - baseline_mb:.0f} MB above "
          f"the {baseline_mb:.0f} MB of Python, torch and the helpers).")
    return {
        "benchmark": f"memory: loaders for all {count:,} CIFAR-10 images at 70x70",
        "classic": "-", "ours": f"{resized_mb:.0f} MB of uint8 images, process peak {peak_mb / 1000:.1f} GB",
        "ratio": "-", "target": "within Colab's ~12 GB",
    }


def compare(train_classic, train_ours, setup_s: float) -> dict:
    """Alternate the two training loaders ROUNDS times; print and return the best of each."""
    classic_rates, our_rates = alternate(ROUNDS, lambda: throughput(train_classic), lambda: throughput(train_ours),
                                         lambda rate: f"{rate:,.0f} images/s")
    classic, ours = max(classic_rates), max(our_rates)
    ratio = ours / classic
    print(f"Training loader (best of {ROUNDS}): classic {classic:,.0f} images/s, ours {ours:,.0f} images/s, "
          f"ours/classic {ratio:.1f}x (target >= {TARGET:.0f}x)")
    return {
        "benchmark": "data: CIFAR-10 70 -> 64 training loader (images/s)",
        "classic": f"{classic:,.0f}/s", "ours": f"{ours:,.0f}/s (+ {setup_s:.0f} s once)",
        "ratio": f"{ratio:.1f}x", "target": f">= {TARGET:.0f}x",
    }


def main() -> None:
    if TORCH_THREADS is not None:
        torch.set_num_threads(TORCH_THREADS)
    baseline_mb = peak_rss_mb()
    data = cifar10_or_synthetic()
    ours_loaders, setup_s, peak_mb = build_ours(data)  # first: the peak is the full data set's
    source = "synthetic uint8 images of CIFAR-10's shape" if data.synthetic else "real CIFAR-10"
    print(f"Data: {source}; {ours_loaders[0].num_images:,} training images, batch {BATCH_SIZE}, "
          f"70 -> 64; torch threads: {torch.get_num_threads()}")
    print(f"Set-up of ours (split, resize all {len(data.train_labels) + len(data.test_labels):,} images once): "
          f"{setup_s:.1f} s")
    memory = report_memory(data, ours_loaders, baseline_mb, peak_mb)
    speed = compare(build_classic(data)[0], ours_loaders[0], setup_s)
    for row in (speed, memory):
        print("RESULT " + json.dumps(row))


if __name__ == "__main__":
    main()
