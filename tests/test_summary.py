"""helpers.summary: parameters and multiply-adds, computed rather than guessed."""

import pytest
import torch
import torchvision
from torch import nn

from helpers import count_multiply_adds, count_parameters, multiply_adds_text


def test_multiply_adds_of_a_convolution_by_hand():
    # 8 output channels of 16x16 (stride 2, padding 1 on 32x32), each value reading 3 x 3 x 3 weights.
    conv = nn.Conv2d(3, 8, kernel_size=3, stride=2, padding=1)
    assert count_multiply_adds(conv, (3, 32, 32)) == 8 * 16 * 16 * 3 * 3 * 3


def test_grouped_convolutions_read_only_their_groups_channels():
    depthwise = nn.Conv2d(16, 16, kernel_size=3, padding=1, groups=16)
    assert count_multiply_adds(depthwise, (16, 8, 8)) == 16 * 8 * 8 * 3 * 3


def test_biases_batchnorm_activations_and_pooling_are_not_counted():
    model = nn.Sequential(nn.Conv2d(1, 4, 1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(4 * 14 * 14, 10))
    assert count_multiply_adds(model, (1, 28, 28)) == 4 * 28 * 28 * 1 + 10 * 4 * 14 * 14


@pytest.mark.parametrize("build", [torchvision.models.resnet18, torchvision.models.vgg11])
def test_multiply_adds_are_half_of_torchs_flop_count(build):
    """torch's FlopCounterMode counts a multiply-add as two operations, and counts the same layers here."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build(num_classes=10)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(torch.zeros(1, 3, 64, 64))
    assert 2 * count_multiply_adds(model, (3, 64, 64)) == counter.get_total_flops() > 0


def test_shapes_only_models_on_the_meta_device_are_counted_too():
    with torch.device("meta"):
        model = torchvision.models.resnet18(num_classes=10)
    real = torchvision.models.resnet18(num_classes=10)
    assert count_multiply_adds(model, (3, 64, 64)) == count_multiply_adds(real, (3, 64, 64))


def test_counting_leaves_the_model_in_its_mode_and_without_hooks():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Dropout())
    model.train()
    count_multiply_adds(model, (1, 8, 8))
    assert model.training and all(module.training for module in model.modules())
    assert not model[0]._forward_hooks


def test_count_parameters_trainable_only():
    model = nn.Linear(3, 2)
    model.bias.requires_grad_(False)
    assert (count_parameters(model), count_parameters(model, trainable_only=False)) == (6, 8)


@pytest.mark.parametrize("count, text", [
    (462_422_016, "0.46 G multiply-adds"),  # notebook 04's ResNet-18 at 224x224, as the others write theirs
    (1_290_000_000, "1.29 G multiply-adds"),
    (2_950_000, "2.95 M multiply-adds"),  # an MNIST network: 0.00 G would say nothing
    (7_950, "7,950 multiply-adds"),
])
def test_multiply_adds_have_one_format(count, text):
    assert multiply_adds_text(count) == text
