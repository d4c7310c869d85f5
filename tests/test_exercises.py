"""helpers.exercises: a check says PASS, FAIL (and why) or NOT ATTEMPTED, and the notebook always goes on."""

import inspect

import pytest

from helpers import ModelMismatchError, check_exercise, expect_error, show_solution, solutions


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
