"""Block diagrams drawn with matplotlib, so that code can be read against a picture."""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch


def draw_residual_block(main_path: list[str], shortcut: list[str] | None = None, title: str = "") -> None:
    """Draw a residual block: the main path's layers top to bottom, the shortcut beside it, then the sum.

    shortcut=None draws the identity shortcut; a list of layer names draws a projection.
    """
    height = len(main_path) + 3
    fig, ax = plt.subplots(figsize=(5, 0.7 * height + 0.6))
    ax.set_xlim(0, 10)
    ax.set_ylim(0, height)
    ax.axis("off")
    y_input, y_sum, y_output = height - 0.5, 1.5, 0.5
    _box(ax, 3.5, y_input, "input x", "#eeeeee")
    ys = [height - 1.5 - i for i in range(len(main_path))]
    previous = y_input
    for y, layer in zip(ys, main_path):
        _box(ax, 3.5, y, layer, "#cfe2f3")
        _arrow(ax, (3.5, previous - 0.3), (3.5, y + 0.3))
        previous = y
    _box(ax, 3.5, y_sum, "+", "#fce5cd", width=1.0)
    _arrow(ax, (3.5, previous - 0.3), (3.5, y_sum + 0.3))
    _box(ax, 3.5, y_output, "ReLU -> output", "#eeeeee")
    _arrow(ax, (3.5, y_sum - 0.3), (3.5, y_output + 0.3))
    _draw_shortcut(ax, shortcut, y_input, y_sum)
    ax.set_title(title)
    fig.tight_layout()


def _draw_shortcut(ax, shortcut, y_input, y_sum) -> None:
    x = 8.0
    if not shortcut:
        _arrow(ax, (5.6, y_input), (x, y_input), head=False)
        _arrow(ax, (x, y_input), (x, y_sum), head=False)
        ax.text(x + 0.2, (y_input + y_sum) / 2, "identity", rotation=90, va="center")
    else:
        middle = (y_input + y_sum) / 2
        _arrow(ax, (5.6, y_input), (x, y_input), head=False)
        _box(ax, x, middle, "\n".join(shortcut), "#d9ead3", width=2.6, height=0.4 + 0.35 * len(shortcut))
        _arrow(ax, (x, y_input), (x, middle + 0.25 + 0.2 * len(shortcut)))
        _arrow(ax, (x, middle - 0.25 - 0.2 * len(shortcut)), (x, y_sum), head=False)
    _arrow(ax, (x, y_sum), (4.0, y_sum))


def _box(ax, x, y, text, color, width=4.2, height=0.6) -> None:
    ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height,
                                boxstyle="round,pad=0.02", facecolor=color, edgecolor="black"))
    ax.text(x, y, text, ha="center", va="center", fontsize=9)


def _arrow(ax, start, end, head=True) -> None:
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>" if head else "-", mutation_scale=12))
