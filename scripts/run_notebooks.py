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


def run(path: Path, smoke: bool) -> None:
    notebook = nbformat.read(path, as_version=4)
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
            nbformat.write(notebook, folder / path.name)
    figures = save_figures(notebook, folder)
    print(f"  {path.name}: {time.perf_counter() - start:.0f} s, {figures} figures -> {folder.relative_to(ROOT)}/")


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
    for path in paths:
        run(path, smoke)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
