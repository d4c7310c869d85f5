"""Block diagrams drawn with matplotlib, so that code can be read against a picture. Every box is measured
to its text, so any label fits inside its box."""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from matplotlib.textpath import TextPath

from .figure_style import TEXT_SIZE

FONT_SIZE = TEXT_SIZE  # points
LINE = FONT_SIZE * 1.4 / 72  # inches per line of text
PAD = 0.14  # inches between a box's text and its edge
MARGIN = 0.2  # inches around the drawing
GAP = 0.9  # inches between the main path and the shortcut
COLOURS = {"input": "#eeeeee", "layer": "#cfe2f3", "sum": "#fce5cd", "shortcut": "#d9ead3"}


def text_width(text: str) -> float:
    """The width in inches of the longest line of text at the diagram's font size."""
    font = FontProperties(size=FONT_SIZE)
    lines = [line for line in text.split("\n") if line]  # matplotlib cannot measure an empty line
    return max((TextPath((0, 0), line, prop=font).get_extents().width for line in lines), default=0.0) / 72


def box_size(text: str) -> tuple[float, float]:
    """(width, height) in inches of a box that holds text with PAD all round."""
    return text_width(text) + 2 * PAD, LINE * (text.count("\n") + 1) + 2 * PAD * 0.7


def draw_residual_block(main_path: list[str], shortcut: list[str] | None = None, title: str = "") -> Figure:
    """Draw a residual block: the main path's layers top to bottom, the shortcut beside it, then the sum.

    shortcut=None draws the identity shortcut; a list of layer names draws a projection, one line each.
    """
    labels = ["input x", *main_path, "ReLU -> output"]
    main_width = max(box_size(label)[0] for label in labels)
    shortcut_text = "\n".join(shortcut) if shortcut else None
    shortcut_width, shortcut_height = box_size(shortcut_text) if shortcut_text else (LINE, 0.0)
    # Rows far enough apart for the arrows, and for the shortcut box between the input and the sum.
    row = max(0.7, (shortcut_height + 0.5) / (len(main_path) + 1))
    width = max(2 * MARGIN + main_width + GAP + shortcut_width, text_width(title) + 2 * MARGIN)
    height = 2 * MARGIN + row * (len(labels) + 1)
    fig = plt.figure(figsize=(width, height + (0.45 if title else 0.0)))
    ax = fig.add_axes((0, 0, 1, height / fig.get_size_inches()[1]))
    ax.set_xlim(0, width)  # one unit is one inch, on both axes
    ax.set_ylim(0, height)
    ax.axis("off")
    x_main = MARGIN + main_width / 2
    y_input, *y_layers, y_sum, y_output = (height - MARGIN - row * (index + 0.5) for index in range(len(labels) + 1))
    _, above = draw_box(ax, x_main, y_input, "input x", COLOURS["input"], main_width)
    for y, layer in zip(y_layers, main_path):
        top, bottom = draw_box(ax, x_main, y, layer, COLOURS["layer"], main_width)
        draw_arrow(ax, (x_main, above), (x_main, top))
        above = bottom
    sum_top, sum_bottom = draw_box(ax, x_main, y_sum, "+", COLOURS["sum"], box_size("+")[1])
    draw_arrow(ax, (x_main, above), (x_main, sum_top))
    output_top, _ = draw_box(ax, x_main, y_output, "ReLU -> output", COLOURS["input"], main_width)
    draw_arrow(ax, (x_main, sum_bottom), (x_main, output_top))
    x_shortcut = MARGIN + main_width + GAP + shortcut_width / 2
    draw_shortcut(ax, shortcut_text, (x_main + main_width / 2, y_input), x_shortcut,
                  (x_main + box_size("+")[1] / 2, y_sum))
    ax.set_title(title, fontsize=FONT_SIZE + 1)  # as the style's axes.titlesize
    return fig


def draw_shortcut(ax, text: str | None, start, x: float, end) -> None:
    """From the input's right edge across to x, down (through a projection box, if any) and into the sum."""
    (x_start, y_start), (x_end, y_end) = start, end
    draw_arrow(ax, (x_start, y_start), (x, y_start), head=False)
    if text is None:
        draw_arrow(ax, (x, y_start), (x, y_end), head=False)
        ax.text(x + 0.08, (y_start + y_end) / 2, "identity", rotation=90, va="center", fontsize=FONT_SIZE)
    else:
        middle = (y_start + y_end) / 2
        top, bottom = draw_box(ax, x, middle, text, COLOURS["shortcut"], box_size(text)[0])
        draw_arrow(ax, (x, y_start), (x, top))
        draw_arrow(ax, (x, bottom), (x, y_end), head=False)
    draw_arrow(ax, (x, y_end), (x_end, y_end))


def draw_box(ax, x: float, y: float, text: str, colour: str, width: float) -> tuple[float, float]:
    """A rounded box centred at (x, y), as high as its text needs: (top, bottom) of the box."""
    height = box_size(text)[1]
    ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height, facecolor=colour, edgecolor="black",
                                boxstyle="round,pad=0,rounding_size=0.06"))
    ax.text(x, y, text, ha="center", va="center", fontsize=FONT_SIZE, multialignment="center")
    return y + height / 2, y - height / 2


def draw_arrow(ax, start, end, head: bool = True) -> None:
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>" if head else "-", mutation_scale=14,
                                 shrinkA=0, shrinkB=0))
