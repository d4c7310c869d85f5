"""The device pipeline: images decoded once into a uint8 tensor and resized once, then every batch
cropped, flipped and normalised on the training device. No per-image PIL work per epoch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .checks import check_batch_size, check_labels
from .environment import get_device
from .fingerprint import content_hash
from .recipe import ImageRecipe

SPLIT_NAMES = {"train": "training", "valid": "validation", "test": "test"}  # for messages


def check_images(images, split: str | None = None) -> None:
    """Images as both pipelines take them: uint8 (N, C, H, W), 0 to 255 as decoded; they scale them themselves."""
    what = f"The {split} images" if split else "The images"
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        got = f"shape {tuple(images.shape)}" if isinstance(images, torch.Tensor) else f"a {type(images).__name__}"
        fix = ": add grey images' channel dimension with images.unsqueeze(1)" if getattr(images, "ndim", 0) == 3 else ""
        raise ValueError(f"{what} must be a tensor of shape (N, C, H, W), e.g. (50000, 3, 32, 32) (got {got}){fix}.")
    if images.dtype == torch.uint8:
        return
    if images.is_floating_point() and images.numel() and float(images.max()) <= 1:
        # Scaled to [0, 1] already: the loader's own division by 255 would leave them almost black.
        raise TypeError(f"{what} are {images.dtype} in [0, 1], already scaled, but the loaders take uint8 pixels "
                        "(0 to 255) and scale them themselves: pass the uint8 images, or convert these with "
                        "(images * 255).round().to(torch.uint8).")
    raise TypeError(f"{what} are {images.dtype}, but the loaders take uint8 pixels (0 to 255) and scale them "
                    "themselves: pass the uint8 images, or convert these with "
                    "images.round().clamp(0, 255).to(torch.uint8).")


def labels_named(split: str | None) -> str:
    """How messages about a split's labels begin: "The test labels", or "The labels"."""
    return f"The {split} labels" if split else "The labels"


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
    loader a generator of its own. Images must be uint8 (N, C, H, W) and labels int64 classes 0 to
    len(classes) - 1, checked here; split names the split in those messages ("test").
    """

    def __init__(self, images, labels, batch_size, recipe: ImageRecipe, classes, *, train=False,
                 shuffle=False, drop_last=False, seed: int | None = None, device=None, name: str | None = None,
                 synthetic: bool = False, split: str | None = None):
        self.batch_size = check_batch_size(batch_size)
        check_images(images, split)
        check_labels(labels, len(classes), labels_named(split))
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
        self.name, self.synthetic = name, synthetic
        self.train, self.shuffle, self.drop_last = train, shuffle, drop_last
        # Draws happen on the CPU, so a run repeats whatever the device.
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self._scale, self._shift = _normalisation(recipe, self.device)
        self.dataset = DeviceDataset(self)

    @property
    def num_images(self) -> int:
        return len(self.labels)

    @property
    def augmented(self) -> bool:
        """True when the batches are randomly cropped or flipped."""
        return bool(self.train) and self.recipe.augments(self.images.shape[-1])

    def data_signature(self) -> dict:
        """Plain values that identify what this loader serves (see loaders.data_signature)."""
        return {"dataset": self.name, "pipeline": "device", "num_images": self.num_images,
                "content": self.content_hash, "recipe": self.recipe.plain(), "augment": bool(self.train),
                "batch_size": self.batch_size}

    def sample_images(self, count: int) -> torch.Tensor:
        """The first `count` images as a batch would prepare them (random crops drawn as in training)."""
        return self.prepare(self.images[:count])

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



def device_loaders(name, splits: dict, classes, batch_size, recipe: ImageRecipe, device, synthetic: bool):
    """(train_loader, valid_loader, test_loader) for splits {"train": (images, labels), "valid": ..., "test": ...}."""
    loaders = []
    for split, (images, labels) in splits.items():
        train = split == "train"
        loaders.append(DeviceLoader(images, labels, batch_size, recipe, classes, train=train, shuffle=train,
                                    drop_last=train, device=device, name=name, synthetic=synthetic,
                                    split=SPLIT_NAMES[split]))
    return tuple(loaders)
