"""The README's real-CIFAR figures, from what scripts/measure_real_cifar.py recorded.

- real_cifar_first_steps.png: the training loss of the notebooks' VGG16 and ResNet-34 over their first steps;
- real_cifar_why_residual.png: notebook 05's plain and residual networks, training loss per step, at its learning
  rate and at the paper's warm-up rate;
- real_cifar_resnet20_*.png: what notebook 05's ResNet-20 learned in FIGURE_STEPS steps on one CPU thread
  (seed 1, its recipe), drawn by the helpers the notebooks use, on the 10,000 test images: confusion matrix,
  confident mistakes, Grad-CAM.
Usage: python scripts/real_cifar_figures.py   (after measure_real_cifar.py first_steps and why_residual; reads
CIFAR-10 from data/, where `CIFAR10_ARCHIVE=... make test-data` puts it)
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
CHANCE_LOSS = math.log(10)
FIGURE_STEPS = 700  # about two epochs of the 45,000 training images: minutes on one CPU thread
COLOURS = {"plain-20": "#fc9272", "plain-56": "#cb181d", "ResNet-20": "#6baed6", "ResNet-56": "#08519c",
           "VGG16": "#cb181d", "ResNet-34": "#08519c"}


def read(experiment: str) -> dict:
    return json.loads((RECORDS / f"{experiment}.json").read_text())


def networks(runs: dict) -> dict:
    """The networks' results of one seed's record (the record also says its command, date and machine)."""
    return {name: run for name, run in runs.items() if isinstance(run, dict) and "losses" in run}


def smoothed_curves(ax, runs: dict, window: int) -> None:
    for name, run in networks(runs).items():
        steps, values = running_average(run["losses"], window)
        ax.plot(steps, values, color=COLOURS[name], label=name, linewidth=2)
    ax.axhline(CHANCE_LOSS, color="grey", linestyle=":", label="chance: ln 10")
    ax.set_xlabel(f"step (batches of 128 images; running mean of the last {window})")
    ax.grid(alpha=0.3)


def why_residual_figure(seed: str = "1") -> plt.Figure:
    """Training loss per step of notebook 05's networks: at its learning rate, and at the paper's warm-up rate."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    for ax, (experiment, title) in zip(axes, (("why_residual", "learning rate 0.1 (the notebook's recipe)"),
                                              ("why_residual_lr0.01", "learning rate 0.01 (the paper's warm-up)"))):
        smoothed_curves(ax, read(experiment)["seeds"][seed], window=20)
        ax.set_title(title)
        ax.legend()
    axes[0].set_ylabel("training loss")
    axes[0].set_ylim(1.3, 3.0)  # ResNet-56's first steps at 0.1 reach 10 and more: shown in the text, not here
    fig.suptitle(f"Notebook 05's networks on a JPEG copy of CIFAR-10, the first 200 steps on a CPU (seed {seed})")
    fig.tight_layout()
    return fig


def first_steps_figure() -> plt.Figure:
    """Training loss per step of the notebooks' ResNet-34 and VGG16 with their recipes, every seed."""
    record = read("first_steps")
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for seed, runs in sorted(record["seeds"].items()):
        for name, run in networks(runs).items():
            ax.plot(range(1, len(run["losses"]) + 1), run["losses"], color=COLOURS[name], alpha=0.8,
                    label=f"{name}, lr {run['learning_rate']}" if seed == "1" else None)
    ax.axhline(CHANCE_LOSS, color="grey", linestyle=":", label="chance: ln 10")
    ax.set_xlabel("step (batches of 256 images at 64x64); one line per seed, seeds 1-3")
    ax.set_ylabel("training loss")
    ax.set_title("The notebooks' recipes on a JPEG copy of CIFAR-10: the first steps on a CPU")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
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
    accuracy = 100 * matrix.trace() / matrix.sum()
    confusion = plot_confusion_matrix(matrix, classes=test_loader.classes, normalize=True)
    confusion.suptitle(f"ResNet-20 (notebook 05) after {FIGURE_STEPS} steps of 128 images on a CPU: {accuracy:.1f}% "
                       "of the 10,000 test images of a JPEG copy of CIFAR-10", fontsize=10)
    print(f"ResNet-20 after {FIGURE_STEPS} steps: {accuracy:.2f}% test accuracy")
    return {"real_cifar_resnet20_confusion": confusion,
            "real_cifar_resnet20_mistakes": show_confident_mistakes(model, test_loader, num_examples=10),
            "real_cifar_resnet20_grad_cam": show_grad_cam(model, test_loader, "layer3", num_examples=8)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args()
    torch.set_num_threads(1)
    FIGURES.mkdir(parents=True, exist_ok=True)
    figures = {"real_cifar_why_residual": why_residual_figure(), "real_cifar_first_steps": first_steps_figure(),
               **resnet20_figures()}
    for name, figure in figures.items():
        figure.savefig(FIGURES / f"{name}.png", dpi=110, bbox_inches="tight")
        print(f"wrote {FIGURES / name}.png")


if __name__ == "__main__":
    main()
