"""Reference solutions to the notebooks' exercises: try the exercise first, then compare.

In a notebook, `show_solution("Bottleneck")` prints one (in Jupyter, `%load -n solutions.Bottleneck` after
`from helpers import solutions` pastes it into a cell; Colab does not support %load). The spot-the-bug
fixes of the ResNet notebook's networks are written as the one method that changes: in the notebook they
go into a subclass of its ResNet (`class FixedResNet5(ResNet): ...`).
"""

from typing import NamedTuple

import torch
from torch import nn


class Bottleneck(nn.Module):
    """1x1 convolution (narrow), 3x3 convolution, 1x1 convolution (widen by expansion), and the shortcut."""

    expansion = 4  # output channels = expansion * channels

    def __init__(self, in_channels, channels, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        # The stride sits on the 3x3 convolution, as in torchvision (ResNet v1.5).
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, channels * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


# --------------------------------------------------------------------------- spot the bug (ResNet notebook)


class FixedBlock1(nn.Module):
    """Bug 1 fixed: padding=1 on both 3x3 convolutions, so that a map keeps its size at stride 1."""

    expansion = 1

    def __init__(self, in_channels, channels, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, kernel_size=3, stride=stride, padding=1, bias=False)  # fix
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False)  # fix
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class FixedBlock2(nn.Module):
    """Bug 2 fixed: the branch ends in BatchNorm, and the ReLU acts on the sum, so a block can also subtract."""

    expansion = 1

    def __init__(self, in_channels, channels, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))  # fix: no ReLU here
        return self.relu(out + identity)  # fix: the ReLU after the addition


class FixedBlock3(nn.Module):
    """Bug 3 fixed: super().__init__() first, which creates the dictionaries that hold a module's layers."""

    expansion = 1

    def __init__(self, in_channels, channels, stride=1, downsample=None):
        super().__init__()  # fix
        self.conv1 = nn.Conv2d(in_channels, channels, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


def fixed_shortcut4(in_channels, out_channels, stride):
    """Bug 4 fixed: a 2-D 1x1 convolution, which takes (batch, channels, height, width) maps."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),  # fix
                         nn.BatchNorm2d(out_channels))


class FixedResNet5:
    """Bug 5 fixed (the method of `class FixedResNet5(ResNet)`): the stride reaches the first block and its shortcut."""

    def _make_layer(self, block, channels, num_blocks, stride=1):
        downsample = None
        if stride != 1 or self.in_channels != channels * block.expansion:  # fix: a stride needs a shortcut too
            # fix: the shortcut's convolution gets the stride as well
            downsample = nn.Sequential(
                nn.Conv2d(self.in_channels, channels * block.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(channels * block.expansion),
            )
        blocks = [block(self.in_channels, channels, stride, downsample)]  # fix: the stride
        self.in_channels = channels * block.expansion
        blocks += [block(self.in_channels, channels) for _ in range(1, num_blocks)]
        return nn.Sequential(*blocks)


class FixedResNet6:
    """Bug 6 fixed (the method of `class FixedResNet6(ResNet)`): in_channels is updated after the first block,
    because every later block of the stage receives the first block's output channels."""

    def _make_layer(self, block, channels, num_blocks, stride=1):
        downsample = None
        if stride != 1 or self.in_channels != channels * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.in_channels, channels * block.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(channels * block.expansion),
            )
        blocks = [block(self.in_channels, channels, stride, downsample)]
        self.in_channels = channels * block.expansion  # fix: before the other blocks are built
        blocks += [block(self.in_channels, channels) for _ in range(1, num_blocks)]
        return nn.Sequential(*blocks)


class FixedResNet7:
    """Bug 7 fixed (the method of `class FixedResNet7(ResNet)`): the stem ends with its max-pool."""

    def forward_features(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # fix: the stem ends with the max-pool
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        return x


class FixedResNet8:
    """Bug 8 fixed (the method of `class FixedResNet8(ResNet)`): no comma after the return value."""

    def forward_head(self, x):
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)  # fix: no comma


# --------------------------------------------------------------------------- quiz questions


class Question(NamedTuple):
    text: str
    expected: object
    hint: str  # never the answer
    why: str  # printed with PASS
    tolerance: float = 0.0


QUIZ = {
    "dropout_gap": Question(
        "Dropout2d in place of Dropout in VGG16's classifier: the gap between training and validation accuracy",
        "the same",
        hint='Answer "larger", "smaller" or "the same". Try nn.Dropout2d(0.5).train() on torch.ones(4, 8) and on '
             "torch.ones(4, 8, 2, 2): where do the zeros fall in each?",
        why="The classifier's (batch, 4096) vectors have no channels of pixels: nn.Dropout2d zeroes single numbers "
            "there, as nn.Dropout does (and warns). The experiment below shows it.",
    ),
    "conv1d_positions": Question(
        "Positions left when nn.Conv1d(64, 128, kernel_size=1, stride=2) reads the 256 positions of a flattened "
        "16x16 map",
        128,
        hint="Stride 2 along one axis keeps every second entry of that axis, whatever shape it had before.",
        why="The 2-D shortcut keeps 8 x 8 = 64: every other row and every other column. The 1-D stride keeps every "
            "other position of the flattened rows: all 16 rows, every other column.",
    ),
}
