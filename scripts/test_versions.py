"""`make test-versions`: the helpers at the oldest versions pyproject.toml declares, and at the newest releases.

Each end has its own virtual environment, kept between runs (.venv-oldest, .venv-newest; the first run
downloads several GB: torch's CUDA wheels and their nvidia-* libraries, for each end). Into it the helpers
are installed the way the notebooks' Colab cell does it, with pip from a git URL (here a commit of this
working tree, new files included). Then the unit tests run from that commit, with `import helpers`
resolving to the installed copy, and every notebook runs in smoke mode from a folder outside the
repository, as a student's copy would.
- oldest: Python at requires-python's floor, and every runtime dependency at exactly its declared floor.
- newest: Colab's Python, and the newest release of every runtime dependency on the package index; this
  machine's pip constraints (a cap on torch) are replaced by none, so a new torch is found here first.
Usage: python scripts/test_versions.py [oldest] [newest]   (both when none is named)
Another Python for an end: PYTHON_OLDEST=/path/to/python3.11 or PYTHON_NEWEST=... in the environment.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import xml.etree.ElementTree as ElementTree
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
COLAB_PYTHON = "3.13"  # shared/REFERENCE.md: what students on Colab run
SHOWN = ("torch", "torchvision", "numpy", "matplotlib", "pillow", "tqdm", "watermark")

# A pytest plugin: fail when the tests imported the helpers from anywhere but the installed package. (The notebooks
# import them in their kernels, not in pytest's process: check_kernel_import checks those.)
INSTALLED_CHECK = """
import sys, sysconfig
def pytest_sessionfinish(session):
    where = getattr(sys.modules.get("helpers"), "__file__", None)
    if where is not None and not where.startswith(sysconfig.get_path("purelib")):
        print(f"\\nhelpers was imported from {where}, not from the installed package: failing")
        session.exitstatus = 1
"""


def floors() -> dict[str, str]:
    """{name: version} of every runtime dependency, from its `name>=version` in pyproject.toml."""
    pairs = (re.fullmatch(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9.]+)", spec).groups() for spec in PROJECT["dependencies"])
    return {name.lower(): version for name, version in pairs}


def test_tools() -> list[str]:
    """The test extra (pytest, nbval, ...), which the Colab cell does not install."""
    return PROJECT["optional-dependencies"]["test"]


def find_python(version: str, variable: str) -> str:
    """A python executable of this version: the one $variable names, else one on PATH, else one pyenv installed.

    Each is tried, not only found: pyenv puts a shim for every version it has on PATH, and the shim of a version
    that is not selected (`pyenv global`, .python-version) exits 127 ("command not found") instead of running it.
    """
    if os.environ.get(variable):
        return os.environ[variable]
    pyenv_root = os.path.expanduser(os.environ.get("PYENV_ROOT", "~/.pyenv"))
    pyenv = sorted(glob.glob(f"{pyenv_root}/versions/{version}.*/bin/python{version}"), reverse=True,
                   key=lambda path: [int(number) for number in re.findall(r"[0-9]+", Path(path).parts[-3])])
    for candidate in filter(None, [shutil.which(f"python{version}"), *pyenv]):
        if subprocess.run([candidate, "-c", "pass"], env=clean_environment(), capture_output=True).returncode == 0:
            return candidate
    sys.exit(f"No Python {version} that runs found (on PATH or in pyenv). Install it, or name another Python for "
             f"this end: {variable}=/usr/bin/python3.12 make test-versions")


def oldest_python() -> str:
    return re.search(r"[0-9.]+", PROJECT["requires-python"]).group()


def clean_environment() -> dict[str, str]:
    """This process's environment without settings that would point Python or pip elsewhere."""
    return {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "PIP_"))}


def run(command: list, **options) -> None:
    print("+", " ".join(map(str, command)), flush=True)
    subprocess.run(list(map(str, command)), check=True, **{"env": clean_environment(), **options})


def prepare_environment(end: str, work: Path) -> tuple[Path, dict[str, str]]:
    """Create (once) the end's virtual environment and install its dependencies; its python and pip settings."""
    venv = ROOT / f".venv-{end}"
    python = venv / "bin" / "python"
    if end == "oldest":
        # Our pins replace the machine's constraints: exactly each declared floor, whatever else pip installs.
        constraints = work / "constraints.txt"
        constraints.write_text("".join(f"{name}=={version}\n" for name, version in floors().items()))
        requirements, upgrade = [f"{name}=={version}" for name, version in floors().items()], []
        interpreter = find_python(oldest_python(), "PYTHON_OLDEST")
    else:
        constraints = Path(os.devnull)  # no cap at all: the newest release the index has
        requirements, upgrade = list(floors()), ["--upgrade", "--upgrade-strategy", "eager"]
        interpreter = find_python(COLAB_PYTHON, "PYTHON_NEWEST")
    pip_settings = {**clean_environment(), "PIP_CONSTRAINT": str(constraints), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    if not python.exists():
        run([interpreter, "-m", "venv", venv])
        run([python, "-m", "pip", "install", "--quiet", "--upgrade", "pip"], env=pip_settings)
    run([python, "-m", "pip", "install", "--quiet", *upgrade, *requirements, *test_tools()], env=pip_settings)
    return python, pip_settings


def commit_working_tree(destination: Path) -> Path:
    """A git repository whose one commit is this working tree as it is now (tracked and new files)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, check=True, capture_output=True).stdout.decode()
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, destination / name)
    plain = ["-c", "core.hooksPath=/dev/null", "-c", "commit.gpgsign=false", "-c", "user.name=test-versions",
             "-c", "user.email=test-versions@example.invalid"]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "--no-verify", "-m", "working tree"]):
        subprocess.run(["git", *plain, *command], cwd=destination, check=True, capture_output=True)
    return destination


def install_helpers(python: Path, pip_settings: dict, repository: Path) -> None:
    """As the Colab cell does: pip install git+URL, which keeps the torch that is there."""
    run([python, "-m", "pip", "uninstall", "--quiet", "--yes", "deep-cnn-helpers"], env=pip_settings)
    run([python, "-m", "pip", "install", "--quiet", f"git+file://{repository}"], env=pip_settings)


def installed_versions(python: Path) -> dict[str, str]:
    code = ("import importlib.metadata as m, platform, sys; print('python', platform.python_version()); "
            f"[print(n, m.version(n)) for n in {SHOWN!r}]")
    lines = subprocess.run([python, "-c", code], check=True, capture_output=True, text=True).stdout.splitlines()
    return dict(line.split(" ", 1) for line in lines)


def check_floors_kept(versions: dict[str, str]) -> None:
    """At the old end, installing the helpers must not have moved any dependency off its floor."""
    moved = {name: versions[name] for name, floor in floors().items()
             if versions[name].split("+")[0] != floor and versions[name].split("+")[0] != f"{floor}.0"}
    if moved:
        sys.exit(f"These are not at their declared floor in .venv-oldest: {moved}. Delete .venv-oldest and rerun.")


def testing_environment(work: Path) -> dict[str, str]:
    """The environment of the tests and notebooks: smoke mode, and the installed-copy check on the path."""
    (work / "installed_helpers_check.py").write_text(INSTALLED_CHECK)
    (work / "no-site-pip-settings").mkdir(exist_ok=True)
    environment = clean_environment()
    # XDG_CONFIG_DIRS: not this machine's site-wide pip settings (a cap on torch), which tests/test_install.py's
    # pip would otherwise apply to the torch it must keep.
    environment.update(SMOKE_TEST="1", PYTHONPATH=str(work), XDG_CONFIG_DIRS=str(work / "no-site-pip-settings"))
    return environment


def check_kernel_import(python: Path, folder: Path, work: Path) -> None:
    """A Python started in folder, as a notebook's kernel is, imports the installed helpers."""
    code = "import helpers, sysconfig; print(helpers.__file__.startswith(sysconfig.get_path('purelib')))"
    installed = subprocess.run([python, "-c", code], cwd=folder, env=testing_environment(work), check=True,
                               capture_output=True, text=True).stdout.strip()
    if installed != "True":
        sys.exit(f"A Python started in {folder} does not import the installed helpers: the notebooks would not test "
                 "them.")


def pytest(python: Path, arguments: list, cwd: Path, work: Path, report: Path) -> dict[str, int]:
    """Run pytest in smoke mode with the installed-copy check; the counts of its JUnit report."""
    environment = testing_environment(work)
    # -P: not the current folder first on sys.path; --import-mode=append: not the checkout's helpers either.
    command = [python, "-P", "-m", "pytest", "-p", "installed_helpers_check", "-p", "no:cacheprovider",
               "--import-mode=append", "-rs", f"--junitxml={report}", *arguments]
    status = subprocess.run(list(map(str, command)), cwd=cwd, env=environment).returncode
    counts = junit_counts(report) if report.exists() else {}
    counts["status"] = 1 if status == 5 else status  # 5: pytest collected nothing, which must fail
    return counts


def junit_counts(report: Path) -> dict[str, int]:
    suite = ElementTree.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    numbers = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    numbers["passed"] = numbers["tests"] - numbers["failures"] - numbers["errors"] - numbers["skipped"]
    return numbers


def test_end(end: str) -> dict:
    """Prepare one end, install the helpers from a git URL, run the unit tests and the notebooks."""
    print(f"\n=== {end} ===", flush=True)
    with tempfile.TemporaryDirectory(prefix=f"test-versions-{end}-") as folder:
        work = Path(folder)
        python, pip_settings = prepare_environment(end, work)
        repository = commit_working_tree(work / "repository")
        install_helpers(python, pip_settings, repository)
        versions = installed_versions(python)
        if end == "oldest":
            check_floors_kept(versions)
        run([python, "-P", "scripts/get_test_data.py"], cwd=repository)  # the first step of `make test`
        unit = pytest(python, ["tests"], repository, work, work / "unit.xml")
        student = work / "student"  # a folder outside any checkout, with only the notebooks in it
        student.mkdir()
        for notebook in sorted((repository / "notebooks").glob("*.ipynb")):
            shutil.copy2(notebook, student)
        check_kernel_import(python, student, work)
        notebooks = pytest(python, ["--nbval-lax", "--nbval-current-env", f"--rootdir={student}",
                                    *sorted(p.name for p in student.glob("*.ipynb"))], student, work,
                           work / "notebooks.xml")
    return {"end": end, "versions": versions, "unit": unit, "notebooks": notebooks}


def describe(result: dict) -> str:
    versions = ", ".join(f"{name} {version}" for name, version in result["versions"].items())
    unit, cells = result["unit"], result["notebooks"]
    return (f"{result['end']}: {versions}\n"
            f"  unit tests: {unit.get('passed', 0)} passed, {unit.get('skipped', 0)} skipped, "
            f"{unit.get('failures', 0) + unit.get('errors', 0)} failed (pytest exit {unit['status']})\n"
            f"  notebook cells (5 notebooks, smoke mode): {cells.get('passed', 0)} passed, "
            f"{cells.get('failures', 0) + cells.get('errors', 0)} failed (pytest exit {cells['status']})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ends", nargs="*", metavar="oldest|newest", help="the ends to test (default: both)")
    ends = parser.parse_args().ends or ["oldest", "newest"]
    if not set(ends) <= {"oldest", "newest"}:
        parser.error(f"the ends are 'oldest' and 'newest', not {' '.join(ends)}")
    print("test-versions: the first run downloads several GB (torch and its CUDA libraries for each end) into "
          f"{', '.join(f'.venv-{end}' for end in ends)}; later runs reuse them.", flush=True)
    results = [test_end(end) for end in ends]
    print("\n=== test-versions summary ===")
    for result in results:
        print(describe(result))
    return int(any(result[part]["status"] for result in results for part in ("unit", "notebooks")))


if __name__ == "__main__":
    sys.exit(main())
