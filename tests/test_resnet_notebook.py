"""The ResNet notebook's own networks are torchvision's ResNets, checked independently; its exercise check works."""

import json
import math
import re
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from helpers import (
    check_bottleneck,
    check_fix,
    convolution_kinds,
    count_weighted_layers,
    grad_cam,
    parameters_per_part,
    show_solution,
    solutions,
)
from tests.notebook_code import NOTEBOOKS, notebook_namespace

NOTEBOOK = "03_resnet34_cifar10.ipynb"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def shipped():
    """The notebook's tagged cells as shipped: the Bottleneck exercise is still the stub."""
    return notebook_namespace(NOTEBOOK)


@pytest.fixture(scope="module")
def notebook():
    """The notebook after its check cell, for a student who has not done the exercise yet."""
    namespace = notebook_namespace(NOTEBOOK)
    namespace["Bottleneck"] = solutions.Bottleneck  # what the check cell returns then
    return namespace


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


def test_block_expansions(shipped):
    assert shipped["BasicBlock"].expansion == 1
    assert shipped["Bottleneck"].expansion == solutions.Bottleneck.expansion == 4  # the exercise states it


@pytest.mark.slow
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


def test_feature_maps_and_grad_cam_layer_stated_in_the_text(notebook):
    model = notebook["resnet34"](num_classes=10).eval()
    shapes = {}
    hooks = [getattr(model, f"layer{i}").register_forward_hook(
        lambda _module, _inputs, output, i=i: shapes.__setitem__(i, tuple(output.shape[1:]))) for i in range(1, 5)]
    with torch.no_grad():
        model(small_images())
    for hook in hooks:
        hook.remove()
    assert [shapes[i] for i in range(1, 5)] == [(64, 16, 16), (128, 8, 8), (256, 4, 4), (512, 2, 2)]
    assert model.conv1.weight.shape == (64, 3, 7, 7)  # the first-layer filters: 64 of 3x7x7
    assert grad_cam(model, small_images(), "layer4").shape == (2, 64, 64)  # from layer4's 2x2 to the image


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


@pytest.mark.parametrize(("name", "expected"), [("resnet50", 23_528_522), ("resnet101", 42_520_650),
                                                ("resnet152", 58_164_298)])
def test_deeper_resnets_have_torchvision_layout_and_parameters(notebook, name, expected):
    with torch.device("meta"):  # shapes only: fast
        ours = notebook[name](num_classes=10).state_dict()
        theirs = getattr(torchvision.models, name)(num_classes=10).state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    assert sum(v.numel() for k, v in ours.items() if "running" not in k and "num_batches" not in k) == expected


@pytest.mark.parametrize(("name", "expected"), [("resnet34", (34, 3)), ("resnet50", (50, 4)),
                                                ("resnet101", (101, 4)), ("resnet152", (152, 4))])
def test_the_name_counts_the_weighted_layers_on_the_main_path(notebook, name, expected):
    with torch.device("meta"):
        assert count_weighted_layers(notebook[name](num_classes=10)) == expected


# The Bottleneck exercise: the check cell's verdicts, on the notebook's own ResNet class.

class StudentBottleneck(nn.Module):
    """A correct answer, written independently of the reference solution."""

    expansion = 4

    def __init__(self, in_channels, channels, stride=1, downsample=None):
        super().__init__()
        width, out_channels = channels, channels * self.expansion
        self.conv1, self.bn1 = nn.Conv2d(in_channels, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ExpansionTwo(solutions.Bottleneck):
    expansion = 2


class WithoutLastBatchNorm(solutions.Bottleneck):
    def __init__(self, in_channels, channels, stride=1, downsample=None):
        super().__init__(in_channels, channels, stride, downsample)
        del self.bn3

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.conv3(out) + identity)


class ReluBeforeAddition(solutions.Bottleneck):
    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out))) + identity


class StrideNowhere(solutions.Bottleneck):
    def __init__(self, in_channels, channels, stride=1, downsample=None):
        super().__init__(in_channels, channels, 1, downsample)


def test_the_shipped_exercise_is_reported_as_not_attempted(shipped, capsys):
    block = check_bottleneck(shipped["Bottleneck"], shipped["ResNet"], small_images())
    assert block is solutions.Bottleneck
    output = capsys.readouterr().out
    assert "NOT ATTEMPTED" in output and "PASS" not in output and "FAIL" not in output


@pytest.mark.slow
@pytest.mark.parametrize("block", [StudentBottleneck, torchvision.models.resnet.Bottleneck],
                         ids=["a student's block", "torchvision's block"])
def test_a_correct_bottleneck_passes_and_is_kept(shipped, capsys, block):
    assert check_bottleneck(block, shipped["ResNet"], small_images()) is block
    output = capsys.readouterr().out
    assert "PASS: your Bottleneck is right. ResNet-50 built from it is torchvision's (23,528,522 parameters)." in output
    assert "torchvision -> ours: strict load OK, identical outputs" in output


@pytest.mark.parametrize(("block", "reason"), [
    (ExpansionTwo, "other shapes in ours: layer1.0.conv3.weight (128, 64, 1, 1) instead of (256, 64, 1, 1)"),
    (WithoutLastBatchNorm, "missing in ours: layer1.0.bn3.weight"),
    (ReluBeforeAddition, "with the same weights the two models compute different outputs"),
    (StrideNowhere, "raised RuntimeError: The size of tensor a"),
])
@pytest.mark.slow
def test_a_wrong_bottleneck_fails_with_the_reason_and_the_notebook_goes_on(shipped, capsys, block, reason):
    assert check_bottleneck(block, shipped["ResNet"], small_images()) is solutions.Bottleneck
    output = capsys.readouterr().out
    assert "FAIL: " in output and reason in output and "PASS" not in output
    assert "The notebook goes on with the reference solution" in output


def test_forward_is_the_head_of_the_features(notebook):
    model = notebook["resnet34"](num_classes=10).eval()
    with torch.no_grad():
        features = model.forward_features(small_images())
        assert features.shape == (2, 512, 2, 2)
        assert torch.equal(model.forward_head(features), model(small_images()))


@pytest.mark.slow
def test_resnet34_and_timms_exchange_weights_with_identical_outputs(notebook):
    timm = pytest.importorskip("timm", reason="timm is not installed")
    images = small_images()

    def timm_resnet34(num_classes):
        return timm.create_model("resnet34", num_classes=num_classes)

    ours = notebook["resnet34"]
    for source_builder, target_builder in ((ours, timm_resnet34), (timm_resnet34, ours)):
        torch.manual_seed(0)
        source = distinct_batchnorm_statistics(source_builder(10))
        target = target_builder(10).eval()
        target.load_state_dict(source.state_dict(), strict=True)
        with torch.no_grad():
            assert torch.equal(source(images), target(images))


def test_without_batchnorm_replaces_every_batchnorm_and_nothing_else(notebook):
    with torch.device("meta"):
        model = notebook["resnet34"](num_classes=10)
        batchnorm_parameters = sum(p.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d)
                                   for p in m.parameters())
        stripped = notebook["without_batchnorm"](model)
    assert not any(isinstance(module, nn.BatchNorm2d) for module in stripped.modules())
    assert num_parameters(stripped) == 21_289_802 - batchnorm_parameters


def test_output_spread_reads_each_part_and_leaves_no_hook(notebook):
    torch.manual_seed(0)
    model = notebook["resnet34"](num_classes=10)
    spreads = notebook["output_spread"](model, ("layer1", "fc"), small_images())
    assert set(spreads) == {"layer1", "fc"} and all(value > 0 for value in spreads.values())
    assert not any(module._forward_hooks for module in model.modules())


def test_shape_changes_names_what_each_part_does(notebook):
    shapes = [("image", (3, 64, 64)), ("grows", (64, 32, 32)), ("keeps", (64, 16, 16)), ("widens", (256, 16, 16)),
              ("narrows", (128, 16, 16))]
    assert [row[-1] for row in notebook["shape_changes"](shapes)] == [
        "halves, channels grow", "halves, channels stay", "same size, channels grow", "same size, channels shrink"]


# Spot the bug: the notebook's own broken code, its shipped copies, the solutions and typical half-fixes.

BUGS = ["FixedBlock1", "FixedBlock2", "FixedBlock3", "fixed_shortcut4", "FixedResNet5", "FixedResNet6",
        "FixedResNet7", "FixedResNet8", "FixedResNet9", "FixedResNet10"]
LECTURE_BUGS = {1, 2, 3, 4, 9, 10}  # made and fixed in the live-coding lecture; the others are added


def broken_name(name: str) -> str:
    return name.replace("Fixed", "Broken").replace("fixed", "broken")


def solution_for(notebook, name: str):
    """The reference fix as the notebook would hold it: a network's method goes into a ResNet subclass."""
    solution = getattr(solutions, name)
    return type(name, (solution, notebook["ResNet"]), {}) if name.startswith("FixedResNet") else solution


@pytest.mark.parametrize("name", BUGS)
def test_a_shipped_copy_is_not_attempted(shipped, capsys, name):
    assert check_fix(name, shipped[name], shipped[broken_name(name)]) is None
    assert capsys.readouterr().out.startswith(f"NOT ATTEMPTED: {name} still behaves exactly as the broken code")


@pytest.mark.parametrize("name", BUGS)
def test_the_solution_passes(shipped, capsys, name):
    assert check_fix(name, solution_for(shipped, name), shipped[broken_name(name)]) is True
    assert f"PASS: {name} is right." in capsys.readouterr().out


def stride_on_the_block_only(self, block, channels, num_blocks, stride=1):
    downsample = None
    if self.in_channels != channels * block.expansion:
        downsample = nn.Sequential(nn.Conv2d(self.in_channels, channels * block.expansion, 1, bias=False),
                                   nn.BatchNorm2d(channels * block.expansion))
    blocks = [block(self.in_channels, channels, stride, downsample)]
    self.in_channels = channels * block.expansion
    return nn.Sequential(*blocks, *[block(self.in_channels, channels) for _ in range(1, num_blocks)])


def max_pool_without_padding(self, x):
    x = nn.functional.max_pool2d(self.relu(self.bn1(self.conv1(x))), kernel_size=3, stride=2)
    return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def branch_relu_removed_but_none_after_the_sum(self, x):
    identity = x if self.downsample is None else self.downsample(x)
    return self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))) + identity


def unpacked_in_forward_only(self, x):
    pool, fc = self.classifier  # runs, but these two modules are not registered: torchvision's weights miss them
    return fc(pool(x))


def a_tuple_made_a_sequential(self, block, layers, num_classes=1000):
    super(type(self), self).__init__(block, layers, num_classes)
    self.classifier = nn.Sequential(*solutions._create_classifier(512 * block.expansion, num_classes))


def a_two_pixel_max_pool(self, block, layers, num_classes=1000):
    super(type(self), self).__init__(block, layers, num_classes)
    self.maxpool = nn.MaxPool2d(kernel_size=2, stride=2)  # the sizes are right (32 -> 16), the windows are not


def forward_head_through_classifier(self, x):
    return self.classifier(x)


@pytest.mark.parametrize(("name", "method", "why"), [
    ("FixedResNet10", {"forward_head": unpacked_in_forward_only},
     "with the same weights the two models compute different outputs"),
    ("FixedResNet10", {"__init__": a_tuple_made_a_sequential, "forward_head": forward_head_through_classifier},
     "classifier.1.weight"),
    ("FixedResNet9", {"__init__": a_two_pixel_max_pool},
     "with the same weights the two models compute different outputs"),
    ("FixedResNet5", {"_make_layer": stride_on_the_block_only}, "raised RuntimeError: The size of tensor a"),
    ("FixedResNet7", {"forward_features": max_pool_without_padding},
     "layer1 gives maps of (64, 15, 15), where ResNet-34's layer1 gives (64, 16, 16)"),
    ("FixedBlock2", {"forward": branch_relu_removed_but_none_after_the_sum},
     "with the same weights the two models compute different outputs"),
])
def test_a_half_fix_fails_with_the_reason(shipped, capsys, name, method, why):
    base = shipped[broken_name(name)] if name == "FixedResNet10" else (
        shipped["ResNet"] if name.startswith("FixedResNet") else solutions.FixedBlock2)
    assert check_fix(name, type(name, (base,), method), shipped[broken_name(name)]) is False
    output = capsys.readouterr().out
    assert output.startswith("FAIL: ") and why in output


def markdown_text() -> str:
    """The notebook's markdown, with its lines joined: a quoted sentence may be wrapped anywhere."""
    return " ".join(" ".join(cell_sources("markdown")).split())


def cell_sources(kind: str) -> list[str]:
    return ["".join(cell["source"]) for cell in json.loads((NOTEBOOKS / NOTEBOOK).read_text())["cells"]
            if cell["cell_type"] == kind]


def test_the_text_says_which_bugs_are_the_lectures():
    text = markdown_text()
    for number in range(1, len(BUGS) + 1):
        origin = "the lecture's" if number in LECTURE_BUGS else "added"
        assert f"**Bug {number} ({origin}):" in text, number
    assert "fixed six of the ten bugs below" in text and len(LECTURE_BUGS) == 6 and len(BUGS) == 10


def test_bug_10_shows_the_lectures_error(shipped):
    model = shipped["BrokenResNet10"](torchvision.models.resnet.BasicBlock, [3, 4, 6, 3], num_classes=10)
    with pytest.raises(TypeError, match="'tuple' object is not callable"):
        model(small_images())


def test_bug_9_is_one_pixel_short_where_the_paper_has_56(shipped):
    with torch.device("meta"):
        model = shipped["BrokenResNet9"](torchvision.models.resnet.BasicBlock, [3, 4, 6, 3], num_classes=10)
    assert stage_widths(model, 64) == [15, 8, 4, 2]
    assert shipped["resnet34"](10).maxpool.padding == 1  # the correct stem has it: the bug is bug 9's own


def test_the_create_classifier_stand_in_returns_what_timms_returns(shipped):
    timm_layers = pytest.importorskip("timm.layers", reason="timm is not installed")
    ours, theirs = shipped["create_classifier"](512, 10), timm_layers.create_classifier(512, 10)
    assert type(ours) is type(theirs) is tuple and len(ours) == len(theirs) == 2
    assert isinstance(ours[1], nn.Linear) and isinstance(theirs[1], nn.Linear)
    features = torch.randn(2, 512, 2, 2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(ours[0](features), theirs[0](features))  # both pool and flatten to (2, 512)


def exercise_names_checked(kind_of_check: str) -> list[str]:
    """The exercise names the notebook's check cells pass, e.g. check_fix("FixedBlock1", ...)."""
    return [name for source in cell_sources("code") for name in re.findall(kind_of_check + r'\("(\w+)"', source)]


def test_show_solution_answers_every_exercise_and_quiz_of_the_notebook(capsys):
    names = exercise_names_checked("check_fix") + exercise_names_checked("check_quiz") + ["Bottleneck"]
    assert sorted(names) == sorted([*BUGS, "conv1d_positions", "Bottleneck"])
    assert any("check_bottleneck(Bottleneck" in source for source in cell_sources("code"))
    for name in names:
        show_solution(name)
        shown = capsys.readouterr().out
        assert "def " in shown or "Answer: " in shown, name


# The real-CIFAR record that the BatchNorm section quotes (docs/real_cifar/first_steps.json).

def first_steps_rows(record: dict) -> str:
    """The section's table: per seed, ResNet-34's highest loss of the first 10 steps and its test accuracy."""
    rows = ["| seed | highest loss of the first 10 steps | test accuracy after 25 / 50 / 100 steps |",
            "|---|---|---|"]
    for seed, runs in sorted(record["seeds"].items()):
        run = runs["ResNet-34"]
        accuracies = " / ".join(f"{run['test_accuracy'][step]:.1f}" for step in ("25", "50", "100"))
        rows.append(f"| {seed} | {max(run['losses'][:10]):.2f} | {accuracies}% |")
    return "\n".join(rows)


def test_the_batchnorm_section_quotes_the_recorded_first_steps():
    record = json.loads((ROOT / "docs" / "real_cifar" / "first_steps.json").read_text())
    runs = {seed: result["ResNet-34"] for seed, result in record["seeds"].items()}
    assert first_steps_rows(record) in "\n".join(cell_sources("markdown"))
    highest = [max(run["losses"][:10]) for run in runs.values()]
    text = markdown_text()
    assert f"the loss overshoots to between {min(highest):.1f} and {max(highest):.1f}, far above" in text
    # "After 100 steps (25,600 images) seed 1 has left chance, and seeds 2 and 3 have not": within 2 points of 10%.
    left_chance = [seed for seed, run in sorted(runs.items()) if run["test_accuracy"]["100"] > 12.0]
    assert left_chance == ["1"] and runs["1"]["batch_size"] * 100 == 25_600
    assert "After 100 steps (25,600 images) seed 1 has left chance, and seeds 2 and 3 have not" in text
    assert all(run["learning_rate"] == 0.1 and run["batch_size"] == 256 for run in runs.values())


# The numbers of the deeper ResNets that the text states (the notebook prints them; the checks live here).

def test_the_deeper_resnets_numbers_stated_in_the_text(notebook):
    with torch.device("meta"):
        networks = {name: notebook[name](10) for name in ("resnet34", "resnet50", "resnet101", "resnet152")}
    assert convolution_kinds(networks["resnet34"]) == {"7x7": 1, "3x3": 32, "1x1 shortcut": 3}
    assert convolution_kinds(networks["resnet50"]) == {"7x7": 1, "1x1": 32, "3x3": 16, "1x1 shortcut": 4}
    parameters = {name: parameters_per_part(network) for name, network in networks.items()}
    difference = {part: parameters["resnet50"][part] - parameters["resnet34"][part] for part in parameters["resnet50"]}
    on_shortcuts = sum(change for part, change in difference.items() if part.endswith("shortcut"))
    on_main_paths = sum(difference[f"layer{i}"] for i in range(1, 5))
    blocks = (num_parameters(notebook["Bottleneck"](256, 64)), num_parameters(notebook["BasicBlock"](64, 64)))
    assert sum(difference.values()) == 2_238_720 == num_parameters(networks["resnet50"]) - 21_289_802
    assert num_parameters(networks["resnet50"]) == 23_528_522
    assert difference["fc"] == 15_360 == (2_048 - 512) * 10
    assert on_shortcuts == 2_602_752 and on_main_paths == -379_392 and difference["stem"] == 0
    assert all(difference[f"layer{i}"] < 0 for i in range(1, 5))
    assert parameters["resnet50"]["layer4 shortcut"] == 2_101_248 == 1_024 * 2_048 + 2 * 2_048
    assert parameters["resnet50"]["layer1 shortcut"] == 64 * 256 + 2 * 256  # turns 64 channels into 256
    assert blocks == (70_400, 73_984)
    assert all(parameters[name][part] == parameters["resnet50"][part] for name in ("resnet101", "resnet152")
               for part in parameters["resnet50"] if part not in ("layer2", "layer3"))
    text = markdown_text()
    for number in ("23,528,522", "2,238,720", "21,289,802", "15,360", "379,392", "70,400", "73,984", "2,602,752",
                   "2,101,248"):
        assert number in text, number


def test_the_correct_listings_stay_folded_so_that_the_symptoms_come_first():
    """Spot the bug: the correct code is folded (Jupyter and Colab), so each exercise is read from its symptom."""
    cells = json.loads((NOTEBOOKS / NOTEBOOK).read_text())["cells"]
    for name in ("def conv3x3(", "class BasicBlock(nn.Module):", "class ResNet(nn.Module):"):
        [cell] = [cell for cell in cells if cell["cell_type"] == "code" and name in "".join(cell["source"])]
        assert cell["metadata"]["jupyter"]["source_hidden"] is True and cell["metadata"]["cellView"] == "form"
        assert cell["source"][0].startswith("# @title ") and "folded" in cell["source"][0]
