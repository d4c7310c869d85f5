"""Figures: the loss and accuracy curves (of one run or several), example predictions, and the confusion
matrix. Each function draws a new figure and returns it."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from . import loaders
from .evaluation import eval_mode, model_device
from .figure_parts import (
    EXAMPLE_COLUMNS,
    TEXT_SIZE,
    add_note,
    draw_image,
    image_grid,
    pictures,
    rows_for,
    set_figure_title,
    whole_number_ticks,
)

FEW_POINTS = 50  # fewer points than this are drawn with markers: a short run's few values would not show as a line
CURVE_INCHES = (7, 4.2)  # a curve plot at a notebook's width, with room for a two-line note above
RUN_MARKERS = "osD^v"  # one shape per run, so that runs stay apart where their points coincide


def running_average(values, window: int) -> tuple[np.ndarray, np.ndarray]:
    """(iterations, averages): each average covers the `window` iterations ending at its iteration."""
    values = np.asarray(values, dtype=float)
    window = max(1, min(window, len(values)))
    averages = np.convolve(values, np.ones(window) / window, mode="valid")
    return np.arange(window, len(values) + 1), averages


def plot_training_loss(history, averaging_iterations: int = 100, iter_per_epoch: int | None = None) -> Figure:
    """Per-batch training loss with its running average, and an epoch axis on top."""
    losses = np.asarray(getattr(history, "batch_losses", history), dtype=float)
    if len(losses) == 0:
        raise ValueError("This history holds no training losses yet: plot the History that train_model returns "
                         "after at least one epoch.")
    iter_per_epoch = iter_per_epoch or getattr(history, "iter_per_epoch", 0)
    few = len(losses) < FEW_POINTS
    fig, ax = plt.subplots(figsize=CURVE_INCHES, layout="constrained")
    # A short run's points are drawn last: the running average must not hide them.
    ax.plot(np.arange(1, len(losses) + 1), losses, color="tab:blue", alpha=0.8 if few else 0.3, linewidth=1,
            marker="o" if few else None, markersize=5, zorder=3 if few else 1, label="Minibatch loss")
    if len(losses) > averaging_iterations:
        ax.plot(*running_average(losses, averaging_iterations), color="navy", linewidth=2, zorder=2,
                label=f"Running average ({averaging_iterations} iterations)")
    else:
        iterations = f"{len(losses)} iteration{'' if len(losses) == 1 else 's'}"
        add_note(ax, f"Only {iterations} (a running average needs more than {averaging_iterations}): too short\n"
                     "a run to show a trend. Train for more epochs to read this curve.")
    if len(losses) > 10:  # early losses dwarf the rest; start the axis near where training settles
        ax.set_ylim(max(0.0, losses.min() * 0.9), np.percentile(losses, 99) * 1.1)
    ax.set_xlim(0.5, len(losses) + 0.5) if few else ax.set_xlim(0, len(losses))
    whole_number_ticks(ax.xaxis)
    ax.set_xlabel("Iteration (minibatch)")
    ax.set_ylabel("Cross-entropy loss")
    ax.legend()
    if iter_per_epoch:
        epochs = ax.secondary_xaxis("top", functions=(lambda x: x / iter_per_epoch, lambda e: e * iter_per_epoch))
        whole_number_ticks(epochs.xaxis)
        epochs.set_xlabel("Epoch")
    return fig


def plot_accuracy(history) -> Figure:
    """Training and validation accuracy per epoch; a one-epoch run says in the figure that it shows no trend."""
    if len(history.valid_acc) == 0:
        raise ValueError("This history holds no finished epoch yet: plot the History that train_model returns "
                         "after at least one epoch.")
    epochs = np.arange(1, len(history.valid_acc) + 1)
    marker = "o" if len(epochs) < FEW_POINTS else None
    fig, ax = plt.subplots(figsize=CURVE_INCHES, layout="constrained")
    ax.plot(epochs, history.train_acc, marker=marker, color="tab:blue", label=training_label(history))
    ax.plot(epochs, history.valid_acc, marker=marker, color="tab:orange", label="Validation")
    if history.best_epoch:
        ax.axvline(history.best_epoch, color="grey", linestyle=":", label="Best validation epoch")
    label_epoch_axes(ax, len(epochs), [*history.train_acc, *history.valid_acc], "Accuracy (%)", "curves")
    ax.legend()
    return fig


def label_epoch_axes(ax, num_epochs: int, values, ylabel: str, compared: str) -> None:
    """Whole-number epochs, axis labels and a grid; one epoch gets sensible limits and says it has no trend."""
    ax.set_xlim(0.5, num_epochs + 0.5)
    whole_number_ticks(ax.xaxis)
    if num_epochs == 1:
        ax.set_ylim(max(0.0, min(values) - 10), min(100.0, max(values) + 10))
        for line in ax.lines:  # a point at 0% or 100% sits on the axis: draw it whole, not cut in half
            line.set_clip_on(False)
        add_note(ax, "One epoch: each curve is a single point, so there is no trend to read.\n"
                     f"Train for more epochs to compare the {compared}.")
    ax.set_xlabel("Epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def plot_runs(histories: dict, *, error: bool = False) -> Figure:
    """Several runs side by side: training (dashed) and validation (solid) accuracy per epoch, one colour per run.

    `histories` maps each run's name to its History, in the order of the legend; error=True plots 100 - accuracy.
    """
    if not histories or any(len(history.valid_acc) == 0 for history in histories.values()):
        raise ValueError("Pass a dict of finished runs, e.g. plot_runs({'ResNet-20': history_20, 'ResNet-56': "
                         "history_56}), each a History of at least one epoch.")
    num_epochs = max(len(history.valid_acc) for history in histories.values())
    # Two legend entries per run: beside the plot, where they cover no curve.
    fig, ax = plt.subplots(figsize=(CURVE_INCHES[0] + 2.8, CURVE_INCHES[1]), layout="constrained")
    for index, (name, history) in enumerate(histories.items()):
        # Hollow markers, each run's of another shape and smaller than the last: equal values stay visible.
        marker = {"marker": RUN_MARKERS[index % len(RUN_MARKERS)], "markersize": max(4.0, 10.0 - 3.0 * index),
                  "fillstyle": "none", "markeredgewidth": 1.5}
        epochs = np.arange(1, len(history.valid_acc) + 1)
        for values, style, width, part in ((history.train_acc, "--", 1.2, "training"),
                                           (history.valid_acc, "-", 2.2, "validation")):
            values = 100 - np.asarray(values, dtype=float) if error else values
            ax.plot(epochs, values, style, linewidth=width, color=f"C{index}", label=f"{name}: {part}",
                    **(marker if num_epochs < FEW_POINTS else {}))
    plotted = [value for line in ax.lines for value in line.get_ydata()]
    label_epoch_axes(ax, num_epochs, plotted, "Error (%)" if error else "Accuracy (%)", "runs")
    fig.legend(loc="outside right upper")
    return fig


def training_label(history) -> str:
    """The training curve's legend: it says "augmented" only when the run's batches were randomly cropped or flipped."""
    return "Training (augmented batches)" if getattr(history, "augmented", None) is True else "Training"


def show_examples(model, data_loader, *, num_examples: int = 8, classes=None) -> Figure:
    """The first images of the loader's first batch with predicted (P) and true (T) labels; wrong ones in red.

    The images are shown as they were before the loader normalised them; the batch itself is left alone.
    """
    if num_examples < 1:
        raise ValueError(f"num_examples must be at least 1 (got {num_examples}).")
    classes = classes or loaders.class_names(data_loader)
    features, targets = next(iter(data_loader))
    features, targets = features[:num_examples], targets[:num_examples]
    with eval_mode(model):
        predicted = model(features.to(model_device(model))).argmax(1).cpu()
    columns = min(EXAMPLE_COLUMNS, len(features))
    fig, axes = image_grid(rows_for(len(features), columns), columns, title_lines=2)
    for ax, picture, true, guess in zip(axes.flat, pictures(features, data_loader), targets.tolist(),
                                        predicted.tolist()):
        draw_image(ax, picture)
        ax.set_title(f"P: {classes[guess]}\nT: {classes[true]}", fontsize=TEXT_SIZE,
                     color="black" if guess == true else "red")
    set_figure_title(fig, f"Predictions for {len(features)} images (P: predicted, T: true; red: wrong)",
                     data_loader)
    return fig


def cell_text(value) -> str:
    """A whole number as it is (counts, also when stored as floats); any other number with two decimals."""
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"


def share_text(rate: float) -> str:
    """A cell's share of its row in whole percent; never "0%" under a count, nor "100%" beside another cell."""
    text = f"{rate:.0%}"  # rounds half to even: 0.005 is "0%", so the rounded text is what is checked
    if text == "0%" and rate > 0:
        return "<1%"
    return ">99%" if text == "100%" and rate < 1 else text


def plot_confusion_matrix(conf_mat, classes=None, normalize: bool = False, figsize=None) -> Figure:
    """The confusion matrix coloured by each true class's shares, with the numbers in every cell that is not zero.

    normalize=True adds each cell's share of its true class under the number. Many classes: no numbers,
    and a tick at every few classes only.
    """
    conf_mat = np.asarray(conf_mat.cpu() if isinstance(conf_mat, torch.Tensor) else conf_mat)
    num_classes = conf_mat.shape[0]
    labels = list(classes) if classes is not None else [str(i) for i in range(num_classes)]
    rates = conf_mat / np.maximum(conf_mat.sum(axis=1, keepdims=True), 1)
    side = min(8.8, max(5.0, 0.6 * num_classes + 3))  # with the colour bar, at most 10 inches wide
    fig, ax = plt.subplots(figsize=figsize or (side + 1.2, side), layout="constrained")
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, shrink=0.8).set_label("Share of the true class")
    cell_points = 72 * fig.get_size_inches()[1] * 0.75 / num_classes
    font_size = min(TEXT_SIZE, cell_points / (3.2 if normalize else 2.2))
    if font_size >= 6:  # smaller numbers cannot be read: the colours tell the story
        draw_cell_numbers(ax, conf_mat, rates, normalize, font_size)
    # At most 30 tick labels, each readable, at round steps.
    step = next((step for step in (1, 2, 5, 10, 20, 50) if num_classes / step <= 30), math.ceil(num_classes / 30))
    ticks = range(0, num_classes, step)
    if max(len(labels[i]) for i in ticks) > 3:  # names ("automobile") would overlap; digits and short codes fit
        ax.set_xticks(ticks, [labels[i] for i in ticks], rotation=45, ha="right", rotation_mode="anchor")
    else:
        ax.set_xticks(ticks, [labels[i] for i in ticks])
    ax.set_yticks(ticks, [labels[i] for i in ticks])
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    counts = np.issubdtype(conf_mat.dtype, np.integer)  # else rates, or another measure: no count to state
    ax.set_title(f"Confusion matrix of {conf_mat.sum():,} images" if counts else "Confusion matrix")
    return fig


def draw_cell_numbers(ax, conf_mat: np.ndarray, rates: np.ndarray, normalize: bool, font_size: float) -> None:
    """Each cell's number (and share of its row) in the cell; cells of zero stay blank, so the mistakes stand out."""
    for true, guess in zip(*np.nonzero(conf_mat)):
        text = cell_text(conf_mat[true, guess])
        if normalize:
            text += f"\n{share_text(rates[true, guess])}"
        ax.text(guess, true, text, ha="center", va="center", fontsize=font_size,
                color="white" if rates[true, guess] > 0.5 else "black")
