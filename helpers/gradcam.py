"""Grad-CAM with hooks: where in the image a convolutional layer found the evidence for a class.

A forward hook lets us read a layer's output without changing the model's `forward`; a backward hook on
that output tensor catches the gradient flowing back through it. Grad-CAM (Selvaraju et al., 2017)
weights each channel of the output by its average gradient: the sum is a map of where the layer saw
what pushed the class score up.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from .evaluation import model_device


def find_layer(model: nn.Module, layer) -> tuple[str, nn.Module]:
    """(name, module) for a layer given as a module of the model or as a dotted name ('layer4', 'features.28')."""
    names = {module: name for name, module in model.named_modules()}
    if isinstance(layer, nn.Module):
        if layer not in names:
            raise ValueError(f"This {type(layer).__name__} is not part of the model: pass one of the model's own "
                             "layers (e.g. model.layer4), or its name as a string.")
        return names[layer], layer
    modules = dict(model.named_modules())
    if layer not in modules:
        top_level = ", ".join(name for name, _ in model.named_children())
        raise ValueError(f"The model has no layer named {layer!r}. Its top-level layers are: {top_level}. "
                         "Join names with dots for inner layers, e.g. 'features.28' or 'layer4.1.conv2'.")
    return layer, modules[layer]


def require_convolution(name: str, layer: nn.Module) -> None:
    """Refuse a layer that neither is nor contains a 2-D convolution: it has no feature map to look at."""
    if not any(isinstance(module, nn.Conv2d) for module in layer.modules()):
        raise ValueError(f"Layer {name!r} ({type(layer).__name__}) is not a convolution or a block of them: "
                         "choose a layer whose output is a feature map, such as a ResNet's 'layer4' or "
                         "VGG16's last convolution 'features.28'.")


@contextlib.contextmanager
def model_kept_as_it_was(model: nn.Module):
    """Let a block change modes, gradient flags or gradients; afterwards every module and parameter is as before."""
    modes = [(module, module.training) for module in model.modules()]
    parameters = [(parameter, parameter.requires_grad, parameter.grad) for parameter in model.parameters()]
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training  # per module: a model may hold frozen eval-mode parts
        for parameter, requires_grad, grad in parameters:
            parameter.requires_grad_(requires_grad)
            parameter.grad = grad


@contextlib.contextmanager
def forward_hook(layer: nn.Module, hook):
    """Call hook(module, inputs, output) after every forward of layer, and remove it afterwards, even on error."""
    handle = layer.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def target_classes(target, logits: torch.Tensor) -> torch.Tensor:
    """One class index per image: the predicted classes when target is None, else the given class(es)."""
    if target is None:
        return logits.argmax(1)
    num_images, num_classes = logits.shape
    classes = torch.as_tensor(target, device=logits.device).long().reshape(-1)
    if len(classes) == 1:
        classes = classes.expand(num_images)
    if len(classes) != num_images or not ((classes >= 0) & (classes < num_classes)).all():
        raise ValueError(f"target must be None (the predicted classes), one class in 0..{num_classes - 1}, or one "
                         f"such class for each of the {num_images} images (got {target!r}).")
    return classes


def grad_cam(model: nn.Module, images: torch.Tensor, layer, target=None) -> torch.Tensor:
    """Grad-CAM heat maps (N, H, W) in [0, 1] at the images' size, on the CPU, for the predicted or given classes.

    `layer` is a convolution or a block of them, as a module or a name ('layer4', 'features.28');
    `target` is None (each image's predicted class), one class for all images, or one class per image.
    """
    name, layer = find_layer(model, layer)
    require_convolution(name, layer)
    if images.dim() == 3:
        images = images.unsqueeze(0)  # one image (C, H, W) is a batch of one
    saved = {}

    def save_gradients(gradients):
        saved["gradients"] = gradients

    def save_activations(module, inputs, output):
        if output.dim() != 4:
            raise ValueError(f"Layer {name!r} gives an output of shape {tuple(output.shape)}, not a feature map "
                             "(N, C, H, W): choose a convolution or a block of them.")
        # A copy: an in-place ReLU after the layer (as in VGG) would otherwise change what we keep.
        saved["activations"] = output.detach().clone()
        # A backward hook on the output tensor. (A module's full backward hook would fail here when
        # an in-place ReLU follows the layer.)
        output.register_hook(save_gradients)

    with model_kept_as_it_was(model), forward_hook(layer, save_activations), torch.enable_grad():
        model.eval()
        # The input asks for gradients, so that there is a backward pass even when every weight is frozen.
        inputs = images.detach().to(model_device(model)).requires_grad_()
        logits = model(inputs)
        score = logits.gather(1, target_classes(target, logits).view(-1, 1)).sum()
        # autograd.grad runs the backward pass (and so the hook) without adding to any weight's .grad.
        torch.autograd.grad(score, inputs)
    # Each channel's weight: how much the class score rises, on average over the map, as the channel rises.
    channel_weights = saved["gradients"].mean(dim=(2, 3), keepdim=True)
    # The weighted sum of the channels; ReLU keeps what speaks for the class, not against it.
    maps = F.relu((channel_weights * saved["activations"]).sum(dim=1, keepdim=True))
    maps = F.interpolate(maps, size=images.shape[-2:], mode="bilinear", align_corners=False).squeeze(1)
    peaks = maps.amax(dim=(1, 2), keepdim=True)
    return torch.where(peaks > 0, maps / peaks, maps).cpu()
