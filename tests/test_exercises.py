"""helpers.exercises: a check says PASS, FAIL (and why) or NOT ATTEMPTED, and the notebook always goes on."""

import inspect

import pytest

from helpers import ModelMismatchError, check_answer, check_exercise, expect_error, show_solution, solutions


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
