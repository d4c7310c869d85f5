"""Stamp the repository's address wherever it appears: make set-repo-url URL=https://github.com/you/fork

The one source of truth is `Repository` under [project.urls] in pyproject.toml. From it come every
notebook's Colab install cell (`%pip install -q "git+<address>"`), the "Open in Colab" badge at the top
of every notebook, and the badge beside every notebook in README.md's table. A branch other than main:
URL=https://github.com/you/fork/tree/BRANCH. Without URL, the address pyproject.toml holds is stamped
again (after adding a notebook). Needs only Python's standard library.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GITHUB = re.compile(r"^https://github\.com/(?P<owner>[\w.-]+)/(?P<repo>[\w.-]+?)(?:\.git)?(?:/tree/(?P<branch>[\w./-]+))?/?$")
BADGE = re.compile(r" ?\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)")
INSTALL_TARGET = re.compile(r"git\+https://[^\s\"']+")
INSTALL_CELL = """# On Google Colab, install the helpers (Colab's own torch stays as it is). Elsewhere: nothing to do.
import sys

if "google.colab" in sys.modules:
    %pip install -q "{target}\""""


def parse(url: str) -> tuple[str, str, str | None]:
    """(owner, repository, branch or None) of a GitHub address; Colab opens notebooks only from GitHub."""
    match = GITHUB.match(url.strip())
    if match is None:
        raise ValueError(f"{url!r} is not a GitHub repository address: give one like https://github.com/you/fork "
                         f"(or https://github.com/you/fork/tree/BRANCH).")
    return match["owner"], match["repo"], match["branch"]


def canonical(url: str) -> str:
    owner, repo, branch = parse(url)
    return f"https://github.com/{owner}/{repo}" + (f"/tree/{branch}" if branch else "")


def install_target(url: str) -> str:
    """What pip installs on Colab: the repository's default branch, or the one the address names."""
    owner, repo, branch = parse(url)
    return f"git+https://github.com/{owner}/{repo}" + (f"@{branch}" if branch else "")


def badge(url: str, notebook: str) -> str:
    """The "Open in Colab" badge for notebooks/<notebook>."""
    owner, repo, branch = parse(url)
    link = f"https://colab.research.google.com/github/{owner}/{repo}/blob/{branch or 'main'}/notebooks/{notebook}"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({link})"


def read_repository_url(root: Path) -> str:
    try:
        return tomllib.loads((root / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
    except KeyError:
        raise SystemExit("pyproject.toml has no Repository under [project.urls]: give the address once, "
                         "make set-repo-url URL=https://github.com/you/your-fork") from None


def stamp_pyproject(root: Path, url: str) -> None:
    path = root / "pyproject.toml"
    text, count = re.subn(r'(?m)^Repository = ".*"$', f'Repository = "{url}"', path.read_text())
    if count != 1:
        raise ValueError(f"{path} needs exactly one line `Repository = \"...\"` under [project.urls].")
    path.write_text(text)


def stamp_notebook(path: Path, url: str) -> None:
    """The install cell's address (the cell is added if missing) and the badge on the first line."""
    notebook = json.loads(path.read_text())
    cells = notebook["cells"]
    install_cells = [c for c in cells if c["cell_type"] == "code" and is_install_cell("".join(c["source"]))]
    if not install_cells:
        first_code = next((i for i, c in enumerate(cells) if c["cell_type"] == "code"), len(cells))
        source = INSTALL_CELL.format(target=install_target(url))
        cells.insert(first_code, {"cell_type": "code", "execution_count": None, "id": "colab-install",
                                  "metadata": {}, "outputs": [], "source": source})
        install_cells = [cells[first_code]]
    for cell in install_cells:
        set_source(cell, INSTALL_TARGET.sub(install_target(url), "".join(cell["source"])))
    title = next((c for c in cells if c["cell_type"] == "markdown"), None)
    if title is None:
        raise ValueError(f"{path.name} has no Markdown cell to carry the badge: give it a title cell first.")
    text = BADGE.sub("", "".join(title["source"])).lstrip("\n")
    set_source(title, f"{badge(url, path.name)}\n\n{text}")
    path.write_text(json.dumps(notebook, sort_keys=True, indent=1, ensure_ascii=False) + "\n")  # nbformat's layout


def is_install_cell(source: str) -> bool:
    return "%pip install" in source and "git+" in source


def set_source(cell: dict, text: str) -> None:
    cell["source"] = text.splitlines(keepends=True)


def stamp_readme(root: Path, url: str, notebooks: list[str]) -> list[str]:
    """Each notebook's badge in its row of README's table; returns the notebooks that have no row."""
    path = root / "README.md"
    lines = path.read_text().split("\n")
    missing = []
    for notebook in notebooks:
        link = re.compile(rf"\[[^\]]*\]\(notebooks/{re.escape(notebook)}\)")
        rows = [i for i, line in enumerate(lines) if line.startswith("|") and link.search(line)]
        if not rows:
            missing.append(notebook)
            continue
        row = BADGE.sub("", lines[rows[0]])
        end = link.search(row).end()
        lines[rows[0]] = f"{row[:end]} {badge(url, notebook)}{row[end:]}"
    path.write_text("\n".join(lines))
    return missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default="", help="https://github.com/you/fork[/tree/BRANCH]")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to stamp (default: this one)")
    arguments = parser.parse_args(argv)
    root = arguments.root
    notebooks = sorted((root / "notebooks").glob("*.ipynb"))
    try:
        url = canonical(arguments.url or read_repository_url(root))
        stamp_pyproject(root, url)
        for path in notebooks:
            stamp_notebook(path, url)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 1
    missing = stamp_readme(root, url, [path.name for path in notebooks])
    print(f"Stamped {url} into pyproject.toml, {len(notebooks)} notebooks and README.md.")
    if missing:
        print(f"README.md's notebooks table has no row for {', '.join(missing)}: add a row "
              f"(| [`NAME`](notebooks/NAME.ipynb) | ... |) and run this again.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
