"""The classic pipeline, as the course had it: torchvision transforms on PIL images, image by image, in
DataLoader worker processes. Kept for custom transforms, and to compare the device pipeline with."""

from __future__ import annotations

import re

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from .checks import check_labels
from .device_pipeline import SPLIT_NAMES, check_images, labels_named, resize_images
from .environment import get_device
from .fingerprint import content_hash
from .recipe import ImageRecipe


class ImageTensorDataset(Dataset):
    """uint8 images served one by one as PIL images through torchvision transforms, as torchvision does.

    `recipe` and `train` record where the transform came from, when it came from an ImageRecipe. Images must be
    uint8 (N, C, H, W) and labels int64 classes 0 to len(classes) - 1, checked here; split names the split in
    those messages ("test").
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes, transform=None, *,
                 name: str | None = None, recipe: ImageRecipe | None = None, train: bool = False,
                 split: str | None = None):
        check_images(images, split)
        check_labels(labels, len(classes), labels_named(split))
        self.content_hash = content_hash(images, labels)
        self.source = images  # (N, C, H, W), as given
        self.images = images.permute(0, 2, 3, 1).numpy()  # HWC, what PIL expects
        self.labels = labels.tolist()
        self.classes = tuple(classes)
        self.transform = transform
        self.name, self.recipe, self.train = name, recipe, train

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = self.images[index]
        image = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[index]


class ClassicLoader(DataLoader):
    """A DataLoader over an ImageTensorDataset that also tells what the device pipeline's loaders tell:
    classes, recipe, images (uint8, resized as the recipe says), num_images, augmented, synthetic."""

    def __init__(self, dataset: ImageTensorDataset, *, synthetic: bool = False, **options):
        super().__init__(dataset, **options)
        self.synthetic = synthetic
        self._resized = None

    @property
    def classes(self) -> tuple[str, ...]:
        return self.dataset.classes

    @property
    def recipe(self) -> ImageRecipe | None:
        return self.dataset.recipe

    @property
    def num_images(self) -> int:
        return len(self.dataset)

    @property
    def images(self) -> torch.Tensor:
        """The images as uint8 (N, C, H, W), resized as the recipe says (computed once, on first use)."""
        size = self.recipe.resize if self.recipe is not None else None
        if size is None or tuple(self.dataset.source.shape[-2:]) == (size, size):
            return self.dataset.source
        if self._resized is None:
            self._resized = resize_images(self.dataset.source, size)
        return self._resized

    @property
    def augmented(self) -> bool:
        """True when the images are randomly cropped or flipped."""
        dataset = self.dataset
        if dataset.recipe is None:  # a custom transform: torchvision's random steps are all named Random...
            return "Random" in repr(dataset.transform)
        return bool(dataset.train) and dataset.recipe.augments(dataset.source.shape[-1])

    def data_signature(self) -> dict:
        """Plain values that identify what this loader serves (see loaders.data_signature)."""
        dataset = self.dataset
        # The worker count decides which random draws each image's transforms get: part of the run.
        signature = {"dataset": dataset.name, "pipeline": "classic", "num_images": len(dataset),
                     "content": dataset.content_hash, "batch_size": self.batch_size, "num_workers": self.num_workers}
        if dataset.recipe is not None:
            return {**signature, "recipe": dataset.recipe.plain(), "augment": bool(dataset.train)}
        # A custom transform: its description, without the memory addresses that differ on every run.
        return {**signature, "transform": re.sub(r" at 0x[0-9a-fA-F]+", "", repr(dataset.transform))}

    def sample_images(self, count: int) -> torch.Tensor:
        """The first `count` images, transformed as the loader would."""
        return torch.stack([self.dataset[index][0] for index in range(min(count, len(self.dataset)))])


def classic_loaders(name, splits: dict, classes, batch_size, recipe: ImageRecipe, train_transforms,
                    test_transforms, num_workers: int, device, synthetic: bool):
    """(train_loader, valid_loader, test_loader) for splits {"train": (images, labels), "valid": ..., "test": ...}."""
    pin_memory = get_device(device).type == "cuda"
    loaders = []
    for split, (images, labels) in splits.items():
        train = split == "train"
        custom = train_transforms if train else test_transforms
        transform = custom or (recipe.train_transforms() if train else recipe.test_transforms())
        dataset = ImageTensorDataset(images, labels, classes, transform, name=name,
                                     recipe=None if custom else recipe, train=train, split=SPLIT_NAMES[split])
        loaders.append(ClassicLoader(
            dataset, synthetic=synthetic, batch_size=batch_size, shuffle=train,
            drop_last=train and len(dataset) >= batch_size, num_workers=num_workers, pin_memory=pin_memory,
        ))
    return tuple(loaders)
