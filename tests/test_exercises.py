"""helpers.exercises: a check says PASS, FAIL (and why) or NOT ATTEMPTED, and the notebook always goes on."""

import ast
import inspect

import pytest
import torch
import torchvision
from torch import nn

from helpers import (
    ModelMismatchError,
    check_answer,
    check_block_dropout,
    check_exercise,
    check_fix,
    check_quiz,
    exercise_names,
    expect_error,
    show_solution,
    solutions,
)
from helpers.exercises import FIXES, SOLVED_IN_CODE
from tests.notebook_code import NOTEBOOKS, exercise_checks


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


# Every exercise of every notebook: named in its check cell, its answer computed in the helpers, its solution shown.

NOTEBOOK_NAMES = sorted(path.name for path in NOTEBOOKS.glob("*.ipynb"))
# Converted to named checks on their own branches: remove a name here when its branch is merged (the test then
# passes, and strict=True makes the forgotten mark fail).
NOT_YET_NAMED: set[str] = set()


@pytest.mark.parametrize("notebook", NOTEBOOK_NAMES)
def test_every_exercise_in_every_notebook_shows_its_solution(capsys, notebook):
    names = [name for name, _ in exercise_checks(notebook) if name]
    for name in names:
        show_solution(name)
        shown = capsys.readouterr().out
        assert len(shown.strip().splitlines()) >= 2, (notebook, name, shown)
    assert len(names) == len(set(names)), f"{notebook} checks an exercise twice"


@pytest.mark.parametrize("notebook", [
    pytest.param(name, marks=pytest.mark.xfail(strict=True, reason="check_answer with the answer written out, "
                                                                   "converted on its own branch"))
    if name in NOT_YET_NAMED else name for name in NOTEBOOK_NAMES])
def test_no_check_cell_computes_its_expected_answer(notebook):
    """Every check names its exercise, and is given only the student's answer or code: names, no expressions."""
    for name, call in exercise_checks(notebook):
        assert name, f"{notebook}: {ast.unparse(call)} names no exercise: use check_quiz(name, ANSWER)"
        given = call.args[1:] if isinstance(call.args[0], ast.Constant) else call.args
        for argument in [*given, *(keyword.value for keyword in call.keywords)]:
            assert isinstance(argument, ast.Name), f"{notebook}: {ast.unparse(call)} computes {ast.unparse(argument)}"


def test_every_quiz_question_and_code_solution_can_be_shown(capsys):
    assert set(exercise_names()) == {*solutions.QUIZ, *SOLVED_IN_CODE}
    assert {"Bottleneck", "FixedBlock1", "add_block_dropout"} <= set(SOLVED_IN_CODE)
    assert not {"Question", "block_parameters"} & set(SOLVED_IN_CODE)  # the machinery, a quiz answer's function
    for name in exercise_names():
        show_solution(name)
        assert capsys.readouterr().out.strip()


def test_show_solution_of_a_quiz_question_gives_the_answer_and_how_it_is_worked_out(capsys):
    show_solution("block_parameters")
    shown = capsys.readouterr().out
    assert shown.startswith("Question: 1. parameters of ResidualBlock(channels=[8, 16, 64]).\nAnswer: 3120, ")
    assert inspect.getsource(solutions.block_parameters) in shown
    assert shown.rstrip().endswith(solutions.QUIZ["block_parameters"].why)


def test_show_solution_of_an_unknown_name_lists_the_names():
    with pytest.raises(ValueError, match="no exercise called 'Bottelneck'.*Bottleneck"):
        show_solution("Bottelneck")


@pytest.fixture
def question_on_runs(monkeypatch):
    """A quiz question whose answer is read from the student's runs, passed to check_quiz as `runs`."""
    def smaller_gap(runs):
        return min(runs, key=lambda name: runs[name][0] - runs[name][1])

    question = solutions.Question("the run with the smaller gap", smaller_gap, hint="Subtract.", why="Read it.")
    monkeypatch.setitem(solutions.QUIZ, "smaller_gap", question)
    return {"Dropout": (90.0, 60.0), "Dropout2d": (80.0, 70.0)}


def test_check_quiz_computes_the_answer_from_what_the_notebook_gives(capsys, question_on_runs):
    assert check_quiz("smaller_gap", "Dropout2d", runs=question_on_runs) is True
    assert check_quiz("smaller_gap", "Dropout", runs=question_on_runs) is False
    output = capsys.readouterr().out
    assert "PASS: the run with the smaller gap. Read it." in output and 'show_solution("smaller_gap")' in output
    show_solution("smaller_gap")
    assert "computed from your notebook's results by smaller_gap" in capsys.readouterr().out


def test_check_quiz_refuses_an_unknown_name():
    with pytest.raises(ValueError, match="no quiz question called 'dropout_gaps'"):
        check_quiz("dropout_gaps", "the same")


# The quiz answers kept in helpers.solutions, checked against what PyTorch computes.

def test_the_block_parameters_are_those_pytorch_counts():
    block = nn.ModuleDict({"conv1": nn.Conv2d(8, 16, 3, stride=2, padding=1), "bn1": nn.BatchNorm2d(16),
                           "conv2": nn.Conv2d(16, 64, 1), "bn2": nn.BatchNorm2d(64),
                           "downsample": nn.Sequential(nn.Conv2d(8, 64, 1, stride=2), nn.BatchNorm2d(64))})
    assert solutions.block_parameters() == sum(p.numel() for p in block.parameters()) == 3_120


def test_flatten_from_2_is_what_torch_computes():
    assert solutions.flatten_from_2_shape() == tuple(torch.flatten(torch.zeros(128, 32, 7, 7), 2).shape)


def test_dropout_zeroes_a_whole_3x3_window_once_in_512_and_dropout2d_half_the_channels():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        kept = nn.Dropout(0.5).train()(torch.ones(64, 64, 34, 34)) != 0
        maps = nn.Dropout2d(0.5).train()(torch.ones(64, 64, 34, 34)) != 0
    dropped = nn.functional.max_pool2d(kept.float(), 3, stride=1) == 0  # every window with no value kept
    assert dropped.float().mean().item() == pytest.approx(solutions.window_dropped(), abs=2e-4)
    assert solutions.window_dropped() == 1 / 512
    whole_channels = (nn.functional.max_pool2d(maps.float(), 3, stride=1) == 0).float().mean().item()
    assert 0.45 < whole_channels < 0.55


def test_a_flattened_map_through_a_strided_conv1d_keeps_half_its_positions():
    maps = torch.randn(1, 64, 16, 16)
    positions = nn.Conv1d(64, 128, kernel_size=1, stride=2)(maps.flatten(2)).shape[-1]
    assert positions == solutions.QUIZ["conv1d_positions"].expected == 128
    assert nn.Conv2d(64, 128, kernel_size=1, stride=2)(maps).shape[-2:].numel() == 64


@pytest.mark.parametrize(("answer", "verdict"), [(None, "NOT ATTEMPTED"), (1_000, "FAIL"), (3_120, "PASS")])
def test_check_quiz_asks_check_answer_with_the_kept_answer(capsys, answer, verdict):
    assert check_quiz("block_parameters", answer) is {"NOT ATTEMPTED": None, "FAIL": False, "PASS": True}[verdict]
    output = capsys.readouterr().out
    assert output.startswith(verdict)
    assert (solutions.QUIZ["block_parameters"].why in output) is (verdict == "PASS")  # explained only with PASS
    assert "3120" not in output.replace(",", "") or verdict == "PASS"


@pytest.mark.parametrize("answer", ["same", "The same.", "  the   SAME ", "Same!"])
def test_text_answers_compare_word_by_word_without_articles_case_or_punctuation(capsys, answer):
    assert check_answer("Q", answer, "the same") is True


@pytest.mark.parametrize("answer", ["not the same", "the same size", "sam", "larger"])
def test_text_answers_with_other_words_still_fail(capsys, answer):
    assert check_answer("Q", answer, "the same") is False


@pytest.mark.parametrize(("answer", "expected", "said"), [
    ("1727962", 1_727_962, "'1727962' is text in quotes (a str), where the answer needs a whole number (an int, "
                           "written without quotes)"),
    ("0.002", 0.001953125, "'0.002' is text in quotes (a str), where the answer needs a number"),
    ((128, "49"), (128, 49), "entry 2 of your tuple, '49', is text in quotes (a str), where the answer needs a "
                             "whole number"),
    (6_272, (128, 32, 49), "6272 is a whole number (an int, written without quotes), where the answer needs a "
                           "tuple, such as (2, 3)"),
    (1, True, "1 is a whole number (an int, written without quotes), where the answer needs a bool (True or False)"),
])
def test_an_answer_of_the_wrong_type_fails_saying_its_type_and_the_one_to_give(capsys, answer, expected, said):
    assert check_answer("Q", answer, expected, hint="Count again.") is False
    output = capsys.readouterr().out
    assert output.startswith(f"FAIL: Q: {said}") and "Count again." not in output


def test_a_tuple_of_the_wrong_length_is_a_wrong_answer_not_a_wrong_type(capsys):
    assert check_answer("Q", (128, 32), (128, 32, 49), hint="Count the dimensions.") is False
    assert capsys.readouterr().out == "FAIL: Q: (128, 32) is not it. Count the dimensions.\n"


# The block-dropout exercise of notebook 02.

def with_dropout(features, dropout, p):
    """A right answer, written differently from the reference solution."""
    layers = []
    for layer in features:
        layers += [layer, dropout(p)] if isinstance(layer, nn.MaxPool2d) else [layer]
    return nn.Sequential(*layers)


def dropout_at_the_end(features, dropout, p):
    return nn.Sequential(*features, dropout(p))


def dropout_in_place(features, dropout, p):
    for index in reversed([i for i, layer in enumerate(features) if isinstance(layer, nn.MaxPool2d)]):
        features.insert(index + 1, dropout(p))
    return features


def new_convolutions(features, dropout, p):
    return with_dropout(nn.Sequential(*(nn.Conv2d(layer.in_channels, layer.out_channels, 3, padding=1)
                                        if isinstance(layer, nn.Conv2d) else layer for layer in features)), dropout, p)


def not_written(features, dropout, p):
    raise NotImplementedError("Exercise: write it here")


def test_block_dropout_a_right_answer_passes_and_is_kept(capsys):
    assert check_block_dropout(with_dropout) is with_dropout
    assert capsys.readouterr().out.startswith("PASS: your add_block_dropout is right.")


@pytest.mark.parametrize(("attempt", "why"), [
    (dropout_at_the_end, "with Dropout2d and p=0.2 its layers are [Conv2d, ReLU, MaxPool2d, Conv2d, ReLU, MaxPool2d, "
                         "Dropout2d(p=0.2)], where [Conv2d, ReLU, MaxPool2d, Dropout2d(p=0.2), Conv2d"),
    (dropout_in_place, "it changed `features` itself"),
    (new_convolutions, "in eval mode, where dropout does nothing, it computes something else than `features`"),
])
def test_block_dropout_a_wrong_answer_fails_with_why_and_falls_back(capsys, attempt, why):
    assert check_block_dropout(attempt) is solutions.add_block_dropout
    output = capsys.readouterr().out
    assert output.startswith("FAIL: ") and why in output and 'show_solution("add_block_dropout")' in output


def test_block_dropout_not_written_yet_says_not_attempted(capsys):
    assert check_block_dropout(not_written) is solutions.add_block_dropout
    assert capsys.readouterr().out.startswith("NOT ATTEMPTED: add_block_dropout")
