"""A tiny learnable dataset and network that train in well under a second; where real Fashion-MNIST may be."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from helpers.datasets import make_synthetic_data
from helpers.loaders import DeviceLoader, ImageRecipe

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist


class TinyNet(nn.Module):
    """Conv, BatchNorm and Dropout: enough to exercise every random state a run depends on."""

    def __init__(self, num_classes: int = 10, channels: int = 1):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
            nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.LazyLinear(num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


def tiny_model(seed: int = 0, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    model = TinyNet(**kwargs)
    model(torch.zeros(1, kwargs.get("channels", 1), 28, 28))  # materialise the lazy layer
    return model


def tiny_loaders(num_train: int = 256, batch_size: int = 32, seed: int = 0, recipe=None):
    data = make_synthetic_data("mnist", num_train=num_train + 64, num_test=64)
    recipe = recipe or ImageRecipe()
    train = DeviceLoader(data.train_images[:num_train], data.train_labels[:num_train], batch_size, recipe,
                         data.classes, train=True, shuffle=True, drop_last=True, seed=seed, device="cpu")
    valid = DeviceLoader(data.train_images[num_train:], data.train_labels[num_train:], batch_size, recipe,
                         data.classes, device="cpu")
    test = DeviceLoader(data.test_images, data.test_labels, batch_size, recipe, data.classes, device="cpu")
    return train, valid, test


def fashion_mnist_folders() -> list[Path]:
    """Where real Fashion-MNIST's IDX files may be: $DATA_DIR, the checkout's data/, Debian's package."""
    roots = [Path(os.environ["DATA_DIR"]).expanduser()] if os.environ.get("DATA_DIR") else []
    roots.append(Path(__file__).resolve().parent.parent / "data")
    return [folder for root in roots for folder in (root / "FashionMNIST" / "raw", root)] + [DEBIAN_FASHION_MNIST]
