"""Reference solutions to the notebooks' exercises: try the exercise first, then compare.

In a notebook, `show_solution("Bottleneck")` prints one (in Jupyter, `%load -n solutions.Bottleneck` after
`from helpers import solutions` pastes it into a cell; Colab does not support %load). The spot-the-bug
fixes of the ResNet notebook's networks are written as the one method that changes: in the notebook they
go into a subclass of its ResNet (`class FixedResNet5(ResNet): ...`).
"""

import inspect
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
    """A quiz question of a notebook: check_quiz(name, answer) checks it, show_solution(name) explains it."""

    text: str
    expected: object  # the answer; or a function of this module that computes it, from check_quiz's keywords
    hint: str  # never the answer
    why: str  # printed with PASS, and by show_solution
    tolerance: float = 0.0

    def answer(self, **given):
        """The expected answer: the value itself, or what the function computes from `given`."""
        return self.expected(**given) if inspect.isfunction(self.expected) else self.expected

    def explained(self) -> str:
        """The question, its answer and why: what show_solution prints."""
        lines = [f"Question: {self.text}."]
        if inspect.isfunction(self.expected):
            if inspect.signature(self.expected).parameters:
                lines.append(f"Answer: computed from your notebook's results by {self.expected.__name__}:")
            else:
                lines.append(f"Answer: {self.expected()!r}, worked out by {self.expected.__name__}:")
            lines.append(inspect.getsource(self.expected).rstrip())
        else:
            lines.append(f"Answer: {self.expected!r}")
        lines.append(f"Why: {self.why}")
        return "\n".join(lines)


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


# --------------------------------------------------------------------------- notebooks 03 and 04


def _create_classifier(num_features, num_classes):
    """Notebook 03's create_classifier, a stand-in for timm's: the global pool (which flattens) and the linear layer."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1)), nn.Linear(num_features, num_classes)


class FixedResNet9:
    """Bug 9 fixed (the method of `class FixedResNet9(ResNet)`): the stem's max-pool has padding=1, so that a map of
    32 pixels becomes 16 (a 224-pixel image's 112 becomes the paper's 56), not 15."""

    def __init__(self, block, layers, num_classes=1000):
        super().__init__(block, layers, num_classes)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)  # fix: padding=1


class FixedResNet10:
    """Bug 10 fixed (the methods of `class FixedResNet10(ResNet)`): create_classifier (the notebook's, here
    _create_classifier) returns two modules. Unpacked under torchvision's names, they are registered: their weights
    are in state_dict() and parameters(), so the optimizer trains them and torchvision's weights load."""

    def __init__(self, block, layers, num_classes=1000):
        super().__init__(block, layers, num_classes)
        self.avgpool, self.fc = _create_classifier(512 * block.expansion, num_classes)  # fix: unpack the tuple

    def forward_head(self, x):
        return self.fc(self.avgpool(x))  # fix: the pool (which flattens), then the linear layer


def _size_after(width, kernel, stride, padding):
    """The width that a convolution or pooling layer gives: (w + 2p - k) // s + 1."""
    return (width + 2 * padding - kernel) // stride + 1


def resnet18_stage3_at_100():
    """stage3's output for one 1x100x100 image in notebook 04's ResNet-18: only the strided layers change the size."""
    width = _size_after(100, kernel=7, stride=2, padding=3)  # the stem's 7x7 convolution: 50
    width = _size_after(width, kernel=3, stride=2, padding=1)  # the stem's max-pool: 25 (stage1 keeps it)
    width = _size_after(width, kernel=3, stride=2, padding=1)  # stage2's first convolution: 13
    width = _size_after(width, kernel=3, stride=2, padding=1)  # stage3's first convolution: 7
    return (256, width, width)  # stage3 has 256 channels


def resnet18_parameters_cifar100():
    """Parameters of notebook 04's resnet18(num_classes=100, input_channels=3), layer by layer (d2l's
    convolutions keep their bias; its 1x1 shortcut has no BatchNorm)."""
    def conv(in_channels, out_channels, kernel):
        return in_channels * out_channels * kernel * kernel + out_channels  # weights and one bias per output

    def batchnorm(channels):
        return 2 * channels  # a scale and a shift per channel

    def residual(in_channels, channels, use_1x1conv):
        main = conv(in_channels, channels, 3) + batchnorm(channels) + conv(channels, channels, 3) + batchnorm(channels)
        return main + (conv(in_channels, channels, 1) if use_1x1conv else 0)

    stem = conv(3, 64, 7) + batchnorm(64)  # 3 input channels instead of 1
    stages = 2 * residual(64, 64, False)  # stage1: first_block=True, no shortcut convolution
    for in_channels, channels in ((64, 128), (128, 256), (256, 512)):
        stages += residual(in_channels, channels, True) + residual(channels, channels, False)
    classifier = 512 * 100 + 100  # 100 classes instead of 10
    return stem + stages + classifier


QUIZ.update({
    "resnet18_stage3_at_100": Question(
        "1. stage3 for a 1x100x100 image", resnet18_stage3_at_100,
        hint="Apply (w + 2p - k) // s + 1 at the stem's convolution and max-pool, then at the first convolution "
             "of stages 2 and 3; the other layers keep the size. Answer with a tuple (channels, height, width).",
        why="100 -> 50 (stem convolution) -> 25 (max-pool) -> 13 (stage2) -> 7 (stage3): an odd size rounds up, "
            "because the padding lets the last window start on the last pixel.",
    ),
    "resnet18_parameters_cifar100": Question(
        "2. parameters for 3 channels and 100 classes", resnet18_parameters_cifar100,
        hint="Only the stem's 7x7 convolution and the final linear layer change size; count their weights and "
             "biases before and after, and add the difference to this notebook's count.",
        why="The stem's convolution gains 2 x 64 x 7 x 7 = 6,272 weights, the linear layer 90 x 512 weights and 90 "
            "biases = 46,170; everything between is unchanged.",
    ),
})
