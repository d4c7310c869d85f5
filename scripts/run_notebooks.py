"""The main job: execute every notebook top to bottom, saving executed copies and figures to outputs/.

Full recipes on a machine with a GPU and network; smoke mode (small data, one epoch) otherwise,
or whenever SMOKE_TEST is set. Usage: make notebooks  (or: python scripts/run_notebooks.py [NAME ...])
"""

from __future__ import annotations

import base64
import os
import socket
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from helpers.environment import smoke_test_setting

ROOT = Path(__file__).resolve().parent.parent
OUTPUTS = ROOT / "outputs"


def has_network(host: str = "www.cs.toronto.edu", port: int = 443, timeout: float = 5.0) -> bool:
    """True when the CIFAR-10 host answers."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def choose_mode() -> bool:
    """Decide smoke mode and say why; an explicit SMOKE_TEST wins, read by the notebooks' own rule."""
    smoke = smoke_test_setting()  # an unknown value is an error here too, not a guess
    if smoke is not None:
        print(f"SMOKE_TEST={os.environ['SMOKE_TEST']} given: {'smoke mode' if smoke else 'full recipes'}.")
        return smoke
    import torch

    gpu, network = torch.cuda.is_available(), has_network()
    if gpu and network:
        print("GPU and network found: running the full recipes (this takes hours; SMOKE_TEST=1 for a quick run).")
        return False
    missing = " and ".join(name for name, ok in (("no GPU", gpu), ("no network", network)) if not ok)
    print(f"Smoke mode ({missing}): small data, one epoch per notebook. "
          "The results show that the code runs, not what the models reach.")
    return True


def save_figures(notebook, folder: Path) -> int:
    count = 0
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            image = output.get("data", {}).get("image/png")
            if image:
                count += 1
                (folder / f"figure-{count:02d}.png").write_bytes(base64.b64decode(image))
    return count


# Run in the notebook's kernel after its last cell, then taken out again: which images the notebook used.
DATA_REPORT_CELL = "import helpers.figure_style\nprint(helpers.figure_style.data_report(globals()))"


def data_used(report_cell) -> str:
    """What the report cell printed: "synthetic" or "real"; "unknown" if it printed neither (the notebook failed)."""
    text = "".join(output.get("text", "") for output in report_cell.get("outputs", []))
    return text.strip() if text.strip() in ("synthetic", "real") else "unknown"


def run(path: Path, smoke: bool) -> str:
    """Execute one notebook into outputs/, save its figures, and say which data it used (see data_used)."""
    notebook = nbformat.read(path, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(DATA_REPORT_CELL))
    folder = OUTPUTS / path.stem
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    client = NotebookClient(notebook, timeout=900 if smoke else None, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    # The kernel's own log (warnings, a crash) goes to a file beside the executed notebook.
    with open(folder / "kernel.log", "w") as kernel_log:
        try:
            client.execute(stderr=kernel_log)
        finally:
            data = data_used(notebook.cells.pop())  # the saved notebook is the student's, without the report
            nbformat.write(notebook, folder / path.name)
    figures = save_figures(notebook, folder)
    print(f"  {path.name}: {time.perf_counter() - start:.0f} s, {figures} figures -> {folder.relative_to(ROOT)}/, "
          f"{data} data")
    return data


def summary(data: dict[str, str], smoke: bool) -> str:
    """The closing lines: how the notebooks ran, and which of them trained on synthetic stand-in images."""
    mode = "smoke mode (small data, one epoch: the code runs, the numbers are no results)" if smoke else \
        "full recipes"
    lines = [f"Summary: {len(data)} notebook{'' if len(data) == 1 else 's'} run in {mode}."]
    stand_in = [name for name, used in data.items() if used == "synthetic"]
    if stand_in:
        lines.append(f"Synthetic stand-in data, not the real datasets, in: {', '.join(stand_in)}. "
                     "Their figures and numbers show that the code runs, nothing about the networks; "
                     "with a network connection (or `make test-data`, CIFAR10_ARCHIVE=... for CIFAR-10) they "
                     "use the real datasets.")
    else:
        lines.append("Every notebook used real data.")
    unknown = [name for name, used in data.items() if used == "unknown"]
    if unknown:
        lines.append(f"Could not tell which data these used: {', '.join(unknown)}.")
    return "\n".join(lines)


def main(names: list[str]) -> int:
    try:
        smoke = choose_mode()
    except ValueError as unclear:  # SMOKE_TEST=maybe: say what it takes, without a traceback
        print(unclear, file=sys.stderr)
        return 2
    os.environ["SMOKE_TEST"] = "1" if smoke else "0"
    paths = sorted((ROOT / "notebooks").glob("*.ipynb"))
    if names:
        paths = [p for p in paths if any(name in p.name for name in names)]
    data = {path.stem: run(path, smoke) for path in paths}
    print(summary(data, smoke))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
