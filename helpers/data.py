"""Datasets and loaders: load once, split reproducibly, and feed the training device fast.

Two pipelines give the same augmentation:

- "device" (the default): images are decoded once into a uint8 tensor and resized once; each batch
  is then cropped, flipped and normalised on the training device. No per-image PIL work per epoch.
- "classic": torchvision transforms on PIL images in DataLoader workers, as the course did.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets, transforms

from .environment import SMOKE_TEST_SIZE, SMOKE_TRAIN_SIZE, default_data_dir, get_device, is_smoke_test


class DatasetUnavailableError(RuntimeError):
    """The dataset is not on disk and could not be downloaded."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    torchvision_class: type
    shape: tuple[int, int, int]
    classes: tuple[str, ...]
    system_dir: str | None = None  # a folder where a system package installs the IDX files


DATASETS = {
    "mnist": DatasetInfo("MNIST", datasets.MNIST, (1, 28, 28), tuple(str(d) for d in range(10))),
    "fashion_mnist": DatasetInfo(
        "Fashion-MNIST",
        datasets.FashionMNIST,
        (1, 28, 28),
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        system_dir="/usr/share/datasets/fashion-mnist",  # Debian's dataset-fashion-mnist
    ),
    "cifar10": DatasetInfo(
        "CIFAR-10",
        datasets.CIFAR10,
        (3, 32, 32),
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
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


# --------------------------------------------------------------------------- the recipe


@dataclass(frozen=True)
class ImageRecipe:
    """How images are prepared: resize, crop (random for training, centred otherwise), normalise."""

    resize: int | None = None
    crop: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    hflip: bool = False

    def train_transforms(self) -> transforms.Compose:
        """The classic torchvision transforms for training images."""
        steps = self._resize_steps()
        if self.crop is not None:
            steps.append(transforms.RandomCrop(self.crop))
        if self.hflip:
            steps.append(transforms.RandomHorizontalFlip())
        return transforms.Compose(steps + self._tensor_steps())

    def test_transforms(self) -> transforms.Compose:
        """The classic torchvision transforms for validation and test images."""
        steps = self._resize_steps()
        if self.crop is not None:
            steps.append(transforms.CenterCrop(self.crop))
        return transforms.Compose(steps + self._tensor_steps())

    def _resize_steps(self) -> list:
        return [] if self.resize is None else [transforms.Resize((self.resize, self.resize))]

    def _tensor_steps(self) -> list:
        steps = [transforms.ToTensor()]
        if self.mean is not None:
            steps.append(transforms.Normalize(self.mean, self.std))
        return steps


def unnormalize(images: torch.Tensor, mean: Sequence[float] | None, std: Sequence[float] | None) -> torch.Tensor:
    """Undo Normalize(mean, std): a new tensor in [0, 1]; the input is left untouched."""
    if mean is None:
        return images.clamp(0, 1)
    shape = (-1, 1, 1)
    mean_t = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(shape)
    std_t = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(shape)
    return (images * std_t + mean_t).clamp(0, 1)


# --------------------------------------------------------------------------- loading


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


def _from_system_dir(info: DatasetInfo) -> ImageData | None:
    """The dataset from a system package's IDX files, if they are installed."""
    if info.system_dir is None:
        return None
    folder = Path(info.system_dir)
    files = {split: (folder / f"{split}-images-idx3-ubyte.gz", folder / f"{split}-labels-idx1-ubyte.gz")
             for split in ("train", "t10k")}
    if not all(path.is_file() for pair in files.values() for path in pair):
        return None
    (train_x, train_y), (test_x, test_y) = (
        (read_idx(images).unsqueeze(1), read_idx(labels).long()) for images, labels in files.values()
    )
    return ImageData(train_x, train_y, test_x, test_y, info.classes, synthetic=False)


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


def load_dataset(name: str, data_dir=None, download: bool = True, smoke_test: bool | None = None) -> ImageData:
    """Load a whole dataset into memory as uint8 tensors, once.

    Looks on disk first, then in a system package's folder, then downloads. In smoke mode a small
    subset is kept, and a dataset that cannot be had is replaced by synthetic data, saying so.
    """
    info = _dataset_info(name)
    smoke_test = is_smoke_test() if smoke_test is None else smoke_test
    root = default_data_dir(data_dir)
    data = _first_available(info, root, download)
    if isinstance(data, Exception):
        if not smoke_test:
            raise DatasetUnavailableError(_missing_message(info, root, data, download)) from data
        print(f"{info.name} is not available here ({_short(data)}): using a small synthetic "
              f"stand-in with the same image shape and {len(info.classes)} classes.")
        return make_synthetic_data(name)
    return _smoke_subset(data) if smoke_test else data


def _dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}. Choose one of: {', '.join(DATASETS)}.")
    return DATASETS[name]


def _first_available(info: DatasetInfo, root: Path, download: bool) -> ImageData | Exception:
    try:
        return _from_torchvision(info, root, download=False)
    except RuntimeError as not_on_disk:
        error: Exception = not_on_disk
    system_copy = _from_system_dir(info)
    if system_copy is not None:
        return system_copy
    if download:
        try:
            return _from_torchvision(info, root, download=True)
        except Exception as download_error:  # no network, a host that answers 403, a broken file...
            error = download_error
    return error


def _missing_message(info: DatasetInfo, root: Path, error: Exception, download: bool) -> str:
    why = f"could not be downloaded ({_short(error)})" if download else "download=False was given"
    return (
        f"{info.name} is not in {root.resolve()}, and {why}.\n"
        f"To fix it: on a machine with internet, run\n"
        f"    python -c \"from torchvision import datasets; "
        f"datasets.{info.torchvision_class.__name__}('{root}', download=True)\"\n"
        f"and copy that folder to {root.resolve()} here, or point DATA_DIR (or data_dir=) at a copy you have.\n"
        f"To try the code without the data, set SMOKE_TEST=1: it runs offline on synthetic images."
    )


def _short(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:200]


def _smoke_subset(data: ImageData) -> ImageData:
    generator = torch.Generator().manual_seed(0)
    train = torch.randperm(len(data.train_labels), generator=generator)[:SMOKE_TRAIN_SIZE]
    test = torch.randperm(len(data.test_labels), generator=generator)[:SMOKE_TEST_SIZE]
    return data._replace(
        train_images=data.train_images[train], train_labels=data.train_labels[train],
        test_images=data.test_images[test], test_labels=data.test_labels[test],
    )


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


# --------------------------------------------------------------------------- the device pipeline


def resize_images(images: torch.Tensor, size: int, chunk_size: int = 2048) -> torch.Tensor:
    """Resize uint8 images (N, C, H, W) to size x size once, bilinear with antialiasing like PIL."""
    resized = torch.empty((len(images), images.shape[1], size, size), dtype=torch.uint8)
    for start in range(0, len(images), chunk_size):
        chunk = images[start:start + chunk_size].float()
        out = F.interpolate(chunk, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        resized[start:start + chunk_size] = out.round_().clamp_(0, 255).to(torch.uint8)
    return resized


class DeviceLoader:
    """Batches from uint8 images that already sit on the device; cropping and normalising happen there.

    Yields (images, labels) like a DataLoader. The recipe's resize is applied once, here. Order,
    crops and flips come from torch's global random generator, as a DataLoader's do, so that
    set_all_seeds() repeats them; pass seed= to give the loader a generator of its own.
    """

    def __init__(self, images, labels, batch_size, recipe: ImageRecipe, classes, *, train=False,
                 shuffle=False, drop_last=False, seed: int | None = None, device=None):
        if recipe.resize is not None and tuple(images.shape[-2:]) != (recipe.resize, recipe.resize):
            images = resize_images(images, recipe.resize)
        if recipe.crop is not None and min(images.shape[-2:]) < recipe.crop:
            raise ValueError(f"Images of {images.shape[-2]}x{images.shape[-1]} pixels cannot be cropped to "
                             f"{recipe.crop}x{recipe.crop}: resize them first, e.g. ImageRecipe(resize=70, crop=64).")
        self.device = get_device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.batch_size = batch_size
        self.recipe = recipe
        self.classes = tuple(classes)
        self.train, self.shuffle, self.drop_last = train, shuffle, drop_last
        # Draws happen on the CPU, so a run repeats whatever the device.
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self._scale, self._shift = _normalisation(recipe, self.device)

    @property
    def num_images(self) -> int:
        return len(self.labels)

    def __len__(self) -> int:
        full, rest = divmod(self.num_images, self.batch_size)
        # drop_last drops a partial batch only when a full one exists: an epoch is never empty.
        return full if rest == 0 or (self.drop_last and full > 0) else full + 1

    def __iter__(self):
        # All of an epoch's random draws happen here, on the CPU, and cross to the device in one
        # copy: a copy per batch would make the host wait for the GPU at every step.
        order = torch.randperm(self.num_images, generator=self.generator) if self.shuffle else None
        plan = self._draw_augmentation(self.num_images)
        order = order.to(self.device) if order is not None else torch.arange(self.num_images, device=self.device)
        for batch in range(len(self)):
            window = slice(batch * self.batch_size, (batch + 1) * self.batch_size)
            index = order[window]
            augmentation = {key: values[window] for key, values in plan.items()}
            yield self.prepare(self.images, augmentation, index), self.labels[index]

    def prepare(self, images: torch.Tensor, augmentation: dict | None = None,
                index: torch.Tensor | None = None) -> torch.Tensor:
        """Crop, flip and normalise uint8 images (those at `index`, if given) into a float batch.

        Training loaders draw random crop offsets and flips unless `augmentation` brings them.
        """
        if index is None:
            index = torch.arange(len(images), device=images.device)
        if augmentation is None:
            augmentation = self._draw_augmentation(len(index))
        crop = self.recipe.crop
        if "top" in augmentation:
            images = _crop_at(images, index, crop, augmentation["top"], augmentation["left"])
        else:
            # Crop the view first, so that only the kept pixels are copied.
            images = (images if crop is None else _center_crop(images, crop)).index_select(0, index)
        if "flip" in augmentation:
            images = torch.where(augmentation["flip"][:, None, None, None], images.flip(-1), images)
        if self._scale is None:
            return images.float().div_(255)  # exactly ToTensor()
        # Normalize((x / 255 - mean) / std) as one multiply and one add.
        return images.float().mul_(self._scale).add_(self._shift)

    def _draw_augmentation(self, count: int) -> dict[str, torch.Tensor]:
        """Random crop offsets (uniform over every valid position, as RandomCrop) and flips."""
        if not self.train:
            return {}
        plan = {}
        crop = self.recipe.crop
        if crop is not None:
            height, width = self.images.shape[-2:]
            plan["top"] = torch.randint(0, height - crop + 1, (count,), generator=self.generator)
            plan["left"] = torch.randint(0, width - crop + 1, (count,), generator=self.generator)
        if self.recipe.hflip:
            plan["flip"] = torch.rand(count, generator=self.generator) < 0.5
        return {key: values.to(self.device) for key, values in plan.items()}


def _crop_at(images, index, crop: int, top, left) -> torch.Tensor:
    """Cut from each image at `index` a crop x crop window at its own offset, in one gather."""
    # A view of every window at every offset, (N, C, rows, columns, crop, crop): nothing is copied
    # until each chosen image gives up its own window.
    windows = images.unfold(2, crop, 1).unfold(3, crop, 1)
    return windows[index, :, top, left]


def _center_crop(images: torch.Tensor, crop: int) -> torch.Tensor:
    height, width = images.shape[-2:]
    top, left = int(round((height - crop) / 2.0)), int(round((width - crop) / 2.0))
    return images[..., top:top + crop, left:left + crop]


def _normalisation(recipe: ImageRecipe, device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(scale, shift) with x * scale + shift == (x / 255 - mean) / std, or (None, None) without a mean."""
    if recipe.mean is None:
        return None, None
    mean = torch.tensor(recipe.mean, dtype=torch.float64).view(1, -1, 1, 1)
    std = torch.tensor(recipe.std, dtype=torch.float64).view(1, -1, 1, 1)
    return (1 / (255 * std)).float().to(device), (-mean / std).float().to(device)


# --------------------------------------------------------------------------- the classic pipeline


class ImageTensorDataset(Dataset):
    """uint8 images served one by one as PIL images through torchvision transforms, as torchvision does."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes, transform=None):
        self.images = images.permute(0, 2, 3, 1).numpy()  # HWC, what PIL expects
        self.labels = labels.tolist()
        self.classes = tuple(classes)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = self.images[index]
        image = Image.fromarray(image[:, :, 0], mode="L") if image.shape[2] == 1 else Image.fromarray(image)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[index]


# --------------------------------------------------------------------------- the public loaders


def get_dataloaders(name: str, batch_size: int, *, recipe: ImageRecipe | None = None,
                    validation_fraction: float = 0.1, pipeline: str = "device", device=None,
                    train_transforms=None, test_transforms=None, num_workers: int = 2,
                    data_dir=None, download: bool = True, seed: int = 123,
                    smoke_test: bool | None = None):
    """(train_loader, valid_loader, test_loader) for a dataset; validation uses the test transforms.

    `seed` fixes the validation split. The training order and crops follow torch's global random
    state, as a DataLoader's do: set_all_seeds() before training repeats them.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1 (got {batch_size}).")
    if pipeline not in ("device", "classic"):
        raise ValueError(f"pipeline must be 'device' or 'classic' (got {pipeline!r}).")
    if pipeline == "device" and (train_transforms is not None or test_transforms is not None):
        raise ValueError("Custom torchvision transforms need pipeline='classic'; the device "
                         "pipeline takes its steps from recipe=ImageRecipe(...).")
    recipe = recipe or ImageRecipe()
    data = load_dataset(name, data_dir=data_dir, download=download, smoke_test=smoke_test)
    train_index, valid_index = split_indices(len(data.train_labels), validation_fraction, seed)
    splits = {
        "train": (data.train_images[train_index], data.train_labels[train_index]),
        "valid": (data.train_images[valid_index], data.train_labels[valid_index]),
        "test": (data.test_images, data.test_labels),
    }
    if pipeline == "classic":
        return _classic_loaders(splits, data.classes, batch_size, train_transforms or recipe.train_transforms(),
                                test_transforms or recipe.test_transforms(), num_workers, device)
    return _device_loaders(splits, data.classes, batch_size, recipe, device)


def _device_loaders(splits, classes, batch_size, recipe, device):
    loaders = []
    for split, (images, labels) in splits.items():
        train = split == "train"
        loaders.append(DeviceLoader(images, labels, batch_size, recipe, classes, train=train,
                                    shuffle=train, drop_last=train, device=device))
    return tuple(loaders)


def _classic_loaders(splits, classes, batch_size, train_transforms, test_transforms, num_workers, device):
    pin_memory = get_device(device).type == "cuda"
    loaders = []
    for split, (images, labels) in splits.items():
        train = split == "train"
        dataset = ImageTensorDataset(images, labels, classes, train_transforms if train else test_transforms)
        loaders.append(DataLoader(
            dataset, batch_size=batch_size, shuffle=train, drop_last=train and len(dataset) >= batch_size,
            num_workers=num_workers,
            pin_memory=pin_memory,
        ))
    return tuple(loaders)


def get_dataloaders_mnist(batch_size: int, **options):
    """MNIST loaders: (train_loader, valid_loader, test_loader). Options as in get_dataloaders."""
    return get_dataloaders("mnist", batch_size, **options)


def get_dataloaders_fashion_mnist(batch_size: int, **options):
    """Fashion-MNIST loaders: (train_loader, valid_loader, test_loader)."""
    return get_dataloaders("fashion_mnist", batch_size, **options)


def get_dataloaders_cifar10(batch_size: int, **options):
    """CIFAR-10 loaders: (train_loader, valid_loader, test_loader)."""
    return get_dataloaders("cifar10", batch_size, **options)


def class_names(loader) -> tuple[str, ...]:
    """The class names a loader's labels index into."""
    classes = getattr(loader, "classes", None) or getattr(getattr(loader, "dataset", None), "classes", None)
    if classes is None:
        raise ValueError("This loader does not say its classes; pass num_classes= (or class names) explicitly.")
    return tuple(classes)


def sample_images(loader, count: int = 2) -> torch.Tensor:
    """A few prepared images from a loader, leaving every random state as it was (for checks)."""
    generator = getattr(loader, "generator", None)
    state = generator.get_state() if generator is not None else None
    try:
        with torch.random.fork_rng(devices=[]):
            if isinstance(loader, DeviceLoader):
                return loader.prepare(loader.images[:count])
            return torch.stack([loader.dataset[i][0] for i in range(min(count, len(loader.dataset)))])
    finally:
        if state is not None:
            generator.set_state(state)


def compute_channel_stats(images: torch.Tensor, chunk_size: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel (mean, std) of uint8 images (N, C, H, W) scaled to [0, 1].

    Sums run over every pixel in float64, chunk by chunk: no average of per-batch averages.
    """
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, len(images), chunk_size):
        chunk = images[start:start + chunk_size].to("cpu", torch.float64).div_(255)
        total += chunk.sum(dim=(0, 2, 3))
        total_sq += chunk.square().sum(dim=(0, 2, 3))
    count = images.numel() // channels
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(0).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())
