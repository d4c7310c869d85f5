"""Exercises with a check that says PASS, FAIL (and why) or NOT ATTEMPTED, and keeps the notebook running.

The answers live in helpers/solutions.py, never in a notebook's check cell: `show_solution(name)` prints one
when the student asks for it.
"""

from __future__ import annotations

import inspect
import numbers
import re
from collections.abc import Callable
from contextlib import contextmanager
from typing import NamedTuple

import torch
import torchvision
from torch import nn

from . import solutions
from .comparison import (
    ModelMismatchError,
    assert_identical_outputs,
    check_against_torchvision,
    state_dict_differences,
    with_running_stats,
)

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
    print(f"The notebook goes on with the reference solution. {_how_to_see(name)}")
    return solution


def check_answer(question: str, answer, expected, hint: str = "", *, why: str = "",
                 tolerance: float = 0.0) -> bool | None:
    """Say PASS, FAIL (with a hint, never the answer) or NOT ATTEMPTED for a quiz answer.

    Returns True, False, or None when there is no answer yet. Lists compare as tuples, numbers within
    `tolerance` (exactly by default), text word by word without regard to case, punctuation or the articles
    a, an and the ("Same" passes for "the same"). An answer of the wrong type fails with what type to give.
    """
    if answer is None:
        print(f"NOT ATTEMPTED: {question}. Write your answer in the cell above (it is None now), run that cell, "
              "then this one.")
        return None
    if _same_answer(answer, expected, tolerance):
        print(f"PASS: {question}. {why}".rstrip())
        return True
    wrong_type = _wrong_type(answer, expected)
    if wrong_type:
        print(f"FAIL: {question}: {wrong_type}")
        return False
    print(f"FAIL: {question}: {answer!r} is not it. {hint}".rstrip())
    return False


ARTICLES = {"a", "an", "the"}


def _words(text: str) -> list[str]:
    """The words of an answer in lower case, without punctuation or articles: "The same." -> ["same"]."""
    return [word for word in re.findall(r"[\w.]*\w", text.lower()) if word not in ARTICLES]


def _same_answer(answer, expected, tolerance: float) -> bool:
    if isinstance(expected, (list, tuple)):
        return isinstance(answer, (list, tuple)) and len(answer) == len(expected) and all(
            _same_answer(a, e, tolerance) for a, e in zip(answer, expected))
    if isinstance(expected, str):
        return isinstance(answer, str) and _words(answer) == _words(expected)
    if isinstance(expected, bool) or isinstance(answer, bool):
        return answer is expected
    if isinstance(expected, numbers.Number) and isinstance(answer, numbers.Number):
        return abs(answer - expected) <= tolerance
    return answer == expected


def _kind(value) -> str:
    """What kind of answer a value is, in a student's words (never the value itself)."""
    if isinstance(value, bool):
        return "a bool (True or False)"
    if isinstance(value, numbers.Integral):
        return "a whole number (an int, written without quotes)"
    if isinstance(value, numbers.Number):
        return "a number (written without quotes)"
    if isinstance(value, str):
        return "text in quotes (a str)"
    if isinstance(value, (list, tuple)):
        return "a tuple, such as (2, 3)"
    return f"a {type(value).__name__}"


def _wrong_type(answer, expected, where: str = "") -> str:
    """Why an answer of the wrong type cannot pass (the first wrong part of a tuple), or "" when its type fits."""
    if isinstance(expected, (list, tuple)):
        if not isinstance(answer, (list, tuple)):
            return _type_message(answer, expected, where)
        if len(answer) != len(expected):
            return ""  # a wrong answer, not a wrong type: its length would give part of the answer away
        for index, (part, expected_part) in enumerate(zip(answer, expected), start=1):
            message = _wrong_type(part, expected_part, f"entry {index} of your tuple, ")
            if message:
                return message
        return ""
    if isinstance(expected, bool) or isinstance(answer, bool):
        fits = isinstance(answer, bool) and isinstance(expected, bool)
    elif isinstance(expected, numbers.Number):
        fits = isinstance(answer, numbers.Number)
    else:
        fits = isinstance(answer, type(expected))
    return "" if fits else _type_message(answer, expected, where)


def _type_message(answer, expected, where: str) -> str:
    """E.g. "'3120' is text in quotes (a str), where the answer needs a whole number ..."; `where`: a tuple's entry."""
    subject = f"{where}{answer!r}," if where else f"{answer!r}"
    return (f"{subject} is {_kind(answer)}, where the answer needs {_kind(expected)}. Write it as that, run the "
            "cell, then this one.")


def check_quiz(name: str, answer, **given) -> bool | None:
    """check_answer for the question solutions.QUIZ[name], whose answer the notebook never shows.

    When the question's answer is a function (of solutions.py), it is computed here, called with `given`
    (what it needs from the notebook, e.g. its runs); so the check cell holds only the name and the answer.
    """
    if name not in solutions.QUIZ:
        raise ValueError(f"There is no quiz question called {name!r}; the names are: {', '.join(solutions.QUIZ)}.")
    question = solutions.QUIZ[name]
    passed = check_answer(question.text, answer, question.answer(**given), question.hint, why=question.why,
                          tolerance=question.tolerance)
    if passed is False:
        print(f"Think again and change your answer. {_how_to_see(name)}")
    return passed


def show_solution(name: str) -> None:
    """Print the solution to the exercise or quiz question `name`: its code, or the answer and how it is found."""
    if name in solutions.QUIZ:
        print(solutions.QUIZ[name].explained())
    elif name in SOLVED_IN_CODE:
        print(inspect.getsource(getattr(solutions, name)))
    else:
        raise ValueError(f"There is no exercise called {name!r}. Copy the name from the check cell's "
                         f'show_solution("...") line; the names are: {", ".join(exercise_names())}.')


def exercise_names() -> list[str]:
    """Every name that show_solution knows: the quiz questions, then the exercises solved in code."""
    return [*solutions.QUIZ, *SOLVED_IN_CODE]


def _solved_in_code() -> list[str]:
    """The exercises of solutions.py answered with code: its public classes and functions that are neither a
    quiz question's answer nor part of the machinery."""
    answers = {question.expected for question in solutions.QUIZ.values()}
    return [name for name, value in vars(solutions).items()
            if not name.startswith("_") and (inspect.isclass(value) or inspect.isfunction(value))
            and value.__module__ == solutions.__name__ and value not in answers and value is not solutions.Question]


SOLVED_IN_CODE = _solved_in_code()


def _how_to_see(name: str) -> str:
    return (f"To see a solution, run these two lines in a new cell:\n"
            f'    from helpers import show_solution\n    show_solution("{name}")')


def checks(exercise: str):
    """Mark a check function with the name of the one exercise it checks, for show_solution and the tests."""
    def mark(check: Callable) -> Callable:
        check.exercise = exercise
        return check

    return mark


@checks("Bottleneck")
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


BLOCK_DROPOUT_HINT = (
    "Walk through the layers of `features` in order and build a list: each layer as it is, and after every "
    "nn.MaxPool2d one more layer, dropout(p). Return nn.Sequential(*that_list); leave `features` unchanged."
)


@checks("add_block_dropout")
def check_block_dropout(add_block_dropout):
    """The block-dropout exercise: add_block_dropout(features, dropout, p) puts dropout(p) after every max-pool.

    Returns the function to use from here on: yours when it passed, else the reference solution.
    """
    def check(add_block_dropout):
        generator = torch.Generator().manual_seed(0)
        images = torch.rand(2, 3, 8, 8, generator=generator)
        with torch.random.fork_rng(devices=[]):  # the notebook's own random draws stay as they were
            torch.manual_seed(0)
            features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                     nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        for dropout, p in ((nn.Dropout2d, 0.2), (nn.Dropout, 0.3)):
            result = add_block_dropout(features, dropout, p)
            if len(features) != 6:
                raise ModelMismatchError("it changed `features` itself; build a new nn.Sequential instead")
            _same_layers_with_dropout(result, features, dropout, p)
        with torch.no_grad():
            plain = features.eval()(images)
            added = add_block_dropout(features, nn.Dropout2d, 0.2).eval()(images)
        if not torch.equal(plain, added):
            raise ModelMismatchError("in eval mode, where dropout does nothing, it computes something else than "
                                     "`features`: keep each layer, and its weights, as they are")
        return "Dropout follows every max-pool, and in eval mode the network computes what it did before."

    return check_exercise("add_block_dropout", add_block_dropout, check, hint=BLOCK_DROPOUT_HINT)


def _same_layers_with_dropout(result, features, dropout, p) -> None:
    """Raise ModelMismatchError unless `result` is the layers of `features` with dropout(p) after each max-pool."""
    if not isinstance(result, nn.Sequential):
        raise ModelMismatchError(f"it returns a {type(result).__name__}, not an nn.Sequential")
    wanted = []
    for layer in features:
        wanted.append(type(layer).__name__)
        if isinstance(layer, nn.MaxPool2d):
            wanted.append(f"{dropout.__name__}(p={p})")
    got = [f"{type(layer).__name__}(p={layer.p})" if isinstance(layer, nn.modules.dropout._DropoutNd)
           else type(layer).__name__ for layer in result]
    if got != wanted:
        raise ModelMismatchError(f"with {dropout.__name__} and p={p} its layers are [{', '.join(got)}], where "
                                 f"[{', '.join(wanted)}] was wanted")


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


# --------------------------------------------------------------------------- spot the bug


class Fix(NamedTuple):
    """A spot-the-bug exercise: what the fixed code must equal, and a hint that does not give the fix away."""

    kind: str  # "block": a BasicBlock class; "shortcut": a function (in, out, stride) -> module; "network": a ResNet
    hint: str


FIXES = {
    "FixedBlock1": Fix("block", "Print the shape of x and of each convolution's output. Which convolutions "
                                "return a smaller map than they get, and which of their settings decides that?"),
    "FixedBlock2": Fix("block", "Compare forward with the block's formula, relu(F(x) + x): where does each "
                                "ReLU act, and on what?"),
    "FixedBlock3": Fix("block", "Read the error message again: what must every nn.Module's __init__ do before "
                                "it can hold layers?"),
    "fixed_shortcut4": Fix("shortcut", "Compare the shape of the shortcut convolution's weight with the weight "
                                       "of conv1x1 in the model above, and the shape of the input it gets."),
    "FixedResNet5": Fix("network", "Follow the argument `stride` through _make_layer: which modules of a stage's "
                                   "first block should receive it?"),
    "FixedResNet6": Fix("network", "Follow self.in_channels through _make_layer: how many channels reach the "
                                   "second block of a stage, and what does the code tell that block?"),
    "FixedResNet7": Fix("network", "Compare forward_features with the stem described above, step by step, and "
                                   "the map sizes printed under the broken network with those of ResNet-34."),
    "FixedResNet8": Fix("network", "Print type(model(images)). What does a comma at the end of an expression "
                                   "make of its value?"),
    "FixedResNet9": Fix("network", "Work out how many times a window of 3 pixels, moved in steps of 2, fits into "
                                   "32 pixels. Which setting of the stem's max-pool adds pixels at the borders?"),
    "FixedResNet10": Fix("network", "Print create_classifier(512, 10): what does it return? Keep torchvision's "
                                    "names avgpool and fc: modules kept in a tuple are not registered, so their "
                                    "weights are in neither state_dict() nor parameters()."),
}

STAGES = ("layer1", "layer2", "layer3", "layer4")


def check_fix(name: str, attempt, broken) -> bool | None:
    """The spot-the-bug check: PASS when the fix computes what torchvision's code does, FAIL with why,
    NOT ATTEMPTED while it behaves exactly as the broken code. Returns True, False or None."""
    fix = FIXES[name]
    with torch.random.fork_rng(devices=[]):  # the notebook's own random draws stay as they were
        if attempt is broken or _outcome(fix.kind, attempt) == _outcome(fix.kind, broken):
            print(f"NOT ATTEMPTED: {name} still behaves exactly as the broken code above does. Change it in the "
                  "exercise cell, run that cell, then this one.")
            return None
        try:
            torch.manual_seed(0)
            passed = CHECKS[fix.kind](attempt)
        except ModelMismatchError as error:
            print(f"FAIL: {name} is not right yet: {error}.")
        except Exception as error:  # a student's code can fail in any way: say how
            print(f"FAIL: building or running {name} raised {type(error).__name__}: {error}")
        else:
            print(f"PASS: {name} is right. {passed}")
            return True
    print(f"Hint: {fix.hint}\n{_how_to_see(name)}")
    return False


def _probe_images(shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(0))


def _shortcut_reference(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """The projection shortcut of torchvision's ResNets: a 1x1 convolution (with the stride), then BatchNorm."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                         nn.BatchNorm2d(out_channels))


def _trials(kind: str, code) -> list[tuple[nn.Module, torch.Tensor]]:
    """(model, input) pairs that exercise code of this kind: blocks at stride 1 and 2, a shortcut, a ResNet."""
    if kind == "block":
        maps = _probe_images((4, 64, 16, 16))
        return [(code(64, 64), maps), (code(64, 128, 2, _shortcut_reference(64, 128, 2)), maps)]
    if kind == "shortcut":
        return [(code(64, 128, 2), _probe_images((4, 64, 16, 16)))]
    # Two blocks per stage are enough to show every bug of a stage builder, at half ResNet-34's cost.
    return [(code(torchvision.models.resnet.BasicBlock, [2, 2, 2, 2], num_classes=10), _probe_images((2, 3, 64, 64)))]


def _outcome(kind: str, code) -> tuple:
    """What code does, to compare two versions of it: the error it raises, or its outputs on fixed inputs."""
    torch.manual_seed(0)  # both versions start from the same weights
    try:
        trials = _trials(kind, code)
        with torch.no_grad():
            return ("outputs", *(_as_bytes(model.eval()(images)) for model, images in trials))
    except Exception as error:  # the broken code's own error is part of what it does
        return ("error", type(error).__name__, str(error))


def _as_bytes(output) -> tuple:
    """Outputs in a form that compares exactly, whether a tensor or (by mistake) a tuple of tensors."""
    if isinstance(output, torch.Tensor):
        return (tuple(output.shape), output.detach().cpu().numpy().tobytes())
    if isinstance(output, (tuple, list)):
        return (type(output).__name__, *(_as_bytes(item) for item in output))
    return (repr(output),)


def _same_as_reference(ours: nn.Module, theirs: nn.Module, images: torch.Tensor, reference: str) -> None:
    """The same weights under the same names and shapes as the reference, and identical outputs with them."""
    differences = state_dict_differences(ours.state_dict(), theirs.state_dict())
    if differences:
        raise ModelMismatchError(f"its weights do not match {reference}'s: " + "; ".join(differences))
    with_running_stats(theirs, images)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    with torch.no_grad():
        our_shape, their_shape = ours.eval()(images).shape, theirs(images).shape
    if our_shape != their_shape:
        raise ModelMismatchError(f"it turns {tuple(images.shape)} into {tuple(our_shape)}, where {reference} "
                                 f"gives {tuple(their_shape)}")
    assert_identical_outputs(ours, theirs, images)


def _check_block(block_class) -> str:
    references = _trials("block", torchvision.models.resnet.BasicBlock)
    for (ours, images), (theirs, _) in zip(_trials("block", block_class), references):
        _same_as_reference(ours, theirs, images, "torchvision's BasicBlock")
    return ("With the weights of torchvision's BasicBlock it computes torchvision's outputs, at stride 1 and at "
            "stride 2 with a projection shortcut.")


def _check_shortcut(make_shortcut) -> str:
    [(ours, images)] = _trials("shortcut", make_shortcut)
    _same_as_reference(ours, _shortcut_reference(64, 128, 2), images, "torchvision's shortcut")
    return "It turns (4, 64, 16, 16) into (4, 128, 8, 8), with the weights and outputs of torchvision's shortcut."


def _check_network(resnet_class) -> str:
    def resnet34(num_classes):
        return resnet_class(torchvision.models.resnet.BasicBlock, [3, 4, 6, 3], num_classes=num_classes)

    images = _probe_images((2, 3, 64, 64))
    our_stages, our_output = _stage_shapes(resnet34(10), images)
    their_stages, _ = _stage_shapes(torchvision.models.resnet34(num_classes=10), images)
    if not isinstance(our_output, torch.Tensor):
        raise ModelMismatchError(f"the network returns a {type(our_output).__name__}, not a tensor of scores: "
                                 "a loss function or argmax cannot use it")
    for stage in STAGES:
        if our_stages.get(stage) != their_stages[stage]:
            raise ModelMismatchError(f"{stage} gives maps of {our_stages.get(stage)}, where ResNet-34's "
                                     f"{stage} gives {their_stages[stage]}")
    check_against_torchvision(resnet34, torchvision.models.resnet34, images, num_classes=10)
    return "Built as ResNet-34, it is torchvision's resnet34: the same weights, identical outputs."


CHECKS = {"block": _check_block, "shortcut": _check_shortcut, "network": _check_network}


def _stage_shapes(model: nn.Module, images: torch.Tensor) -> tuple[dict[str, tuple[int, ...]], object]:
    """(the output shape of each stage that ran, the network's output) for images."""
    shapes = {}
    hooks = [getattr(model, stage).register_forward_hook(
        lambda _module, _inputs, output, stage=stage: shapes.__setitem__(stage, tuple(output.shape[1:])))
        for stage in STAGES]
    try:
        with torch.no_grad():
            output = model.eval()(images)
    finally:
        for hook in hooks:
            hook.remove()
    return shapes, output
