"""Measuring a trained model: accuracy, loss and the confusion matrix, in one pass each."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F

from .data import class_names
from .environment import get_device


def model_device(model: torch.nn.Module) -> torch.device:
    """The device a model's parameters are on."""
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Mixed precision in dtype, or nothing at all when dtype is None.

    Older torch releases reject some device types (Apple's MPS) in torch.autocast even when disabled.
    """
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module):
    """Evaluate in eval mode without gradients, then put the model back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def predictions(model, data_loader, device=None, amp_dtype=None, channels_last=False):
    """Yield (logits, targets) for every batch of a loader, on the model's device."""
    device = get_device(device) if device is not None else model_device(model)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    with eval_mode(model):
        for features, targets in data_loader:
            features = features.to(device, non_blocking=True).contiguous(memory_format=memory_format)
            targets = targets.to(device, non_blocking=True)
            with autocast(device, amp_dtype):
                logits = model(features)
            yield logits.float(), targets


def evaluate(model, data_loader, device=None, amp_dtype=None, channels_last=False) -> tuple[float, float]:
    """(mean cross-entropy loss, accuracy in percent) over a loader, with one sync at the end."""
    loss_sum = correct = count = None
    for logits, targets in predictions(model, data_loader, device, amp_dtype, channels_last):
        batch_loss = F.cross_entropy(logits, targets, reduction="sum")
        batch_correct = (logits.argmax(1) == targets).sum()
        loss_sum = batch_loss if loss_sum is None else loss_sum + batch_loss
        correct = batch_correct if correct is None else correct + batch_correct
        count = targets.numel() if count is None else count + targets.numel()
    if count is None:
        raise ValueError("The data loader is empty: there is nothing to evaluate.")
    return loss_sum.item() / count, 100.0 * correct.item() / count


def compute_accuracy(model, data_loader, device=None) -> float:
    """Accuracy of the model on a loader, in percent."""
    return evaluate(model, data_loader, device)[1]


def compute_confusion_matrix(model, data_loader, device=None, num_classes: int | None = None) -> np.ndarray:
    """K x K counts for K classes: rows are true labels, columns predictions, absent classes included."""
    num_classes = num_classes or len(class_names(data_loader))
    counts = None
    for logits, targets in predictions(model, data_loader, device):
        pairs = targets * num_classes + logits.argmax(1)
        batch_counts = torch.bincount(pairs, minlength=num_classes * num_classes)
        counts = batch_counts if counts is None else counts + batch_counts
    if counts is None:
        raise ValueError("The data loader is empty: there is nothing to count.")
    return counts.view(num_classes, num_classes).cpu().numpy()
