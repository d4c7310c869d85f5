"""What a trained network learned and where it fails: confused pairs, confident mistakes, filters,
feature maps and Grad-CAM overlays. Every figure is a new one; the model is left as it was."""

from __future__ import annotations

import contextlib
import math
from typing import NamedTuple

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import loaders
from .evaluation import eval_mode, model_device
from .gradcam import find_layer, forward_hook, grad_cam, require_convolution
from .plotting import draw_image, loader_mean_std
from .recipe import unnormalize


class ConfusedPair(NamedTuple):
    true_class: str
    predicted_class: str
    count: float
    share_of_class: float  # of the images of the true class


def most_confused_pairs(conf_mat, class_names, k: int = 5, show: bool = True) -> list[ConfusedPair]:
    """The k largest off-diagonal cells of a confusion matrix (rows true, columns predicted), largest first."""
    conf_mat = np.asarray(conf_mat.cpu() if isinstance(conf_mat, torch.Tensor) else conf_mat)
    num_classes = len(conf_mat)
    if conf_mat.shape != (num_classes, num_classes) or len(class_names) != num_classes:
        raise ValueError(f"Expected a square matrix with one row per class name; got shape {conf_mat.shape} "
                         f"and {len(class_names)} class names.")
    num_pairs = num_classes * (num_classes - 1)
    if not 1 <= k <= num_pairs:
        raise ValueError(f"k={k}, but a {num_classes}x{num_classes} confusion matrix has {num_pairs} pairs of "
                         f"different classes: choose k from 1 to {num_pairs}.")
    off_diagonal = np.where(np.eye(num_classes, dtype=bool), -np.inf, conf_mat.astype(float))
    largest = np.argsort(-off_diagonal, axis=None, kind="stable")[:k]  # ties: in reading order
    class_sizes = conf_mat.sum(axis=1)
    pairs = [ConfusedPair(class_names[true], class_names[guess], conf_mat[true, guess].item(),
                          conf_mat[true, guess] / max(class_sizes[true], 1))
             for true, guess in zip(*np.unravel_index(largest, conf_mat.shape))]
    if show:
        print(confused_pairs_table(pairs))
    return pairs


def confused_pairs_table(pairs: list[ConfusedPair]) -> str:
    """The pairs as aligned text: true class, predicted class, count and share of the true class."""
    true_width = max(len("true class"), *(len(pair.true_class) for pair in pairs))
    predicted_width = max(len("predicted as"), *(len(pair.predicted_class) for pair in pairs))
    lines = [f"{'true class':<{true_width}}  {'predicted as':<{predicted_width}}  {'count':>7}  share of class"]
    for pair in pairs:
        lines.append(f"{pair.true_class:<{true_width}}  {pair.predicted_class:<{predicted_width}}  "
                     f"{pair.count:>7g}  {pair.share_of_class:>14.1%}")
    return "\n".join(lines)


def check_num_examples(num_examples: int) -> None:
    if num_examples < 1:
        raise ValueError(f"num_examples must be at least 1 (got {num_examples}).")


def display_images(images: torch.Tensor, mean, std) -> np.ndarray:
    """Normalised images (N, C, H, W) as pictures (N, H, W, C) in [0, 1]."""
    return unnormalize(images.detach().float().cpu(), mean, std).permute(0, 2, 3, 1).numpy()


def confident_mistakes(model: nn.Module, loader, num_examples: int):
    """(images, true classes, predicted classes, probabilities) of the most confident wrong predictions."""
    device = model_device(model)
    kept = None
    with eval_mode(model):
        for features, targets in loader:
            probabilities = F.softmax(model(features.to(device)).float(), dim=1)
            confidence, predicted = (tensor.cpu() for tensor in probabilities.max(dim=1))
            wrong = predicted != targets.cpu()
            batch = (features.cpu()[wrong], targets.cpu()[wrong], predicted[wrong], confidence[wrong])
            kept = batch if kept is None else tuple(torch.cat(pair) for pair in zip(kept, batch))
            most_confident = kept[3].argsort(descending=True)[:num_examples]  # keep memory small
            kept = tuple(tensor[most_confident] for tensor in kept)
    return kept


def show_confident_mistakes(model, loader, num_examples: int = 10, mean=None, std=None, classes=None) -> None:
    """The wrong predictions made with the highest probability: image, true class, predicted class."""
    check_num_examples(num_examples)
    classes = classes or loaders.class_names(loader)
    if mean is None:
        mean, std = loader_mean_std(loader)
    found = confident_mistakes(model, loader, num_examples)
    if found is None or len(found[0]) == 0:
        print("No mistakes: the model classifies every image of this loader correctly.")
        return
    images, true_classes, predicted_classes, probabilities = found
    columns = 5
    rows = math.ceil(len(images) / columns)
    # Constrained layout: tight_layout lets two-line titles overlap the row above when there is a suptitle.
    fig, axes = plt.subplots(rows, columns, figsize=(2 * columns, 2.4 * rows + 0.4), squeeze=False,
                             layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, true, guess, probability in zip(axes.flat, display_images(images, mean, std),
                                                   true_classes.tolist(), predicted_classes.tolist(),
                                                   probabilities.tolist()):
        draw_image(ax, image)
        ax.set_title(f"P: {classes[guess]} ({probability:.0%})\nT: {classes[true]}", fontsize=9, color="red")
    fig.suptitle(f"The {len(images)} most confident mistakes (P: predicted with its probability, T: true)")


def first_convolution(model_or_conv: nn.Module) -> tuple[str, nn.Conv2d]:
    """(name, layer) of the first Conv2d in a model, or the layer itself when it is one."""
    if isinstance(model_or_conv, nn.Conv2d):
        return "Conv2d", model_or_conv
    for name, module in model_or_conv.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise ValueError(f"This {type(model_or_conv).__name__} is not a convolution and contains none: pass the "
                     "model, or its first convolution (e.g. model.conv1 or model.features[0]).")


def show_first_layer_filters(model_or_conv: nn.Module, max_filters: int = 64) -> None:
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
    rows = math.ceil(len(kernels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.1 * columns, 1.1 * rows + 0.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, kernel in zip(axes.flat, kernels.numpy()):
        ax.imshow(kernel, cmap="gray" if kernel.ndim == 2 else None, interpolation="nearest")
    shown = f", the first {len(kernels)} shown" if len(kernels) < out_channels else ""
    channel_note = "" if in_channels in (1, 3) else f" (input channel 1 of {in_channels})"
    fig.suptitle(f"{name}: {out_channels} filters of {in_channels}x{height}x{width}{shown}{channel_note}")
    fig.tight_layout()


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


def show_feature_maps(model, image: torch.Tensor, layers=None, num_channels: int = 8, mean=None, std=None) -> None:
    """One image's activations after each stage: its most active channels, titled channels x height x width."""
    image = image if image.dim() == 4 else image.unsqueeze(0)
    outputs = layer_outputs(model, image[:1], layers or default_stages(model))
    fig, axes = plt.subplots(1 + len(outputs), num_channels, squeeze=False,
                             figsize=(1.4 * num_channels, 1.6 * (1 + len(outputs))))
    for ax in axes.flat:
        ax.axis("off")
    draw_image(axes[0, 0], display_images(image[:1], mean, std)[0])
    axes[0, 0].set_title("input: {} x {} x {}".format(*image.shape[1:]), loc="left", fontsize=9)
    for row, (name, output) in zip(axes[1:], outputs.items()):
        maps = output[0]
        # Many channels are nearly silent for any one image; the most active ones show what it excites.
        for ax, channel in zip(row, maps.mean(dim=(1, 2)).argsort(descending=True)[:num_channels].tolist()):
            ax.imshow(maps[channel].numpy(), cmap="viridis")
        row[0].set_title("{}: {} x {} x {}".format(name, *maps.shape), loc="left", fontsize=9)
    fig.suptitle("Feature maps (channels x height x width), the most active channels of each layer")
    fig.tight_layout()


def show_grad_cam(model, loader, layer, num_examples: int = 8, mean=None, std=None, classes=None) -> None:
    """The first test images beside their Grad-CAM heat maps for the predicted class, at the given layer."""
    check_num_examples(num_examples)
    name, layer = find_layer(model, layer)
    require_convolution(name, layer)
    classes = classes or loaders.class_names(loader)
    if mean is None:
        mean, std = loader_mean_std(loader)
    features, targets = next(iter(loader))
    features, targets = features[:num_examples], targets[:num_examples].tolist()
    heat_maps = grad_cam(model, features, layer).numpy()
    with eval_mode(model):
        probabilities = F.softmax(model(features.to(model_device(model))).float(), dim=1).cpu()
    confidence, predicted = probabilities.max(dim=1)
    per_row = 4
    rows = math.ceil(len(features) / per_row)
    fig, axes = plt.subplots(rows, 2 * per_row, figsize=(2 * 2 * per_row, 2.3 * rows + 0.4), squeeze=False,
                             layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    pictures = display_images(features, mean, std)
    for index, (picture, heat_map, true) in enumerate(zip(pictures, heat_maps, targets)):
        image_ax, overlay_ax = axes.flat[2 * index], axes.flat[2 * index + 1]
        draw_image(image_ax, picture)
        image_ax.set_title(f"T: {classes[true]}", fontsize=9)
        draw_image(overlay_ax, picture)
        overlay_ax.imshow(heat_map, cmap="jet", alpha=0.5, vmin=0, vmax=1)
        guess = predicted[index].item()
        overlay_ax.set_title(f"P: {classes[guess]} ({confidence[index]:.0%})", fontsize=9,
                             color="black" if guess == true else "red")
    fig.suptitle(f"Grad-CAM at {name!r}: where the evidence for the predicted class (P) lies")
