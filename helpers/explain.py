"""What a trained network learned and where it fails: confused pairs, confident mistakes, filters,
feature maps and Grad-CAM overlays. Every figure is a new one, returned; the model is left as it was."""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

from . import loaders
from .evaluation import eval_mode, model_device
from .figure_parts import (
    EXAMPLE_COLUMNS,
    TEXT_SIZE,
    draw_image,
    draw_map,
    image_grid,
    label_row,
    pictures,
    rows_for,
    set_figure_title,
)
from .figure_style import print_smoke_banner
from .gradcam import find_layer, forward_hook, grad_cam, require_convolution

CONFIDENT = 0.5  # a mistake is confident when the network bets more on the wrong class than on all others together
HEAT_MAP_COLOURS = "inferno"  # perceptually uniform: equal steps of evidence look like equal steps of colour


class ConfusedPair(NamedTuple):
    true_class: str
    predicted_class: str
    count: float
    share_of_class: float  # of the images of the true class
    class_size: float = 0  # the images of the true class


def most_confused_pairs(conf_mat, classes, k: int = 5, show: bool = True) -> list[ConfusedPair]:
    """The k largest off-diagonal cells of a confusion matrix (rows true, columns predicted), largest first."""
    conf_mat = np.asarray(conf_mat.cpu() if isinstance(conf_mat, torch.Tensor) else conf_mat)
    num_classes = len(conf_mat)
    if conf_mat.shape != (num_classes, num_classes) or len(classes) != num_classes:
        raise ValueError(f"Expected a square matrix with one row per class name; got shape {conf_mat.shape} "
                         f"and {len(classes)} class names.")
    num_pairs = num_classes * (num_classes - 1)
    if not 1 <= k <= num_pairs:
        raise ValueError(f"k={k}, but a {num_classes}x{num_classes} confusion matrix has {num_pairs} pairs of "
                         f"different classes: choose k from 1 to {num_pairs}.")
    off_diagonal = np.where(np.eye(num_classes, dtype=bool), -np.inf, conf_mat.astype(float))
    largest = np.argsort(-off_diagonal, axis=None, kind="stable")[:k]  # ties: in reading order
    class_sizes = conf_mat.sum(axis=1)
    pairs = [ConfusedPair(classes[true], classes[guess], conf_mat[true, guess].item(),
                          conf_mat[true, guess] / max(class_sizes[true], 1), class_sizes[true].item())
             for true, guess in zip(*np.unravel_index(largest, conf_mat.shape))]
    if show:
        print_smoke_banner()
        print(confused_pairs_table(pairs))
    return pairs


def confused_pairs_table(pairs: list[ConfusedPair]) -> str:
    """The pairs as aligned text: true class, predicted class, how many of the class's images ("7 of 11")
    and their share of it; a small class's few images stay visible behind its percentage."""
    counts = [images_of_class(pair) for pair in pairs]
    true_width = max(len("true class"), *(len(pair.true_class) for pair in pairs))
    predicted_width = max(len("predicted as"), *(len(pair.predicted_class) for pair in pairs))
    count_width = max(len("images"), *(len(count) for count in counts))
    lines = [f"{'true class':<{true_width}}  {'predicted as':<{predicted_width}}  {'images':>{count_width}}  "
             "share of class"]
    for pair, count in zip(pairs, counts):
        lines.append(f"{pair.true_class:<{true_width}}  {pair.predicted_class:<{predicted_width}}  "
                     f"{count:>{count_width}}  {pair.share_of_class:>14.1%}")
    return "\n".join(lines)


def images_of_class(pair: ConfusedPair) -> str:
    """"7 of 11" for a matrix of counts; a matrix of rates or other measures has no count: its value as it is."""
    if float(pair.count).is_integer() and float(pair.class_size).is_integer() and pair.class_size:
        return f"{pair.count:,.0f} of {pair.class_size:,.0f}"
    return f"{pair.count:g}"


def check_num_examples(num_examples: int) -> None:
    if num_examples < 1:
        raise ValueError(f"num_examples must be at least 1 (got {num_examples}).")


def confident_mistakes(model: nn.Module, data_loader, num_examples: int):
    """(images, true classes, predicted classes, probabilities) of the most confident wrong predictions."""
    device = model_device(model)
    kept = None
    with eval_mode(model):
        for features, targets in data_loader:
            probabilities = F.softmax(model(features.to(device)).float(), dim=1)
            confidence, predicted = (tensor.cpu() for tensor in probabilities.max(dim=1))
            wrong = predicted != targets.cpu()
            batch = (features.cpu()[wrong], targets.cpu()[wrong], predicted[wrong], confidence[wrong])
            kept = batch if kept is None else tuple(torch.cat(pair) for pair in zip(kept, batch))
            most_confident = kept[3].argsort(descending=True)[:num_examples]  # keep memory small
            kept = tuple(tensor[most_confident] for tensor in kept)
    return kept


def show_confident_mistakes(model, data_loader, *, num_examples: int = 8, classes=None) -> Figure | None:
    """The wrong predictions made with the highest probability: image, true class, predicted class.

    Returns the figure, or None (and says so) when the model makes no mistake on this loader.
    """
    check_num_examples(num_examples)
    classes = classes or loaders.class_names(data_loader)
    found = confident_mistakes(model, data_loader, num_examples)
    if found is None or len(found[0]) == 0:
        print("No mistakes: the model classifies every image of this loader correctly.")
        return None
    images, true_classes, predicted_classes, probabilities = found
    doubt = unconfident_note(probabilities.max().item(), len(classes))
    if doubt:
        print(doubt)
    columns = min(EXAMPLE_COLUMNS, len(images))
    fig, axes = image_grid(rows_for(len(images), columns), columns, title_lines=2)
    for ax, picture, true, guess, probability in zip(axes.flat, pictures(images, data_loader),
                                                     true_classes.tolist(), predicted_classes.tolist(),
                                                     probabilities.tolist()):
        draw_image(ax, picture)
        ax.set_title(f"P: {classes[guess]} ({probability:.0%})\nT: {classes[true]}", fontsize=TEXT_SIZE, color="red")
    title = f"The {len(images)} most confident mistakes (P: predicted, with its probability; T: true)"
    if doubt:
        title = (f"The {len(images)} mistakes with the highest probability (P: predicted; T: true):\n"
                 f"none is confident, every one under {CONFIDENT:.0%}")
    set_figure_title(fig, title, data_loader)
    return fig


def unconfident_note(highest: float, num_classes: int) -> str:
    """A sentence when even the most probable mistake is no confident one (under CONFIDENT); else ""."""
    if highest >= CONFIDENT:
        return ""
    return (f"No mistake here is a confident one: the most probable is at {highest:.0%}, under {CONFIDENT:.0%} "
            f"(chance, for {num_classes} classes, is {1 / num_classes:.0%}). The network is unsure of every "
            "image it gets wrong; a network trained longer makes mistakes with conviction worth looking at.")


def first_convolution(model_or_conv: nn.Module) -> tuple[str, nn.Conv2d]:
    """(name, layer) of the first Conv2d in a model, or the layer itself when it is one."""
    if isinstance(model_or_conv, nn.Conv2d):
        return "Conv2d", model_or_conv
    for name, module in model_or_conv.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise ValueError(f"This {type(model_or_conv).__name__} is not a convolution and contains none: pass the "
                     "model, or its first convolution (e.g. model.conv1 or model.features[0]).")


def show_first_layer_filters(model_or_conv: nn.Module, max_filters: int = 64) -> Figure:
    """The first convolution's kernels as small images: colour for RGB input, grey for one channel."""
    name, conv = first_convolution(model_or_conv)
    kernels = conv.weight.detach().float().cpu()[:max_filters]
    out_channels, in_channels, height, width = conv.weight.shape
    # Three input channels are one colour picture; otherwise show each kernel's first input channel.
    kernels = kernels.permute(0, 2, 3, 1) if in_channels == 3 else kernels[:, 0]
    # Each kernel stretched to its own range: the pattern matters here, not the scale.
    low = kernels.amin(dim=tuple(range(1, kernels.dim())), keepdim=True)
    high = kernels.amax(dim=tuple(range(1, kernels.dim())), keepdim=True)
    kernels = torch.where(high > low, (kernels - low) / (high - low), torch.full_like(kernels, 0.5))
    columns = min(8, len(kernels))
    fig, axes = image_grid(rows_for(len(kernels), columns), columns, panel_inches=0.9, title_lines=0)
    for ax, kernel in zip(axes.flat, kernels.numpy()):
        draw_map(ax, kernel, cmap="gray")  # a colour kernel (H, W, 3) is drawn in its own colours
    shown = f", the first {len(kernels)} shown" if len(kernels) < out_channels else ""
    channel_note = "" if in_channels in (1, 3) else f" (input channel 1 of {in_channels})"
    set_figure_title(fig, f"{name}: {out_channels} filters of {in_channels}x{height}x{width}{shown}{channel_note}")
    return fig


def default_stages(model: nn.Module) -> list[str]:
    """A ResNet's layer1..layer4, or a VGG's max-pool layers (each closes a block)."""
    names = dict(model.named_modules())
    stages = [name for name in ("layer1", "layer2", "layer3", "layer4") if name in names]
    if stages:
        return stages
    pools = [name for name, module in names.items() if isinstance(module, nn.MaxPool2d)]
    if len(pools) > 1:
        return pools
    top_level = ", ".join(name for name, _ in model.named_children())
    raise ValueError("Cannot tell where this model's stages end: pass layers=[...] with their names "
                     f"(its top-level layers are: {top_level}).")


def layer_outputs(model: nn.Module, images: torch.Tensor, layers) -> dict[str, torch.Tensor]:
    """Each named layer's output for a batch of images, read with forward hooks during one forward pass."""
    found = [find_layer(model, layer) for layer in layers]
    outputs = {}

    def keep_output(name):
        def hook(module, inputs, output):
            outputs[name] = output.detach().clone()  # a copy: an in-place ReLU may follow
        return hook

    with eval_mode(model), contextlib.ExitStack() as hooks:
        for name, layer in found:
            hooks.enter_context(forward_hook(layer, keep_output(name)))
        model(images.to(model_device(model)))
    for name, output in outputs.items():
        if output.dim() != 4:
            raise ValueError(f"Layer {name!r} gives an output of shape {tuple(output.shape)}, not feature maps "
                             "(N, C, H, W): choose layers before the global pooling.")
    return {name: outputs[name].cpu() for name, _ in found}


def first_image(data_loader) -> torch.Tensor:
    """The first image of a loader's first batch, as a batch of one."""
    if isinstance(data_loader, torch.Tensor):
        raise TypeError("Pass the loader, not an image: the figure shows the first image of the loader's first "
                        "batch and un-normalises it with the loader's own mean and std, e.g. "
                        "show_feature_maps(model, test_loader).")
    images, _ = next(iter(data_loader))
    return images[:1]


def show_feature_maps(model, data_loader, layers=None, num_channels: int = 8) -> Figure:
    """The first image of the loader's first batch on its way through the model: after each stage (or each of
    `layers`), its most active channels, labelled channels x height x width."""
    image = first_image(data_loader)
    outputs = layer_outputs(model, image, layers or default_stages(model))
    fig, axes = image_grid(1 + len(outputs), num_channels, panel_inches=1.1, title_lines=0, extra_width=1.3)
    draw_image(axes[0, 0], pictures(image, data_loader)[0])
    label_row(axes[0, 0], "input\n{} x {} x {}".format(*image.shape[1:]))
    for row, (name, output) in zip(axes[1:], outputs.items()):
        maps = output[0]
        # Many channels are nearly silent for any one image; the most active ones show what it excites.
        for ax, channel in zip(row, maps.mean(dim=(1, 2)).argsort(descending=True)[:num_channels].tolist()):
            draw_map(ax, maps[channel].numpy(), cmap="viridis")
        label_row(row[0], "{}\n{} x {} x {}".format(name, *maps.shape))
    set_figure_title(fig, f"Feature maps: the {num_channels} most active channels after each layer\n"
                          "(labelled channels x height x width; each map scaled to its own range)", data_loader)
    return fig


def show_grad_cam(model, data_loader, layer, *, num_examples: int = 8, classes=None) -> Figure:
    """The first images of the loader's first batch, each beside its Grad-CAM heat map for the predicted class."""
    check_num_examples(num_examples)
    name, layer = find_layer(model, layer)
    require_convolution(name, layer)
    classes = classes or loaders.class_names(data_loader)
    features, targets = next(iter(data_loader))
    features, targets = features[:num_examples], targets[:num_examples].tolist()
    heat_maps = grad_cam(model, features, layer).numpy()
    with eval_mode(model):
        probabilities = F.softmax(model(features.to(model_device(model))).float(), dim=1).cpu()
    confidence, predicted = probabilities.max(dim=1)
    pairs_per_row = min(2, len(features))
    fig, axes = image_grid(rows_for(len(features), pairs_per_row), 2 * pairs_per_row, pairs=True, extra_width=1.0)
    panels = axes.reshape(-1, 2)  # one row per pair: (image, heat map)
    for (image_ax, overlay_ax), picture, heat_map, true, guess, probability in zip(
            panels, pictures(features, data_loader), heat_maps, targets, predicted.tolist(), confidence.tolist()):
        draw_image(image_ax, picture)
        image_ax.set_title(f"T: {classes[true]}", fontsize=TEXT_SIZE)
        draw_image(overlay_ax, picture, grey=True)  # in grey, so that every colour on it is the heat map's
        overlay = overlay_ax.imshow(heat_map, cmap=HEAT_MAP_COLOURS, alpha=0.55, vmin=0, vmax=1)
        overlay_ax.set_title(f"P: {classes[guess]} ({probability:.0%})", fontsize=TEXT_SIZE,
                             color="black" if guess == true else "red")
    colour_bar = fig.colorbar(overlay, ax=axes, shrink=0.6)  # every heat map has the same colours and range
    colour_bar.set_label("Grad-CAM: evidence for P (1: the image's strongest)", fontsize=TEXT_SIZE)
    set_figure_title(fig, f"Grad-CAM at {name!r}: each image (T: true class) beside where the evidence\n"
                          "for the predicted class P lies (red: a wrong prediction)", data_loader)
    return fig
