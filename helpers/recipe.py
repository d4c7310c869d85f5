"""The image recipe: how images are resized, cropped, flipped and normalised, and the statistics to normalise by."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torchvision import transforms


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
        if not isinstance(self.hflip, (bool, np.bool_)):  # hflip="no" is a true value: refuse it, never flip
            raise ValueError(f"ImageRecipe hflip must be True or False (got {self.hflip!r}).")
        object.__setattr__(self, "hflip", bool(self.hflip))
        if self.resize is not None and self.crop is not None and self.crop > self.resize:
            raise ValueError(f"ImageRecipe cannot crop {self.crop}x{self.crop} from images resized to "
                             f"{self.resize}x{self.resize}: choose crop <= resize, e.g. resize=70, crop=64.")

    def __repr__(self) -> str:
        # Channel statistics to 4 decimals: a repr that fits one line, not 16-digit floats.
        settings = [f"{key}={_rounded(value)}" for key, value in asdict(self).items()
                    if value is not None and value is not False]
        return f"ImageRecipe({', '.join(settings)})"

    def augments(self, image_size: int) -> bool:
        """True when training images of image_size pixels (before resizing) get random crops or flips."""
        return self.hflip or (self.crop is not None and self.crop < (self.resize or image_size))

    def plain(self) -> dict:
        """The recipe as JSON reads it back: lists, not tuples, so that a saved signature compares equal."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

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


def _rounded(value):
    return tuple(round(item, 4) for item in value) if isinstance(value, tuple) else value


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
