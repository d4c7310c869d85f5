"""Run a notebook's own code in a test: the cells tagged "imports" and "definitions", in order.

Tests of a notebook's networks must test the notebook's code, not a copy of it.
"""

from __future__ import annotations

import json
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
TAGS = {"imports", "definitions"}


def notebook_namespace(name: str) -> dict:
    """Execute the tagged cells of notebooks/<name> and return the names they define."""
    path = NOTEBOOKS / name
    cells = json.loads(path.read_text())["cells"]
    namespace: dict = {"__name__": f"notebook:{name}"}
    chosen = [c for c in cells if c["cell_type"] == "code" and TAGS & set(c.get("metadata", {}).get("tags", []))]
    if not chosen:
        raise AssertionError(f"{name} has no cells tagged {sorted(TAGS)}")
    for cell in chosen:
        exec(compile("".join(cell["source"]), f"{name}:{cell.get('id', '?')}", "exec"), namespace)
    return namespace


def code_cell(name: str, containing: str) -> str:
    """The source of the one code cell of notebooks/<name> that contains `containing` (e.g. an exercise's check)."""
    cells = json.loads((NOTEBOOKS / name).read_text())["cells"]
    sources = ["".join(c["source"]) for c in cells if c["cell_type"] == "code" and containing in "".join(c["source"])]
    if len(sources) != 1:
        raise AssertionError(f"{name} has {len(sources)} code cells containing {containing!r}; expected one")
    return sources[0]
