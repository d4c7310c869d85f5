"""One address for the repository: pyproject's [project.urls] Repository, and every notebook and badge agrees.

The expected links are spelled out here on their own, not taken from scripts/set_repository_url.py, so a
mistake in the script cannot agree with itself.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "set_repository_url.py"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
COLAB_LINK = re.compile(r"https://colab\.research\.google\.com/github/[^\s)\"']+")
GIT_TARGET = re.compile(r"git\+https://[^\s\"']+")


def repository_url(root: Path) -> str:
    return tomllib.loads((root / "pyproject.toml").read_text())["project"]["urls"]["Repository"]


def expected_links(url: str, notebook: str) -> tuple[str, str]:
    """(what pip installs on Colab, where the notebook's "Open in Colab" badge points)."""
    match = re.fullmatch(r"https://github\.com/([\w.-]+)/([\w.-]+)(?:/tree/([\w./-]+))?", url)
    assert match, f"pyproject.toml's Repository {url!r} is not https://github.com/OWNER/REPO[/tree/BRANCH]"
    owner, repo, branch = match.groups()
    install = f"git+https://github.com/{owner}/{repo}" + (f"@{branch}" if branch else "")
    colab = f"https://colab.research.google.com/github/{owner}/{repo}/blob/{branch or 'main'}/notebooks/{notebook}"
    return install, colab


def disagreements(root: Path) -> list[str]:
    """Every place under root where a notebook or badge disagrees with pyproject.toml's Repository."""
    url = repository_url(root)
    readme = (root / "README.md").read_text()
    problems = []
    notebooks = sorted((root / "notebooks").glob("*.ipynb"))
    for path in notebooks:
        install, colab = expected_links(url, path.name)
        cells = json.loads(path.read_text())["cells"]
        sources = ["".join(cell["source"]) for cell in cells]
        install_cells = [s for c, s in zip(cells, sources) if c["cell_type"] == "code" and "%pip install" in s]
        if len(install_cells) != 1 or GIT_TARGET.findall(install_cells[0]) != [install]:
            problems.append(f"{path.name}: needs one install cell with {install}")
        problems += [f"{path.name}: installs {t}" for s in sources for t in GIT_TARGET.findall(s) if t != install]
        title = next(s for c, s in zip(cells, sources) if c["cell_type"] == "markdown")
        if colab not in title.split("\n", 1)[0]:
            problems.append(f"{path.name}: its first Markdown line needs the badge to {colab}")
        links = [link for source in sources for link in COLAB_LINK.findall(source)]
        problems += [f"{path.name}: links to {link}" for link in links if link != colab]
        rows = [line for line in readme.splitlines() if line.startswith("|") and f"(notebooks/{path.name})" in line]
        if len(rows) != 1 or COLAB_LINK.findall(rows[0]) != [colab]:
            problems.append(f"README.md: the table row of {path.name} needs one badge to {colab}")
    wanted = {expected_links(url, path.name)[1] for path in notebooks}
    problems += [f"README.md: links to {link}" for link in COLAB_LINK.findall(readme) if link not in wanted]
    return problems


def test_every_notebook_and_badge_uses_the_repository_in_pyproject():
    problems = disagreements(ROOT)
    assert not problems, "\n".join(problems + ["Fix: make set-repo-url (it stamps pyproject.toml's address)."])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_colab_install_cell_keeps_colabs_torch(path):
    """pip must not replace Colab's torch: no upgrade flags, no torch pins in the install cell."""
    cells = json.loads(path.read_text())["cells"]
    for source in ("".join(c["source"]) for c in cells if c["cell_type"] == "code"):
        for line in (line for line in source.splitlines() if "pip install" in line):
            assert not re.search(r"(--upgrade|\s-U\b|--force-reinstall|\btorch)", line), f"{path.name}: {line}"


def stamped_copy(tmp_path: Path) -> Path:
    """What `make set-repo-url` touches, copied, so the real notebooks are never rewritten by a test."""
    root = tmp_path / "checkout"
    (root / "notebooks").mkdir(parents=True)
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    readme = (ROOT / "README.md").read_text()
    for path in NOTEBOOKS:
        shutil.copy(path, root / "notebooks" / path.name)
        if f"](notebooks/{path.name})" not in readme:  # a notebook still being written: the test above says so
            readme += f"\n| [`{path.stem}`](notebooks/{path.name}) | - | - |\n"
    (root / "README.md").write_text(readme)
    return root


def stamp(root: Path, url: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *([url] if url else []), "--root", str(root)],
                          capture_output=True, text=True, timeout=60)


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("url", ["https://github.com/someone/fork", "https://github.com/someone/fork/tree/spring-2027"])
def test_one_command_stamps_a_new_address_everywhere(tmp_path, url):
    root = stamped_copy(tmp_path)
    old_owner_and_repo = repository_url(ROOT).split("/")[3:5]
    result = stamp(root, url)
    assert result.returncode == 0, result.stderr
    assert repository_url(root) == url
    assert disagreements(root) == []
    for name, text in snapshot(root).items():
        assert "/".join(old_owner_and_repo) not in text, f"{name} still names the old repository"
    once = snapshot(root)
    assert stamp(root).returncode == 0 and snapshot(root) == once  # stamping again changes nothing


def test_stamping_there_and_back_gives_the_same_files(tmp_path):
    root = stamped_copy(tmp_path)
    original = repository_url(ROOT)
    assert stamp(root, original).returncode == 0
    direct = snapshot(root)
    assert stamp(root, "https://github.com/someone/fork").returncode == 0
    assert stamp(root, original).returncode == 0
    assert snapshot(root) == direct


def test_a_notebook_without_install_cell_or_badge_gets_both(tmp_path):
    root = stamped_copy(tmp_path)
    notebook = {"cells": [{"cell_type": "markdown", "id": "title", "metadata": {}, "source": ["# A new lesson"]},
                          {"cell_type": "code", "execution_count": None, "id": "code", "metadata": {},
                           "outputs": [], "source": ["import torch"]}],
                "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (root / "notebooks" / "99_new.ipynb").write_text(json.dumps(notebook))
    result = stamp(root)
    assert result.returncode == 1 and "no row for 99_new.ipynb" in result.stderr
    readme = root / "README.md"
    readme.write_text(readme.read_text().replace("\n## ", "\n| [`99_new`](notebooks/99_new.ipynb) | x | y |\n\n## ", 1))
    assert stamp(root).returncode == 0
    assert disagreements(root) == []
    cells = json.loads((root / "notebooks" / "99_new.ipynb").read_text())["cells"]
    assert [c["cell_type"] for c in cells] == ["markdown", "code", "code"]
    assert "".join(cells[2]["source"]) == "import torch"


@pytest.mark.parametrize("url", ["https://gitlab.com/someone/fork", "github.com/someone/fork", "https://github.com/x"])
def test_an_address_colab_cannot_open_is_refused_in_one_line(tmp_path, url):
    root = stamped_copy(tmp_path)
    before = snapshot(root)
    result = stamp(root, url)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "https://github.com/you/fork" in result.stderr
    assert snapshot(root) == before


def test_a_pyproject_without_the_address_gets_one_line_saying_how_to_give_it(tmp_path):
    root = stamped_copy(tmp_path)
    pyproject = root / "pyproject.toml"
    pyproject.write_text(re.sub(r"\[project\.urls\]\nRepository = \"[^\"]*\"\n", "", pyproject.read_text()))
    before = snapshot(root)
    result = stamp(root)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "make set-repo-url URL=" in result.stderr
    assert snapshot(root) == before
