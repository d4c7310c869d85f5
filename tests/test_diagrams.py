"""Block diagrams: every label fits inside its box, whatever its length."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch

from helpers import draw_residual_block


@pytest.fixture(autouse=True)
def closed():
    yield
    plt.close("all")


def boxes_and_texts(fig: Figure):
    """(box extents, (text, its extent) pairs) in display pixels, after drawing."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    boxes = [patch.get_window_extent(renderer) for patch in ax.patches if isinstance(patch, FancyBboxPatch)]
    return boxes, [(text.get_text(), text.get_window_extent(renderer)) for text in ax.texts]


def assert_each_label_inside_a_box(fig: Figure, unboxed=()):
    boxes, texts = boxes_and_texts(fig)
    for label, extent in texts:
        if label in unboxed:
            continue
        assert any(box.x0 < extent.x0 and extent.x1 < box.x1 and box.y0 < extent.y0 and extent.y1 < box.y1
                   for box in boxes), f"{label!r} runs past its box"


def test_the_d2l_block_labels_fit_their_boxes():
    fig = draw_residual_block(["Conv 3x3, stride s: c_in -> c", "BatchNorm", "ReLU", "Conv 3x3: c -> c", "BatchNorm"],
                              ["Conv 1x1, stride s", "c_in -> c", "(use_1x1conv=True)"],
                              title="d2l's Residual block: ReLU(Y + X)")
    assert isinstance(fig, Figure) and fig.axes[0].get_title() == "d2l's Residual block: ReLU(Y + X)"
    boxes, _ = boxes_and_texts(fig)
    assert len(boxes) == 5 + 3 + 1  # the main path, input, sum and output, and the projection
    assert_each_label_inside_a_box(fig)


def test_an_identity_block_with_long_labels_fits_them_too():
    fig = draw_residual_block(["Conv 3x3, stride 1, padding 1: 256 -> 256 channels, no bias", "BatchNorm2d(256)"])
    boxes, texts = boxes_and_texts(fig)
    assert len(boxes) == 2 + 3 and "identity" in [label for label, _ in texts]
    assert_each_label_inside_a_box(fig, unboxed=("identity",))
