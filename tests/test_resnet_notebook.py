"""The ResNet notebook's own networks are torchvision's ResNet-34 and ResNet-50, checked independently."""

import math

import pytest
import torch
import torchvision
from torch import nn

from tests.notebook_code import notebook_namespace

NOTEBOOK = "03_resnet34_cifar10.ipynb"


@pytest.fixture(scope="module")
def notebook():
    return notebook_namespace(NOTEBOOK)


def small_images(seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def distinct_batchnorm_statistics(model: nn.Module) -> nn.Module:
    """Fresh BatchNorm layers all look alike; one training-mode pass gives each its own statistics."""
    model.train()
    with torch.no_grad():
        model(small_images(seed=1))
    return model.eval()


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def stage_widths(model: nn.Module, size: int) -> list[int]:
    """The spatial width of the outputs of layer1..layer4 for one size x size image."""
    widths = {}
    hooks = [getattr(model, f"layer{i}").register_forward_hook(
        lambda _module, _inputs, output, i=i: widths.__setitem__(i, output.shape[-1])) for i in range(1, 5)]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, size, size, device=next(model.parameters()).device))
    for hook in hooks:
        hook.remove()
    return [widths[i] for i in range(1, 5)]


@pytest.mark.parametrize(("num_classes", "expected"), [(10, 21_289_802), (1000, 21_797_672)])
def test_resnet34_parameter_count(notebook, num_classes, expected):
    assert num_parameters(notebook["resnet34"](num_classes=num_classes)) == expected


def test_block_expansions(notebook):
    assert notebook["BasicBlock"].expansion == 1
    assert notebook["Bottleneck"].expansion == 4


@pytest.mark.parametrize("name", ["resnet34", "resnet50"])
def test_weights_load_both_ways_and_give_identical_outputs(notebook, name):
    ours_builder, theirs_builder = notebook[name], getattr(torchvision.models, name)
    images = small_images()
    for source_builder, target_builder in ((ours_builder, theirs_builder), (theirs_builder, ours_builder)):
        torch.manual_seed(0)
        source = distinct_batchnorm_statistics(source_builder(num_classes=10))
        target = target_builder(num_classes=10).eval()
        target.load_state_dict(source.state_dict(), strict=True)
        with torch.no_grad():
            assert torch.equal(source(images), target(images))


def test_same_state_dict_keys_and_shapes_as_torchvision(notebook):
    ours = notebook["resnet34"](num_classes=10).state_dict()
    theirs = torchvision.models.resnet34(num_classes=10).state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


def test_stage_sizes_at_64x64(notebook):
    assert stage_widths(notebook["resnet34"](num_classes=10), 64) == [16, 8, 4, 2]


def test_small_image_stem_keeps_the_resolution(notebook):
    with torch.device("meta"):  # shapes only: fast
        model = notebook["use_small_image_stem"](notebook["resnet34"](num_classes=10))
    assert model.conv1.weight.shape == (64, 3, 3, 3)
    assert stage_widths(model, 64) == [64, 32, 16, 8]


def test_initialisation(notebook):
    model = notebook["resnet34"](num_classes=10)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert torch.all(module.weight == 1) and torch.all(module.bias == 0)
    # Kaiming normal with fan_out: std = sqrt(2 / (out_channels * kernel area)).
    weight = model.layer4[1].conv2.weight
    expected_std = math.sqrt(2 / (weight.shape[0] * weight.shape[2] * weight.shape[3]))
    assert weight.std().item() == pytest.approx(expected_std, rel=0.02)
    assert weight.mean().item() == pytest.approx(0, abs=0.01 * expected_std)
