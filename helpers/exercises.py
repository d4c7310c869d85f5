"""Exercises with a check that says PASS, FAIL (and why) or NOT ATTEMPTED, and keeps the notebook running."""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable
from contextlib import contextmanager

import torch
import torchvision

from . import solutions
from .comparison import ModelMismatchError, check_against_torchvision

BOTTLENECK_HINT = (
    "Compare with BasicBlock: the names conv1, bn1, conv2, bn2, conv3, bn3, relu and downsample; "
    "a BatchNorm after every convolution; the stride on the 3x3 convolution; expansion = 4; "
    "the last ReLU after the addition."
)


def check_exercise(name: str, attempt, check: Callable, hint: str = ""):
    """Run check(attempt) and say PASS, FAIL with the reason, or NOT ATTEMPTED.

    Returns what the notebook should use from here on: the attempt when it passed, else the reference
    solution helpers.solutions.<name>, so that the cells after the exercise still run.
    """
    solution = getattr(solutions, name)
    if attempt is solution:  # this check cell ran twice: the first run put the solution in place
        print(f"{name} is the reference solution now, which the last check put in place, not yours. "
              "Run your exercise cell again, then this one.")
        return solution
    try:
        if attempt is None:
            raise NotImplementedError
        result = check(attempt)
    except NotImplementedError:
        print(f"NOT ATTEMPTED: {name} still raises NotImplementedError. "
              "Write it in the exercise cell, run that cell, then this one again.")
    except ModelMismatchError as error:
        print(f"FAIL: {error}.")
        print(hint)
    except Exception as error:  # a student's code can fail in any way: say how, and carry on
        print(f"FAIL: building or running it raised {type(error).__name__}: {error}")
        print(hint)
    else:
        print(f"PASS: your {name} is right. {result or ''}".rstrip())
        return attempt
    print(f"The notebook goes on with the reference solution. To see it, run these two lines in a new cell:\n"
          f'    from helpers import show_solution\n    show_solution("{name}")')
    return solution


def check_answer(question: str, answer, expected, hint: str = "", *, why: str = "",
                 tolerance: float = 0.0) -> bool | None:
    """Say PASS, FAIL (with a hint, never the answer) or NOT ATTEMPTED for a quiz answer.

    Returns True, False, or None when there is no answer yet. Lists compare as tuples, text without
    regard to case or surrounding spaces, numbers within `tolerance` (exactly by default).
    """
    if answer is None:
        print(f"NOT ATTEMPTED: {question}. Write your answer in the cell above (it is None now), run that cell, "
              "then this one.")
        return None
    if _same_answer(answer, expected, tolerance):
        print(f"PASS: {question}. {why}".rstrip())
        return True
    print(f"FAIL: {question}: {answer!r} is not it. {hint}".rstrip())
    return False


def _same_answer(answer, expected, tolerance: float) -> bool:
    if isinstance(expected, (list, tuple)):
        return isinstance(answer, (list, tuple)) and len(answer) == len(expected) and all(
            _same_answer(a, e, tolerance) for a, e in zip(answer, expected))
    if isinstance(expected, str):
        return isinstance(answer, str) and answer.strip().lower() == expected.strip().lower()
    if isinstance(expected, bool) or isinstance(answer, bool):
        return answer is expected
    if isinstance(expected, numbers.Number) and isinstance(answer, numbers.Number):
        return abs(answer - expected) <= tolerance
    return answer == expected


def show_solution(name: str) -> None:
    """Print the reference solution helpers.solutions.<name>: its source code, as written."""
    print(inspect.getsource(getattr(solutions, name)))


def check_bottleneck(block, resnet_class, images: torch.Tensor, num_classes: int = 10):
    """The Bottleneck exercise: resnet_class(block, [3, 4, 6, 3]) must be torchvision's resnet50.

    Returns the block to use from here on: yours when it passed, else the reference solution.
    """
    def check(block):
        def resnet50(num_classes):
            return resnet_class(block, [3, 4, 6, 3], num_classes=num_classes)

        print("ResNet-50 built from your Bottleneck, compared with torchvision's resnet50:")
        num_params, _ = check_against_torchvision(resnet50, torchvision.models.resnet50, images, num_classes)
        return f"ResNet-50 built from it is torchvision's ({num_params:,} parameters)."

    return check_exercise("Bottleneck", block, check, hint=BOTTLENECK_HINT)


@contextmanager
def expect_error(error_type: type[BaseException]):
    """Print the error of error_type that the block raises, as a student would see it; no error is a failure."""
    try:
        yield
    except error_type as error:
        print(f"{type(error).__name__}: {error}")
    else:
        raise AssertionError(f"expected a {error_type.__name__}, but the code ran without one: the cell no "
                             "longer holds the bug it shows; put the bug back as the text above describes")
