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
    """CI does nothing a user would not: the test target gets its own data (scripts/get_test_data.py)."""
    readme = (ROOT / "README.md").read_text()
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    commands = [line.strip() for line in ci_lines if line.strip() and not line.lstrip().startswith("#")]
    assert "make test" in readme and "make notebooks" in readme
    assert commands == ["set -euo pipefail", 'cd "$(dirname "$0")/.."', "make test"]


def test_make_test_gets_the_test_data_before_pytest():
    # Under `make test` itself, make's own variables would make the inner make print directory lines.
    env = {key: value for key, value in os.environ.items() if key not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    result = subprocess.run(["make", "--no-print-directory", "-n", "-o", ".venv/.installed", "test"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, env=env)
    commands = result.stdout.splitlines()
    assert result.returncode == 0, result.stderr
    assert commands[0].endswith("python scripts/get_test_data.py") and "-m pytest" in commands[1]
