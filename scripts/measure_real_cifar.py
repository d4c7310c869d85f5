"""Measure the real-CIFAR evidence on the CPU: each experiment of tests/real_cifar.py across seeds.

Usage: python scripts/measure_real_cifar.py EXPERIMENT [--seeds 1 2 3] [--data-dir data]
  first_steps   the notebooks' VGG16 and ResNet-34, their own recipes, the first steps at 70 -> 64
  why_residual  notebook 05's plain-20, ResNet-20, plain-56 and ResNet-56, its recipe, a fixed number of steps
  pipelines     one small network through the device and the classic pipeline, one-cycle schedule
  whole_schedule  notebook 05's four networks through a whole schedule of --epochs epochs (tests/long_runs.py)
  first_steps_56  ResNet-56's first --steps steps at lr 0.1, and with one thing changed (--variants)
  trained_resnets  the four trained ResNets ($CIFAR10_RESNETS or data/cifar10-resnets) scored once on the test
                split: no seeds, one record (accuracy on the JPEG copy, accuracy stored in the file, difference)
Each runs on one CPU thread (two experiments can share a 2-core machine) and writes
docs/real_cifar/EXPERIMENT.json: per seed, every number, the command that made it, the date and the machine.
Seeds already in that file are kept, so seeds can be measured in separate runs (or processes, one after
the other); a seed measured again is replaced.
The data: a folder load_dataset finds CIFAR-10 in (make test-data with CIFAR10_ARCHIVE prepares data/).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from helpers.trained_models import ENVIRONMENT_VARIABLE, TRAINED_DEPTHS  # noqa: E402
from tests import long_runs, real_cifar  # noqa: E402
from tests.notebook_code import notebook_namespace  # noqa: E402

FIRST_STEPS = {"ResNet-34": (real_cifar.RESNET34_NOTEBOOK, "resnet34", 100, (25, 50, 100)),
               "VGG16": (real_cifar.VGG16_NOTEBOOK, "VGG16", 12, (12,))}
WHY_RESIDUAL_STEPS = 200
WHY_RESIDUAL_NETWORKS = ((20, False), (20, True), (56, False), (56, True))
PIPELINE_IMAGES, PIPELINE_EPOCHS = 10_000, 3


def first_steps(data, seed: int) -> dict:
    results = {}
    for name, (notebook, model_name, num_steps, score_at) in FIRST_STEPS.items():
        start = time.perf_counter()
        run = real_cifar.first_steps_70_to_64(notebook, model_name, data, seed, num_steps, score_at)
        results[name] = {key: run[key] for key in ("losses", "errors", "test_accuracy", "batch_size",
                                                   "learning_rate")}
        results[name]["seconds"] = round(time.perf_counter() - start)
        print(f"seed {seed} {name}: test accuracy {run['test_accuracy']} after steps {score_at}; "
              f"mean loss of the last 10 steps {real_cifar.window_mean(run['losses'], 10):.3f}", flush=True)
    return results


def why_residual(data, seed: int, num_steps: int = WHY_RESIDUAL_STEPS, learning_rate: float | None = None,
                 depths: tuple[int, ...] = (20, 56)) -> dict:
    notebook = notebook_namespace(real_cifar.WHY_RESIDUAL_NOTEBOOK)
    loader, _, _ = real_cifar.why_residual_loaders(data, batch_size=128)
    results = {}
    for depth, shortcuts in WHY_RESIDUAL_NETWORKS:
        if depth not in depths:
            continue
        name = notebook["network_name"](depth, shortcuts)
        results[name] = real_cifar.why_residual_run(notebook, loader, depth, shortcuts, seed, num_steps,
                                                    learning_rate)
        print(f"seed {seed} {name}: mean training loss of the last 50 steps "
              f"{real_cifar.window_mean(results[name]['losses'], 50):.3f}, error "
              f"{real_cifar.window_mean(results[name]['errors'], 50):.1f}%", flush=True)
    return results


def pipelines(data, seed: int) -> dict:
    results = {}
    for pipeline in ("device", "classic"):
        results[pipeline] = real_cifar.pipeline_run(pipeline, data, seed, PIPELINE_IMAGES, PIPELINE_EPOCHS)
        print(f"seed {seed} {pipeline}: test accuracy {results[pipeline]:.2f}%", flush=True)
    return results


def whole_schedule(data, seed: int, num_epochs: int = 3, depths: tuple[int, ...] = (20, 56), save=None) -> dict:
    notebook = notebook_namespace(real_cifar.WHY_RESIDUAL_NOTEBOOK)
    loaders = real_cifar.why_residual_loaders(data, batch_size=128)
    results = {}
    for depth, shortcuts in WHY_RESIDUAL_NETWORKS:
        if depth not in depths:
            continue
        name = notebook["network_name"](depth, shortcuts)
        run = long_runs.whole_schedule(notebook, loaders, depth, shortcuts, seed, num_epochs)
        run.pop("model")
        results[name] = run
        print(f"seed {seed} {name}: training error per epoch {run['epoch_train_error']}, validation accuracy "
              f"{run['valid_accuracy']}, test accuracy {run['test_accuracy']}% ({run['seconds']} s)", flush=True)
        if save:
            save(results)
    return results


def first_steps_56(data, seed: int, num_steps: int = 1000, variants: tuple[str, ...] = ("lr 0.1", "warm-up"),
                   save=None) -> dict:
    notebook = notebook_namespace(real_cifar.WHY_RESIDUAL_NOTEBOOK)
    loader, _, _ = real_cifar.why_residual_loaders(data, batch_size=128)
    results = {}
    for variant in variants:
        change, options = long_runs.FIRST_STEPS_VARIANTS[variant]
        run = long_runs.first_steps_run(notebook, loader, seed, num_steps, **options)
        results[variant] = {"change": change, **run}
        print(f"seed {seed} ResNet-56, {variant}: left chance (mean error of 50 steps < 80%) at step "
              f"{long_runs.steps_at_chance(run['errors'])}; highest loss of the first 20 steps "
              f"{max(run['losses'][:20]):.2f} ({run['seconds']} s)", flush=True)
        if save:
            save(results)
    return results


def trained_resnets(data) -> dict:
    """Per depth: test accuracy on this copy of CIFAR-10, the file's stored best accuracy, and the difference."""
    notebook = notebook_namespace(real_cifar.WHY_RESIDUAL_NOTEBOOK)
    results = {}
    for depth in TRAINED_DEPTHS:
        accuracy, weights = real_cifar.trained_resnet_accuracy(notebook, data, depth)
        results[str(depth)] = {"jpeg_accuracy": round(accuracy, 2), "stored_accuracy": weights.stored_accuracy,
                               "difference": round(accuracy - weights.stored_accuracy, 2), "file": weights.path.name}
        print(f"ResNet-{depth}: {accuracy:.2f}% here, {weights.stored_accuracy:.2f}% stored in the file", flush=True)
    return results


EXPERIMENTS = {"first_steps": first_steps, "why_residual": why_residual, "pipelines": pipelines,
               "whole_schedule": whole_schedule, "first_steps_56": first_steps_56, "trained_resnets": trained_resnets}
LONG_EXPERIMENTS = ("whole_schedule", "first_steps_56")  # these save after every network, and keep what was there


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", choices=EXPERIMENTS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--data-dir", default=str(ROOT / "data"))
    parser.add_argument("--steps", type=int, help=f"why_residual only: steps per network ({WHY_RESIDUAL_STEPS})")
    parser.add_argument("--learning-rate", type=float, help="why_residual only: instead of the notebook's")
    parser.add_argument("--depths", type=int, nargs="+", help="why_residual, whole_schedule: 20, 56 or both (both)")
    parser.add_argument("--epochs", type=int, help="whole_schedule only: epochs (3)")
    parser.add_argument("--variants", nargs="+", choices=long_runs.FIRST_STEPS_VARIANTS,
                        help="first_steps_56 only: which runs ('lr 0.1' and 'warm-up')")
    parser.add_argument("--record", help="the record's name in docs/real_cifar (default: from the experiment)")
    args = parser.parse_args()
    given = {"num_steps": args.steps, "learning_rate": args.learning_rate,
             "depths": tuple(args.depths) if args.depths else None, "num_epochs": args.epochs,
             "variants": tuple(args.variants) if args.variants else None}
    options = {name: value for name, value in given.items() if value is not None}
    name = args.record or args.experiment + (f"_lr{args.learning_rate:g}" if args.learning_rate else "")
    torch.set_num_threads(1)  # the tests' setting: trained weights depend on the thread count
    data = real_cifar.load_real_cifar(args.data_dir)
    real_cifar.RECORDS.mkdir(parents=True, exist_ok=True)
    path = real_cifar.RECORDS / f"{name}.json"
    record = json.loads(path.read_text()) if path.exists() else {"experiment": args.experiment, "seeds": {}}
    command = "python " + " ".join(["scripts/measure_real_cifar.py", *map(shlex.quote, sys.argv[1:])])
    if args.experiment == "trained_resnets":  # trained weights, measured once: no seeds
        if os.environ.get(ENVIRONMENT_VARIABLE):  # where the weights came from is part of the command
            command = f"{ENVIRONMENT_VARIABLE}={os.environ[ENVIRONMENT_VARIABLE]} {command}"
        record = {"experiment": args.experiment, "command": command, "date": datetime.date.today().isoformat(),
                  "machine": real_cifar.machine(), "depths": trained_resnets(data)}
        path.write_text(json.dumps(record, indent=1) + "\n")
        return
    for seed in args.seeds:
        kept = record["seeds"].get(str(seed), {}) if args.experiment in LONG_EXPERIMENTS else {}

        def save(result, seed=seed, kept=kept):
            runs = {name: value for name, value in kept.items() if isinstance(value, dict) and "losses" in value}
            record["seeds"][str(seed)] = {**runs, **result, "command": command,
                                          "date": datetime.date.today().isoformat(), "machine": real_cifar.machine()}
            path.write_text(json.dumps(record, indent=1) + "\n")  # after every run: a long one keeps what it has

        if args.experiment in LONG_EXPERIMENTS:
            options["save"] = save
        save(EXPERIMENTS[args.experiment](data, seed, **options))


if __name__ == "__main__":
    main()
