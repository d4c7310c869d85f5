"""Short runs on real CIFAR-10 (a JPEG copy), shared by tests/test_real_cifar.py and scripts/measure_real_cifar.py.

Every run trains a notebook's own network (tests/notebook_code.py), with the settings read from that
notebook's Settings cell, for a fixed number of steps on the CPU, from a fixed seed. The script measures
each experiment across seeds and records the numbers (docs/real_cifar/<experiment>.json); the tests
repeat the cheapest part of each and assert what was measured, with a margin.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import platform
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from helpers import (
    ImageData,
    ImageRecipe,
    TrainedWeights,
    compute_channel_stats,
    get_dataloaders_cifar10,
    load_trained_cifar_resnet,
    set_all_seeds,
)
from helpers.evaluation import evaluate
from tests.notebook_code import NOTEBOOKS, notebook_namespace

ROOT = Path(__file__).resolve().parent.parent
RECORDS = ROOT / "docs" / "real_cifar"  # what scripts/measure_real_cifar.py recorded, a JSON file per experiment
VGG16_NOTEBOOK = "02_vgg16_cifar10.ipynb"
RESNET34_NOTEBOOK = "03_resnet34_cifar10.ipynb"
WHY_RESIDUAL_NOTEBOOK = "05_why_residual_connections.ipynb"
TEST_IMAGES_PER_CLASS = 100  # the 1,000-image test subset the 70 -> 64 runs are scored on


# --------------------------------------------------------------------------- the notebooks' settings


def notebook_cells(notebook: str) -> list[dict]:
    return json.loads((NOTEBOOKS / notebook).read_text())["cells"]


def notebook_settings(notebook: str, names: tuple[str, ...]) -> dict:
    """The values the notebook's Settings cell gives `names`, in full (not smoke) mode."""
    cells = notebook_cells(notebook)
    source = next("".join(c["source"]) for c in cells
                  if c["cell_type"] == "code" and "".join(c["source"]).startswith("SMOKE_TEST = "))
    namespace = {"SMOKE_TEST": False, "ImageRecipe": ImageRecipe}
    for statement in ast.parse(source).body:
        targets = [t.id for t in getattr(statement, "targets", []) if isinstance(t, ast.Name)]
        if targets and targets[0] in names:
            exec(compile(ast.Module([statement], []), notebook, "exec"), namespace)
    missing = set(names) - set(namespace)
    if missing:
        raise AssertionError(f"{notebook}'s Settings cell does not set {sorted(missing)}")
    return {name: namespace[name] for name in names}


# --------------------------------------------------------------------------- data


def stratified_test_subset(data: ImageData, per_class: int = TEST_IMAGES_PER_CLASS) -> ImageData:
    """The first `per_class` test images of every class: a fixed, balanced test set."""
    keep = torch.cat([torch.nonzero(data.test_labels == label).flatten()[:per_class]
                      for label in range(len(data.classes))]).sort().values
    return data._replace(test_images=data.test_images[keep], test_labels=data.test_labels[keep])


def why_residual_loaders(data: ImageData, batch_size: int):
    """Notebook 05's loaders (its data cell): 4-pixel zero padding, random 32x32 crops and flips, and the
    channel statistics of the training split only."""
    settings = notebook_settings(WHY_RESIDUAL_NOTEBOOK, ("RANDOM_SEED", "PADDING", "RECIPE", "VALIDATION_FRACTION"))
    padding = settings["PADDING"]
    padded = data._replace(train_images=F.pad(data.train_images, (padding,) * 4))
    options = dict(data=padded, validation_fraction=settings["VALIDATION_FRACTION"], seed=settings["RANDOM_SEED"])
    split, _, _ = get_dataloaders_cifar10(batch_size, recipe=settings["RECIPE"], device="cpu", **options)
    mean, std = compute_channel_stats(split.images[:, :, padding:-padding, padding:-padding])
    recipe = dataclasses.replace(settings["RECIPE"], mean=mean, std=std)
    return get_dataloaders_cifar10(batch_size, recipe=recipe, device="cpu", **options)


# --------------------------------------------------------------------------- training for a number of steps


def batches(loader):
    """The loader's batches, epoch after epoch (each epoch reshuffled, as in training)."""
    while True:
        yield from loader


def train_steps(model: nn.Module, loader, optimizer, num_steps: int, scheduler=None,
                on_step=None) -> tuple[list[float], list[float]]:
    """Train for num_steps batches; each step's training loss and training error (%) on its own batch.
    on_step(step, model) is called after every step (1-based), e.g. to score the model along the way."""
    losses, errors = [], []
    model.train()
    for step, (images, labels) in zip(range(1, num_steps + 1), batches(loader)):
        outputs = model(images)
        loss = F.cross_entropy(outputs, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        losses.append(loss.item())
        errors.append(100.0 * (outputs.argmax(1) != labels).float().mean().item())
        if on_step is not None:
            on_step(step, model)
            model.train()
    return losses, errors


def window_mean(values: list[float], last: int) -> float:
    return sum(values[-last:]) / min(last, len(values))


# --------------------------------------------------------------------------- experiment 1: the 70 -> 64 networks


def first_steps_70_to_64(notebook: str, model_name: str, data: ImageData, seed: int, num_steps: int,
                         score_at: tuple[int, ...]) -> dict:
    """A notebook's network with its own recipe (batch size, SGD learning rate and momentum, 70 -> 64 images)
    for num_steps steps; its training losses and its accuracy on the 1,000-image test subset at score_at."""
    settings = notebook_settings(notebook, ("BATCH_SIZE", "LEARNING_RATE", "MOMENTUM", "RECIPE", "RANDOM_SEED"))
    train_loader, _, test_loader = get_dataloaders_cifar10(
        settings["BATCH_SIZE"], recipe=settings["RECIPE"], device="cpu", data=stratified_test_subset(data),
        seed=settings["RANDOM_SEED"])
    set_all_seeds(seed)
    model = notebook_namespace(notebook)[model_name](num_classes=len(data.classes))
    optimizer = torch.optim.SGD(model.parameters(), lr=settings["LEARNING_RATE"], momentum=settings["MOMENTUM"])
    scores = {}

    def score(step, model):
        if step in score_at:
            scores[step] = evaluate(model, test_loader)[1]

    losses, errors = train_steps(model, train_loader, optimizer, num_steps, on_step=score)
    return {"losses": losses, "errors": errors, "test_accuracy": scores, "model": model,
            "batch_size": settings["BATCH_SIZE"], "learning_rate": settings["LEARNING_RATE"]}


# --------------------------------------------------------------------------- experiment 2: plain and residual


def why_residual_run(notebook: dict, loader, depth: int, shortcuts: bool, seed: int, num_steps: int,
                     learning_rate: float | None = None) -> dict:
    """Notebook 05's network (the paper's width, 16) with its optimiser, for num_steps steps from `seed`.
    The twins of one seed start from the same weights and see the same batches. learning_rate: another
    than the notebook's (the paper warms ResNet-110 up at 0.01)."""
    settings = notebook_settings(WHY_RESIDUAL_NOTEBOOK, ("LEARNING_RATE", "MOMENTUM", "WEIGHT_DECAY"))
    set_all_seeds(seed)
    model = notebook["CifarResNet"](depth, shortcuts=shortcuts)
    optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate or settings["LEARNING_RATE"],
                                momentum=settings["MOMENTUM"], weight_decay=settings["WEIGHT_DECAY"])
    losses, errors = train_steps(model, loader, optimizer, num_steps)
    return {"losses": losses, "errors": errors}


# --------------------------------------------------------------------------- experiment 3: the two pipelines


PIPELINE_RECIPE = ImageRecipe(resize=70, crop=64, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))  # the notebooks'
PIPELINE_BATCH_SIZE = 128


def small_cnn(num_classes: int = 10) -> nn.Module:
    """A small network for 64x64 images, cheap enough to train through both pipelines on a CPU."""
    def block(in_channels, out_channels):
        return [nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
    return nn.Sequential(*block(3, 32), *block(32, 64), *block(64, 128), *block(128, 128),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, num_classes))


def pipeline_run(pipeline: str, data: ImageData, seed: int, num_train: int, num_epochs: int) -> float:
    """Test accuracy (%, all test images) of small_cnn trained through one pipeline on num_train training images
    (a fixed random subset: an image folder lists its images class by class), with a one-cycle schedule over the
    run (a low-noise end point)."""
    keep = torch.randperm(len(data.train_labels), generator=torch.Generator().manual_seed(0))[:num_train]
    subset = data._replace(train_images=data.train_images[keep], train_labels=data.train_labels[keep])
    set_all_seeds(seed)
    train_loader, _, test_loader = get_dataloaders_cifar10(
        PIPELINE_BATCH_SIZE, recipe=PIPELINE_RECIPE, pipeline=pipeline, device="cpu", data=subset, seed=seed,
        num_workers=0)
    model = small_cnn(len(data.classes))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    num_steps = num_epochs * len(train_loader)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.2, total_steps=num_steps)
    train_steps(model, train_loader, optimizer, num_steps, scheduler=scheduler)
    return evaluate(model, test_loader)[1]


# --------------------------------------------------------------------------- experiment 4: the trained ResNets


TRAINED_BATCH_SIZE = 500


def trained_resnet_accuracy(notebook: dict, data: ImageData, depth: int) -> tuple[float, TrainedWeights]:
    """Test accuracy (%, all test images) of the trained ResNet-depth loaded into notebook 05's CifarResNet,
    the images normalised as the network was trained (ImageNet's statistics); and what was loaded."""
    model = notebook["CifarResNet"](depth)
    weights = load_trained_cifar_resnet(model, download=False)
    recipe = ImageRecipe(mean=weights.mean, std=weights.std)
    _, _, test_loader = get_dataloaders_cifar10(TRAINED_BATCH_SIZE, recipe=recipe, device="cpu", data=data)
    return evaluate(model, test_loader)[1], weights


# --------------------------------------------------------------------------- the record


def machine() -> dict:
    from helpers.environment import cpu_model

    return {"cpu": cpu_model(), "torch": torch.__version__, "python": platform.python_version(),
            "threads": torch.get_num_threads()}


def load_real_cifar(data_dir) -> ImageData:
    """All of real CIFAR-10 from data_dir (no download, no smoke subset)."""
    from helpers import load_dataset

    return load_dataset("cifar10", data_dir=data_dir, download=False, smoke_test=False)


# ---------------------------------------------------------------- the tables the README and notebook 05 quote

WHY_RESIDUAL_NAMES = ("plain-20", "ResNet-20", "plain-56", "ResNet-56")
WHY_RESIDUAL_WINDOW = 50  # the tables average each network's last 50 steps


def why_residual_table(record: dict) -> str:
    """Markdown rows: per seed, each network's mean training loss and training error (%) over its last
    WHY_RESIDUAL_WINDOW steps, as 'loss (error%)'; the networks the record has, in WHY_RESIDUAL_NAMES's order."""
    names = [name for name in WHY_RESIDUAL_NAMES if name in next(iter(record["seeds"].values()))]
    rows = ["| seed | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for seed, runs in sorted(record["seeds"].items()):
        cells = [f"{window_mean(runs[name]['losses'], WHY_RESIDUAL_WINDOW):.3f} "
                 f"({window_mean(runs[name]['errors'], WHY_RESIDUAL_WINDOW):.1f}%)" for name in names]
        rows.append(f"| {seed} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def first_steps_table(record: dict) -> str:
    """Markdown rows, a network each: test accuracy (%) on the 1,000-image subset at each scored step, the
    highest loss of the first 10 steps and the mean loss of the last 10, for every seed (as a / b / c)."""
    seeds = sorted(record["seeds"])
    rows = [f"| network | recipe | test accuracy after N steps (seeds {' / '.join(seeds)}) | highest loss of the "
            "first 10 steps | mean loss of the last 10 steps |", "|---|---|---|---|---|"]
    for name, notebook in (("ResNet-34", "03"), ("VGG16", "02")):
        runs = [record["seeds"][seed][name] for seed in seeds]
        steps = list(runs[0]["test_accuracy"])
        scores = "; ".join(f"{step}: " + " / ".join(f"{run['test_accuracy'][step]:.1f}" for run in runs) + "%"
                           for step in steps)
        highest = " / ".join(f"{max(run['losses'][:10]):.2f}" for run in runs)
        last = " / ".join(f"{window_mean(run['losses'], 10):.3f}" for run in runs)
        rows.append(f"| {name} ({notebook}) | batch {runs[0]['batch_size']}, lr {runs[0]['learning_rate']} | "
                    f"{scores} | {highest} | {last} |")
    return "\n".join(rows)


def pipelines_table(record: dict) -> str:
    """Markdown rows: per seed, the test accuracy (%) through each pipeline, and the gap."""
    rows = ["| seed | device pipeline | classic pipeline | gap |", "|---|---|---|---|"]
    for seed, runs in sorted(record["seeds"].items()):
        rows.append(f"| {seed} | {runs['device']:.2f}% | {runs['classic']:.2f}% | "
                    f"{runs['device'] - runs['classic']:+.2f} |")
    return "\n".join(rows)


def trained_resnets_table(record: dict) -> str:
    """Markdown rows, a depth each: test accuracy (%) on the JPEG copy, the best accuracy stored in the file
    (on the original images), and the difference."""
    rows = ["| network | on the JPEG copy | stored in the file (original images) | difference |", "|---|---|---|---|"]
    for depth, result in record["depths"].items():
        rows.append(f"| ResNet-{depth} | {result['jpeg_accuracy']:.2f}% | {result['stored_accuracy']:.2f}% | "
                    f"{result['difference']:+.2f} |")
    return "\n".join(rows)


EXPERIMENT_NAMES = ("first_steps", "why_residual", "why_residual_lr0.01", "pipelines")


def read_record(name: str) -> dict:
    """What scripts/measure_real_cifar.py recorded for one experiment (docs/real_cifar/<name>.json)."""
    return json.loads((RECORDS / f"{name}.json").read_text())
