"""The public loaders, and what any loader can tell about itself.

Two pipelines give the same augmentation (see device_pipeline.py and classic_pipeline.py):

- "device" (the default): images are decoded once into a uint8 tensor and resized once; each batch
  is then cropped, flipped and normalised on the training device.
- "classic": torchvision transforms on PIL images in DataLoader workers, as the course did.

Both serve (images, labels) batches and answer len(loader), loader.dataset, loader.batch_size,
loader.classes, loader.recipe, loader.images, loader.num_images, loader.augmented and loader.synthetic.
"""

from __future__ import annotations

import inspect

import torch
from torch.utils.data import Subset, TensorDataset

from .checks import check_batch_size
from .classic_pipeline import classic_loaders
from .datasets import ImageData, load_dataset, split_indices
from .device_pipeline import device_loaders
from .fingerprint import tensors_hash
from .recipe import ImageRecipe

PIPELINES = ("device", "classic")


def get_dataloaders(name: str, batch_size: int, *, recipe: ImageRecipe | None = None,
                    validation_fraction: float = 0.1, seed: int = 123, pipeline: str = "device", device=None,
                    data_dir=None, download: bool = True, smoke_test: bool | None = None,
                    data: ImageData | None = None, train_transforms=None, test_transforms=None,
                    num_workers: int = 2):
    """(train_loader, valid_loader, test_loader) for a dataset; validation uses the test transforms.

    recipe: how images are resized, cropped, flipped and normalised (ImageRecipe; default: as stored).
    validation_fraction, seed: the share of training images held out for validation, and the seed that
        picks them. The training order and crops follow torch's global random state, as a DataLoader's
        do: set_all_seeds() before training repeats them.
    pipeline: "device" (resize once, augment batches on the training device) or "classic" (torchvision
        transforms per image in DataLoader workers, as the course did); device: where the device
        pipeline keeps the images (default: get_device()).
    data_dir, download, smoke_test: where the dataset lives, whether to download it, and whether to
        keep only a small subset (default: the SMOKE_TEST environment variable); see load_dataset.
    data: images already in memory (an ImageData) to serve instead of loading `name`, used as given.
    train_transforms, test_transforms, num_workers: the classic pipeline's own transforms (instead of
        the recipe's) and worker processes.
    """
    batch_size = check_batch_size(batch_size)
    if pipeline not in PIPELINES:
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
        return classic_loaders(name, splits, data.classes, batch_size, recipe, train_transforms,
                               test_transforms, num_workers, device, data.synthetic)
    return device_loaders(name, splits, data.classes, batch_size, recipe, device, data.synthetic)


def _loaders_for(name: str, title: str):
    """get_dataloaders for one dataset, with get_dataloaders's keyword arguments shown by help()."""
    def loaders(batch_size: int, **options):
        return get_dataloaders(name, batch_size, **options)

    signature = inspect.signature(get_dataloaders)
    loaders.__signature__ = signature.replace(parameters=[p for p in signature.parameters.values() if p.name != "name"])
    loaders.__name__ = loaders.__qualname__ = f"get_dataloaders_{name}"
    loaders.__doc__ = (f"{title} loaders: (train_loader, valid_loader, test_loader). "
                       f"The options are get_dataloaders's: help(get_dataloaders) explains each.")
    return loaders


get_dataloaders_mnist = _loaders_for("mnist", "MNIST")
get_dataloaders_fashion_mnist = _loaders_for("fashion_mnist", "Fashion-MNIST")
get_dataloaders_cifar10 = _loaders_for("cifar10", "CIFAR-10")


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
    changes it. A loader these helpers did not build is described by what can be read from it: a
    TensorDataset's content is hashed; other datasets' content is marked "not checked".
    """
    if hasattr(loader, "data_signature"):
        return loader.data_signature()
    dataset = getattr(loader, "dataset", None)
    return {"loader": type(loader).__name__, "dataset": type(dataset).__name__ if dataset is not None else None,
            "num_images": _length(dataset), "batch_size": getattr(loader, "batch_size", None),
            "order": type(getattr(loader, "sampler", None)).__name__, "drop_last": getattr(loader, "drop_last", None),
            "num_workers": getattr(loader, "num_workers", None), "content": _content(dataset)}


def _content(dataset) -> str:
    """A hash of a TensorDataset's tensors (or a Subset of one); else a note that the content is not checked."""
    if isinstance(dataset, Subset) and isinstance(dataset.dataset, TensorDataset):
        return tensors_hash([*dataset.dataset.tensors, torch.as_tensor(list(dataset.indices))])
    if isinstance(dataset, TensorDataset):
        return tensors_hash(dataset.tensors)
    return f"not checked (a {type(dataset).__name__} is described by its length only)"


def _length(dataset) -> int | None:
    try:
        return len(dataset)
    except TypeError:  # an IterableDataset, or none at all
        return None


def is_augmented(loader) -> bool | None:
    """Whether a loader serves randomly cropped or flipped images: True, False, or None when it cannot tell."""
    return getattr(loader, "augmented", None)


def sample_images(loader, count: int = 2) -> torch.Tensor:
    """A few prepared images from a loader, leaving every random state as it was (for checks)."""
    generator = getattr(loader, "generator", None)
    state = generator.get_state() if isinstance(generator, torch.Generator) else None
    try:
        with torch.random.fork_rng(devices=[]):
            if hasattr(loader, "sample_images"):
                return loader.sample_images(count)
            return torch.stack([loader.dataset[i][0] for i in range(min(count, len(loader.dataset)))])
    finally:
        if state is not None:
            generator.set_state(state)
