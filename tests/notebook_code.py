"""Run a notebook's own code in a test: the cells tagged "imports" and "definitions", in order.

Tests of a notebook's networks must test the notebook's code, not a copy of it.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

from helpers import exercises

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


def exercise_checks(name: str) -> list[tuple[str, ast.Call]]:
    """(the exercise's name, the call) for every call of a check of helpers.exercises in notebooks/<name>.

    The name is the call's first argument (check_quiz, check_exercise, check_fix) or the one the check is marked
    with (@checks("Bottleneck") on check_bottleneck). A check that names no exercise, such as check_answer with
    the expected answer written out, comes back with the name "", so that a test can refuse it.
    """
    cells = json.loads((NOTEBOOKS / name).read_text())["cells"]
    found = []
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        # IPython's %magics and !commands are no Python: each becomes a `pass` at its indentation.
        lines = "".join(cell["source"]).splitlines()
        source = "\n".join(line[:len(line) - len(line.lstrip())] + "pass" if line.lstrip().startswith(("%", "!"))
                           else line for line in lines)
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id.startswith("check_"):
                check = getattr(exercises, node.func.id, None)
                if getattr(check, "__module__", None) == exercises.__name__:  # not those it imports
                    found.append((_exercise_name(check, node), node))
    return found


def _exercise_name(check, call: ast.Call) -> str:
    if hasattr(check, "exercise"):
        return check.exercise
    if check in (exercises.check_quiz, exercises.check_exercise, exercises.check_fix):
        first = call.args[0] if call.args else None
        return first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else ""
    return ""
