"""Datasets kept as image folders: train/<class>/*.jpg and test/<class>/*.png, decoded once and cached.

A folder such as a JPEG copy of CIFAR-10 holds one sub-folder per split and one per class within it,
named as the dataset's classes (a "/" in a class name becomes "_", so Fashion-MNIST's "T-shirt/top"
is the folder T-shirt_top). Files are read in class order, then by file name in natural order
(2.jpg before 10.jpg), so every load gives the same tensors. That is class by class, as torchvision's
ImageFolder lists them, where torchvision's own CIFAR-10 comes shuffled: take a random subset (torch.randperm),
never the first N images, or all N may be aeroplanes. JPEG and PNG files count, whatever the
case of their extension; dotfiles and other files are left alone.

Symbolic links among the images are followed: an image linked from elsewhere is read, as torchvision
reads it. A link that loops or leads nowhere, and anything with an image's name that is not a regular
file (a link to /dev/zero, a folder named x.jpg), is refused with its path, and so is a class folder
without images: each would otherwise leave images out of the dataset without a word.

Decoding tens of thousands of small files takes seconds, so the decoded tensors are cached in the
folder itself (<folder>/.decoded/<key>.pt): the second load reads one file. The key hashes every file's
path, size, modification time and change time (ctime, which no copy tool can set back, so a file
replaced by one of the same size and modification time, by cp -p, rsync -t or tar, changes it too): a
changed, added or removed image changes the key, and the images are decoded again. The cache holds a
SHA-256 of its tensors, and its labels must match the class folders: a damaged or edited cache is decoded
again, saying so. Only the dataset's own .decoded/ is ever cleaned: older caches, and the temporary files
of decodes whose process is gone. A .decoded/ that is a symbolic link to elsewhere is written through
but never cleaned.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import socket
import stat
import time
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
CACHE_FORMAT = 2  # part of the key: a change in what the cache holds makes older caches stale
CACHE_NAME = re.compile(r"[0-9a-f]{24}\.pt")  # <key>.pt: the only files the clean-up deletes, with temporaries
TEMPORARY_NAME = re.compile(r"\.[0-9a-f]{24}\.(?:(?P<pid>\d+)@(?P<host>[\w-]+)\.)?\w+\.tmp")
STALE_AFTER_S = 24 * 3600  # a temporary file of another machine, unchanged this long, has no live writer
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
    ctime_ns: int  # set by the system at every change: a copy that keeps size and mtime still changes it


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

    Raises ImageFolderError for a missing split or class folder, an unknown class folder, a split or class
    folder without images, and a symbolic link or other entry with an image's name that is no image file.
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
    by_class = [_images_in(split_folder, name, label) for label, name in enumerate(expected)]
    if not any(by_class):
        raise ImageFolderError(
            f"{split_folder} holds no images: put the JPEG or PNG files in its class folders "
            f"({split_folder}/{expected[0]}/..., ...), or point data_dir at a complete copy."
        )
    empty = [name for name, images in zip(expected, by_class) if not images]
    if empty:
        # A copy cut short: training on the other classes alone would go unnoticed.
        raise ImageFolderError(
            f"{split_folder} has class folders without images: {', '.join(empty)}. Every class needs its images "
            f"in train/ and test/: add them, or point data_dir at a complete copy."
        )
    return [image for images in by_class for image in images]


def _images_in(split_folder: Path, class_name: str, label: int) -> list[ImageFile]:
    class_folder = os.path.join(split_folder, class_name)
    relative_folder = f"{split_folder.name}/{class_name}"
    entries = sorted((entry for entry in os.scandir(class_folder) if not entry.name.startswith(".")
                      and os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES),
                     key=lambda entry: natural_key(entry.name))
    return [ImageFile(entry.path, f"{relative_folder}/{entry.name}", label, info.st_size, info.st_mtime_ns,
                      info.st_ctime_ns)
            for entry in entries for info in (_image_file_stat(entry.path),)]


def _image_file_stat(path: str) -> os.stat_result:
    """The stat of an image file, through a symbolic link; a link that loops or leads nowhere, and anything but
    a regular file (a device such as /dev/zero, a folder), is refused: reading it would hang, or lose an image."""
    try:
        info = os.stat(path)  # follows links
    except OSError as error:
        if not os.path.islink(path):
            raise ImageFolderError(f"{path} cannot be read ({error.strerror}): check its permissions, or remove "
                                   "it.") from None
        if error.errno == errno.ELOOP:
            raise ImageFolderError(f"{path} is a symbolic link that loops back on itself: remove it, or point it "
                                   "at an image.") from None
        raise ImageFolderError(f"{path} is a symbolic link to {os.readlink(path)}, which does not exist "
                               f"({error.strerror}): remove the link, or restore the image it points to.") from None
    if not stat.S_ISREG(info.st_mode):
        through = f" (through a symbolic link to {os.readlink(path)})" if os.path.islink(path) else ""
        raise ImageFolderError(f"{path} has an image's name but is {_file_kind(info.st_mode)}{through}, not an "
                               "image file: remove it, or replace it with the image.")
    return info


def _file_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a pipe or socket" if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) else "no regular file"


def cache_key(images: dict[str, list[ImageFile]], classes, shape) -> str:
    """A hash of every image's path (relative to the folder), size, modification and change times, and of
    what the tensors mean (classes, shape): any change to the files or the dataset makes a new key."""
    digest = hashlib.sha256(repr((CACHE_FORMAT, tuple(classes), tuple(shape))).encode())
    lines = (f"{image.relative}\0{image.label}\0{image.size}\0{image.mtime_ns}\0{image.ctime_ns}\n"
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
    if _own_folder(folder, cache.parent):
        _remove_dead_temporaries(cache.parent)
    cached = _read_cache(cache, images, shape)
    if cached is not None:
        return cached
    total = sum(len(files) for files in images.values())
    print(f"Decoding {total:,} {name} images from {folder} (once: they are cached in {cache.parent}).")
    tensors = {}
    for split in SPLITS:
        tensors[f"{split}_images"] = decode_images([image.path for image in images[split]], shape)
        tensors[f"{split}_labels"] = _labels(images[split])
    _write_cache(folder, cache, tensors)
    return tensors


def _labels(images: list[ImageFile]) -> torch.Tensor:
    return torch.tensor([image.label for image in images], dtype=torch.long)


def checksum(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the cache's tensors, names, types and shapes included (a quarter of a second for CIFAR-10)."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        tensor = tensors[key].contiguous()
        digest.update(f"{key} {tensor.dtype} {tuple(tensor.shape)}\n".encode())
        digest.update(tensor.view(torch.uint8).numpy() if tensor.numel() else b"")
    return digest.hexdigest()


def _read_cache(cache: Path, images: dict[str, list[ImageFile]], shape) -> dict[str, torch.Tensor] | None:
    """The cached tensors if `cache` holds what `images` decode to; None (saying why) when it is damaged.

    The checksum catches a flipped byte; the labels, which the class folders decide, must also be theirs.
    """
    if not cache.is_file():
        return None
    try:
        contents = torch.load(cache, weights_only=True)
        tensors = contents["tensors"]
        intact = _has_layout(tensors, images, shape) and checksum(tensors) == contents["sha256"] and all(
            torch.equal(tensors[f"{split}_labels"], _labels(images[split])) for split in SPLITS)
    except Exception:  # a file cut short, or of another layout: decode again, and the new cache replaces it
        intact = False
    if not intact:
        print(f"The cache {cache} does not match its checksum or the class folders (damaged, or edited): "
              "decoding the images again.")
        return None
    return tensors


def _has_layout(tensors, images: dict[str, list[ImageFile]], shape) -> bool:
    expected = {f"{split}_images": ((len(images[split]), *shape), torch.uint8) for split in SPLITS}
    expected |= {f"{split}_labels": ((len(images[split]),), torch.long) for split in SPLITS}
    return isinstance(tensors, dict) and set(tensors) == set(expected) and all(
        isinstance(tensors[key], torch.Tensor) and (tuple(tensors[key].shape), tensors[key].dtype) == expected[key]
        for key in expected)


def _write_cache(folder: Path, cache: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Save atomically (a temporary file, then a rename: never half a cache), then drop stale caches.

    A folder that cannot be written (read-only, a full disk) only costs the cache, said in one line. The
    temporary file's name carries this process's id and machine, so that a later load can tell when its
    writer was killed.
    """
    try:
        cache.parent.mkdir(exist_ok=True)
        writer = f"{os.getpid()}@{_machine()}"
        save_atomically({"tensors": tensors, "sha256": checksum(tensors)}, cache, prefix=f".{cache.stem}.{writer}.",
                        suffix=".tmp")
        os.chmod(cache, 0o644)  # mkstemp's file is private; others who may read the folder may read its cache
    except OSError as error:
        print(f"Could not cache the decoded images in {cache.parent} ({error.strerror or error}): "
              f"each load decodes them again; copy the folder somewhere writable to keep them.")
        return
    if not _own_folder(folder, cache.parent):
        return
    for stale in cache.parent.iterdir():  # the same folder's older caches: only the newest is read
        if CACHE_NAME.fullmatch(stale.name) and stale != cache:
            stale.unlink(missing_ok=True)


def _own_folder(folder: Path, cache_folder: Path) -> bool:
    """True when the cache folder is the dataset's own: not a symbolic link to elsewhere, where we delete nothing."""
    try:
        return cache_folder.resolve().parent == folder.resolve() and cache_folder.is_dir()
    except OSError:  # a link that loops
        return False


def _machine() -> str:
    """This machine's name, as a temporary file's name may hold it."""
    return re.sub(r"[^\w-]", "-", socket.gethostname())[:64] or "unknown"


def _remove_dead_temporaries(cache_folder: Path) -> None:
    """Delete the temporary files of decodes that were killed while writing the cache (50 MB each for CIFAR-10).

    A file named with a process of this machine is removed once that process is gone; one of another machine,
    or of an older version without a process in its name, once it has not changed for a day.
    """
    for path in cache_folder.glob(".*.tmp"):
        match = TEMPORARY_NAME.fullmatch(path.name)
        if match is None:
            continue
        if match["host"] == _machine():
            dead = not _process_alive(int(match["pid"]))
        else:
            dead = _age_s(path) > STALE_AFTER_S
        if dead:
            path.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _age_s(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:  # removed meanwhile
        return 0.0


def remove_cache(folder: str | os.PathLike) -> None:
    """Delete a folder's cache of decoded images (the next load decodes them again).

    A .decoded that is a symbolic link is unlinked, and what it points to left alone.
    """
    cache_folder = Path(folder) / CACHE_FOLDER
    if cache_folder.is_symlink():
        cache_folder.unlink()
    else:
        shutil.rmtree(cache_folder, ignore_errors=True)
