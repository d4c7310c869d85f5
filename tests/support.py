"""A tiny learnable dataset and network that train in well under a second."""

from __future__ import annotations

import torch
from torch import nn

from helpers.data import DeviceLoader, ImageRecipe, make_synthetic_data


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
