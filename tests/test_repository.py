"""The repository's own hygiene: clean notebooks, matching dependency lists, lint, and CI = README."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def requirement_names(requirements) -> dict[str, str]:
    pairs = (re.match(r"^([A-Za-z0-9_.-]+)\s*(.*)$", r.strip()).groups() for r in requirements)
    return {name.lower(): spec.replace(" ", "") for name, spec in pairs}


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 3


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path):
    notebook = json.loads(path.read_text())
    dirty = [i for i, cell in enumerate(notebook["cells"]) if cell["cell_type"] == "code"
             and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs; clear them before committing"


def test_environment_yml_lists_what_pyproject_lists():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = requirement_names(project["dependencies"] + project["optional-dependencies"]["test"])
    lines = (ROOT / "environment.yml").read_text().splitlines()
    pip_section = [line.strip()[2:] for line in lines if line.startswith("      - ") and "-e ." not in line]
    assert requirement_names(pip_section) == wanted


def test_torch_is_never_pinned_above_what_colab_has():
    """Lower bounds only, so installing the helpers keeps the torch a machine already has."""
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for name, spec in requirement_names(dependencies).items():
        assert spec.startswith(">=") and "," not in spec and "<" not in spec, f"{name}{spec}"


def test_ruff_passes_on_code_and_notebooks():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", str(ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ci_runs_only_the_readme_test_command():
    """CI does nothing a user would not: the test target gets its own data (scripts/get_test_data.py); CI only
    names the CIFAR-10 archive and the trained ResNets it has beside the checkout, as a user may
    (CIFAR10_ARCHIVE=... CIFAR10_RESNETS=... make test)."""
    readme = (ROOT / "README.md").read_text()
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    commands = [line.strip() for line in ci_lines if line.strip() and not line.lstrip().startswith("#")]
    assert "make test" in readme and "make notebooks" in readme
    assert commands == [
        "set -euo pipefail",
        'cd "$(dirname "$0")/.."',
        "if [ -f ../shared/datasets/cifar10-jpeg.tar.xz ]; then "
        "export CIFAR10_ARCHIVE=../shared/datasets/cifar10-jpeg.tar.xz; fi",
        'if [ -d ../shared/models/cifar10-resnets ]; then '
        'export CIFAR10_RESNETS="$(cd ../shared/models/cifar10-resnets && pwd)"; fi',
        "make test",
    ]


def test_make_test_gets_the_test_data_before_pytest():
    # Under `make test` itself, make's own variables would make the inner make print directory lines.
    env = {key: value for key, value in os.environ.items() if key not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    result = subprocess.run(["make", "--no-print-directory", "-n", "-o", ".venv/.installed", "test"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, env=env)
    commands = result.stdout.splitlines()
    assert result.returncode == 0, result.stderr
    assert commands[0].endswith("python scripts/get_test_data.py") and "-m pytest" in commands[1]


# The one skeleton every notebook follows (H2 headings, in order; text after a colon is the notebook's own).
SKELETON = ("Set-up", "Settings", "The data", "The model", "Training", "Results", "What the network learned",
            "Discussion", "Exercises", "Under the hood")


def sections(path: Path) -> list[tuple[str, list[dict]]]:
    """(H2 heading, the cells under it) in order; the cells before the first H2 under ""."""
    found = [("", [])]
    for cell in json.loads(path.read_text())["cells"]:
        headings = [line[3:].strip() for line in "".join(cell["source"]).splitlines() if line.startswith("## ")]
        if cell["cell_type"] == "markdown":
            found += [(heading, []) for heading in headings]
        found[-1][1].append(cell)
    return found


def skeleton_part(heading: str) -> str:
    """ "The data: CIFAR-10 at 70x70" -> "The data"; plural "The models" and "networks" count as the same part."""
    return heading.split(":")[0].strip().replace("The models", "The model").replace("networks", "network")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_notebook_follows_the_one_skeleton(path):
    assert [skeleton_part(heading) for heading, _ in sections(path)[1:]] == list(SKELETON)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_set_up_installs_prints_versions_and_imports_and_settings_are_one_cell(path):
    parts = dict(sections(path))
    set_up = [cell for cell in parts[next(h for h in parts if h.startswith("Set-up"))] if cell["cell_type"] == "code"]
    sources = ["".join(cell["source"]) for cell in set_up]
    assert len(set_up) == 3 and "google.colab" in sources[0] and "%watermark" in sources[1]
    assert "describe_hardware()" in sources[1] and "imports" in set_up[2]["metadata"].get("tags", [])
    settings = [cell for cell in parts["Settings"] if cell["cell_type"] == "code"]
    assert len(settings) == 1, "every setting lives in one cell"
    names = re.findall(r"^([A-Z][A-Z_0-9]*) =", "".join(settings[0]["source"]), flags=re.MULTILINE)
    assert {"SMOKE_TEST", "RANDOM_SEED", "BATCH_SIZE", "NUM_EPOCHS", "LEARNING_RATE", "RECIPE", "DEVICE",
            "CHECKPOINTS"} <= set(names)
