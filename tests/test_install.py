"""The Colab install path: pip installs the package from a git URL of this repository, and the notebooks' imports work.

The repository is a commit of the current working tree in a temporary git repository (uncommitted files
matter); the fresh environment sees the packages this one has, as Colab's Python has its own torch.
No network: pip runs with --no-index, so it can only keep the torch that is already there.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow  # pip installs the package into a new environment

ROOT = Path(__file__).resolve().parent.parent
OUR_DISTRIBUTION = ("helpers", "deep_cnn_helpers", "__editable__")  # what the install under test must provide


def notebook_imports() -> dict[str, set[str]]:
    """{module: names} of every `from helpers... import ...` in the notebooks' code cells."""
    imports: dict[str, set[str]] = {}
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "code":
                for node in ast.walk(ast.parse(without_magics("".join(cell["source"])))):
                    if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "helpers":
                        imports.setdefault(node.module, set()).update(alias.name for alias in node.names)
    return imports


def without_magics(source: str) -> str:
    """IPython's %magics and !commands replaced by `pass`, so that the cell parses as Python."""
    lines = source.splitlines()
    return "\n".join(line[: len(line) - len(line.lstrip())] + "pass" if line.lstrip()[:1] in ("%", "!") else line
                     for line in lines)


def git(*arguments: str, cwd: Path) -> None:
    # Plain git whatever the machine's settings: no hooks, no signing, a fixed author.
    settings = ["-c", "core.hooksPath=/dev/null", "-c", "commit.gpgsign=false",
                "-c", "user.name=test", "-c", "user.email=test@example.invalid"]
    subprocess.run(["git", *settings, *arguments], cwd=cwd, check=True, capture_output=True, timeout=60)


def commit_working_tree(destination: Path) -> Path:
    """A git repository whose one commit is the working tree as it is now (tracked and new files)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, check=True, capture_output=True, timeout=60).stdout.decode()
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():  # a tracked file deleted in the working tree is not part of it
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, destination / name)
    git("init", "-q", cwd=destination)
    git("add", "-A", cwd=destination)
    git("commit", "-q", "--no-verify", "-m", "working tree", cwd=destination)
    return destination


def preinstalled_packages(destination: Path) -> Path:
    """Links to every package this environment has, except ours: the 'Colab Python' to install into."""
    destination.mkdir()
    for folder in map(Path, site.getsitepackages()):
        for entry in folder.iterdir() if folder.is_dir() else ():
            if not entry.name.startswith(OUR_DISTRIBUTION) and not (destination / entry.name).exists():
                (destination / entry.name).symlink_to(entry)
    return destination


def clean_environment() -> dict[str, str]:
    """This process's environment without settings that would point Python or pip elsewhere."""
    return {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "PIP_"))}


def run_python(python: Path, code: str, cwd: Path) -> str:
    result = subprocess.run([str(python), "-c", code], cwd=cwd, env=clean_environment(), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


TORCH_IDENTITY = "import os, torch; print(torch.__version__, os.path.realpath(torch.__file__))"


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(),
                    reason="installs from a git URL of this checkout: needs git and a git checkout")
def test_pip_install_from_git_gives_every_name_the_notebooks_import_and_keeps_torch(tmp_path):
    imports = notebook_imports()
    assert sum(map(len, imports.values())) >= 10, imports  # the notebooks do import from helpers
    repository = commit_working_tree(tmp_path / "repository")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "venv")], check=True, timeout=120)
    python = tmp_path / "venv" / "bin" / "python"
    venv_site = Path(run_python(python, "import sysconfig; print(sysconfig.get_path('purelib'))", tmp_path))
    (venv_site / "preinstalled.pth").write_text(f"{preinstalled_packages(tmp_path / 'preinstalled')}\n")
    ours = f"{torch.__version__} {os.path.realpath(torch.__file__)}"
    assert run_python(python, TORCH_IDENTITY, tmp_path) == ours
    with pytest.raises(AssertionError, match="ModuleNotFoundError"):  # nothing of ours is there before
        run_python(python, "import helpers", tmp_path)

    pip = [str(python), "-m", "pip", "install", "--quiet", "--no-index", "--no-build-isolation",
           f"git+file://{repository}"]
    result = subprocess.run(pip, cwd=tmp_path, env=clean_environment(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr

    statements = "\n".join(f"from {module} import {', '.join(sorted(names))}" for module, names in imports.items())
    where = run_python(python, f"{statements}\nimport helpers\nprint(helpers.__file__)", tmp_path)
    assert Path(where).is_relative_to(venv_site), f"helpers imported from {where}, not from the installed package"
    assert run_python(python, TORCH_IDENTITY, tmp_path) == ours
    assert not [p.name for p in venv_site.iterdir() if p.name.startswith("torch")], "pip installed a torch of its own"
