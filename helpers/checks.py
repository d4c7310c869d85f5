"""Checks of the counts and labels a student passes (batch_size, num_epochs, ...): a clear error, not a failure
deep inside."""

from __future__ import annotations

import numbers

import torch


def check_count(name: str, value, example: int) -> int:
    """A count such as batch_size or num_epochs as an int (numpy integers welcome), or a clear error."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a whole number of at least 1, e.g. {example} "
                        f"(got {value!r}, a {type(value).__name__}).")
    if value < 1:
        raise ValueError(f"{name} must be a whole number of at least 1 (got {value}).")
    return int(value)


def check_batch_size(batch_size) -> int:
    """batch_size as an int (numpy integers welcome), or a clear error."""
    return check_count("batch_size", batch_size, example=64)


def check_labels(labels, num_classes: int | None, what: str = "The labels") -> None:
    """Labels as cross_entropy takes them (a 1-D int64 tensor of classes 0 to num_classes - 1), or a clear error.

    One pass over the labels (their smallest and largest), made once when a loader is built, not per batch.
    """
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{what} must be a torch tensor of class numbers (got a {type(labels).__name__}): "
                        "convert them with torch.as_tensor(labels, dtype=torch.long).")
    if labels.ndim != 1:
        fix = "labels.view(-1)" if labels.ndim == 2 and labels.shape[1] == 1 else \
            "labels.argmax(1) if each row is one-hot, else one class number per image"
        raise ValueError(f"{what} have shape {tuple(labels.shape)}, but a loader needs one class number per image, "
                         f"shape (N,): use {fix}.")
    if labels.dtype != torch.long:
        check = " (after checking that they are whole numbers)" if labels.is_floating_point() else ""
        raise ValueError(f"{what} are {labels.dtype}, but they must be whole class numbers of type torch.long "
                         f"(int64), as cross_entropy takes them: convert them with labels.long(){check}.")
    if labels.numel() == 0:
        return
    smallest, largest = (int(value) for value in torch.aminmax(labels))
    if smallest < 0:
        # cross_entropy skips -100 (its ignore_index) in the loss while accuracy counts it wrong, both silently.
        raise ValueError(f"{what} include {smallest}, but classes are numbered from 0. Negative labels (-100, -1) "
                         "usually mark images to skip, the ignore_index convention of cross_entropy, which would "
                         "leave them out of the loss silently but count them wrong in the accuracy: leave those "
                         "images out (keep = labels >= 0, then images[keep] and labels[keep]).")
    if num_classes is not None and largest >= num_classes:
        fix = ("they seem to count from 1: subtract 1 (labels - 1)" if smallest >= 1 and largest == num_classes
               else "fix those labels, or give the full list of class names")
        raise ValueError(f"{what} include class {largest}, but there are {num_classes} classes, numbered 0 to "
                         f"{num_classes - 1}: {fix}.")
