"""The README's real-CIFAR figures, from what scripts/measure_real_cifar.py recorded.

- real_cifar_first_steps.png: the training loss of the notebooks' VGG16 and ResNet-34 over their first steps;
- real_cifar_why_residual.png: notebook 05's plain and residual networks, training loss per step, at its learning
  rate and at the paper's warm-up rate;
- real_cifar_resnet20_*.png: what notebook 05's ResNet-20 learned in FIGURE_STEPS steps on one CPU thread
  (seed 1, its recipe), drawn by the helpers the notebooks use, on the 10,000 test images: confusion matrix,
  confident mistakes, Grad-CAM; the confusion matrix's counts are kept in real_cifar_resnet20_confusion.json, from
  which `confusion` redraws it without training.
Usage: python scripts/real_cifar_figures.py [first_steps] [why_residual] [resnet20]   (default: all three; after
measure_real_cifar.py first_steps and why_residual; resnet20 reads CIFAR-10 from data/, where
`CIFAR10_ARCHIVE=... make test-data` puts it)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from helpers import (  # noqa: E402
    compute_confusion_matrix,
    plot_confusion_matrix,
    set_all_seeds,
    show_confident_mistakes,
    show_grad_cam,
)
from helpers.plotting import running_average  # noqa: E402
from tests import real_cifar  # noqa: E402
from tests.notebook_code import notebook_namespace  # noqa: E402

FIGURES = ROOT / "docs" / "figures"
RECORDS = real_cifar.RECORDS
DATA_DIR = ROOT / "data"  # where `make test-data` puts CIFAR10_ARCHIVE's copy
CONFUSION_RECORD = FIGURES / "real_cifar_resnet20_confusion.json"  # the counts its confusion matrix shows
CHANCE_LOSS = math.log(10)
FIGURE_STEPS = 700  # about two epochs of the 45,000 training images: minutes on one CPU thread
COLOURS = {"plain-20": "#fc9272", "plain-56": "#cb181d", "ResNet-20": "#6baed6", "ResNet-56": "#08519c",
           "VGG16": "#cb181d", "ResNet-34": "#08519c"}


def read(experiment: str) -> dict:
    return json.loads((RECORDS / f"{experiment}.json").read_text())


def networks(runs: dict) -> dict:
    """The networks' results of one seed's record (the record also says its command, date and machine)."""
    return {name: run for name, run in runs.items() if isinstance(run, dict) and "losses" in run}


SEED_STYLES = {"1": ("C0", "-", "o"), "2": ("C1", "--", "s"), "3": ("C2", ":", "^")}  # colour, line, marker


def chance_line(ax, above_right: bool = False) -> None:
    """The loss of a uniform guess over 10 classes, drawn and named on the plot itself: below the line at the
    left (where the first steps' curves are still above it), or above it at the right."""
    ax.axhline(CHANCE_LOSS, color="0.35", linestyle=(0, (1, 2)), linewidth=1.5)
    ax.annotate(f"chance: ln 10 = {CHANCE_LOSS:.2f}", (1.0 if above_right else 0.0, CHANCE_LOSS),
                xycoords=("axes fraction", "data"), xytext=(-6 if above_right else 6, 4 if above_right else -4),
                textcoords="offset points", ha="right" if above_right else "left",
                va="bottom" if above_right else "top", color="0.3",
                bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.8})


def mark_off_scale(ax, steps, values, losses, colour: str, name: str) -> None:
    """Where a curve leaves the top of the axes: a marker on the edge and its highest value (and that of single
    steps), never a silent cut."""
    top = ax.get_ylim()[1]
    if max(values) <= top:
        return
    peak = max(range(len(values)), key=values.__getitem__)
    ax.plot(steps[peak], top, marker="^", markersize=11, color=colour, clip_on=False, zorder=5)
    ax.annotate(f"{name} reaches {values[peak]:.1f} here, above this scale\n(single steps: up to {max(losses):.1f})",
                (steps[peak], top), xytext=(12, -8), textcoords="offset points", ha="left", va="top", color=colour)


def smoothed_curves(ax, runs: dict, window: int, top: float) -> None:
    ax.set_ylim(1.3, top)
    for name, run in networks(runs).items():
        steps, values = running_average(run["losses"], window)
        ax.plot(steps, values, color=COLOURS[name], label=name, linewidth=2.2)
        mark_off_scale(ax, list(steps), list(values), run["losses"], COLOURS[name], name)
    chance_line(ax, above_right=True)
    ax.set_xlabel(f"step (running mean of the last {window})")
    ax.grid(alpha=0.3)


def why_residual_figure(seed: str = "1") -> plt.Figure:
    """Training loss per step of notebook 05's networks: at its learning rate, and at the paper's warm-up rate."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.8), sharey=True, layout="constrained")
    for ax, (experiment, title) in zip(axes, (("why_residual", "learning rate 0.1 (the notebook's recipe)"),
                                              ("why_residual_lr0.01", "learning rate 0.01 (the paper's warm-up)"))):
        # The scale shows where the networks part; ResNet-56's first steps at 0.1 go far above it (marked).
        smoothed_curves(ax, read(experiment)["seeds"][seed], window=20, top=3.0)
        ax.set_title(title)
    axes[0].set_ylabel("training loss")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=4)  # one colour per network
    fig.suptitle(f"Notebook 05's networks, first 200 steps of 128 CIFAR-10 images on a CPU (seed {seed})")
    return fig


def first_steps_figure() -> plt.Figure:
    """Training loss per step of the notebooks' VGG16 and ResNet-34 with their recipes, one line per seed."""
    record = read("first_steps")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.8), layout="constrained", width_ratios=(1, 1.6))
    for ax, name in zip(axes, ("VGG16", "ResNet-34")):
        for seed, runs in sorted(record["seeds"].items()):
            losses = networks(runs)[name]["losses"]
            colour, line, marker = SEED_STYLES[seed]
            few = len(losses) <= 20  # VGG16's 12 steps: every step a marker
            ax.plot(range(1, len(losses) + 1), losses, color=colour, linestyle=line, linewidth=1.8,
                    marker=marker if few else None, markersize=6, fillstyle="none", label=f"seed {seed}")
        rate = networks(record["seeds"]["1"])[name]["learning_rate"]
        ax.set_title(f"{name}, lr {rate}: {len(losses)} steps")
        chance_line(ax)
        ax.set_xlabel("step (batches of 256 images at 64x64)")
        ax.set_xlim(0.5, len(losses) + 0.5)
        ax.set_ylim(bottom=CHANCE_LOSS - (0.3 if name == "VGG16" else 0.8))  # room for the chance label
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right")
    axes[0].xaxis.set_major_locator(matplotlib.ticker.MultipleLocator(2))
    axes[0].set_ylabel("training loss")
    fig.suptitle("The notebooks' recipes on a JPEG copy of CIFAR-10: the first steps on a CPU")
    return fig


def resnet20_figures() -> dict[str, plt.Figure]:
    """Notebook 05's ResNet-20, its recipe, FIGURE_STEPS steps from seed 1 on one thread; the figures notebooks
    02-04 draw of what a network learned, made by the same helpers, on the 10,000 test images."""
    data = real_cifar.load_real_cifar(DATA_DIR)
    # The test images in a fixed random order: an image folder lists them class by class, and the figures draw
    # their examples from the first batch, which would then be all aeroplanes.
    order = torch.randperm(len(data.test_labels), generator=torch.Generator().manual_seed(0))
    data = data._replace(test_images=data.test_images[order], test_labels=data.test_labels[order])
    train_loader, _, test_loader = real_cifar.why_residual_loaders(data, batch_size=128)
    settings = real_cifar.notebook_settings(real_cifar.WHY_RESIDUAL_NOTEBOOK,
                                            ("LEARNING_RATE", "MOMENTUM", "WEIGHT_DECAY"))
    set_all_seeds(1)
    model = notebook_namespace(real_cifar.WHY_RESIDUAL_NOTEBOOK)["CifarResNet"](20)
    optimizer = torch.optim.SGD(model.parameters(), lr=settings["LEARNING_RATE"], momentum=settings["MOMENTUM"],
                                weight_decay=settings["WEIGHT_DECAY"])
    real_cifar.train_steps(model, train_loader, optimizer, FIGURE_STEPS)
    set_all_seeds(0)  # which examples the figures pick
    matrix = compute_confusion_matrix(model, test_loader)
    CONFUSION_RECORD.write_text(json.dumps({"steps": FIGURE_STEPS, "seed": 1, "classes": list(test_loader.classes),
                                            "matrix": matrix.tolist()}) + "\n")
    print(f"ResNet-20 after {FIGURE_STEPS} steps: {100 * matrix.trace() / matrix.sum():.2f}% test accuracy")
    return {"real_cifar_resnet20_confusion": confusion_figure(),
            "real_cifar_resnet20_mistakes": show_confident_mistakes(model, test_loader, num_examples=10),
            "real_cifar_resnet20_grad_cam": show_grad_cam(model, test_loader, "layer3", num_examples=8)}


def confusion_figure() -> plt.Figure:
    """The ResNet-20's confusion matrix, from the counts resnet20_figures recorded, with one title."""
    record = json.loads(CONFUSION_RECORD.read_text())
    matrix = np.array(record["matrix"])
    fig = plot_confusion_matrix(matrix, classes=record["classes"], normalize=True)
    fig.axes[0].set_title(f"ResNet-20 (notebook 05) after {record['steps']} steps of 128 images on a CPU:\n"
                          f"{100 * matrix.trace() / matrix.sum():.1f}% of the {matrix.sum():,} test images "
                          "of a JPEG copy of CIFAR-10")
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("figures", nargs="*", choices=("first_steps", "why_residual", "resnet20", "confusion"),
                        help="only these figures (default: all; resnet20 trains for minutes and draws three, the "
                             "others read records; confusion redraws resnet20's matrix from its record)")
    wanted = parser.parse_args().figures or ["first_steps", "why_residual", "resnet20"]
    torch.set_num_threads(1)
    FIGURES.mkdir(parents=True, exist_ok=True)
    figures = {}
    if "why_residual" in wanted:
        figures["real_cifar_why_residual"] = why_residual_figure()
    if "first_steps" in wanted:
        figures["real_cifar_first_steps"] = first_steps_figure()
    if "resnet20" in wanted:
        figures.update(resnet20_figures())
    elif "confusion" in wanted:
        figures["real_cifar_resnet20_confusion"] = confusion_figure()
    for name, figure in figures.items():
        figure.savefig(FIGURES / f"{name}.png")  # in the helpers' style: its dpi, a tight bounding box
        print(f"wrote {FIGURES / name}.png")


if __name__ == "__main__":
    main()
