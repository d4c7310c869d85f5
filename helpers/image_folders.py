"""Datasets kept as image folders: train/<class>/*.jpg and test/<class>/*.png, decoded once and cached.

A folder such as a JPEG copy of CIFAR-10 holds one sub-folder per split and one per class within it,
named as the dataset's classes (a "/" in a class name becomes "_", so Fashion-MNIST's "T-shirt/top"
is the folder T-shirt_top). Files are read in class order, then by file name in natural order
(2.jpg before 10.jpg), so every load gives the same tensors. That is class by class, as torchvision's
ImageFolder lists them, where torchvision's own CIFAR-10 comes shuffled: take a random subset (torch.randperm),
never the first N images, or all N may be aeroplanes. JPEG and PNG files count, whatever the
case of their extension; dotfiles and other files are left alone.

Decoding tens of thousands of small files takes seconds, so the decoded tensors are cached in the
folder itself (<folder>/.decoded/<key>.pt, the key a hash of every file's path, size and modification time):
the second load reads one file. A changed, added or removed image changes the key, and the images
are decoded again.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

from .checkpoint import save_atomically

SPLITS = ("train", "test")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
CACHE_FOLDER = ".decoded"
CACHE_FORMAT = 1  # part of the key: a change in what the cache holds makes older caches stale
MODES = {1: "L", 3: "RGB"}  # the PIL mode an image must have, by the dataset's number of channels
DIGITS = re.compile(r"(\d+)")
CHUNK_SIZE = 512  # images per task of the thread pool: one task per image would cost more than a decode


class ImageFolderError(ValueError):
    """An image folder that cannot be read as the dataset it is meant to hold."""


class ImageFile(NamedTuple):
    """One image of an image folder, as listed: plain strings and numbers, since CIFAR-10 has 60,000."""

    path: str  # as the folder was given, joined with split/class/name
    relative: str  # split/class/name: what the cache key hashes, wherever the folder is
    label: int
    size: int
    mtime_ns: int


def class_folder_name(class_name: str) -> str:
    """The folder a class's images live in: its name, with "/" (not allowed in a folder name) as "_"."""
    return class_name.replace("/", "_")


def is_image_folder(folder: Path) -> bool:
    """True when `folder` has a train/ or a test/ sub-folder (a missing one is an error when it is read)."""
    return any((folder / split).is_dir() for split in SPLITS)


def find_image_folder(root: str | os.PathLike, names: tuple[str, ...] = ()) -> Path | None:
    """The image folder at `root` itself, else at the first of root/<name> that is one; None if none is."""
    root = Path(root)
    return next((folder for folder in (root, *(root / name for name in names)) if is_image_folder(folder)), None)


def natural_key(name: str) -> tuple[list, str]:
    """Sort key that orders the numbers inside names by value: img2.png before img10.png."""
    parts: list = DIGITS.split(name.lower())  # text, number, text, ...: each position holds one kind
    parts[1::2] = map(int, parts[1::2])
    return parts, name  # the name itself breaks ties ("01.png" and "1.png"), so the order is always the same


def list_images(folder: Path, classes: tuple[str, ...]) -> dict[str, list[ImageFile]]:
    """The images of each split, by class then by natural file name order.

    Raises ImageFolderError for a missing split or class folder, an unknown class folder or a split
    without images.
    """
    return {split: _list_split(folder / split, classes) for split in SPLITS}


def _list_split(split_folder: Path, classes: tuple[str, ...]) -> list[ImageFile]:
    expected = [class_folder_name(name) for name in classes]
    if not split_folder.is_dir():
        raise ImageFolderError(
            f"{split_folder} is missing: an image folder needs train/ and test/, each with one folder per "
            f"class ({', '.join(expected)}). Add it, or point data_dir at a complete copy."
        )
    found = {entry.name for entry in os.scandir(split_folder) if entry.is_dir() and not entry.name.startswith(".")}
    unknown = sorted(found - set(expected))
    if unknown:
        raise ImageFolderError(
            f"{split_folder} has class folders that are not classes of this dataset: {', '.join(unknown)}. "
            f"The class folders must be named {', '.join(expected)}: rename or remove the others."
        )
    missing = [name for name in expected if name not in found]
    if missing:
        raise ImageFolderError(
            f"{split_folder} lacks the class folders {', '.join(missing)}: every class needs one "
            f"({', '.join(expected)}). Add them, or point data_dir at a complete copy."
        )
    images = [image for label, name in enumerate(expected) for image in _images_in(split_folder, name, label)]
    if not images:
        raise ImageFolderError(
            f"{split_folder} holds no images: put the JPEG or PNG files in its class folders "
            f"({split_folder}/{expected[0]}/..., ...), or point data_dir at a complete copy."
        )
    return images


def _images_in(split_folder: Path, class_name: str, label: int) -> list[ImageFile]:
    class_folder = os.path.join(split_folder, class_name)
    relative_folder = f"{split_folder.name}/{class_name}"
    entries = sorted((entry for entry in os.scandir(class_folder) if not entry.name.startswith(".")
                      and os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES and entry.is_file()),
                     key=lambda entry: natural_key(entry.name))
    return [ImageFile(entry.path, f"{relative_folder}/{entry.name}", label, stat.st_size, stat.st_mtime_ns)
            for entry in entries for stat in (entry.stat(),)]


def cache_key(images: dict[str, list[ImageFile]], classes, shape) -> str:
    """A hash of every image's path (relative to the folder), size and modification time, and of what the
    tensors mean (classes, shape): any change to the files or the dataset makes a new key."""
    digest = hashlib.sha256(repr((CACHE_FORMAT, tuple(classes), tuple(shape))).encode())
    lines = (f"{image.relative}\0{image.label}\0{image.size}\0{image.mtime_ns}\n"
             for split in SPLITS for image in images[split])
    digest.update("".join(lines).encode())
    return digest.hexdigest()[:24]


def decode_image(path: str | Path, shape: tuple[int, int, int]) -> np.ndarray:
    """One image file as a uint8 array (C, H, W), checked against the dataset's (C, H, W)."""
    channels, height, width = shape
    try:
        with Image.open(path) as image:
            image.load()
            size, mode = image.size, image.mode
            pixels = np.asarray(image)
    except (OSError, Image.DecompressionBombError) as error:  # not an image, truncated, unsupported...
        raise ImageFolderError(f"{path} is not a readable JPEG or PNG image ({error}): replace or remove it.") from None
    if size != (width, height):
        raise ImageFolderError(
            f"{path} is {size[1]}x{size[0]} pixels (height x width), but this dataset's images are "
            f"{height}x{width}: resize it to {height}x{width}, or remove it."
        )
    if mode != MODES[channels]:
        raise ImageFolderError(
            f"{path} has PIL mode {mode!r}, but this dataset's {channels}-channel images need "
            f"{MODES[channels]!r}: convert it, e.g. Image.open(path).convert({MODES[channels]!r}).save(path)."
        )
    return pixels.reshape(height, width, channels).transpose(2, 0, 1)


def decode_images(paths: list[str], shape: tuple[int, int, int]) -> torch.Tensor:
    """All the files as one uint8 tensor (N, C, H, W), decoded by a thread pool (PIL lets go of the GIL)."""
    out = np.empty((len(paths), *shape), dtype=np.uint8)

    def decode_chunk(start: int) -> None:
        for index in range(start, min(start + CHUNK_SIZE, len(paths))):
            out[index] = decode_image(paths[index], shape)

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        tasks = [pool.submit(decode_chunk, start) for start in range(0, len(paths), CHUNK_SIZE)]
        try:
            for task in tasks:
                task.result()
        except BaseException:  # the first bad image: stop the chunks not yet started
            for task in tasks:
                task.cancel()
            raise
    return torch.from_numpy(out)


def read_image_folder(folder: str | os.PathLike, classes: tuple[str, ...], shape: tuple[int, int, int],
                      name: str = "images") -> dict[str, torch.Tensor]:
    """train_images, train_labels, test_images, test_labels of an image folder: uint8 (N, C, H, W) and int64.

    Served from the folder's cache when the files are unchanged; otherwise decoded (saying so) and cached.
    `name` is the dataset's name, for the message.
    """
    folder = Path(folder)
    images = list_images(folder, classes)
    cache = folder / CACHE_FOLDER / f"{cache_key(images, classes, shape)}.pt"
    cached = _read_cache(cache, images, shape)
    if cached is not None:
        return cached
    total = sum(len(files) for files in images.values())
    print(f"Decoding {total:,} {name} images from {folder} (once: they are cached in {cache.parent}).")
    tensors = {}
    for split in SPLITS:
        tensors[f"{split}_images"] = decode_images([image.path for image in images[split]], shape)
        tensors[f"{split}_labels"] = torch.tensor([image.label for image in images[split]], dtype=torch.long)
    _write_cache(cache, tensors)
    return tensors


def _read_cache(cache: Path, images: dict[str, list[ImageFile]], shape) -> dict[str, torch.Tensor] | None:
    """The cached tensors if `cache` holds what `images` decode to; None when it is missing or damaged."""
    if not cache.is_file():
        return None
    try:
        tensors = torch.load(cache, weights_only=True)
    except Exception:  # a damaged or foreign file: decode again, and the new cache replaces it
        return None
    expected = {f"{split}_images": ((len(images[split]), *shape), torch.uint8) for split in SPLITS}
    expected |= {f"{split}_labels": ((len(images[split]),), torch.long) for split in SPLITS}
    intact = isinstance(tensors, dict) and set(tensors) == set(expected) and all(
        isinstance(tensors[key], torch.Tensor) and (tuple(tensors[key].shape), tensors[key].dtype) == expected[key]
        for key in expected)
    return tensors if intact else None


def _write_cache(cache: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Save atomically (a temporary file, then a rename: never half a cache), then drop stale caches.

    A folder that cannot be written (read-only, a full disk) only costs the cache, said in one line.
    """
    try:
        cache.parent.mkdir(exist_ok=True)
        save_atomically(tensors, cache, prefix=f".{cache.stem}.", suffix=".tmp")
        os.chmod(cache, 0o644)  # mkstemp's file is private; others who may read the folder may read its cache
    except OSError as error:
        print(f"Could not cache the decoded images in {cache.parent} ({error.strerror or error}): "
              f"each load decodes them again; copy the folder somewhere writable to keep them.")
        return
    for stale in cache.parent.glob("*.pt"):  # the same folder's older contents: only the newest is read
        if stale != cache:
            stale.unlink(missing_ok=True)


def remove_cache(folder: str | os.PathLike) -> None:
    """Delete a folder's cache of decoded images (the next load decodes them again)."""
    shutil.rmtree(Path(folder) / CACHE_FOLDER, ignore_errors=True)
