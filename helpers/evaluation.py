"""Measuring a trained model: accuracy, loss and the confusion matrix, in one pass each."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .environment import get_device
from .loaders import class_names


@dataclass(frozen=True)
class Precision:
    """How a forward pass computes: float32 or a mixed-precision dtype, in the plain or channels-last layout."""

    amp_dtype: torch.dtype | None = None
    channels_last: bool = False

    def prepare(self, images: torch.Tensor, device: torch.device) -> torch.Tensor:
        """A batch of images on the device, in this memory layout."""
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        return images.to(device, non_blocking=True).contiguous(memory_format=memory_format)

    def autocast(self, device: torch.device):
        """Mixed precision in amp_dtype, or nothing at all when amp_dtype is None.

        Older torch releases reject some device types (Apple's MPS) in torch.autocast even when disabled.
        """
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.amp_dtype)


def model_device(model: torch.nn.Module) -> torch.device:
    """The device a model's parameters are on."""
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module):
    """Evaluate in eval mode without gradients, then put every module back in the mode it was in."""
    # Per module, not model.train(was_training): a model may hold frozen parts kept in eval mode.
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        for module, training in modes:
            module.training = training


def predictions(model, data_loader, precision: Precision | None = None):
    """Yield (float32 logits, targets) for every batch of a loader, on the model's device."""
    precision = precision or Precision()
    device = model_device(model)
    with eval_mode(model):
        for features, targets in data_loader:
            features = precision.prepare(features, device)
            targets = targets.to(device, non_blocking=True)
            with precision.autocast(device):
                logits = model(features)
            yield logits.float(), targets


def evaluate(model, data_loader, precision: Precision | None = None) -> tuple[float, float]:
    """(mean cross-entropy loss, accuracy in percent) over a loader, with one sync at the end."""
    loss_sum = correct = count = None
    for logits, targets in predictions(model, data_loader, precision):
        batch_loss = F.cross_entropy(logits, targets, reduction="sum")
        batch_correct = (logits.argmax(1) == targets).sum()
        loss_sum = batch_loss if loss_sum is None else loss_sum + batch_loss
        correct = batch_correct if correct is None else correct + batch_correct
        count = targets.numel() if count is None else count + targets.numel()
    if count is None:
        raise ValueError("The data loader is empty: there is nothing to evaluate.")
    return loss_sum.item() / count, 100.0 * correct.item() / count


def compute_accuracy(model, data_loader, device=None) -> float:
    """Accuracy of the model on a loader, in percent (device, as in the course: where the model is)."""
    _check_device(model, device)
    return evaluate(model, data_loader)[1]


def compute_confusion_matrix(model, data_loader, device=None, num_classes: int | None = None) -> np.ndarray:
    """K x K counts for K classes: rows are true labels, columns predictions, absent classes included."""
    _check_device(model, device)
    num_classes = num_classes or len(class_names(data_loader))
    counts = largest = smallest = None
    for logits, targets in predictions(model, data_loader):
        _check_label_type(targets)
        guesses = logits.argmax(1)
        # Counted in a flat vector of K*K cells: a class < 0 or >= K would land silently in another cell.
        # The extremes stay on the device, checked once after the last batch (one sync, not one per batch).
        batch_largest = torch.maximum(targets.max(), guesses.max())
        largest = batch_largest if largest is None else torch.maximum(largest, batch_largest)
        smallest = targets.min() if smallest is None else torch.minimum(smallest, targets.min())
        pairs = (targets * num_classes + guesses).clamp_(0, num_classes * num_classes - 1)
        batch_counts = torch.bincount(pairs, minlength=num_classes * num_classes)
        counts = batch_counts if counts is None else counts + batch_counts
    if counts is None:
        raise ValueError("The data loader is empty: there is nothing to count.")
    if smallest.item() < 0:
        raise ValueError(
            f"The labels include {smallest.item()}, and a confusion matrix counts classes 0 to {num_classes - 1} "
            "only. Labels of -100 or -1 usually mark images to skip (the ignore_index convention of "
            "nn.CrossEntropyLoss): leave those images out of the loader, then count again."
        )
    if largest.item() >= num_classes:
        raise ValueError(
            f"num_classes={num_classes} is too small: the labels or the model's predictions reach class "
            f"{largest.item()}. Pass num_classes={largest.item() + 1} or more, or leave it out to take the "
            "number of classes from the loader."
        )
    return counts.view(num_classes, num_classes).cpu().numpy()


def _check_label_type(targets: torch.Tensor) -> None:
    """Labels are class numbers: a float label would fail deep inside torch.bincount."""
    if targets.is_floating_point() or targets.is_complex():
        raise ValueError(f"The labels are {targets.dtype}, but they must be whole class numbers (0, 1, 2, ...): "
                         "build the dataset with integer labels, e.g. labels.long().")


def _check_device(model, device) -> None:
    """The course passed the device along; here the model's own device is used, so they must agree."""
    if device is None:
        return
    wanted, actual = get_device(device), model_device(model)
    if wanted.type != actual.type or None not in (wanted.index, actual.index) and wanted.index != actual.index:
        raise ValueError(f"The model's weights are on {actual}, not {wanted}: move it first with "
                         f"model.to({str(wanted)!r}), or leave device out.")

