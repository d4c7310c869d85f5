"""The CIFAR-10 lessons on real images: short CPU runs of the notebooks' own networks on a JPEG copy.

scripts/measure_real_cifar.py measured each experiment across seeds 1-3 (docs/real_cifar/*.json; the README
quotes them); these tests repeat its cheapest part, seed 1 on one thread, and assert what was measured with a
margin, and they hold the README and notebook 05 to the recorded numbers. They need real CIFAR-10 (the
cifar10_dir fixture says how to get it, and skips without it).
"""

import math

import pytest

from helpers import ImageData
from tests import long_runs, real_cifar
from tests.notebook_code import notebook_namespace

CHANCE_LOSS = math.log(10)  # the cross-entropy of a uniform guess among 10 classes

# Notebook 03's ResNet-34 with its recipe (batch 256, SGD lr 0.1, momentum 0.9, 70 -> 64): its loss first jumps
# far above chance before it falls back. Highest loss of the first OVERSHOOT_STEPS steps at seeds 1, 2, 3 (one
# thread, docs/real_cifar/first_steps.json): 6.59, 11.07, 9.86, against ln 10 = 2.30 for a uniform guess.
OVERSHOOT_STEPS = 10
MIN_RESNET34_OVERSHOOT = 4.5

# Notebook 05's networks (width 16, batch 128, its optimiser), seed 1: in the first WHY_RESIDUAL_STEPS steps plain-20
# learns while plain-56 stays at chance; mean training loss of the last WINDOW steps. ResNet-56 at lr 0.1 overshoots
# in its first RESNET56_STEPS steps. Measured at seeds 1, 2, 3 (one thread, docs/real_cifar/why_residual.json): mean
# loss of steps 41-60, plain-20 1.992, 1.991, 1.912 and plain-56 2.304, 2.291, 2.302; highest loss of ResNet-56's
# first 10 steps 13.59, 9.83, 14.81 (its steps 5, 4 and 8).
WHY_RESIDUAL_STEPS, WINDOW = 60, 20
MAX_PLAIN20_LOSS = 2.15
MIN_PLAIN56_LOSS = 2.2
RESNET56_STEPS = 10
MIN_RESNET56_OVERSHOOT = 5.0

# The device and the classic pipeline: the same network, seed and one-cycle schedule (tests/real_cifar.py), 3 epochs
# of 10,000 images at 70 -> 64. Test accuracy at seeds 1, 2, 3 (docs/real_cifar/pipelines.json): device 47.50,
# 48.92, 47.65%; classic 47.46, 48.41, 48.22%. The issue's bar for the gap: 1.5 points.
PIPELINE_IMAGES, PIPELINE_EPOCHS = 10_000, 3
MAX_PIPELINE_GAP = 1.5
MIN_PIPELINE_ACCURACY = 42.0


@pytest.fixture(scope="module")
def cifar10(cifar10_dir) -> ImageData:
    return real_cifar.load_real_cifar(cifar10_dir)


@pytest.fixture(scope="module")
def measured() -> dict:
    """What scripts/measure_real_cifar.py recorded, by experiment."""
    return {name: real_cifar.read_record(name) for name in real_cifar.EXPERIMENT_NAMES}


# --------------------------------------------------------------------------- the runs (need real CIFAR-10)


def test_resnet34_overshoots_in_its_first_steps_at_learning_rate_0_1(cifar10, one_cpu_thread):
    """Notebook 03's ResNet-34 with its own recipe: within OVERSHOOT_STEPS steps its loss rises far above chance."""
    run = real_cifar.first_steps_70_to_64(real_cifar.RESNET34_NOTEBOOK, "resnet34", cifar10, seed=1,
                                          num_steps=OVERSHOOT_STEPS, score_at=())
    print(f"ResNet-34, losses of the first {OVERSHOOT_STEPS} steps: {[round(loss, 2) for loss in run['losses']]}")
    assert max(run["losses"]) > MIN_RESNET34_OVERSHOOT


@pytest.fixture(scope="module")
def why_residual(cifar10) -> tuple[dict, object]:
    """Notebook 05's definitions and its training loader (padded, standardised), built once for the tests below."""
    loader, _, _ = real_cifar.why_residual_loaders(cifar10, batch_size=128)
    return notebook_namespace(real_cifar.WHY_RESIDUAL_NOTEBOOK), loader


def test_the_deeper_plain_network_is_still_at_chance_when_the_shallower_one_learns(why_residual, one_cpu_thread):
    """Notebook 05's recipe, its first WHY_RESIDUAL_STEPS steps: plain-20 learns, plain-56 has not begun."""
    notebook, loader = why_residual
    losses = {depth: real_cifar.window_mean(real_cifar.why_residual_run(
        notebook, loader, depth, False, seed=1, num_steps=WHY_RESIDUAL_STEPS)["losses"], WINDOW)
        for depth in (20, 56)}
    print(f"mean training loss of steps {WHY_RESIDUAL_STEPS - WINDOW + 1}-{WHY_RESIDUAL_STEPS}: "
          f"plain-20 {losses[20]:.3f}, plain-56 {losses[56]:.3f} (chance: ln 10 = {CHANCE_LOSS:.3f})")
    assert losses[20] < MAX_PLAIN20_LOSS
    assert losses[56] > MIN_PLAIN56_LOSS


def test_resnet56_overshoots_in_its_first_steps_at_learning_rate_0_1(why_residual, one_cpu_thread):
    """Notebook 05's ResNet-56 at its learning rate of 0.1 jumps far above chance in its first steps, which is
    why the paper warms its ResNet-110 up at 0.01."""
    notebook, loader = why_residual
    losses = real_cifar.why_residual_run(notebook, loader, 56, True, seed=1, num_steps=RESNET56_STEPS)["losses"]
    print(f"ResNet-56, losses of the first {RESNET56_STEPS} steps: {[round(loss, 2) for loss in losses]}")
    assert max(losses) > MIN_RESNET56_OVERSHOOT


def test_device_and_classic_pipelines_learn_alike_on_real_images(cifar10, one_cpu_thread):
    """One network, seed and schedule through both pipelines: the same augmentation, so the same accuracy."""
    accuracies = {pipeline: real_cifar.pipeline_run(pipeline, cifar10, seed=1, num_train=PIPELINE_IMAGES,
                                                    num_epochs=PIPELINE_EPOCHS) for pipeline in ("device", "classic")}
    print(f"test accuracy after {PIPELINE_EPOCHS} epochs of {PIPELINE_IMAGES:,} images: {accuracies}")
    assert abs(accuracies["device"] - accuracies["classic"]) <= MAX_PIPELINE_GAP
    assert min(accuracies.values()) >= MIN_PIPELINE_ACCURACY


# --------------------------------------------------------------------------- what the README and notebook 05 quote


def test_every_experiment_was_measured_at_three_seeds_with_its_command_and_machine(measured):
    for name, record in measured.items():
        assert sorted(record["seeds"]) == ["1", "2", "3"], name
        for seed, result in record["seeds"].items():
            assert result["command"].startswith("python scripts/measure_real_cifar.py " + name.split("_lr")[0])
            assert result["machine"]["threads"] == 1 and result["machine"]["torch"], (name, seed)


@pytest.mark.parametrize("name, table", [("first_steps", real_cifar.first_steps_table),
                                         ("why_residual", real_cifar.why_residual_table),
                                         ("why_residual_lr0.01", real_cifar.why_residual_table),
                                         ("pipelines", real_cifar.pipelines_table)])
def test_the_readme_quotes_the_recorded_numbers(measured, name, table):
    assert table(measured[name]) in (real_cifar.ROOT / "README.md").read_text()


def markdown_of(notebook: str) -> str:
    return "\n".join("".join(cell["source"]) for cell in real_cifar.notebook_cells(notebook)
                     if cell["cell_type"] == "markdown")


@pytest.fixture(scope="module")
def long_records() -> dict:
    """What scripts/measure_real_cifar.py recorded of notebook 05's long runs."""
    return {name: real_cifar.read_record(name) for name in ("whole_schedule", "first_steps_56")}


def test_the_long_runs_were_measured_as_the_issue_asks_with_their_commands(long_records):
    """A whole schedule of at least 3 epochs for the four networks, at least 2 seeds of the 56-layer pair; ResNet-56's
    first 1,000 steps at 0.1 and with the warm-up, at every recorded seed."""
    schedule = long_records["whole_schedule"]["seeds"]
    for name in long_runs.SCHEDULE_NAMES:
        seeds = [seed for seed, runs in schedule.items() if name in runs]
        assert len(seeds) >= (2 if name.endswith("56") else 1), name
        for seed in seeds:
            run = schedule[seed][name]
            assert len(run["epoch_train_error"]) >= 3 and len(run["errors"]) == 3 * run["steps_per_epoch"]
            assert run["milestones"] == [len(run["errors"]) // 2, len(run["errors"]) * 3 // 4]
    for seed, runs in long_records["first_steps_56"]["seeds"].items():
        assert runs["command"].startswith("python scripts/measure_real_cifar.py first_steps_56")
        assert runs["machine"]["threads"] == 1 and runs["machine"]["torch"], seed
        assert len(runs["lr 0.1"]["errors"]) == len(runs["warm-up"]["errors"]) == 1000
    assert len(long_records["first_steps_56"]["seeds"]) >= 2


def test_notebook_05_and_the_readme_quote_the_long_runs_as_recorded(long_records):
    notebook = markdown_of(real_cifar.WHY_RESIDUAL_NOTEBOOK)
    readme = (real_cifar.ROOT / "README.md").read_text()
    schedule, first_steps = long_records["whole_schedule"], long_records["first_steps_56"]
    quoted = (long_runs.whole_schedule_table(schedule), long_runs.whole_schedule_findings(schedule),
              long_runs.first_steps_56_table(first_steps, variants=("lr 0.1", "warm-up")),
              long_runs.first_steps_56_findings(first_steps))
    for text in quoted:
        assert text in notebook and text in readme


def test_what_notebook_05_says_of_resnet56_in_the_whole_schedule_is_the_record(long_records):
    """The sentences around the table name the division step and, per seed, whether ResNet-56 left chance."""
    flowing = " ".join(markdown_of(real_cifar.WHY_RESIDUAL_NOTEBOOK).split())
    for seed, runs in long_records["whole_schedule"]["seeds"].items():
        if "ResNet-56" not in runs:
            continue
        run = runs["ResNet-56"]
        assert f"divided by 10 after step {run['milestones'][0]}" in flowing
        left = long_runs.steps_at_chance(run["errors"])
        if left is None:
            assert "never left chance" in flowing and f"at seed {seed}" in flowing
        else:
            assert f"At seed {seed} it left chance at step {left}, before the first division" in flowing
            assert left < run["milestones"][0]


def test_plain_56_ends_far_above_plain_20_at_every_seed_as_the_notebook_and_readme_say(long_records):
    pairs = [(runs["plain-56"]["epoch_train_error"][-1], runs["plain-20"]["epoch_train_error"][-1])
             for runs in long_records["whole_schedule"]["seeds"].values() if "plain-20" in runs and "plain-56" in runs]
    assert len(pairs) >= 2 and all(deep > shallow + 10 for deep, shallow in pairs)
    assert "Plain-56 ends far above plain-20" in markdown_of(real_cifar.WHY_RESIDUAL_NOTEBOOK)
    assert "plain-56 ends far above plain-20 at every seed" in (real_cifar.ROOT / "README.md").read_text()


def test_the_delays_notebook_05_states_are_the_recorded_ones(long_records):
    runs = long_records["first_steps_56"]["seeds"].values()
    at_rate = [long_runs.steps_at_chance(run["lr 0.1"]["errors"]) for run in runs]
    warmed = [long_runs.steps_at_chance(run["warm-up"]["errors"]) for run in runs]
    flowing = " ".join(markdown_of(real_cifar.WHY_RESIDUAL_NOTEBOOK).split())
    assert f"between {min(at_rate)} and {max(at_rate)} steps at the seeds measured" in flowing
    assert f"leaves chance by step {max(warmed)} at every seed measured" in flowing
    assert max(warmed) < min(at_rate)  # what "a short warm-up is enough to start it" rests on


def test_notebook_05_leaves_the_command_to_the_readme(measured):
    """A lesson shows the numbers; how the collection measured them (a script of its repository) is the README's."""
    notebook = markdown_of(real_cifar.WHY_RESIDUAL_NOTEBOOK)
    assert "measure_real_cifar.py" not in notebook and "this collection's repository" not in notebook
    readme = " ".join((real_cifar.ROOT / "README.md").read_text().split())
    for name in ("whole_schedule", "first_steps_56"):
        assert f"python scripts/measure_real_cifar.py {name}" in readme


def overshoot_range(record: dict, name: str) -> str:
    """'low and high' of a network's highest loss in its first 10 steps, across the recorded seeds."""
    highest = [max(runs[name]["losses"][:10]) for runs in record["seeds"].values()]
    return f"{min(highest):.1f} and {max(highest):.1f}"


def test_the_overshoots_quoted_are_the_recorded_ones(measured):
    readme = (real_cifar.ROOT / "README.md").read_text()
    resnet56 = overshoot_range(measured["why_residual"], "ResNet-56")
    assert f"jumps to {resnet56.replace(' and ', '-')} within its first 10 steps" in " ".join(readme.split())
    resnet34 = overshoot_range(measured["first_steps"], "ResNet-34")
    assert f"jumps to {resnet34.replace(' and ', '-')} within 10 steps" in " ".join(readme.split())
