"""Figures draw without warnings, and the running average sits over the iterations it averages."""

from __future__ import annotations

import warnings

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from helpers import (
    History,
    ImageRecipe,
    draw_residual_block,
    layer_summary,
    plot_accuracy,
    plot_confusion_matrix,
    plot_training_loss,
    show_examples,
)
from helpers.plotting import running_average
from tests.support import tiny_loaders, tiny_model


@pytest.fixture(autouse=True)
def warnings_are_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # Not ResourceWarning: it comes from whatever the garbage collector finalises now, often another test's.
        warnings.simplefilter("default", ResourceWarning)
        # Nor torch 2.3's note on every lazy module (tests/support.py's TinyNet has a LazyLinear): not a figure's.
        warnings.filterwarnings("ignore", "Lazy modules are a new feature", UserWarning)
        yield
    plt.close("all")


def a_history(num_epochs=3, iter_per_epoch=40):
    losses = list(np.linspace(2.3, 0.3, num_epochs * iter_per_epoch))
    return History(batch_losses=losses, train_acc=[50.0, 70.0, 80.0], valid_acc=[48.0, 69.0, 75.0],
                   iter_per_epoch=iter_per_epoch, best_epoch=3)


def test_running_average_is_aligned_with_the_window_it_averages():
    iterations, averages = running_average([1, 2, 3, 4, 5, 6], window=3)
    np.testing.assert_array_equal(iterations, [3, 4, 5, 6])  # 1-based: the last iteration of each window
    np.testing.assert_allclose(averages, [2, 3, 4, 5])


def test_running_average_of_fewer_values_than_the_window():
    iterations, averages = running_average([4.0, 2.0], window=100)
    np.testing.assert_array_equal(iterations, [2])
    np.testing.assert_allclose(averages, [3.0])


def test_training_loss_plot_has_an_epoch_axis():
    plot_training_loss(a_history(), averaging_iterations=10)
    ax = plt.gcf().axes[0]
    assert len(ax.lines) == 2
    average = ax.lines[1]
    assert average.get_xdata()[0] == 10
    assert any(child.get_xlabel() == "Epochs" for child in ax.child_axes)


def test_accuracy_plot_draws_both_curves():
    plot_accuracy(a_history())
    labels = [line.get_label() for line in plt.gcf().axes[0].lines]
    assert any("Training" in label for label in labels) and "Validation" in labels


def test_confusion_matrix_plot_is_sized_to_the_classes():
    plot_confusion_matrix(np.eye(3, dtype=int) * 5, ["a", "b", "c"], normalize=True)
    small = plt.gcf()
    plot_confusion_matrix(torch.eye(10, dtype=torch.long), normalize=False)
    large = plt.gcf()
    assert large.get_size_inches()[0] > small.get_size_inches()[0]
    assert [t.get_text() for t in small.axes[0].texts][:2] == ["5\n100%", "0\n0%"]
    assert len(large.axes[0].texts) == 100


def test_confusion_matrix_plot_takes_float_matrices():
    plot_confusion_matrix(np.array([[0.75, 0.25], [0.1, 0.9]]), ["a", "b"])
    assert [t.get_text() for t in plt.gcf().axes[0].texts] == ["0.75", "0.25", "0.10", "0.90"]
    plot_confusion_matrix(np.array([[5.0, 1.0], [0.0, 4.0]]), normalize=True)  # counts stored as floats
    assert [t.get_text() for t in plt.gcf().axes[0].texts][:2] == ["5\n83%", "1\n17%"]


def test_curves_of_an_empty_history_say_what_is_wrong():
    with pytest.raises(ValueError, match="no training losses yet"):
        plot_training_loss(History())
    with pytest.raises(ValueError, match="no finished epoch yet"):
        plot_accuracy(History())
    assert not plt.get_fignums()  # no empty figure left behind


def test_show_examples_needs_at_least_one_example():
    _, _, test_loader = tiny_loaders()
    with pytest.raises(ValueError, match="num_examples must be at least 1 \\(got 0\\)"):
        show_examples(tiny_model(), test_loader, num_examples=0)


def test_show_examples_unnormalises_with_the_loader_own_mean_and_std():
    _, _, test_loader = tiny_loaders(recipe=ImageRecipe(mean=(0.3,), std=(0.2,)))
    show_examples(tiny_model(), test_loader, num_examples=3)
    shown = [ax.images[0].get_array() for ax in plt.gcf().axes if ax.images]
    np.testing.assert_allclose(np.stack(shown), test_loader.images[:3, 0].float().numpy() / 255, atol=1e-5)


def test_show_examples_labels_predictions_and_leaves_the_batch_alone():
    _, _, test_loader = tiny_loaders()
    before = test_loader.images.clone()
    show_examples(tiny_model(), test_loader, num_examples=7)
    titles = [ax.get_title() for ax in plt.gcf().axes if ax.get_title()]
    assert len(titles) == 7 and all(t.startswith("P: ") and "\nT: " in t for t in titles)
    assert torch.equal(test_loader.images, before)


def test_block_diagram_draws_both_kinds():
    draw_residual_block(["Conv 1x1", "BN", "ReLU", "Conv 3x3", "BN"])
    draw_residual_block(["Conv 3x3 /2", "BN"], ["Conv 1x1 /2", "BN"], title="projection")
    assert plt.gcf().axes[0].get_title() == "projection"


def test_layer_summary_lists_every_layer_with_its_shape_and_parameters(capsys):
    model = tiny_model()
    rows = layer_summary(model, (1, 28, 28))
    assert [row.output_shape for row in rows][:3] == [(4, 14, 14)] * 3
    assert rows[-1].output_shape == (10,)
    assert sum(row.num_params for row in rows) == sum(p.numel() for p in model.parameters())
    assert "Total parameters" in capsys.readouterr().out
