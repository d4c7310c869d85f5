"""Wall time of executing every notebook in smoke mode (SMOKE_TEST=1), one after another, with nbclient.

Each notebook runs top to bottom in a fresh kernel, kernel start included, as `make test` runs it;
the notebooks on disk are left untouched. Target: under 3 minutes for all of them together.

Run: .venv/bin/python benchmarks/bench_smoke.py
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
CELL_TIMEOUT_S = 600
# None: torch's default (one thread per core), what a student gets. Measure on a quiet machine: on a
# busy one, threads stall each other; 1 there gives steadier (but less realistic) numbers.
TORCH_THREADS = None
TARGET_S = 180


def execute(path: Path) -> tuple[float, str]:
    """(wall seconds, "ok" or the error's first line) for one notebook run in smoke mode."""
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    try:
        # The kernel's own stderr only says that it listens on TCP; a failing cell still raises here.
        client.execute(stderr=subprocess.DEVNULL)
        outcome = "ok"
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as error:
        outcome = "FAILED: " + (str(error).strip().splitlines() or [""])[-1][:120]
    return time.perf_counter() - start, outcome


def main() -> None:
    os.environ["SMOKE_TEST"] = "1"  # the kernels inherit this process's environment
    if TORCH_THREADS is not None:
        os.environ["OMP_NUM_THREADS"] = str(TORCH_THREADS)
    paths = sorted(NOTEBOOKS.glob("*.ipynb"))
    print(f"{len(paths)} notebooks in {NOTEBOOKS.name}/, smoke mode, torch threads per kernel: "
          f"{TORCH_THREADS or 'default'}")
    total, failures = 0.0, 0
    for path in paths:
        seconds, outcome = execute(path)
        total += seconds
        failures += outcome != "ok"
        print(f"  {path.name}: {seconds:.1f} s {outcome}")
    verdict = "no notebooks yet" if not paths else f"{failures} failed" if failures else "all ran"
    print(f"Total: {total:.0f} s = {total / 60:.1f} min ({verdict}; target < {TARGET_S // 60} min)")
    print("RESULT " + json.dumps({
        "benchmark": f"smoke: all {len(paths)} notebooks, SMOKE_TEST=1 (wall time)",
        "classic": "-", "ours": f"{total:.0f} s" + (f" ({failures} failed)" if failures else ""),
        "ratio": "-", "target": f"< {TARGET_S // 60} min",
    }))


if __name__ == "__main__":
    main()
