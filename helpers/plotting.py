"""Figures: the loss and accuracy curves, example predictions, and the confusion matrix."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from .data import class_names as loader_classes
from .data import unnormalize
from .evaluation import eval_mode, model_device


def running_average(values, window: int) -> tuple[np.ndarray, np.ndarray]:
    """(iterations, averages): each average covers the `window` iterations ending at its iteration."""
    values = np.asarray(values, dtype=float)
    window = max(1, min(window, len(values)))
    averages = np.convolve(values, np.ones(window) / window, mode="valid")
    return np.arange(window, len(values) + 1), averages


def plot_training_loss(history, averaging_iterations: int = 100, iter_per_epoch: int | None = None) -> None:
    """Per-batch training loss with its running average, and an epoch axis on top."""
    losses = np.asarray(getattr(history, "batch_losses", history), dtype=float)
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


def show_examples(model, data_loader, mean=None, std=None, classes=None, num_examples: int = 15) -> None:
    """A grid of images with predicted (P) and true (T) labels; wrong predictions in red."""
    classes = classes or loader_classes(data_loader)
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
        ax.imshow(image[:, :, 0] if image.shape[2] == 1 else image, cmap="binary" if image.shape[2] == 1 else None)
        ax.set_title(f"P: {classes[guess]}\nT: {classes[true]}", fontsize=9,
                     color="black" if guess == true else "red")
    fig.tight_layout()


def plot_confusion_matrix(conf_mat, class_names=None, normalize: bool = False, figsize=None) -> None:
    """The confusion matrix with counts in each cell; normalize=True adds each row's rates."""
    conf_mat = np.asarray(conf_mat.cpu() if isinstance(conf_mat, torch.Tensor) else conf_mat)
    num_classes = conf_mat.shape[0]
    labels = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    rates = conf_mat / np.maximum(conf_mat.sum(axis=1, keepdims=True), 1)
    size = figsize or (max(4.0, 0.75 * num_classes + 2), max(4.0, 0.75 * num_classes + 1.5))
    fig, ax = plt.subplots(figsize=size)
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for true in range(num_classes):
        for guess in range(num_classes):
            text = f"{conf_mat[true, guess]:d}"
            if normalize:
                text += f"\n{rates[true, guess]:.0%}"
            ax.text(guess, true, text, ha="center", va="center", fontsize=8,
                    color="white" if rates[true, guess] > 0.5 else "black")
    ax.set_xticks(range(num_classes), labels, rotation=45, ha="right")
    ax.set_yticks(range(num_classes), labels)
    ax.set_xlabel("Predicted label")
    ax.set_ylabel("True label")
    fig.tight_layout()
