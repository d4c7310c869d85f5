"""The version floor: one place, equal to pyproject.toml, and one clear sentence from `import helpers` below it."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import helpers
from helpers.versions import OLDEST_SUPPORTED, UPGRADE_COMMAND, release, too_old_message

ROOT = Path(__file__).resolve().parent.parent
HELPERS_HOME = Path(helpers.__file__).resolve().parent.parent  # the checkout, or site-packages when installed


def declared_floors() -> dict[str, str]:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pairs = (requirement.split(">=") for requirement in dependencies)
    return {name.strip().lower(): floor.strip() for name, floor in pairs}


def test_the_floor_checked_on_import_is_the_one_pyproject_declares():
    floors = declared_floors()
    assert {name: floors[name] for name in OLDEST_SUPPORTED} == OLDEST_SUPPORTED


@pytest.mark.parametrize("version, expected", [
    ("2.3.1", (2, 3, 1)), ("2.3.1+cu121", (2, 3, 1)), ("2.4.0a0+git1234abc", (2, 4, 0)), ("2.10", (2, 10)),
    ("0.18.1+cpu", (0, 18, 1)), ("2.3.0rc5", (2, 3, 0)),
])
def test_release_reads_the_release_numbers(version, expected):
    assert release(version) == expected


def test_versions_at_or_above_the_floor_are_accepted():
    assert too_old_message(dict(OLDEST_SUPPORTED)) is None
    assert too_old_message({"torch": "2.10.0+cu128", "torchvision": "0.25.0"}) is None
    assert too_old_message({}) is None  # not installed: importing torch will say so itself


def test_an_old_torch_gets_one_sentence_with_both_versions_and_the_command():
    message = too_old_message({"torch": "2.2.2+cu121", "torchvision": "0.18.1"})
    assert message == (f"These helpers need torch {OLDEST_SUPPORTED['torch']} or newer, but this Python has torch "
                       f"2.2.2+cu121: run `{UPGRADE_COMMAND}` (in a notebook: `%{UPGRADE_COMMAND}`), then restart "
                       "Python or the kernel.")


def test_both_too_old_are_named_in_the_same_sentence():
    message = too_old_message({"torch": "1.13.1", "torchvision": "0.14.1"})
    assert "need torch 2.3.1 and torchvision 0.18.1 or newer" in message
    assert "has torch 1.13.1 and torchvision 0.14.1:" in message
    assert message.count(". ") == 0 and message.endswith("kernel.")


def run_import(folder: Path, extra_path: list[Path]) -> subprocess.CompletedProcess:
    """`import helpers` in a fresh Python, run in folder (first on its path, so not where the helpers are)."""
    paths = [*map(str, extra_path), str(HELPERS_HOME)]
    environment = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    return subprocess.run([sys.executable, "-c", "import helpers"], capture_output=True, text=True, timeout=300,
                          env={**environment, "PYTHONPATH": os.pathsep.join(paths)}, cwd=folder)


def fake_distribution(folder: Path, name: str, version: str) -> None:
    """Metadata saying `name` is installed at `version`, found before the real one on the path."""
    info = folder / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def test_import_helpers_with_an_old_torch_stops_with_the_sentence(tmp_path):
    fake_distribution(tmp_path / "fake", "torch", "2.2.2")
    result = run_import(tmp_path, [tmp_path / "fake"])
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line == "ImportError: " + too_old_message({"torch": "2.2.2"})


def test_import_helpers_with_an_old_torchvision_names_torchvision(tmp_path):
    fake_distribution(tmp_path / "fake", "torchvision", "0.17.2")
    result = run_import(tmp_path, [tmp_path / "fake"])
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == "ImportError: " + too_old_message({"torchvision": "0.17.2"})


@pytest.mark.slow
def test_a_normal_import_is_silent(tmp_path):
    result = run_import(tmp_path, [])
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def executable(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def test_make_test_versions_takes_a_python_that_runs_not_a_pyenv_shim_that_refuses(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("test_versions_script", ROOT / "scripts" / "test_versions.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    # pyenv's shim of a version that is installed but not selected: on PATH, and it exits 127 instead of running.
    shim = executable(tmp_path / "shims" / "python3.99", 'echo "pyenv: python3.99: command not found" >&2; exit 127')
    executable(tmp_path / "pyenv" / "versions" / "3.99.2" / "bin" / "python3.99", "exit 0")
    newest = executable(tmp_path / "pyenv" / "versions" / "3.99.10" / "bin" / "python3.99", "exit 0")
    monkeypatch.setenv("PATH", f"{shim.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "pyenv"))
    monkeypatch.delenv("PYTHON_NEWEST", raising=False)
    assert script.find_python("3.99", "PYTHON_NEWEST") == str(newest)
    executable(shim, "exit 0")  # a Python on PATH that runs is still the first choice
    assert script.find_python("3.99", "PYTHON_NEWEST") == str(shim)
