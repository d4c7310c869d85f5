"""Reference solutions to the notebooks' exercises: try the exercise first, then compare.

Two kinds of exercise, each known by its name, which the notebook's check cell passes and `show_solution(name)`
takes:

- Code: a public class or function here, e.g. `Bottleneck`; the notebook's check (check_exercise and the
  checks built on it, check_fix) falls back to it when the student's code fails.
- Quiz questions: `QUIZ[name]`, a `Question` whose `expected` answer is a value or, better, a function here that
  computes it, so that the notebook's check cell holds only `check_quiz(name, ANSWER)`, never the expression
  that gives the answer away. Such a function may take keyword arguments, which check_quiz passes on
  (`check_quiz(name, ANSWER, runs=runs)` for an answer read from the student's own results).

In a notebook, `show_solution("Bottleneck")` prints one (in Jupyter, `%load -n solutions.Bottleneck` after
`from helpers import solutions` pastes a code solution into a cell; Colab does not support %load). The
spot-the-bug fixes of the ResNet notebook's networks are written as the one method that changes: in the
notebook they go into a subclass of its ResNet (`class FixedResNet5(ResNet): ...`). Each notebook's entries
stay together, in a section of their own.
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
    "conv1d_positions": Question(
        "Positions left when nn.Conv1d(64, 128, kernel_size=1, stride=2) reads the 256 positions of a flattened "
        "16x16 map",
        128,
        hint="Stride 2 along one axis keeps every second entry of that axis, whatever shape it had before.",
        why="The 2-D shortcut keeps 8 x 8 = 64: every other row and every other column. The 1-D stride keeps every "
            "other position of the flattened rows: all 16 rows, every other column.",
    ),
}


# --------------------------------------------------------------------------- notebooks 01 and 02


def block_parameters():
    """Parameters of ResidualBlock(channels=[8, 16, 64]) in notebook 01, layer by layer."""
    c0, c1, c2 = 8, 16, 64
    conv1 = c0 * c1 * 3 * 3 + c1  # 3x3 convolution: in x out x 3 x 3 weights, one bias per output channel
    bn1 = 2 * c1  # BatchNorm: a scale and a shift per channel (its running statistics are no parameters)
    conv2 = c1 * c2 * 1 * 1 + c2  # 1x1 convolution
    bn2 = 2 * c2
    shortcut = (c0 * c2 * 1 * 1 + c2) + 2 * c2  # the strided 1x1 convolution and its BatchNorm
    return conv1 + bn1 + conv2 + bn2 + shortcut


def corner_receptive_field():
    """Pixels of a 28x28 image that can change output pixel (0, 0) after four identity blocks (notebook 01)."""
    reach = 4 * 1  # each block's 3x3 convolution reaches one pixel further on every side; the 1x1 does not
    # Rows 0-4 are in reach of row 0; the padding's zeros above row 0 are no pixels of the image.
    rows = range(max(0, 0 - reach), min(27, 0 + reach) + 1)
    columns = range(max(0, 0 - reach), min(27, 0 + reach) + 1)  # the same, left of column 0
    return len(rows) * len(columns)


def flatten_from_2_shape():
    """The shape of torch.flatten(x, 2) for x of shape (128, 32, 7, 7) (notebook 01)."""
    batch, channels, height, width = 128, 32, 7, 7
    return (batch, channels, height * width)  # the dimensions before 2 stay; the rest multiply into one


def window_dropped():
    """Chance that nn.Dropout(0.5) zeroes all nine values of one channel's 3x3 window at once (notebook 02)."""
    p = 0.5  # each value is zeroed on its own, with probability p
    return p ** (3 * 3)  # nine independent draws must all come out zero: 1 / 512


def add_block_dropout(features, dropout, p):
    """A copy of the nn.Sequential `features` with dropout(p) after every max-pool, the end of each block."""
    layers = []
    for layer in features:
        layers.append(layer)  # the same layer objects, so the same weights
        if isinstance(layer, nn.MaxPool2d):
            layers.append(dropout(p))
    return nn.Sequential(*layers)


QUIZ.update({
    "block_parameters": Question(
        "1. parameters of ResidualBlock(channels=[8, 16, 64])", block_parameters,
        hint="A convolution has in x out x k x k weights and out biases; a BatchNorm layer 2 per channel. The "
             "block has two convolutions and two BatchNorms on the main path, one of each on the shortcut.",
        why="Of the 3,120, the shortcut's 1x1 convolution and BatchNorm hold 704: a projection is not free.",
    ),
    "corner_receptive_field": Question(
        "2. pixels of the image that can change output pixel (0, 0) after four identity blocks",
        corner_receptive_field,
        hint="Each block's 3x3 convolution reaches one pixel further on every side. Which of those sides has "
             "pixels of the image at the corner? The padding's zeros are not pixels of the image.",
        why="The patch grows to 9x9 in the middle of the image, but at the corner only the 5 rows below and 5 "
            "columns to the right exist: 25 pixels. Check it with receptive_field(..., row=0, column=0).",
    ),
    "flatten_from_2": Question(
        "3. the shape of torch.flatten(x, 2)", flatten_from_2_shape,
        hint="torch.flatten(x, start_dim) keeps the dimensions before start_dim as they are and multiplies the "
             "sizes of all the others into one.",
        why="Each image keeps its 32 channels, and each channel's 7x7 map becomes one row of 49 positions: the "
            "layout for a statistic per channel, such as the mean over the positions.",
    ),
    "window_dropped": Question(
        "the chance that nn.Dropout(0.5) zeroes a whole 3x3 window of one channel", window_dropped,
        hint="Each of the nine values is zeroed on its own, with probability 0.5. How likely are nine such "
             "draws all to come out zero? A fraction, such as 0.25.",
        why="1/512, about 0.2%: nearly every window of the next 3x3 convolution still sees part of the pattern "
            "that dropout was meant to hide. nn.Dropout2d(0.5) hides the whole channel with probability 0.5.",
        tolerance=1e-4,
    ),
})


# --------------------------------------------------------------------------- notebook 05


def resnet110_parameters():
    """Parameters of the paper's 110-layer CIFAR-10 ResNet (n = 18 blocks per stage), counted stage by stage."""
    n, widths, classes = 18, (16, 32, 64), 10
    stem = 3 * 3 * 3 * widths[0] + 2 * widths[0]  # a 3x3 convolution from 3 channels (no bias), its BatchNorm
    stages = 0
    for stage, width in enumerate(widths):
        first_input = width // 2 if stage > 0 else width  # stages 2 and 3 open on half as many channels
        convolutions = 9 * first_input * width + (2 * n - 1) * 9 * width * width
        stages += convolutions + 2 * n * 2 * width  # 2n convolutions, each followed by a BatchNorm
    head = widths[-1] * classes + classes  # the linear layer: weights and biases
    return stem + stages + head


QUIZ.update({
    "resnet110_parameters": Question(
        "the parameters of the 110-layer network", resnet110_parameters,
        hint="Count stage by stage: the stem, then for each stage its 2n convolutions and 2n BatchNorm layers "
             "(the first convolution of stages 2 and 3 reads half as many channels), then the linear layer.",
        why="Table 6 of the paper rounds it to 1.7M; stage 3's 3x3 convolutions of 64 channels hold three "
            "quarters of it, as in the 20-layer network.",
    ),
})


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
