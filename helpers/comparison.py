"""Compare a hand-written network with torchvision's: the same weights, the same outputs, part by part."""

from __future__ import annotations

from collections import Counter
from typing import NamedTuple

import torch
from torch import nn

from .summary import count_parameters, layer_summary

STEM = ("conv1", "bn1")  # torchvision's names for the ResNet stem's layers with weights


class ModelMismatchError(AssertionError):
    """Two models that should be the same network are not."""


class WeightedLayers(NamedTuple):
    main_path: int
    shortcuts: int


def with_running_stats(model: nn.Module, images: torch.Tensor) -> nn.Module:
    """One training-mode pass without gradients, so that every BatchNorm layer gets its own statistics."""
    model.train()
    with torch.no_grad():
        model(images)
    return model.eval()


def state_dict_differences(ours: dict, theirs: dict, limit: int = 3) -> list[str]:
    """What differs between two state_dicts, names and shapes: one line per kind, empty when nothing does."""
    missing = [name for name in theirs if name not in ours]
    unexpected = [name for name in ours if name not in theirs]
    reshaped = [f"{name} {tuple(ours[name].shape)} instead of {tuple(theirs[name].shape)}"
                for name in ours if name in theirs and ours[name].shape != theirs[name].shape]
    kinds = [("missing in ours", missing), ("not in torchvision's", unexpected), ("other shapes in ours", reshaped)]
    return [f"{kind}: {_first(items, limit)}" for kind, items in kinds if items]


def _first(items: list[str], limit: int) -> str:
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown} and {len(items) - limit} more"


def assert_identical_outputs(model_a: nn.Module, model_b: nn.Module, images: torch.Tensor) -> None:
    """Both models in eval mode give exactly the same outputs (torch.equal: every bit, no tolerance)."""
    with torch.no_grad():
        outputs_a, outputs_b = model_a.eval()(images), model_b.eval()(images)
    if outputs_a.shape != outputs_b.shape:
        raise ModelMismatchError(f"the outputs have shapes {tuple(outputs_a.shape)} and {tuple(outputs_b.shape)}")
    if not torch.equal(outputs_a, outputs_b):
        largest = (outputs_a - outputs_b).abs().max().item()
        raise ModelMismatchError(
            f"with the same weights the two models compute different outputs (largest difference {largest:.3g}): "
            "the forward passes differ; compare the order of the layers, ReLUs and the addition"
        )


def check_against_torchvision(ours, theirs, images: torch.Tensor, num_classes: int) -> tuple[int, int]:
    """Load weights ours -> theirs and theirs -> ours with strict=True; check identical outputs each time.

    ours and theirs build a model from num_classes. Returns both parameter counts; raises
    ModelMismatchError with the reason when the two are not the same network.
    """
    our_model = with_running_stats(ours(num_classes=num_classes), images)
    their_model = theirs(num_classes=num_classes)
    differences = state_dict_differences(our_model.state_dict(), their_model.state_dict())
    if differences:
        raise ModelMismatchError("the weights do not match torchvision's: " + "; ".join(differences))
    their_model.load_state_dict(our_model.state_dict(), strict=True)  # raises on any mismatch
    assert_identical_outputs(our_model, their_model, images)
    print("ours -> torchvision: strict load OK, identical outputs")

    their_model = with_running_stats(theirs(num_classes=num_classes), images)  # new, different weights
    our_model.load_state_dict(their_model.state_dict(), strict=True)
    assert_identical_outputs(our_model, their_model, images)
    print("torchvision -> ours: strict load OK, identical outputs")
    return count_parameters(our_model), count_parameters(their_model)


def part_outputs(model: nn.Module, input_shape) -> dict[str, tuple[int, ...]]:
    """The output shape of each top-level part (conv1, ..., layer1, ..., fc), from layer_summary's rows."""
    outputs = {}
    for row in layer_summary(model, input_shape, show=False):  # rows come in the order they run
        outputs[row.name.split(".")[0]] = row.output_shape
    return outputs


def print_parts(outputs: dict[str, tuple[int, ...]]) -> None:
    """One line per part: its name and output shape."""
    for part, shape in outputs.items():
        print(f"{part:>8}: {shape}")


def parameters_per_part(model: nn.Module) -> dict[str, int]:
    """Parameters of each top-level part, in order: "stem" (conv1 and bn1), each stage's main path and
    its projection shortcuts ("layer2 shortcut", 0 where there is none), and the rest by name."""
    counts: dict[str, int] = {}
    for name, child in model.named_children():
        on_shortcut = sum(p.numel() for n, p in child.named_parameters() if "downsample" in n.split("."))
        total = sum(p.numel() for p in child.parameters())
        if total == 0:
            continue
        part = "stem" if name in STEM else name
        counts[part] = counts.get(part, 0) + total - on_shortcut
        if name.startswith("layer"):
            counts[f"{name} shortcut"] = on_shortcut
    return counts


def print_parameter_table(columns: dict[str, dict[str, int]]) -> None:
    """A table of parameters per part, one column per model (as parameters_per_part gives them), with totals."""
    parts = list(next(iter(columns.values())))
    first = max(len(part) for part in [*parts, "total"]) + 2
    widths = [max(12, len(title) + 2) for title in columns]
    rows = [(part, [counts.get(part, 0) for counts in columns.values()]) for part in parts]
    rows.append(("total", [sum(counts.values()) for counts in columns.values()]))
    print(f"{'part':<{first}}" + "".join(f"{title:>{width}}" for title, width in zip(columns, widths)))
    for part, values in rows:
        print(f"{part:<{first}}" + "".join(f"{value:>{width},}" for value, width in zip(values, widths)))


def convolution_kinds(model: nn.Module) -> dict[str, int]:
    """How many convolutions of each kernel size, with those on projection shortcuts apart: {"3x3": 32, ...}."""
    kinds = Counter(
        f"{module.kernel_size[0]}x{module.kernel_size[1]}" + (" shortcut" if "downsample" in name.split(".") else "")
        for name, module in model.named_modules() if isinstance(module, nn.Conv2d)
    )
    return dict(kinds)


def count_weighted_layers(model: nn.Module) -> WeightedLayers:
    """Convolutions and linear layers on the main path, and on the projection shortcuts (`downsample`)."""
    weighted = [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d | nn.Linear)]
    shortcuts = sum("downsample" in name.split(".") for name in weighted)
    return WeightedLayers(main_path=len(weighted) - shortcuts, shortcuts=shortcuts)
