"""Figures: the loss and accuracy curves, example predictions, and the confusion matrix."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch.utils.data import Subset
from torchvision.transforms import Normalize, v2

from . import loaders
from .evaluation import eval_mode, model_device
from .recipe import unnormalize


def running_average(values, window: int) -> tuple[np.ndarray, np.ndarray]:
    """(iterations, averages): each average covers the `window` iterations ending at its iteration."""
    values = np.asarray(values, dtype=float)
    window = max(1, min(window, len(values)))
    averages = np.convolve(values, np.ones(window) / window, mode="valid")
    return np.arange(window, len(values) + 1), averages


def plot_training_loss(history, averaging_iterations: int = 100, iter_per_epoch: int | None = None) -> None:
    """Per-batch training loss with its running average, and an epoch axis on top."""
    losses = np.asarray(getattr(history, "batch_losses", history), dtype=float)
    if len(losses) == 0:
        raise ValueError("This history holds no training losses yet: plot the History that train_model returns "
                         "after at least one epoch.")
    iter_per_epoch = iter_per_epoch or getattr(history, "iter_per_epoch", 0)
    iterations = np.arange(1, len(losses) + 1)
    marker = "o" if len(losses) < 20 else None  # a short run's few points would not show as lines
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(iterations, losses, alpha=0.35, marker=marker, label="Minibatch loss")
    average_x, average = running_average(losses, averaging_iterations)
    ax.plot(average_x, average, marker=marker, label=f"Running average ({averaging_iterations} iterations)")
    # Early losses dwarf the rest; start the axis near where training settles.
    if len(losses) > 10:
        ax.set_ylim(max(0.0, losses.min() * 0.9), np.percentile(losses, 99) * 1.1)
    ax.set_xlabel("Iterations")
    ax.set_ylabel("Loss")
    ax.legend()
    if iter_per_epoch:
        epochs = ax.secondary_xaxis("top", functions=(lambda x: x / iter_per_epoch, lambda e: e * iter_per_epoch))
        epochs.set_xlabel("Epochs")
    fig.tight_layout()


def plot_accuracy(history) -> None:
    """Training and validation accuracy per epoch."""
    if len(history.valid_acc) == 0:
        raise ValueError("This history holds no finished epoch yet: plot the History that train_model returns "
                         "after at least one epoch.")
    epochs = np.arange(1, len(history.valid_acc) + 1)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(epochs, history.train_acc, marker="o", label="Training (running, augmented)")
    ax.plot(epochs, history.valid_acc, marker="o", label="Validation")
    if history.best_epoch:
        ax.axvline(history.best_epoch, color="grey", linestyle=":", label="Best validation epoch")
    ax.set_xlabel("Epoch")
    ax.set_ylabel("Accuracy (%)")
    ax.legend()
    fig.tight_layout()


def loader_mean_std(loader) -> tuple:
    """(mean, std) that a loader's images are normalised with, from its recipe or its Normalize step; else Nones."""
    recipe = getattr(loader, "recipe", None)
    if recipe is not None:
        return recipe.mean, recipe.std
    dataset = getattr(loader, "dataset", None)
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    transform = getattr(dataset, "transform", None)
    for step in getattr(transform, "transforms", [transform]):
        if isinstance(step, (Normalize, v2.Normalize)):
            return tuple(step.mean), tuple(step.std)
    return None, None


def draw_image(ax, image: np.ndarray) -> None:
    """One picture (H, W, C) in [0, 1]: in colour, or dark on light for one channel."""
    if image.shape[2] == 1:
        ax.imshow(image[:, :, 0], cmap="binary", vmin=0, vmax=1)
    else:
        ax.imshow(image)


def show_examples(model, data_loader, mean=None, std=None, classes=None, num_examples: int = 15) -> None:
    """A grid of images with predicted (P) and true (T) labels; wrong predictions in red.

    Images are un-normalised with the loader's own mean and std unless mean and std are given.
    """
    if num_examples < 1:
        raise ValueError(f"num_examples must be at least 1 (got {num_examples}).")
    classes = classes or loaders.class_names(data_loader)
    if mean is None:
        mean, std = loader_mean_std(data_loader)
    features, targets = next(iter(data_loader))
    features, targets = features[:num_examples], targets[:num_examples]
    with eval_mode(model):
        predicted = model(features.to(model_device(model))).argmax(1).cpu()
    images = unnormalize(features.detach().float().cpu(), mean, std).permute(0, 2, 3, 1).numpy()
    columns = 5
    rows = -(-len(images) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2 * columns, 2.3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, true, guess in zip(axes.flat, images, targets.tolist(), predicted.tolist()):
        draw_image(ax, image)
        ax.set_title(f"P: {classes[guess]}\nT: {classes[true]}", fontsize=9,
                     color="black" if guess == true else "red")
    fig.tight_layout()


def cell_text(value) -> str:
    """A whole number as it is (counts, also when stored as floats); any other number with two decimals."""
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"


def plot_confusion_matrix(conf_mat, class_names=None, normalize: bool = False, figsize=None) -> None:
    """The confusion matrix with counts (or any numbers) in each cell; normalize=True adds each row's rates."""
    conf_mat = np.asarray(conf_mat.cpu() if isinstance(conf_mat, torch.Tensor) else conf_mat)
    num_classes = conf_mat.shape[0]
    labels = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    rates = conf_mat / np.maximum(conf_mat.sum(axis=1, keepdims=True), 1)
    size = figsize or (max(4.0, 0.75 * num_classes + 2), max(4.0, 0.75 * num_classes + 1.5))
    fig, ax = plt.subplots(figsize=size)
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for true in range(num_classes):
        for guess in range(num_classes):
            text = cell_text(conf_mat[true, guess])
            if normalize:
                text += f"\n{rates[true, guess]:.0%}"
            ax.text(guess, true, text, ha="center", va="center", fontsize=8,
                    color="white" if rates[true, guess] > 0.5 else "black")
    ax.set_xticks(range(num_classes), labels, rotation=45, ha="right")
    ax.set_yticks(range(num_classes), labels)
    ax.set_xlabel("Predicted label")
    ax.set_ylabel("True label")
    fig.tight_layout()
