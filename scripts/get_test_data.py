"""Make sure the real data of the real-data tests is on this machine (`make test` runs this first).

Fashion-MNIST, which they need, in order: a copy already on disk ($DATA_DIR or data/, in torchvision's
layout or not; Debian's package); Debian's dataset-fashion-mnist where apt-get may run without a password;
torchvision's download where its host answers. Where none of them works it stops with one sentence that
names the command to run.

CIFAR-10, which the real-CIFAR tests use where it is: the archive or folder that CIFAR10_ARCHIVE names
(an archive is unpacked once into data/cifar10-jpeg; a folder is used in place), else a copy already in
$DATA_DIR or data/. Without one those tests are skipped, saying so; a CIFAR10_ARCHIVE that cannot be
used stops here with the fix.
Usage: make test-data  (or: CIFAR10_ARCHIVE=path/to/cifar10-jpeg.tar.xz python scripts/get_test_data.py)
"""

from __future__ import annotations

import gzip
import lzma
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPO_DATA = ROOT / "data"
DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
APT_TIMEOUT_S = 300
PROBE_TIMEOUT_S = 5  # a machine without network must not wait long before the next option

# CIFAR-10 as helpers/datasets.py knows it (tests/test_get_test_data.py keeps these equal to its table): the
# class folders of an image folder, and the names load_dataset finds one under in a data folder.
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_FOLDERS = ("cifar10-jpeg", "cifar10", "CIFAR-10-images")
CIFAR10_UNPACKED = "cifar10-jpeg"  # the folder in data/ an archive is unpacked into
ARCHIVE_SUFFIXES = (".tar.xz", ".txz", ".tar.gz", ".tgz", ".tar", ".zip")
# What a damaged or foreign file raises while it is read as an archive.
UNREADABLE = (tarfile.TarError, zipfile.BadZipFile, lzma.LZMAError, zlib.error, gzip.BadGzipFile, EOFError)
CIFAR10_MISSING = (
    "Real CIFAR-10 is not on this machine, so the real-CIFAR tests will be skipped: to run them, name a copy "
    "(CIFAR10_ARCHIVE=path/to/cifar10-jpeg.tar.xz make test) or download torchvision's (about 170 MB): "
    "python -c \"from torchvision import datasets; datasets.CIFAR10('data', download=True)\""
)


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


def get_fashion_mnist() -> int:
    """Fashion-MNIST where the tests find it; 1 (after saying what to do) where it cannot be had."""
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


# --------------------------------------------------------------------------- CIFAR-10 (optional)


class ArchiveError(Exception):
    """CIFAR10_ARCHIVE names something that cannot be used; the message says what, and the fix."""


def has_files(folder: Path) -> bool:
    return folder.is_dir() and any(entry.is_file() and not entry.name.startswith(".") for entry in os.scandir(folder))


def is_complete_cifar10(folder: Path) -> bool:
    """True when train/ and test/ each hold the ten class folders, none empty (as no interrupted copy does)."""
    return all(has_files(folder / split / name) for split in ("train", "test") for name in CIFAR10_CLASSES)


def find_cifar10() -> Path | None:
    """The first data folder ($DATA_DIR, data/) where load_dataset finds CIFAR-10: torchvision's copy, or an
    image folder in it (or it is one)."""
    for root in data_roots():
        folders = (root, *(root / name for name in CIFAR10_FOLDERS))
        if (root / "cifar-10-batches-py").is_dir() or any(is_complete_cifar10(folder) for folder in folders):
            return root
    return None


def use_named_copy(path: Path) -> Path:
    """The folder CIFAR10_ARCHIVE names (used in place), or data/cifar10-jpeg unpacked from its archive."""
    if path.is_dir():
        if not any(is_complete_cifar10(folder) for folder in (path, *(path / name for name in CIFAR10_FOLDERS))):
            raise ArchiveError(
                f"CIFAR10_ARCHIVE={path} is a folder without a complete CIFAR-10 image folder "
                f"(train/<class>/ and test/<class>/ for all ten classes, in it or in {'/, '.join(CIFAR10_FOLDERS)}/ "
                "inside it): point CIFAR10_ARCHIVE at such a folder or at cifar10-jpeg.tar.xz."
            )
        return path
    if not path.is_file():
        raise ArchiveError(f"CIFAR10_ARCHIVE={path} names nothing on this machine: point it at cifar10-jpeg.tar.xz "
                           "(or an unpacked copy), or unset it to skip the real-CIFAR tests.")
    return unpack_cifar10(path, REPO_DATA)


def unpack_cifar10(archive: Path, data: Path) -> Path:
    """Unpack the archive into data/cifar10-jpeg, once: into a temporary folder inside data/, then renamed, so
    an interrupted unpack never leaves a folder that looks complete."""
    target = data / CIFAR10_UNPACKED
    if is_complete_cifar10(target):
        return target
    if target.exists():
        raise ArchiveError(f"{target} is there but incomplete (an old copy, or one made by hand): delete it, "
                           "then run `make test-data` again to unpack the archive afresh.")
    if not archive.name.lower().endswith(ARCHIVE_SUFFIXES):
        raise ArchiveError(f"CIFAR10_ARCHIVE={archive} is not an archive this script reads "
                           f"({', '.join(ARCHIVE_SUFFIXES)}): point it at cifar10-jpeg.tar.xz or an unpacked copy.")
    data.mkdir(parents=True, exist_ok=True)
    print(f"Unpacking {archive} into {target} (once).")
    staging = Path(tempfile.mkdtemp(prefix=f".{CIFAR10_UNPACKED}.unpacking-", dir=data))
    try:
        extract(archive, staging)
        unpacked = next((folder for folder in (staging, *sorted(staging.iterdir())) if is_complete_cifar10(folder)),
                        None)
        if unpacked is None:
            raise ArchiveError(f"{archive} holds no complete CIFAR-10 image folder (train/<class>/ and "
                               "test/<class>/ for all ten classes): point CIFAR10_ARCHIVE at cifar10-jpeg.tar.xz.")
        unpacked.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def extract(archive: Path, destination: Path) -> None:
    """Unpack a tar (plain, gzip or xz) or zip archive into destination, refusing any member that would land
    outside it (or, in a tar, a link or device file: a dataset of images has none)."""
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as zipped:
                refuse_escapes(archive, zipped.namelist(), destination)
                zipped.extractall(destination)
            return
        with tarfile.open(archive) as tarred:
            members = tarred.getmembers()
            refuse_escapes(archive, [member.name for member in members], destination)
            odd = next((member.name for member in members if not (member.isfile() or member.isdir())), None)
            if odd is not None:
                raise ArchiveError(f"{archive} holds {odd!r}, a link or device file: refusing to unpack it. "
                                   "Use cifar10-jpeg.tar.xz from a source you trust.")
            # filter="data" (Python 3.11.4+) refuses what refuse_escapes might miss; older Pythons lack it.
            tarred.extractall(destination, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    except UNREADABLE as error:
        raise ArchiveError(f"CIFAR10_ARCHIVE={archive} is not a readable archive ({type(error).__name__}: {error}): "
                           "point it at cifar10-jpeg.tar.xz (or an unpacked copy).") from error


def refuse_escapes(archive: Path, names: list[str], destination: Path) -> None:
    """Stop before unpacking anything if a member's path is absolute or climbs out of destination (../)."""
    inside = destination.resolve()
    for name in names:
        if Path(name).is_absolute() or not (inside / name).resolve().is_relative_to(inside):
            raise ArchiveError(f"{archive} holds {name!r}, which would land outside {destination}: refusing to "
                               "unpack it. Use cifar10-jpeg.tar.xz from a source you trust.")


def prepare_cifar10() -> int:
    """CIFAR-10 where the tests find it, when there is a copy; 1 (with the fix) for a CIFAR10_ARCHIVE that
    cannot be used. No copy at all is not a failure: the real-CIFAR tests are skipped, saying so."""
    named = os.environ.get("CIFAR10_ARCHIVE", "").strip()
    try:
        found = use_named_copy(Path(named).expanduser()) if named else find_cifar10()
    except ArchiveError as error:
        print(error, file=sys.stderr)
        return 1
    if found is None:
        print(CIFAR10_MISSING)
        return 0
    print(f"CIFAR-10 for the real-CIFAR tests: {found}")
    return 0


def main() -> int:
    fashion_mnist, cifar10 = get_fashion_mnist(), prepare_cifar10()  # both run: each says what it needs
    return fashion_mnist or cifar10


if __name__ == "__main__":
    sys.exit(main())
