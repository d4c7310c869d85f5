"""Checks before the first training step: what would otherwise fail after an epoch, or silently, fails here
with a sentence that says what to do."""

from __future__ import annotations

import torch
from torch.utils.data import Subset, TensorDataset

from .checks import check_labels
from .classic_pipeline import ClassicLoader
from .device_pipeline import DeviceLoader
from .evaluation import eval_mode
from .loaders import class_names, sample_images
from .scheduling import check_scheduler

REBUILD = "rerun the cell that builds the model and its optimizer, then this one"
ROLES = ("train_loader", "valid_loader", "test_loader")


def check_loaders(train_loader, valid_loader, test_loader) -> None:
    """A validation loader is required; every loader given must give at least one batch, with labels that fit."""
    if valid_loader is None:
        raise ValueError("train_model needs a valid_loader: it picks the best epoch by validation accuracy. "
                         "The get_dataloaders_* functions return (train_loader, valid_loader, test_loader).")
    for role, loader in zip(ROLES, (train_loader, valid_loader, test_loader)):
        if loader is not None and len(loader) == 0:
            raise ValueError(f"The {role} gives no batches: its dataset is empty, or smaller than one batch with "
                             "drop_last=True. Check the data it was built from, and the batch size.")
    num_classes = _number_of_classes(train_loader)
    for role, loader in zip(ROLES, (train_loader, valid_loader, test_loader)):
        check_foreign_labels(loader, num_classes, role)


def check_foreign_labels(loader, num_classes: int | None, role: str) -> None:
    """The labels of a loader these helpers did not build, where they can be read without a pass over its images.

    get_dataloaders's loaders check theirs when they are made. A TensorDataset serves its labels tensor as it is:
    all of check_labels applies. A dataset's `targets` (torchvision's) may be converted as items are served, so
    only their values are checked, and not at all under a target_transform. Other datasets are not checked.
    """
    if loader is None or isinstance(loader, (DeviceLoader, ClassicLoader)):
        return
    dataset, indices = getattr(loader, "dataset", None), None
    if isinstance(dataset, Subset):
        dataset, indices = dataset.dataset, list(dataset.indices)
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) == 2:
        labels = dataset.tensors[1]
    elif getattr(dataset, "target_transform", None) is None:
        labels = _integer_targets(dataset)
    else:
        labels = None
    if labels is not None:
        check_labels(labels if indices is None else labels[indices], num_classes, f"The labels of the {role}")


def _integer_targets(dataset) -> torch.Tensor | None:
    """A dataset's `targets` as an int64 tensor, when they are whole numbers; else None."""
    try:
        targets = torch.as_tensor(getattr(dataset, "targets", None))
    except (TypeError, ValueError, RuntimeError):  # none, or not numbers
        return None
    return targets.long() if targets.ndim == 1 and not targets.is_floating_point() else None


def _number_of_classes(loader) -> int | None:
    try:
        return len(class_names(loader))
    except ValueError:  # a loader that does not say its classes: check_shapes asks for them
        return None


def check_optimizer(model, optimizer, scheduler, total_batches: int) -> None:
    """The optimizer must update this model's parameters, and the scheduler belong to it."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch optimizer, e.g. torch.optim.SGD(model.parameters(), lr=0.01) "
                        f"(got {type(optimizer).__name__}).")
    own = {id(parameter) for parameter in model.parameters()}
    foreign = [p for group in optimizer.param_groups for p in group["params"] if id(p) not in own]
    if foreign:
        raise ValueError(
            f"The optimizer updates {len(foreign)} tensor(s) that are not this model's parameters: it was built "
            "for another model (one built by an earlier run of a cell, perhaps). Build it from this model, "
            "e.g. torch.optim.SGD(model.parameters(), lr=0.01)."
        )
    check_scheduler(scheduler, optimizer, total_batches)


def check_fresh_start(model, optimizer, scheduler) -> None:
    """Starting without a checkpoint to restore from: the optimizer and the weights must be untouched and finite."""
    if any(optimizer.state.values()) or getattr(scheduler, "last_epoch", 0) > 0:
        raise ValueError(
            "This optimizer (or its scheduler) has already trained: an earlier or interrupted train_model call "
            f"left its state, so the model is part-trained too. To start clean, {REBUILD}; with a "
            "checkpoint_path, training then resumes from the last saved epoch."
        )
    bad = non_finite_tensors(model)
    if bad:
        raise ValueError(
            f"The model's {', '.join(bad)} {'is' if len(bad) == 1 else 'are'} NaN or infinite before training: "
            f"an earlier run diverged and left them so. A smaller learning rate cannot help these weights: {REBUILD}."
        )


def amp_dtype(device: torch.device, amp) -> torch.dtype | None:
    """Mixed precision: bf16 where the GPU has it, fp16 with a gradient scaler (a T4), else off."""
    if amp in (torch.float16, torch.bfloat16):
        if device.type != "cuda":
            raise ValueError(f"amp={amp} needs a CUDA GPU; this run is on {device.type}. Leave amp unset.")
        return amp
    if amp not in (None, True, False):
        raise ValueError(f"amp must be None (automatic), True, False, torch.float16 or torch.bfloat16 (got {amp!r}).")
    if device.type == "cuda" and amp is not False:
        # is_bf16_supported() also says yes for emulated bf16 on a T4, which is slow; ask for Ampere+.
        return torch.bfloat16 if torch.cuda.get_device_capability(device) >= (8, 0) else torch.float16
    if amp:
        raise ValueError(f"amp=True needs a CUDA GPU; this run is on {device.type}. Leave amp unset.")
    return None


def check_shapes(model, loader, precision, device) -> None:
    """Run two images through the model first, to turn shape mistakes into plain messages."""
    num_classes = len(class_names(loader))
    images = precision.prepare(sample_images(loader), device)
    try:
        with eval_mode(model):
            logits = model(images)
    except RuntimeError as error:
        raise ValueError(
            f"The model cannot process images of shape {tuple(images.shape[1:])} (channels, height, "
            f"width): {str(error).splitlines()[0]}\nThe images may be too small for this network's "
            "downsampling, or have the wrong number of channels: resize them (ImageRecipe(resize=...)) "
            "or change the network's first layer."
        ) from error
    if logits.ndim != 2 or logits.shape[1] != num_classes:
        raise ValueError(
            f"The model outputs {tuple(logits.shape[1:])} values per image, but the data has "
            f"{num_classes} classes. Make its last layer output {num_classes} values, e.g. "
            f"nn.Linear(in_features, {num_classes})."
        )


def non_finite_tensors(model) -> list[str]:
    """Names of the weights and buffers (BatchNorm's running statistics too) holding NaN or infinity."""
    state = {name: tensor for name, tensor in model.state_dict().items() if tensor.is_floating_point()}
    if not state:
        return []
    device = next(iter(state.values())).device
    finite = torch.stack([torch.isfinite(tensor).all().to(device) for tensor in state.values()]).tolist()
    return [name for name, ok in zip(state, finite) if not ok]
