"""Run every benchmark, each in its own process, one after another, and print a Markdown table of results.

The table (with the machine it ran on) is ready to paste into the README. Each benchmark prints its
own details as it goes and ends with lines "RESULT {json}", one per table row, that this script collects.

Run: make benchmark   (or: .venv/bin/python benchmarks/run_all.py)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ["bench_data.py", "bench_epoch.py", "bench_smoke.py"]
COLUMNS = ["benchmark", "classic", "ours", "ratio", "target"]
MARKER = "RESULT "


def run(script: str) -> list[dict]:
    """Run one benchmark, echoing its output, and return its RESULT rows (or a row saying it failed)."""
    print(f"\n=== {script}", flush=True)
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, str(HERE / script)], stdout=subprocess.PIPE, text=True,
                               cwd=HERE.parent)
    results = []
    for line in process.stdout:
        print(line, end="", flush=True)
        if line.startswith(MARKER):
            results.append(json.loads(line[len(MARKER):]))
    returncode = process.wait()
    print(f"=== {script}: {time.perf_counter() - start:.0f} s", flush=True)
    if returncode != 0 or not results:
        return [{"benchmark": script, "classic": "-", "ours": f"failed (exit {returncode})", "ratio": "-",
                 "target": "-"}]
    return results


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def gpu_model() -> str:
    import torch  # here only: the benchmarks themselves run in their own processes

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"


def markdown_table(results: list[dict]) -> str:
    header = "| Benchmark | Classic | Ours | Ratio (ours/classic) | Target |"
    lines = [header, "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(str(row[key]) for key in COLUMNS) + " |" for row in results]
    return "\n".join(lines)


def main() -> None:
    results = [row for script in BENCHMARKS for row in run(script)]
    print("\n" + markdown_table(results))
    print(f"\nMachine: {cpu_model()}, {os.cpu_count()} CPU cores, {gpu_model()}; torch {version('torch')}, "
          f"torchvision {version('torchvision')}, Python {sys.version.split()[0]}. Data and epoch on "
          f"the CPU, torch's default threads. Measured {time.strftime('%Y-%m-%d')} with "
          "`make benchmark`.")


if __name__ == "__main__":
    main()
