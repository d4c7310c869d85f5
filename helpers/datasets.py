"""Getting datasets: from disk, a folder of IDX files, an image folder or a download, into memory as uint8
tensors, once.

In smoke mode a small subset is kept, and a dataset that cannot be had is replaced by synthetic
data of the same shape, saying so in one plain sentence; the error behind it goes to this module's
logger at debug level (to see it: `logging.basicConfig(); logging.getLogger("helpers").setLevel("DEBUG")`).
The loaders that serve the images are in loaders.py.
"""

from __future__ import annotations

import gzip
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torchvision import datasets

from . import downloads
from .environment import SMOKE_TEST_SIZE, SMOKE_TRAIN_SIZE, dataset_folders, is_smoke_test
from .image_folders import find_image_folder, read_image_folder

logger = logging.getLogger(__name__)


class DatasetUnavailableError(RuntimeError):
    """The dataset is not on disk and could not be downloaded."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    torchvision_class: type
    shape: tuple[int, int, int]
    classes: tuple[str, ...]
    idx: bool = False  # published as IDX files, which a folder may hold instead of torchvision's copy
    # Names an image folder of it (train/<class>/*.jpg, test/<class>/*.jpg) may have inside data_dir;
    # data_dir itself may be one too.
    image_folders: tuple[str, ...] = ()


DATASETS = {
    "mnist": DatasetInfo("MNIST", datasets.MNIST, (1, 28, 28), tuple(str(d) for d in range(10)), idx=True),
    "fashion_mnist": DatasetInfo(
        "Fashion-MNIST",
        datasets.FashionMNIST,
        (1, 28, 28),
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        idx=True,
    ),
    "cifar10": DatasetInfo(
        "CIFAR-10",
        datasets.CIFAR10,
        (3, 32, 32),
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        image_folders=("cifar10-jpeg", "cifar10", "CIFAR-10-images"),  # the last: github.com/YoongiKim's copy
    ),
}


class ImageData(NamedTuple):
    """A dataset held in memory as uint8 images (N, C, H, W) and int64 labels."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: tuple[str, ...]
    synthetic: bool


# --------------------------------------------------------------------------- IDX files (the MNIST format)

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def read_idx(path: str | Path) -> torch.Tensor:
    """Read an IDX file (the MNIST format), gzipped or not, into a uint8 tensor."""
    path = Path(path)
    raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    if raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes.")
    num_dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(num_dims))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * num_dims)
    return torch.from_numpy(data.copy()).reshape(shape)


def find_idx_files(folder: str | Path) -> dict[str, Path] | None:
    """The four IDX files of an MNIST-format dataset in `folder` (gzipped or not), or None if any is missing."""
    found = {}
    for part, stem in IDX_FILES.items():
        candidates = [Path(folder) / stem, Path(folder) / f"{stem}.gz"]
        found[part] = next((path for path in candidates if path.is_file()), None)
    return None if None in found.values() else found


def _from_idx_folder(info: DatasetInfo, folder: Path) -> ImageData | None:
    """The dataset from a folder that holds its four IDX files, if it does."""
    files = find_idx_files(folder) if info.idx else None
    if files is None:
        return None
    return ImageData(
        read_idx(files["train_images"]).unsqueeze(1), read_idx(files["train_labels"]).long(),
        read_idx(files["test_images"]).unsqueeze(1), read_idx(files["test_labels"]).long(),
        info.classes, synthetic=False,
    )


# --------------------------------------------------------------------------- image folders


def _from_image_folder(info: DatasetInfo, root: Path) -> ImageData | None:
    """The dataset from an image folder at root or at one of its usual names inside root, if there is one."""
    folder = find_image_folder(root, info.image_folders)
    if folder is None:
        return None
    tensors = read_image_folder(folder, info.classes, info.shape, name=info.name)
    return ImageData(tensors["train_images"], tensors["train_labels"], tensors["test_images"],
                     tensors["test_labels"], info.classes, synthetic=False)


# --------------------------------------------------------------------------- torchvision's copies


def _from_torchvision(info: DatasetInfo, root: Path, download: bool) -> ImageData:
    train = info.torchvision_class(root, train=True, download=download)
    test = info.torchvision_class(root, train=False, download=download)

    def as_nchw(data) -> torch.Tensor:
        images = torch.as_tensor(np.asarray(data))
        return images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2).contiguous()

    return ImageData(
        as_nchw(train.data), torch.as_tensor(np.asarray(train.targets), dtype=torch.long),
        as_nchw(test.data), torch.as_tensor(np.asarray(test.targets), dtype=torch.long),
        info.classes, synthetic=False,
    )


def _archives(info: DatasetInfo, root: Path) -> list[tuple[list[str], Path, str]]:
    """(URLs to try, file, MD5) for each archive torchvision's download fetches, where it looks for it."""
    source = info.torchvision_class
    if hasattr(source, "mirrors"):  # the MNIST family: four files, each from the first mirror that has it
        folder = root / source.__name__ / "raw"
        return [([mirror + name for mirror in source.mirrors], folder / name, md5) for name, md5 in source.resources]
    return [([source.url], root / source.filename, source.tgz_md5)]  # CIFAR: one archive


def _download(info: DatasetInfo, root: Path) -> ImageData:
    """Fetch the archives with every wait bounded, then let torchvision unpack them (it finds them in place)."""
    deadline = time.monotonic() + downloads.DOWNLOAD_DEADLINE_S
    for urls, path, md5 in _archives(info, root):
        downloads.download_first(urls, path, md5, deadline=deadline)
    return _from_torchvision(info, root, download=True)


# --------------------------------------------------------------------------- synthetic data and smoke mode


def make_synthetic_data(name: str, num_train: int = SMOKE_TRAIN_SIZE, num_test: int = SMOKE_TEST_SIZE) -> ImageData:
    """A small stand-in for a dataset: its real image shape and classes, learnable, the same every run.

    Each class has a smooth random template; an image is its class's template plus noise.
    """
    info = DATASETS[name]
    channels, height, width = info.shape
    num_classes = len(info.classes)
    generator = torch.Generator().manual_seed(sum(map(ord, name)))
    coarse = torch.rand((num_classes, channels, 4, 4), generator=generator)
    templates = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)

    def sample(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randperm(count, generator=generator) % num_classes
        noise = 0.15 * torch.randn((count, channels, height, width), generator=generator)
        images = (0.1 + 0.8 * templates[labels] + noise).clamp(0, 1)
        return (images * 255).round().to(torch.uint8), labels

    train_images, train_labels = sample(num_train)
    test_images, test_labels = sample(num_test)
    return ImageData(train_images, train_labels, test_images, test_labels, info.classes, synthetic=True)


def smoke_subset(data: ImageData) -> ImageData:
    """A fixed random subset of SMOKE_TRAIN_SIZE training and SMOKE_TEST_SIZE test images."""
    generator = torch.Generator().manual_seed(0)
    train = torch.randperm(len(data.train_labels), generator=generator)[:SMOKE_TRAIN_SIZE]
    test = torch.randperm(len(data.test_labels), generator=generator)[:SMOKE_TEST_SIZE]
    return data._replace(
        train_images=data.train_images[train], train_labels=data.train_labels[train],
        test_images=data.test_images[test], test_labels=data.test_labels[test],
    )


# --------------------------------------------------------------------------- the public entry point


def load_dataset(name: str, data_dir=None, download: bool = True, smoke_test: bool | None = None) -> ImageData:
    """Load a whole dataset into memory as uint8 tensors, once.

    `data_dir` (else $DATA_DIR, else data/) holds torchvision's copy, or for the MNIST family just
    the four IDX files, or an image folder (train/<class>/*.jpg and test/<class>/*.jpg, JPEG or PNG;
    decoded once, then read from its cache: see image_folders.py) there or inside it under one of the
    names in DATASETS (for CIFAR-10: cifar10-jpeg, cifar10, CIFAR-10-images). Missing there, the copy a
    system package installs is used (Fashion-MNIST: Debian's, see environment.dataset_folders), else the
    dataset is downloaded into data_dir. In smoke mode a small subset is kept, and a dataset that cannot
    be had is replaced by synthetic data, saying so in one sentence (the error behind it is logged at debug
    level). A damaged image folder raises image_folders.ImageFolderError.
    """
    info = dataset_info(name)
    smoke_test = is_smoke_test() if smoke_test is None else smoke_test
    folders = dataset_folders(name, data_dir)
    data = _first_available(info, folders, download)
    if isinstance(data, Exception):
        if not smoke_test:
            raise DatasetUnavailableError(_missing_message(info, folders, data, download)) from data
        print(_stand_in_notice(info, folders[0], download))
        logger.debug("%s is replaced by synthetic images because of this error:", info.name, exc_info=data)
        return make_synthetic_data(name)
    return smoke_subset(data) if smoke_test else data


def dataset_info(name: str) -> DatasetInfo:
    """The table entry of a dataset, or an error listing the names there are."""
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}. Choose one of: {', '.join(DATASETS)}.")
    return DATASETS[name]


def _first_available(info: DatasetInfo, folders: list[Path], download: bool) -> ImageData | Exception:
    """The first copy found: torchvision's in the data folder (folders[0]), else IDX files or an image folder in
    each folder in turn; else the download into the data folder; else the error that says why not."""
    root = folders[0]
    try:
        return _from_torchvision(info, root, download=False)
    except RuntimeError as not_on_disk:
        error: Exception = not_on_disk
    for folder in folders:
        idx_copy = _from_idx_folder(info, folder)
        if idx_copy is not None:
            return idx_copy
        folder_copy = _from_image_folder(info, folder)  # a damaged folder raises: it is the copy meant, to be fixed
        if folder_copy is not None:
            return folder_copy
    if download:
        try:
            return _download(info, root)
        except Exception as download_error:  # no network, a host that answers 403, a broken file...
            error = download_error
    return error


def _stand_in_notice(info: DatasetInfo, root: Path, download: bool) -> str:
    """What smoke mode prints when it replaces a dataset: what is missing, what is used, the one thing to do.

    No exception text: a student reads this in every data cell, and "URLError: <urlopen error ...>" says
    nothing to them (the error is logged at debug level instead).
    """
    missing = (f"{info.name} is not in {root.resolve()} and could not be downloaded" if download else
               f"{info.name} is not in {root.resolve()} (and download=False)")
    fix = ("run this once on a machine with internet, which downloads it there" if download else
           "allow the download (download=True) on a machine with internet")
    return (f"{missing}, so this smoke run uses a small synthetic stand-in with the same image shape and "
            f"{len(info.classes)} classes; for the real images, {fix}.")


def _missing_message(info: DatasetInfo, folders: list[Path], error: Exception, download: bool) -> str:
    root = folders[0]
    why = f"could not be downloaded ({_short(error)})" if download else "download=False was given"
    elsewhere = "".join(f" nor in {folder}" for folder in folders[1:])
    return (
        f"{info.name} is not in {root.resolve()}{elsewhere}, and {why}.\n"
        f"To fix it: on a machine with internet, run\n"
        f"    python -c \"from torchvision import datasets; "
        f"datasets.{info.torchvision_class.__name__}('{root}', download=True)\"\n"
        f"and copy that folder to {root.resolve()} here, or point DATA_DIR (or data_dir=) at a copy you have"
        f"{' (or at a folder of its four IDX files)' if info.idx else ''}. An image folder works too: "
        f"train/<class>/*.jpg and test/<class>/*.jpg (JPEG or PNG), as {_image_folder_places(info, root)}.\n"
        f"To try the code without the data, set SMOKE_TEST=1: it runs offline on synthetic images."
    )


def _image_folder_places(info: DatasetInfo, root: Path) -> str:
    """Where load_dataset looks for an image folder: data_dir itself, then the dataset's folder names in it."""
    return " or ".join([str(root.resolve()), *(str(root.resolve() / name) for name in info.image_folders)])


def _short(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:200]


def split_indices(num_items: int, validation_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded, disjoint (train, validation) index sets that together cover range(num_items)."""
    if not 0 < validation_fraction < 1:
        raise ValueError(
            f"validation_fraction must lie strictly between 0 and 1 (got {validation_fraction}); "
            "0.1 keeps a tenth of the training images for validation."
        )
    num_valid = round(num_items * validation_fraction)
    if not 0 < num_valid < num_items:
        raise ValueError(
            f"validation_fraction={validation_fraction} of {num_items} images leaves an empty "
            "training or validation set; choose a fraction nearer 0.1."
        )
    order = torch.randperm(num_items, generator=torch.Generator().manual_seed(seed))
    return order[num_valid:].sort().values, order[:num_valid].sort().values
