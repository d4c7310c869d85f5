"""helpers.comparison: the proof that two networks are the same, and the per-part counts the notebooks print."""

import pytest
import torch
import torchvision
from torch import nn

from helpers import (
    ModelMismatchError,
    check_against_torchvision,
    convolution_kinds,
    count_parameters,
    count_weighted_layers,
    parameters_per_part,
    part_outputs,
    print_parameter_table,
    with_running_stats,
)
from helpers.comparison import state_dict_differences


class Reference(nn.Module):
    """A tiny network in the role of torchvision's: two conv + BatchNorm layers and a classifier."""

    def __init__(self, num_classes=10, kernel_size=3):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


class Rewritten(nn.Module):
    """The same network written again, differently: the layers are created in another order."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.fc = nn.Linear(4, num_classes)
        self.bn2 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)

    def forward(self, x):
        x = self.bn1(self.conv1(x)).relu()
        x = self.bn2(self.conv2(x)).relu()
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class WithoutSecondBatchNorm(Reference):
    def __init__(self, num_classes=10):
        super().__init__(num_classes)
        del self.bn2

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        return self.fc(torch.relu(self.conv2(x)).mean((2, 3)))


class SwappedBatchNorms(Reference):
    """Uses bn2 where bn1 belongs and the other way round: the same weights, a different function."""

    def forward(self, x):
        x = torch.relu(self.bn2(self.conv1(x)))
        x = torch.relu(self.bn1(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


class WithoutFirstRelu(Reference):
    def forward(self, x):
        x = self.bn1(self.conv1(x))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


def images(seed=0):
    return torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_the_same_network_written_differently_passes_and_counts_parameters(capsys):
    counts = check_against_torchvision(Rewritten, Reference, images(), num_classes=5)
    expected = 3 * 4 * 9 + 4 * 4 * 9 + 2 * (4 + 4) + 4 * 5 + 5
    assert counts == (expected, expected) == (count_parameters(Reference(5)),) * 2
    output = capsys.readouterr().out
    assert "ours -> torchvision: strict load OK, identical outputs" in output
    assert "torchvision -> ours: strict load OK, identical outputs" in output


def test_a_changed_layer_fails_naming_the_weight_and_both_shapes():
    with pytest.raises(ModelMismatchError) as caught:
        check_against_torchvision(lambda num_classes: Reference(num_classes, kernel_size=5), Reference, images(), 10)
    assert "conv1.weight (4, 3, 5, 5) instead of (4, 3, 3, 3)" in str(caught.value)


def test_a_missing_layer_fails_naming_its_weights():
    expected = r"missing in ours: bn2\.weight, bn2\.bias, bn2\.running_mean and 2 more"
    with pytest.raises(ModelMismatchError, match=expected):
        check_against_torchvision(WithoutSecondBatchNorm, Reference, images(), 10)


def test_an_extra_layer_fails_naming_it():
    with pytest.raises(ModelMismatchError, match=r"not in torchvision's: bn2\.weight"):
        check_against_torchvision(Reference, WithoutSecondBatchNorm, images(), 10)


def test_a_different_forward_fails_on_the_outputs():
    with pytest.raises(ModelMismatchError, match="different outputs"):
        check_against_torchvision(WithoutFirstRelu, Reference, images(), 10)


def test_running_statistics_expose_swapped_batchnorm_layers():
    """Fresh BatchNorm layers are all alike, so swapping two goes unseen until each has its own statistics."""
    fresh_ours, fresh_theirs = SwappedBatchNorms().eval(), Reference().eval()
    fresh_theirs.load_state_dict(fresh_ours.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh_ours(images()), fresh_theirs(images()))
    with pytest.raises(ModelMismatchError, match="different outputs"):
        check_against_torchvision(SwappedBatchNorms, Reference, images(), 10)


def test_with_running_stats_leaves_the_model_in_eval_mode_with_new_statistics():
    model = Reference()
    result = with_running_stats(model, images())
    assert result is model and not model.training
    assert not torch.equal(model.bn1.running_mean, torch.zeros(4))
    assert all(p.grad is None for p in model.parameters())


def test_state_dict_differences_is_empty_for_equal_layouts_and_counts_the_rest():
    assert state_dict_differences(Reference().state_dict(), Rewritten().state_dict()) == []
    differences = state_dict_differences(WithoutSecondBatchNorm().state_dict(), Reference().state_dict(), limit=1)
    assert differences == ["missing in ours: bn2.weight and 4 more"]


def test_parameters_per_part_splits_stem_stages_shortcuts_and_classifier():
    with torch.device("meta"):
        resnet34 = torchvision.models.resnet34(num_classes=10)
        resnet50 = torchvision.models.resnet50(num_classes=10)
    parts34, parts50 = parameters_per_part(resnet34), parameters_per_part(resnet50)
    assert list(parts34) == ["stem", "layer1", "layer1 shortcut", "layer2", "layer2 shortcut", "layer3",
                             "layer3 shortcut", "layer4", "layer4 shortcut", "fc"]
    assert sum(parts34.values()) == count_parameters(resnet34) == 21_289_802
    assert sum(parts50.values()) == count_parameters(resnet50) == 23_528_522
    assert parts34["stem"] == parts50["stem"] == 64 * 3 * 7 * 7 + 2 * 64
    assert parts34["layer1 shortcut"] == 0 and parts50["layer1 shortcut"] == 64 * 256 + 2 * 256
    assert parts50["layer4 shortcut"] == 1024 * 2048 + 2 * 2048
    assert parts50["fc"] - parts34["fc"] == (2048 - 512) * 10


def test_print_parameter_table_lists_every_part_and_the_totals(capsys):
    print_parameter_table({"A": {"stem": 1_000, "fc": 10}, "B": {"stem": 2_000, "fc": 20}})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["part", "A", "B"]
    assert [line.split() for line in lines[1:]] == [["stem", "1,000", "2,000"], ["fc", "10", "20"],
                                                     ["total", "1,010", "2,020"]]


@pytest.mark.parametrize(("name", "expected"), [
    ("resnet18", (18, 3)), ("resnet34", (34, 3)), ("resnet50", (50, 4)),
    ("resnet101", (101, 4)), ("resnet152", (152, 4)), ("vgg16", (16, 0)),
])
def test_count_weighted_layers_counts_the_main_path_as_the_names_do(name, expected):
    with torch.device("meta"):
        model = getattr(torchvision.models, name)()
    assert count_weighted_layers(model) == expected


def test_convolution_kinds_keeps_shortcuts_apart():
    with torch.device("meta"):
        resnet18, resnet50 = torchvision.models.resnet18(), torchvision.models.resnet50()
    assert convolution_kinds(resnet18) == {"7x7": 1, "3x3": 16, "1x1 shortcut": 3}
    assert convolution_kinds(resnet50) == {"7x7": 1, "1x1": 32, "3x3": 16, "1x1 shortcut": 4}


def test_part_outputs_gives_each_top_level_part_in_running_order():
    outputs = part_outputs(torchvision.models.resnet18(num_classes=10), (3, 64, 64))
    assert list(outputs) == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4",
                             "avgpool", "fc"]
    assert outputs["maxpool"] == (64, 16, 16) and outputs["layer4"] == (512, 2, 2) and outputs["fc"] == (10,)
