"""Reference solutions to the notebooks' exercises: try the exercise first, then compare.

In a notebook, `show_solution("Bottleneck")` prints one (in Jupyter, `%load -n solutions.Bottleneck` after
`from helpers import solutions` pastes it into a cell; Colab does not support %load).
"""

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
