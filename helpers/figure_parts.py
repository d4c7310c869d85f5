"""What every figure of the helpers shares: one grid of image panels, pictures from a loader's batches, a
title that says when the images are synthetic, a note for plots with nothing to read yet, whole-number
ticks. Sizes are chosen for a notebook's width (at most 10 inches); text sizes come from figure_style."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.ticker import MaxNLocator
from torch.utils.data import Subset
from torchvision.transforms import Normalize, v2

from .figure_style import TEXT_SIZE
from .recipe import unnormalize

NOTE_COLOUR = "#a04000"  # dark orange: a caveat, not an error
MAX_WIDTH = 10.0  # inches: what a notebook shows without shrinking the figure
EXAMPLE_COLUMNS = 4  # images per row in grids of examples: big enough to recognise from the back of a room
PAIR_GAP = 0.35  # the space between two pairs of panels, as a share of a panel's width


def is_synthetic(data_loader) -> bool:
    """Whether a loader serves synthetic stand-in images instead of a real dataset."""
    return bool(getattr(data_loader, "synthetic", False))


def set_figure_title(fig, text: str, data_loader=None) -> None:
    """The figure's title; a figure of synthetic images says so first."""
    if data_loader is not None and is_synthetic(data_loader):
        text = f"Synthetic stand-in images, not the real dataset\n{text}"
    fig.suptitle(text)  # in the style's figure.titlesize


def loader_mean_std(data_loader) -> tuple:
    """(mean, std) that a loader's images are normalised with, from its recipe or its Normalize step; else Nones."""
    recipe = getattr(data_loader, "recipe", None)
    if recipe is not None:
        return recipe.mean, recipe.std
    dataset = getattr(data_loader, "dataset", None)
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    transform = getattr(dataset, "transform", None)
    for step in getattr(transform, "transforms", [transform]):
        if isinstance(step, (Normalize, v2.Normalize)):
            return tuple(step.mean), tuple(step.std)
    return None, None


def pictures(images: torch.Tensor, data_loader) -> np.ndarray:
    """A batch (N, C, H, W) as the loader normalised it, as pictures (N, H, W, C) in [0, 1]; the batch is left alone."""
    mean, std = loader_mean_std(data_loader)
    return unnormalize(images.detach().float().cpu(), mean, std).permute(0, 2, 3, 1).numpy()


def draw_image(ax, picture: np.ndarray, grey: bool = False) -> None:
    """One picture (H, W, C) in [0, 1]: in colour, or dark on light for one channel; grey=True draws colour in grey."""
    if picture.shape[2] == 1:
        ax.imshow(picture[:, :, 0], cmap="binary", vmin=0, vmax=1)
    elif grey:  # luminance, as a television would show it (ITU-R BT.601)
        ax.imshow(picture @ np.array([0.299, 0.587, 0.114]), cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(picture)
    frame(ax)


def draw_map(ax, values: np.ndarray, cmap: str) -> None:
    """A feature map or a one-channel kernel, stretched to its own range, pixel for pixel."""
    ax.imshow(values, cmap=cmap, interpolation="nearest")
    frame(ax)


def frame(ax) -> None:
    """A thin grey frame round a panel without ticks, so that a white image does not melt into the page."""
    ax.set_axis_on()
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_color("0.75")
        spine.set_linewidth(0.8)


def image_grid(rows: int, columns: int, *, panel_inches: float = 2.3, title_lines: int = 1, pairs: bool = False,
               extra_width: float = 0.0):
    """A new figure of rows x columns image panels with their axes hidden: (fig, axes as a rows x columns array).

    title_lines leaves room above each panel for a title of that many lines. pairs=True groups the columns
    two by two (an image and its heat map), with a gap between pairs so that each pair reads as one.
    extra_width adds inches on the right, e.g. for a colour bar.
    """
    width_ratios = []
    for column in range(columns):
        width_ratios.append(1.0)
        if pairs and column % 2 == 1 and column < columns - 1:
            width_ratios.append(PAIR_GAP)
    panel_inches = min(panel_inches, (MAX_WIDTH - extra_width - 0.3) / sum(width_ratios))
    title_inches = title_lines * TEXT_SIZE * 1.4 / 72
    fig = plt.figure(figsize=(panel_inches * sum(width_ratios) + extra_width + 0.3,
                              rows * (panel_inches + title_inches) + 0.6), layout="constrained")
    grid = fig.add_gridspec(rows, len(width_ratios), width_ratios=width_ratios)
    panel_columns = [index for index, ratio in enumerate(width_ratios) if ratio == 1.0]
    axes = np.array([[fig.add_subplot(grid[row, column]) for column in panel_columns] for row in range(rows)])
    for ax in axes.flat:
        ax.axis("off")
    return fig, axes


def label_row(ax, text: str) -> None:
    """A label left of a row of panels, on the row's first panel (drawn, and so framed, before)."""
    ax.set_ylabel(text, rotation=0, ha="right", va="center", fontsize=TEXT_SIZE)


def rows_for(count: int, columns: int) -> int:
    """How many rows of `columns` panels hold `count` panels."""
    return -(-count // columns)


def whole_number_ticks(axis) -> None:
    """Ticks only at whole numbers (epochs, iterations, layers): never 0.96 ... 1.04."""
    axis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # one tick, if that is all the range holds


def add_note(ax, text: str) -> None:
    """A caveat in the plot's own title, where it cannot be missed or overlap the data."""
    ax.set_title(text, fontsize=TEXT_SIZE, color=NOTE_COLOUR, loc="left")
