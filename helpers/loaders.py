"""Feeding the training device: the image recipe, the two pipelines, and what a loader can tell about itself.

Two pipelines give the same augmentation:

- "device" (the default): images are decoded once into a uint8 tensor and resized once; each batch
  is then cropped, flipped and normalised on the training device. No per-image PIL work per epoch.
- "classic": torchvision transforms on PIL images in DataLoader workers, as the course did.

Both serve (images, labels) batches and answer len(loader), len(loader.dataset) and loader.batch_size.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from .datasets import ImageData, load_dataset, split_indices
from .environment import get_device

# --------------------------------------------------------------------------- the recipe


@dataclass(frozen=True)
class ImageRecipe:
    """How images are prepared: resize, crop (random for training, centred otherwise), normalise."""

    resize: int | None = None
    crop: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    hflip: bool = False

    def __post_init__(self):
        # Checked here, so that a wrong recipe fails where it is written, not in the middle of an epoch.
        for name in ("resize", "crop"):
            object.__setattr__(self, name, _pixel_size(name, getattr(self, name)))
        if (self.mean is None) != (self.std is None):
            given, missing = ("mean", "std") if self.std is None else ("std", "mean")
            raise ValueError(f"ImageRecipe got {given} without {missing}: normalising needs both "
                             f"(e.g. mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)), or neither.")
        if self.mean is not None:
            mean, std = _per_channel("mean", self.mean), _per_channel("std", self.std)
            if len(mean) != len(std):
                raise ValueError(f"ImageRecipe has {len(mean)} mean values but {len(std)} std values: "
                                 "give one of each per channel.")
            if min(std) <= 0:
                raise ValueError(f"ImageRecipe std must be positive, since images are divided by it (got {std}).")
            object.__setattr__(self, "mean", mean)
            object.__setattr__(self, "std", std)
        if self.resize is not None and self.crop is not None and self.crop > self.resize:
            raise ValueError(f"ImageRecipe cannot crop {self.crop}x{self.crop} from images resized to "
                             f"{self.resize}x{self.resize}: choose crop <= resize, e.g. resize=70, crop=64.")

    def check_channels(self, channels: int) -> None:
        """Raise a clear error when mean and std do not fit images with this many channels."""
        if self.mean is not None and len(self.mean) not in (1, channels):
            raise ValueError(
                f"ImageRecipe has {len(self.mean)} mean and std values, but the images have {channels} "
                f"channel(s): give one value per channel, e.g. mean={(0.5,) * channels}, std={(0.5,) * channels}."
            )

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


def _pixel_size(name: str, value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"ImageRecipe {name} must be a whole number of pixels, e.g. {name}=64 (got {value!r}).")
    if value < 1:
        raise ValueError(f"ImageRecipe {name} must be at least 1 pixel (got {value}).")
    return int(value)


def _per_channel(name: str, values) -> tuple[float, ...]:
    if isinstance(values, (numbers.Number, str)):
        raise ValueError(f"ImageRecipe {name} lists one value per channel, e.g. {name}=(0.5, 0.5, 0.5) "
                         f"or {name}=(0.5,) (got {values!r}).")
    values = tuple(float(value) for value in values)
    if not values or not all(math.isfinite(value) for value in values):
        raise ValueError(f"ImageRecipe {name} needs one finite number per channel (got {values}).")
    return values


def unnormalize(images: torch.Tensor, mean: Sequence[float] | None, std: Sequence[float] | None) -> torch.Tensor:
    """Undo Normalize(mean, std): a new tensor in [0, 1]; the input is left untouched."""
    if mean is None:
        return images.clamp(0, 1)
    shape = (-1, 1, 1)
    mean_t = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(shape)
    std_t = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(shape)
    return (images * std_t + mean_t).clamp(0, 1)


def check_batch_size(batch_size) -> int:
    """batch_size as an int (numpy integers welcome), or a clear error."""
    return check_count("batch_size", batch_size, example=64)


def check_count(name: str, value, example: int) -> int:
    """A count such as batch_size or num_epochs as an int (numpy integers welcome), or a clear error."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a whole number of at least 1, e.g. {example} "
                        f"(got {value!r}, a {type(value).__name__}).")
    if value < 1:
        raise ValueError(f"{name} must be a whole number of at least 1 (got {value}).")
    return int(value)


def content_hash(images: torch.Tensor, labels: torch.Tensor, chunk_size: int = 4096) -> str:
    """SHA-256 of images and labels, as stored: the identity of a split's data, on any device."""
    digest = hashlib.sha256(f"{images.dtype} {tuple(images.shape)} {len(labels)}".encode())
    for chunk in images.split(chunk_size):
        digest.update(chunk.detach().contiguous().cpu().numpy())  # a chunk of a contiguous tensor: no copy on the CPU
    digest.update(labels.detach().to("cpu", torch.int64).contiguous().numpy())
    return digest.hexdigest()


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

    Yields (images, labels) like a DataLoader, and like one has batch_size and a dataset. The
    recipe's resize is applied once, here. Order, crops and flips come from torch's global random
    generator, as a DataLoader's do, so that set_all_seeds() repeats them; pass seed= to give the
    loader a generator of its own.
    """

    def __init__(self, images, labels, batch_size, recipe: ImageRecipe, classes, *, train=False,
                 shuffle=False, drop_last=False, seed: int | None = None, device=None, name: str | None = None):
        self.batch_size = check_batch_size(batch_size)
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels: give one label per image.")
        recipe.check_channels(images.shape[1])
        # Hashed as given, before the resize: the same data gives the same hash on every machine.
        self.content_hash = content_hash(images, labels)
        if recipe.resize is not None and tuple(images.shape[-2:]) != (recipe.resize, recipe.resize):
            images = resize_images(images, recipe.resize)
        if recipe.crop is not None and min(images.shape[-2:]) < recipe.crop:
            raise ValueError(f"Images of {images.shape[-2]}x{images.shape[-1]} pixels cannot be cropped to "
                             f"{recipe.crop}x{recipe.crop}: resize them first, e.g. ImageRecipe(resize=70, crop=64).")
        self.device = get_device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.recipe = recipe
        self.classes = tuple(classes)
        self.name = name
        self.train, self.shuffle, self.drop_last = train, shuffle, drop_last
        # Draws happen on the CPU, so a run repeats whatever the device.
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self._scale, self._shift = _normalisation(recipe, self.device)
        self.dataset = DeviceDataset(self)

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


class DeviceDataset(Dataset):
    """A DeviceLoader's `dataset`: its images one by one, prepared as its batches are, like a torch Dataset."""

    def __init__(self, loader: DeviceLoader):
        self.loader = loader

    @property
    def classes(self) -> tuple[str, ...]:
        return self.loader.classes

    @property
    def targets(self) -> torch.Tensor:
        return self.loader.labels

    def __len__(self) -> int:
        return self.loader.num_images

    def __getitem__(self, index: int):
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} images")
        position = torch.tensor([index % len(self)], device=self.loader.device)
        return self.loader.prepare(self.loader.images, index=position)[0], int(self.loader.labels[position])


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
    """uint8 images served one by one as PIL images through torchvision transforms, as torchvision does.

    `recipe` and `train` record where the transform came from, when it came from an ImageRecipe.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes, transform=None, *,
                 name: str | None = None, recipe: ImageRecipe | None = None, train: bool = False):
        self.content_hash = content_hash(images, labels)
        self.images = images.permute(0, 2, 3, 1).numpy()  # HWC, what PIL expects
        self.labels = labels.tolist()
        self.classes = tuple(classes)
        self.transform = transform
        self.name, self.recipe, self.train = name, recipe, train

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
                    smoke_test: bool | None = None, data: ImageData | None = None):
    """(train_loader, valid_loader, test_loader) for a dataset; validation uses the test transforms.

    `seed` fixes the validation split. The training order and crops follow torch's global random
    state, as a DataLoader's do: set_all_seeds() before training repeats them. `data` serves images
    already in memory (used as given, also in smoke mode) instead of loading the dataset `name`.
    """
    batch_size = check_batch_size(batch_size)
    if pipeline not in ("device", "classic"):
        raise ValueError(f"pipeline must be 'device' or 'classic' (got {pipeline!r}).")
    if pipeline == "device" and (train_transforms is not None or test_transforms is not None):
        raise ValueError("Custom torchvision transforms need pipeline='classic'; the device "
                         "pipeline takes its steps from recipe=ImageRecipe(...).")
    recipe = recipe or ImageRecipe()
    if data is None:
        data = load_dataset(name, data_dir=data_dir, download=download, smoke_test=smoke_test)
    recipe.check_channels(data.train_images.shape[1])
    train_index, valid_index = split_indices(len(data.train_labels), validation_fraction, seed)
    splits = {
        "train": (data.train_images[train_index], data.train_labels[train_index]),
        "valid": (data.train_images[valid_index], data.train_labels[valid_index]),
        "test": (data.test_images, data.test_labels),
    }
    if pipeline == "classic":
        return _classic_loaders(name, splits, data.classes, batch_size, recipe, train_transforms,
                                test_transforms, num_workers, device)
    return _device_loaders(name, splits, data.classes, batch_size, recipe, device)


def _device_loaders(name, splits, classes, batch_size, recipe, device):
    loaders = []
    for split, (images, labels) in splits.items():
        train = split == "train"
        loaders.append(DeviceLoader(images, labels, batch_size, recipe, classes, train=train,
                                    shuffle=train, drop_last=train, device=device, name=name))
    return tuple(loaders)


def _classic_loaders(name, splits, classes, batch_size, recipe, train_transforms, test_transforms,
                     num_workers, device):
    pin_memory = get_device(device).type == "cuda"
    loaders = []
    for split, (images, labels) in splits.items():
        train = split == "train"
        custom = train_transforms if train else test_transforms
        transform = custom or (recipe.train_transforms() if train else recipe.test_transforms())
        dataset = ImageTensorDataset(images, labels, classes, transform, name=name,
                                     recipe=None if custom else recipe, train=train)
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


# --------------------------------------------------------------------------- what a loader tells


def class_names(loader) -> tuple[str, ...]:
    """The class names a loader's labels index into."""
    classes = getattr(loader, "classes", None) or getattr(getattr(loader, "dataset", None), "classes", None)
    if classes is None:
        raise ValueError("This loader does not say its classes; pass num_classes= (or class names) explicitly.")
    return tuple(classes)


def data_signature(loader) -> dict:
    """Plain values that identify the data a loader serves: dataset, pipeline, content and recipe.

    Equal for the same images, labels, recipe and batch size; any other dataset, split or recipe
    changes it. For a loader these helpers did not build: what can be said cheaply.
    """
    if isinstance(loader, DeviceLoader):
        return {"dataset": loader.name, "pipeline": "device", "num_images": loader.num_images,
                "content": loader.content_hash, "recipe": _plain_recipe(loader.recipe), "augment": bool(loader.train),
                "batch_size": loader.batch_size}
    dataset = getattr(loader, "dataset", None)
    if isinstance(dataset, ImageTensorDataset):
        signature = {"dataset": dataset.name, "pipeline": "classic", "num_images": len(dataset),
                     "content": dataset.content_hash, "batch_size": loader.batch_size}
        if dataset.recipe is not None:
            return {**signature, "recipe": _plain_recipe(dataset.recipe), "augment": bool(dataset.train)}
        # A custom transform: its description, without the memory addresses that differ on every run.
        return {**signature, "transform": re.sub(r" at 0x[0-9a-fA-F]+", "", repr(dataset.transform))}
    return {"loader": type(loader).__name__, "dataset": type(dataset).__name__ if dataset is not None else None,
            "num_images": _length(dataset), "batch_size": getattr(loader, "batch_size", None)}


def is_augmented(loader) -> bool | None:
    """Whether a loader serves randomly cropped or flipped images: True, False, or None when it cannot tell."""
    if isinstance(loader, DeviceLoader):
        return bool(loader.train) and _recipe_augments(loader.recipe, loader.images.shape[-1])
    dataset = getattr(loader, "dataset", None)
    if not isinstance(dataset, ImageTensorDataset):
        return None
    if dataset.recipe is None:  # a custom transform: torchvision's random steps are all named Random...
        return "Random" in repr(dataset.transform)
    return bool(dataset.train) and _recipe_augments(dataset.recipe, dataset.recipe.resize or dataset.images.shape[2])


def _recipe_augments(recipe: ImageRecipe, image_size: int) -> bool:
    return recipe.hflip or (recipe.crop is not None and recipe.crop < image_size)


def _plain_recipe(recipe: ImageRecipe) -> dict:
    """The recipe as JSON reads it back: lists, not tuples, so that a saved signature compares equal."""
    return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(recipe).items()}


def _length(dataset) -> int | None:
    try:
        return len(dataset)
    except TypeError:  # an IterableDataset, or none at all
        return None


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
