"""Shape walk-throughs: every layer's output shape and parameter count, computed rather than guessed."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .evaluation import eval_mode


class LayerRow(NamedTuple):
    name: str
    kind: str
    output_shape: tuple[int, ...]
    num_params: int


def count_parameters(model: torch.nn.Module, trainable_only: bool = True) -> int:
    """The number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def layer_summary(model: torch.nn.Module, input_shape, *, depth: int | None = None,
                  show: bool = True) -> list[LayerRow]:
    """Run one input of input_shape (C, H, W) through the model and list each layer's output shape and parameters.

    depth=None lists every layer without sub-layers; depth=1 the model's top-level parts (a ResNet's stem
    layers and its stages), depth=2 one level further (a ResNet's blocks), and so on, each with the
    parameters of everything inside it. Rows come in the order the layers run; the model is left unchanged.
    """
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
        raise ValueError(f"depth must be None (every layer) or a whole number of at least 1: 1 for the top-level "
                         f"parts, 2 for the parts inside them (got {depth!r}).")
    rows: list[LayerRow] = []
    names = {module: name for name, module in model.named_modules()}

    def record(module, _inputs, output):
        if isinstance(output, torch.Tensor):
            rows.append(LayerRow(names[module], type(module).__name__, tuple(output.shape[1:]),
                                 count_parameters(module, trainable_only=False)))

    handles = [module.register_forward_hook(record) for module in _listed_modules(model, depth)]
    try:
        with eval_mode(model):
            model(_one_blank_image(model, input_shape))
    finally:
        for handle in handles:
            handle.remove()
    if show:
        _print_rows(rows, input_shape, count_parameters(model))
    return rows


def _listed_modules(model: torch.nn.Module, depth: int | None) -> list[torch.nn.Module]:
    """The modules a summary lists: those without sub-layers, or those `depth` levels down (and shallower leaves)."""
    listed = []
    for name, module in model.named_modules():
        leaf = next(module.children(), None) is None
        level = name.count(".") + 1 if name else 0
        if leaf if depth is None else level == depth or (leaf and level < depth):
            listed.append(module)
    return listed


def _print_rows(rows: list[LayerRow], input_shape, total: int) -> None:
    labels = [f"{row.name} ({row.kind})" for row in rows]
    width = max(len("Layer (type)"), *(len(label) for label in labels))
    header = f"{'Layer (type)':<{width}}  {'Output shape':<18} {'Parameters':>12}"
    lines = [header, "-" * len(header), f"{'input':<{width}}  {tuple(input_shape)}"]
    for label, row in zip(labels, rows):
        params = f"{row.num_params:,}" if row.num_params else ""
        lines.append(f"{label:<{width}}  {str(row.output_shape):<18} {params:>12}".rstrip())
    lines += ["-" * len(header), f"{'Total parameters':<{width}}  {'':<18} {total:>12,}"]
    print("\n".join(lines))


def count_multiply_adds(model: torch.nn.Module, input_shape) -> int:
    """Multiply-adds of the convolutions and linear layers in one forward pass of one image of input_shape.

    Each output value of a convolution costs one multiply-add per weight it reads (input channels per
    group x kernel height x kernel width); each output of a linear layer one per input feature. Biases,
    BatchNorm, activations, pooling and additions are not counted. Works on the meta device too.
    """
    total = 0

    def count(module, _inputs, output):
        nonlocal total
        if isinstance(module, nn.Linear):
            total += output.numel() * module.in_features
        else:  # a convolution: its weight is (out channels, in channels per group, *kernel)
            total += output.numel() * module.weight[0].numel()

    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))]
    handles = [layer.register_forward_hook(count) for layer in layers]
    try:
        with eval_mode(model):
            model(_one_blank_image(model, input_shape))
    finally:
        for handle in handles:
            handle.remove()
    return total


def multiply_adds_text(count: int) -> str:
    """A multiply-add count in the collection's one format: "0.46 G multiply-adds" (billions), "2.95 M" below
    0.1 G (millions), the exact number below 0.1 M."""
    if count >= 1e8:
        return f"{count / 1e9:.2f} G multiply-adds"
    if count >= 1e5:
        return f"{count / 1e6:.2f} M multiply-adds"
    return f"{count:,} multiply-adds"


def _one_blank_image(model: torch.nn.Module, input_shape) -> torch.Tensor:
    """A batch of one zero image of input_shape, with the model's dtype and device."""
    parameter = next(model.parameters())
    return torch.zeros((1, *input_shape), dtype=parameter.dtype, device=parameter.device)
