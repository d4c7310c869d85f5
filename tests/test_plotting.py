"""Figures draw without warnings and say what their data can and cannot show: the running average sits over
the iterations it averages, ticks are whole numbers, a one-epoch run says it has no trend, zero cells stay
blank, synthetic images say so, and row titles keep clear of the images above."""

from __future__ import annotations

import warnings

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from helpers import (
    History,
    ImageRecipe,
    environment,
    figure_style,
    plot_accuracy,
    plot_confusion_matrix,
    plot_runs,
    plot_training_loss,
    print_run_mode,
    print_smoke_banner,
    show_examples,
    smoke_banner_says,
    train_model,
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


def a_history(num_epochs=3, iter_per_epoch=40, augmented=None):
    generator = np.random.default_rng(0)
    losses = np.linspace(2.3, 0.3, num_epochs * iter_per_epoch) + 0.05 * generator.standard_normal(
        num_epochs * iter_per_epoch)
    accuracies = list(np.linspace(50.0, 80.0, num_epochs))
    return History(batch_losses=list(losses), train_acc=accuracies, valid_acc=[a - 2 for a in accuracies],
                   iter_per_epoch=iter_per_epoch, best_epoch=num_epochs, augmented=augmented)


def figure_titles(fig: Figure) -> list[str]:
    """The figure-level texts (its suptitle among them)."""
    return [text.get_text() for text in fig.texts]


def tick_values(axis) -> np.ndarray:
    """The major ticks matplotlib would draw inside the axis's view."""
    low, high = sorted(axis.get_view_interval())
    ticks = np.asarray(axis.get_majorticklocs())
    return ticks[(ticks >= low - 1e-9) & (ticks <= high + 1e-9)]


def test_running_average_is_aligned_with_the_window_it_averages():
    iterations, averages = running_average([1, 2, 3, 4, 5, 6], window=3)
    np.testing.assert_array_equal(iterations, [3, 4, 5, 6])  # 1-based: the last iteration of each window
    np.testing.assert_allclose(averages, [2, 3, 4, 5])


def test_running_average_of_fewer_values_than_the_window():
    iterations, averages = running_average([4.0, 2.0], window=100)
    np.testing.assert_array_equal(iterations, [2])
    np.testing.assert_allclose(averages, [3.0])


# --------------------------------------------------------------------------- loss and accuracy curves


def test_training_loss_plot_has_a_running_average_and_a_whole_number_epoch_axis():
    fig = plot_training_loss(a_history(), averaging_iterations=10)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    minibatch, average = ax.lines
    assert average.get_xdata()[0] == 10 and average.get_label() == "Running average (10 iterations)"
    assert ax.get_title(loc="left") == ""  # 120 iterations: a curve to read, no caveat
    (epochs,) = ax.child_axes
    assert epochs.get_xlabel() == "Epoch"
    fig.canvas.draw()
    np.testing.assert_array_equal(tick_values(epochs.xaxis), [0, 1, 2, 3])
    assert all(float(tick).is_integer() for tick in tick_values(ax.xaxis))


def test_a_one_epoch_run_draws_every_point_above_the_rest_and_says_there_is_no_trend():
    history = History(batch_losses=[2.3, 2.1, 2.2], train_acc=[21.0], valid_acc=[27.5], iter_per_epoch=3,
                      best_epoch=1)
    loss_figure = plot_training_loss(history)
    ax = loss_figure.axes[0]
    (minibatch,) = ax.lines  # three iterations: no running average of 100 to draw
    assert minibatch.get_marker() == "o" and minibatch.get_zorder() > 2
    assert "too short" in ax.get_title(loc="left") and "3 iterations" in ax.get_title(loc="left")
    np.testing.assert_array_equal(tick_values(ax.xaxis), [1, 2, 3])

    accuracy_figure = plot_accuracy(history)
    ax = accuracy_figure.axes[0]
    assert "One epoch" in ax.get_title(loc="left") and "no trend" in ax.get_title(loc="left")
    np.testing.assert_array_equal(tick_values(ax.xaxis), [1])  # not 0.96 ... 1.04
    assert all(line.get_marker() == "o" for line in ax.lines[:2])
    low, high = ax.get_ylim()
    assert 0 <= low < 21.0 and 27.5 < high <= 100


def test_long_runs_have_whole_number_epoch_ticks_and_no_caveat():
    ax = plot_accuracy(a_history(num_epochs=50)).axes[0]
    ticks = tick_values(ax.xaxis)
    assert len(ticks) >= 4 and all(float(tick).is_integer() for tick in ticks) and ticks.max() <= 50
    assert ax.get_title(loc="left") == "" and ax.lines[0].get_marker() == "None"


@pytest.mark.parametrize("augmented, label", [(True, "Training (augmented batches)"), (False, "Training"),
                                              (None, "Training")])
def test_accuracy_legend_says_augmented_only_when_the_batches_were(augmented, label):
    ax = plot_accuracy(a_history(augmented=augmented)).axes[0]
    assert [text.get_text() for text in ax.get_legend().get_texts()][:2] == [label, "Validation"]


def test_runs_compared_stay_apart_where_their_points_coincide():
    same = History(train_acc=[10.0], valid_acc=[5.0], iter_per_epoch=3, best_epoch=1)
    ax = plot_runs({"ResNet-20": same, "ResNet-56": same}).axes[0]
    assert [line.get_label() for line in ax.lines] == ["ResNet-20: training", "ResNet-20: validation",
                                                       "ResNet-56: training", "ResNet-56: validation"]
    assert [line.get_linestyle() for line in ax.lines[:2]] == ["--", "-"]
    (first, second) = ax.lines[1], ax.lines[3]  # the two validation points, at the same place
    assert first.get_color() != second.get_color() and first.get_marker() != second.get_marker()
    assert first.get_markersize() > second.get_markersize() and first.get_fillstyle() == "none"  # both seen
    assert "One epoch" in ax.get_title(loc="left") and list(tick_values(ax.xaxis)) == [1]


def test_one_epoch_points_at_0_or_100_percent_are_drawn_whole():
    """The axis limits stop at 0% and 100%: a point there is drawn over the axis, not cut in half."""
    at_the_edges = History(train_acc=[100.0], valid_acc=[0.0], iter_per_epoch=3, best_epoch=1)
    ax = plot_runs({"Dropout": at_the_edges}).axes[0]
    assert ax.get_ylim() == (0.0, 100.0) and not any(line.get_clip_on() for line in ax.lines)


def test_runs_compared_as_errors_over_many_epochs():
    runs = {"plain-20": a_history(num_epochs=20), "ResNet-20": a_history(num_epochs=12)}
    ax = plot_runs(runs, error=True).axes[0]
    np.testing.assert_allclose(ax.lines[1].get_ydata(), 100 - np.asarray(runs["plain-20"].valid_acc))
    assert ax.get_ylabel() == "Error (%)" and ax.get_title(loc="left") == ""
    assert all(float(tick).is_integer() for tick in tick_values(ax.xaxis)) and ax.get_xlim()[1] == 20.5
    with pytest.raises(ValueError, match="Pass a dict of finished runs"):
        plot_runs({"empty": History()})


def test_curves_of_an_empty_history_say_what_is_wrong():
    with pytest.raises(ValueError, match="no training losses yet"):
        plot_training_loss(History())
    with pytest.raises(ValueError, match="no finished epoch yet"):
        plot_accuracy(History())
    assert not plt.get_fignums()  # no empty figure left behind


# --------------------------------------------------------------------------- the confusion matrix


def cell_texts(fig: Figure) -> list[str]:
    return [text.get_text() for text in fig.axes[0].texts]


def test_confusion_matrix_leaves_zero_cells_blank_and_has_a_colour_bar():
    fig = plot_confusion_matrix(np.array([[5, 0, 1], [0, 4, 0], [2, 0, 3]]), classes=["a", "b", "c"],
                                normalize=True)
    assert cell_texts(fig) == ["5\n83%", "1\n17%", "4\n100%", "2\n40%", "3\n60%"]
    image = fig.axes[0].images[0]
    assert image.colorbar is not None and image.colorbar.ax.get_ylabel() == "Share of the true class"
    assert fig.axes[0].get_title() == "Confusion matrix of 15 images"


def test_confusion_matrix_never_prints_0_percent_under_a_count():
    fig = plot_confusion_matrix(np.array([[998, 2], [5, 995]]), classes=["0", "1"], normalize=True)
    # 2 and 5 of 1,000 would round to "0%" (0.5% rounds to even), and 998 of 1,000 to "100%" beside them.
    assert cell_texts(fig) == ["998\n>99%", "2\n<1%", "5\n<1%", "995\n>99%"]


def test_confusion_matrix_turns_only_long_tick_labels():
    digits = plot_confusion_matrix(np.eye(10, dtype=int))
    assert {label.get_rotation() for label in digits.axes[0].get_xticklabels()} == {0.0}
    names = plot_confusion_matrix(np.eye(3, dtype=int), classes=["airplane", "automobile", "bird"])
    assert {label.get_rotation() for label in names.axes[0].get_xticklabels()} == {45.0}


def test_confusion_matrix_plot_is_sized_to_the_classes_up_to_a_notebook_width():
    small = plot_confusion_matrix(np.eye(3, dtype=int) * 5, ["a", "b", "c"])
    ten = plot_confusion_matrix(torch.eye(10, dtype=torch.long) * 7)
    generator = np.random.default_rng(0)
    hundred = plot_confusion_matrix(generator.poisson(1.0, (100, 100)), [f"class {i}" for i in range(100)])
    widths = [fig.get_size_inches()[0] for fig in (small, ten, hundred)]
    assert widths[0] < widths[1] <= widths[2] <= 10
    assert cell_texts(ten) == ["7"] * 10
    assert cell_texts(hundred) == []  # too small to read: the colours tell
    labels = [label.get_text() for label in hundred.axes[0].get_xticklabels()]
    assert labels[:3] == ["class 0", "class 5", "class 10"] and len(labels) == 20


def test_confusion_matrix_plot_takes_float_matrices():
    fig = plot_confusion_matrix(np.array([[0.75, 0.25], [0.0, 1.0]]), ["a", "b"])
    assert cell_texts(fig) == ["0.75", "0.25", "1"]
    assert fig.axes[0].get_title() == "Confusion matrix"  # rates: no count of images to state
    fig = plot_confusion_matrix(np.array([[5.0, 1.0], [0.0, 4.0]]), normalize=True)  # counts stored as floats
    assert cell_texts(fig)[:2] == ["5\n83%", "1\n17%"]


# --------------------------------------------------------------------------- example predictions


def test_show_examples_needs_at_least_one_example():
    _, _, test_loader = tiny_loaders()
    with pytest.raises(ValueError, match="num_examples must be at least 1 \\(got 0\\)"):
        show_examples(tiny_model(), test_loader, num_examples=0)


def test_show_examples_unnormalises_with_the_loader_own_mean_and_std():
    _, _, test_loader = tiny_loaders(recipe=ImageRecipe(mean=(0.3,), std=(0.2,)))
    fig = show_examples(tiny_model(), test_loader, num_examples=3)
    shown = [ax.images[0].get_array() for ax in fig.axes if ax.images]
    np.testing.assert_allclose(np.stack(shown), test_loader.images[:3, 0].float().numpy() / 255, atol=1e-5)


def test_show_examples_labels_predictions_and_leaves_the_batch_alone():
    _, _, test_loader = tiny_loaders()
    before = test_loader.images.clone()
    fig = show_examples(tiny_model(), test_loader, num_examples=7)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == 7 and all(t.startswith("P: ") and "\nT: " in t for t in titles)
    assert all(ax.title.get_fontsize() >= 11 for ax in fig.axes if ax.get_title())  # legible in a lecture hall
    assert torch.equal(test_loader.images, before)
    assert figure_titles(fig) == ["Predictions for 7 images (P: predicted, T: true; red: wrong)"]


def test_show_examples_row_titles_keep_clear_of_the_images_above():
    _, _, test_loader = tiny_loaders()
    fig = show_examples(tiny_model(), test_loader, num_examples=8)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    first_row, second_row = fig.axes[:4], fig.axes[4:8]
    six_points = 6 * fig.dpi / 72
    for upper, lower in zip(first_row, second_row):
        title = lower.title.get_window_extent(renderer)
        assert upper.get_window_extent(renderer).y0 - title.y1 >= six_points  # a clear gap below the image above
        assert title.y0 > lower.get_window_extent(renderer).y1


def test_figures_of_synthetic_images_say_so_in_their_title():
    _, _, test_loader = tiny_loaders()
    test_loader.synthetic = True  # what the loaders say when the dataset was replaced by synthetic images
    (title,) = figure_titles(show_examples(tiny_model(), test_loader))
    assert title.startswith("Synthetic stand-in images")


# --------------------------------------------------------------------------- one style, and the smoke banner


def test_every_figure_has_the_lecture_hall_style():
    """Set once, for the helpers' figures and a notebook's own alike: large text, 120 dpi."""
    own, _ = plt.subplots()
    helpers_figure = plot_accuracy(a_history())
    ax = helpers_figure.axes[0]
    assert own.dpi == helpers_figure.dpi == 120
    assert ax.xaxis.label.get_fontsize() >= 13 and ax.yaxis.label.get_fontsize() >= 13
    assert min(label.get_fontsize() for label in ax.get_xticklabels()) >= 12
    assert min(text.get_fontsize() for text in ax.get_legend().get_texts()) >= 11
    assert plt.rcParams["font.size"] >= 12 and plt.rcParams["legend.fontsize"] >= 11


def banners(fig: Figure) -> list[str]:
    return [text.get_text() for text in fig.texts if text.get_gid() == "smoke-banner"]


def test_a_smoke_run_marks_every_figure_with_what_the_run_was(monkeypatch, capsys):
    monkeypatch.setenv("SMOKE_TEST", "1")
    print_run_mode()
    assert banners(plt.figure(figsize=(8, 4))) == ["SMOKE RUN: a quick check that the code runs, not a trained network"]
    narrow = plt.figure(figsize=(3, 3))  # two lines, rather than a narrow figure made wide
    assert banners(narrow) == ["SMOKE RUN: a quick check that the code runs,\nnot a trained network"]
    train_loader, valid_loader, test_loader = tiny_loaders(num_train=64)
    model = tiny_model()
    history = train_model(model, 1, train_loader, valid_loader, test_loader,
                          torch.optim.SGD(model.parameters(), lr=0.01), "cpu")
    expected = "SMOKE RUN (1 epoch, 64 training images): not a trained network"
    own, _ = plt.subplots(layout="constrained")  # a notebook's own figure, drawn without any helper
    assert banners(own) == banners(plot_accuracy(history)) == banners(show_examples(model, test_loader)) == [expected]
    assert f"({round(history.best_valid_acc * 64 / 100)} of 64 images)" in capsys.readouterr().out
    print_smoke_banner()
    assert capsys.readouterr().out == f"[{expected}]\n"


def test_results_that_are_not_the_runs_own_say_what_they_are_inside_the_block_only(monkeypatch, capsys):
    monkeypatch.setenv("SMOKE_TEST", "1")
    print_run_mode()
    capsys.readouterr()  # the run mode's own line
    with smoke_banner_says("trained networks, judged on 64 test images"):
        inside = plt.figure(figsize=(8, 4))
        print_smoke_banner()
    assert banners(inside) == ["SMOKE RUN: trained networks, judged on 64 test images"]
    assert capsys.readouterr().out == "[SMOKE RUN: trained networks, judged on 64 test images]\n"
    assert banners(plt.figure(figsize=(8, 4))) == ["SMOKE RUN: a quick check that the code runs, not a trained network"]
    monkeypatch.setenv("SMOKE_TEST", "0")
    print_run_mode()
    with smoke_banner_says("trained networks, judged on 64 test images"):
        assert banners(plt.figure(figsize=(8, 4))) == []  # a full run draws no banner, whatever the block says


def test_the_banner_stands_above_the_figure_and_is_saved_with_it(monkeypatch):
    monkeypatch.setenv("SMOKE_TEST", "1")
    print_run_mode()
    fig = plot_accuracy(a_history())
    (banner,) = (text for text in fig.texts if text.get_gid() == "smoke-banner")
    renderer = fig.canvas.get_renderer()
    above = banner.get_window_extent(renderer)
    assert above.y0 >= fig.bbox.y1 - 1  # above everything the figure's own layout places
    assert fig.get_tightbbox(renderer).y1 * fig.dpi >= above.y1 - 1  # savefig's tight box (and a notebook's) keeps it


def test_a_full_run_draws_no_banner(monkeypatch, capsys):
    monkeypatch.setenv("SMOKE_TEST", "1")
    print_run_mode()
    monkeypatch.setenv("SMOKE_TEST", "0")
    monkeypatch.setattr(environment, "get_device", lambda: torch.device("cpu"))
    print_run_mode()  # the mode a notebook says last is the one its figures show
    capsys.readouterr()
    assert banners(plt.figure()) == [] and banners(plot_accuracy(a_history())) == []
    print_smoke_banner()
    assert capsys.readouterr().out == ""


def test_a_banner_of_synthetic_images_says_so():
    figure_style.set_run_mode(True)
    train_loader, _, _ = tiny_loaders(num_train=32)
    train_loader.synthetic = True
    figure_style.note_training(3, train_loader)
    assert figure_style.smoke_banner() == "SMOKE RUN (3 epochs, 32 synthetic training images): not a trained network"


@pytest.mark.parametrize("percent, images, text", [
    (300 / 19, 19, "15.79% (3 of 19 images)"),  # a handful of images: the count beside the share
    (0.0, 19, "0.00% (0 of 19 images)"),
    (87.12, 10_000, "87.12%"),
    (50.0, None, "50.00%"),  # a loader that cannot say its size
])
def test_accuracies_of_small_samples_come_with_their_count(percent, images, text):
    assert figure_style.accuracy_text(percent, images) == text
