"""helpers.exercises: a check says PASS, FAIL (and why) or NOT ATTEMPTED, and the notebook always goes on."""

import inspect
import warnings

import pytest
import torch
import torchvision
from torch import nn

from helpers import (
    ModelMismatchError,
    check_answer,
    check_exercise,
    check_fix,
    check_quiz,
    expect_error,
    show_solution,
    solutions,
)
from helpers.exercises import FIXES


class Attempt:
    """Stands in for a student's class."""


def check_passes(attempt):
    return "All good."


def check_not_attempted(attempt):
    raise NotImplementedError("Exercise: write it here")


def check_mismatch(attempt):
    raise ModelMismatchError("the weights do not match torchvision's: missing in ours: bn3.weight")


def check_crashes(attempt):
    raise RuntimeError("The size of tensor a (8) must match the size of tensor b (16)")


def test_a_passing_attempt_is_kept(capsys):
    assert check_exercise("Bottleneck", Attempt, check_passes) is Attempt
    assert capsys.readouterr().out == "PASS: your Bottleneck is right. All good.\n"


@pytest.mark.parametrize("attempt", [None, Attempt])
def test_no_attempt_says_so_and_falls_back_to_the_solution(capsys, attempt):
    assert check_exercise("Bottleneck", attempt, check_not_attempted) is solutions.Bottleneck
    output = capsys.readouterr().out
    assert output.startswith("NOT ATTEMPTED: Bottleneck still raises NotImplementedError.")
    assert 'show_solution("Bottleneck")' in output and "FAIL" not in output


def test_a_mismatch_fails_with_the_reason_and_the_hint_and_falls_back(capsys):
    assert check_exercise("Bottleneck", Attempt, check_mismatch, hint="Hint: bn3.") is solutions.Bottleneck
    output = capsys.readouterr().out
    assert output.startswith("FAIL: the weights do not match torchvision's: missing in ours: bn3.weight.\nHint: bn3.")
    assert "goes on with the reference solution" in output


def test_a_crash_in_the_attempt_fails_naming_the_error_and_falls_back(capsys):
    assert check_exercise("Bottleneck", Attempt, check_crashes) is solutions.Bottleneck
    assert capsys.readouterr().out.startswith(
        "FAIL: building or running it raised RuntimeError: The size of tensor a (8) must match")


def test_checking_the_solution_again_says_it_is_not_the_students(capsys):
    """Running the check cell twice must not report the reference solution as the student's PASS."""
    assert check_exercise("Bottleneck", solutions.Bottleneck, check_passes) is solutions.Bottleneck
    output = capsys.readouterr().out
    assert "reference solution now" in output and "PASS" not in output


def test_show_solution_prints_the_source_of_the_solution(capsys):
    show_solution("Bottleneck")
    assert capsys.readouterr().out == inspect.getsource(solutions.Bottleneck) + "\n"
    assert inspect.getsource(solutions.Bottleneck).startswith("class Bottleneck(nn.Module):")


def test_expect_error_prints_the_expected_error(capsys):
    with expect_error(ValueError):
        raise ValueError("bad value")
    assert capsys.readouterr().out == "ValueError: bad value\n"


def test_expect_error_fails_when_nothing_goes_wrong():
    with pytest.raises(AssertionError, match="expected a RuntimeError, but the code ran without one"):
        with expect_error(RuntimeError):
            pass


def test_expect_error_lets_other_errors_through():
    with pytest.raises(KeyError):
        with expect_error(ValueError):
            raise KeyError("other")


@pytest.mark.parametrize(("answer", "expected", "result"), [
    ((256, 6, 6), (256, 6, 6), True), ([256, 6, 6], (256, 6, 6), True), ((256, 6), (256, 6, 6), False),
    (" Dropout ", "dropout", True), ("Dropout2d", "Dropout", False), (1_729_850, 1_729_850, True),
    (1_729_851, 1_729_850, False), ("1729850", 1_729_850, False), (True, 1, False), (0.5, 0.5004, False),
])
def test_check_answer_compares_like_a_student_would_expect(capsys, answer, expected, result):
    assert check_answer("Q", answer, expected, hint="Count again.") is result
    output = capsys.readouterr().out
    assert output.startswith("PASS: Q" if result else "FAIL: Q")


def test_check_answer_never_prints_the_expected_answer_on_a_miss(capsys):
    assert check_answer("Parameters of ResNet-110", 1_000_000, 1_729_850, hint="Count stage by stage.") is False
    output = capsys.readouterr().out
    assert "1729850" not in output.replace(",", "").replace("_", "") and "Count stage by stage." in output
    assert "off" not in output  # not even how far off it is


def test_check_answer_without_an_answer_says_not_attempted(capsys):
    assert check_answer("Q", None, 3, hint="h") is None
    assert capsys.readouterr().out.startswith("NOT ATTEMPTED: Q.")


def test_check_answer_with_a_tolerance_and_an_explanation(capsys):
    assert check_answer("Ratio", 3.71, 3.7, tolerance=0.05, why="The classifier costs the same.") is True
    assert capsys.readouterr().out == "PASS: Ratio. The classifier costs the same.\n"


# Spot the bug: check_fix compares a fix with torchvision's code, and tells an untouched copy from a wrong fix.

def unpadded_convolutions(padding):
    """A basic block whose two 3x3 convolutions get `padding` (0 is the bug)."""

    class Block(nn.Module):
        expansion = 1

        def __init__(self, in_channels, channels, stride=1, downsample=None):
            super().__init__()
            self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, padding[0], bias=False)
            self.bn1 = nn.BatchNorm2d(channels)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(channels, channels, 3, 1, padding[1], bias=False)
            self.bn2 = nn.BatchNorm2d(channels)
            self.downsample = downsample

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))) + identity)

    return Block


BrokenBlock, CopyOfBrokenBlock = unpadded_convolutions((0, 0)), unpadded_convolutions((0, 0))


def shortcut(convolution, stride_on_convolution=True):
    def make_shortcut(in_channels, out_channels, stride):
        stride = stride if stride_on_convolution else 1
        convolution_layer = convolution(in_channels, out_channels, 1, stride, bias=False)
        return nn.Sequential(convolution_layer, nn.BatchNorm2d(out_channels))

    return make_shortcut


class WithoutMaxPool(torchvision.models.ResNet):
    def _forward_impl(self, x):
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.relu(self.bn1(self.conv1(x)))))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class ReturnsATuple(torchvision.models.ResNet):
    def _forward_impl(self, x):
        return (super()._forward_impl(x),)


class ReturnsATupleToo(torchvision.models.ResNet):
    """The same bug as ReturnsATuple, written by another hand: it behaves exactly the same."""

    def _forward_impl(self, x):
        return tuple([super()._forward_impl(x)])


@pytest.mark.parametrize(("name", "attempt", "broken"), [
    ("FixedBlock1", CopyOfBrokenBlock, BrokenBlock),
    ("FixedBlock1", BrokenBlock, BrokenBlock),
    ("fixed_shortcut4", shortcut(nn.Conv1d), shortcut(nn.Conv1d)),
    ("FixedResNet8", ReturnsATupleToo, ReturnsATuple),
], ids=["an untouched copy", "the broken code itself", "a shortcut", "a network"])
def test_a_fix_that_behaves_as_the_broken_code_is_not_attempted(capsys, name, attempt, broken):
    assert check_fix(name, attempt, broken) is None
    output = capsys.readouterr().out
    assert output.startswith(f"NOT ATTEMPTED: {name} still behaves exactly as the broken code")
    assert "PASS" not in output and "FAIL" not in output


@pytest.mark.parametrize(("name", "attempt", "broken"), [
    ("FixedBlock1", unpadded_convolutions((1, 1)), BrokenBlock),
    ("FixedBlock1", solutions.FixedBlock1, BrokenBlock),
    ("FixedBlock2", solutions.FixedBlock2, BrokenBlock),
    ("FixedBlock3", torchvision.models.resnet.BasicBlock, BrokenBlock),
    ("fixed_shortcut4", shortcut(nn.Conv2d), shortcut(nn.Conv1d)),
    ("fixed_shortcut4", solutions.fixed_shortcut4, shortcut(nn.Conv1d)),
    ("FixedResNet7", torchvision.models.ResNet, WithoutMaxPool),
])
def test_a_right_fix_passes(capsys, name, attempt, broken):
    assert check_fix(name, attempt, broken) is True
    output = capsys.readouterr().out
    assert f"PASS: {name} is right." in output and "FAIL" not in output


@pytest.mark.parametrize(("name", "attempt", "broken", "why"), [
    ("FixedBlock1", unpadded_convolutions((1, 0)), BrokenBlock,
     "raised RuntimeError: The size of tensor a (14) must match the size of tensor b (16)"),
    ("fixed_shortcut4", shortcut(nn.Conv2d, stride_on_convolution=False), shortcut(nn.Conv1d),
     "it turns (4, 64, 16, 16) into (4, 128, 16, 16), where torchvision's shortcut gives (4, 128, 8, 8)"),
    ("FixedResNet7", WithoutMaxPool, ReturnsATuple, "layer1 gives maps of (64, 32, 32), where ResNet-34's layer1 "
                                                     "gives (64, 16, 16)"),
    ("FixedResNet8", ReturnsATuple, WithoutMaxPool, "the network returns a tuple, not a tensor of scores"),
])
def test_a_wrong_fix_fails_with_why_a_hint_and_where_the_solution_is(capsys, name, attempt, broken, why):
    assert check_fix(name, attempt, broken) is False
    output = capsys.readouterr().out
    assert output.startswith("FAIL: ") and why in output and "PASS" not in output
    assert f"Hint: {FIXES[name].hint}" in output and f'show_solution("{name}")' in output


def test_check_fix_leaves_the_global_random_state_alone(capsys):
    state = torch.get_rng_state()
    check_fix("FixedBlock1", unpadded_convolutions((1, 1)), BrokenBlock)
    assert torch.equal(torch.get_rng_state(), state)


def test_every_spot_the_bug_exercise_has_a_solution_to_show(capsys):
    for name in FIXES:
        show_solution(name)
        assert "# fix" in capsys.readouterr().out


# The quiz answers kept in helpers.solutions, checked against what PyTorch computes.

def test_dropout2d_on_the_classifiers_vectors_is_dropout():
    vectors = torch.randn(64, 4096, generator=torch.Generator().manual_seed(0))
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dropout2d warns about 2-D input; what it computes is the point here
        torch.manual_seed(1)
        dropout = nn.Dropout(0.5).train()(vectors)
        torch.manual_seed(1)
        dropout2d = nn.Dropout2d(0.5).train()(vectors)
    assert torch.equal(dropout, dropout2d)  # on the CPU, the very same numbers zeroed: the gap cannot change
    assert solutions.QUIZ["dropout_gap"].expected == "the same"


def test_a_flattened_map_through_a_strided_conv1d_keeps_half_its_positions():
    maps = torch.randn(1, 64, 16, 16)
    positions = nn.Conv1d(64, 128, kernel_size=1, stride=2)(maps.flatten(2)).shape[-1]
    assert positions == solutions.QUIZ["conv1d_positions"].expected == 128
    assert nn.Conv2d(64, 128, kernel_size=1, stride=2)(maps).shape[-2:].numel() == 64


@pytest.mark.parametrize(("answer", "verdict"), [(None, "NOT ATTEMPTED"), ("larger", "FAIL"), ("The same", "PASS")])
def test_check_quiz_asks_check_answer_with_the_kept_answer(capsys, answer, verdict):
    assert check_quiz("dropout_gap", answer) is {"NOT ATTEMPTED": None, "FAIL": False, "PASS": True}[verdict]
    output = capsys.readouterr().out
    assert output.startswith(verdict)
    assert (solutions.QUIZ["dropout_gap"].why in output) is (verdict == "PASS")  # the explanation only with PASS
