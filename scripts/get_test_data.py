"""Make sure Fashion-MNIST is on this machine for the real-data tests (`make test` runs this first).

In order: a copy already on disk ($DATA_DIR or data/, in torchvision's layout or not; Debian's package);
Debian's dataset-fashion-mnist where apt-get may run without a password; torchvision's download where
its host answers. Where none of them works it stops with one sentence that names the command to run.
Usage: make test-data  (or: python scripts/get_test_data.py)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPO_DATA = ROOT / "data"
DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
APT_TIMEOUT_S = 300
PROBE_TIMEOUT_S = 5  # a machine without network must not wait long before the next option


def data_roots() -> list[Path]:
    """Where the loaders and the tests look for torchvision's copy: $DATA_DIR, then the checkout's data/."""
    roots = [Path(os.environ["DATA_DIR"]).expanduser()] if os.environ.get("DATA_DIR") else []
    return roots + [REPO_DATA]


def find_copy() -> Path | None:
    """The first folder with all four IDX files (gzipped or not), where the tests' fashion_mnist_dir looks."""
    folders = [folder for root in data_roots() for folder in (root / "FashionMNIST" / "raw", root)] + [DEBIAN_DIR]
    for folder in folders:
        if all((folder / name).is_file() or (folder / f"{name}.gz").is_file() for name in FILES):
            return folder
    return None


def apt_prefix() -> list[str] | None:
    """How apt-get can run here without a password: as root ([]), through `sudo -n`, or not at all (None)."""
    if shutil.which("apt-get") is None:
        return None
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") is None:
        return None
    asks_password = subprocess.run(["sudo", "-n", "true"], stdin=subprocess.DEVNULL, capture_output=True).returncode
    return None if asks_password else ["sudo", "-n"]


def run(command: list[str], timeout: float) -> bool:
    """Run a command without standard input; True when it succeeded in time."""
    try:
        return subprocess.run(command, stdin=subprocess.DEVNULL, timeout=timeout).returncode == 0
    except (OSError, subprocess.TimeoutExpired) as error:
        print(f"{' '.join(command)}: {error}")
        return False


def install_debian_package(prefix: list[str]) -> bool:
    """apt-get install the package; refresh the package lists (slow) only when that fails."""
    apt = [*prefix, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-qq"]
    install = [*apt, "install", "-y", DEBIAN_PACKAGE]
    if run(install, APT_TIMEOUT_S):
        return True
    print("Refreshing apt's package lists, then trying again.")
    return run([*apt, "update"], APT_TIMEOUT_S) and run(install, APT_TIMEOUT_S)


def host_answers(url: str) -> bool:
    """True when the host behind url answers at all (any HTTP status), within PROBE_TIMEOUT_S."""
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=PROBE_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False
    return True


def download(root: Path) -> bool:
    """Download into root/FashionMNIST/raw with the helpers' bounded download, if one of its mirrors answers."""
    from torchvision import datasets

    from helpers.datasets import DatasetUnavailableError, load_dataset

    if not any(host_answers(mirror) for mirror in datasets.FashionMNIST.mirrors):
        print("No network to torchvision's Fashion-MNIST host.")
        return False
    try:  # every wait bounded, and a deadline: a stalled or dripping host cannot hold `make test`
        load_dataset("fashion_mnist", data_dir=root, download=True, smoke_test=False)
        return True
    except DatasetUnavailableError as error:  # a host that answers 403, a stalled or corrupt file...
        print(f"The download failed: {str(error).strip().splitlines()[0][:300]}")
        return False


def failure_sentence() -> str:
    """What to do by hand: the one command that fits this machine."""
    if shutil.which("apt-get"):
        return (f"Fashion-MNIST, which the real-data tests need, is not on this machine and could not be fetched: "
                f"run `sudo apt-get install {DEBIAN_PACKAGE}`, then `make test` again.")
    return ("Fashion-MNIST, which the real-data tests need, is not on this machine and could not be fetched: "
            "run `make test-data` on a machine with internet and copy its data/FashionMNIST folder into data/ here "
            "(or into $DATA_DIR), then `make test` again.")


def main() -> int:
    found = find_copy()
    prefix = apt_prefix() if found is None else None
    if found is None and prefix is not None:
        print(f"Fashion-MNIST is not on this machine: installing Debian's {DEBIAN_PACKAGE} (about 30 MB; "
              f"each apt step gives up after {APT_TIMEOUT_S} s).")
        found = find_copy() if install_debian_package(prefix) else None
    if found is None:
        target = data_roots()[0]
        print(f"Fashion-MNIST is not on this machine: trying torchvision's download into {target}.")
        found = find_copy() if download(target) else None
    if found is None:
        print(failure_sentence(), file=sys.stderr)
        return 1
    print(f"Fashion-MNIST for the real-data tests: {found}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
