"""Make sure the real data of the real-data tests is on this machine (`make test` runs this first).

Fashion-MNIST, which they need, in order: a copy already on disk ($DATA_DIR or data/, in torchvision's
layout or not; where load_dataset finds a system copy, Debian's package); Debian's dataset-fashion-mnist
where apt-get may run without a password; torchvision's download where its host answers (a probe bounded
by a deadline first). Where none of them works it stops with one sentence that names the command to run.

CIFAR-10, which the real-CIFAR tests use where it is: the archive or folder that CIFAR10_ARCHIVE names
(an archive is unpacked once into data/cifar10-jpeg; a folder is used in place), else a copy already in
$DATA_DIR or data/. Without one those tests are skipped, saying so; a CIFAR10_ARCHIVE that cannot be
used, or an incomplete copy (CIFAR-10 has 5,000 training and 1,000 test images per class), stops here
with the fix. An archive is read in full before anything is written: one that would write more than
MAX_MEMBERS files or MAX_BYTES, more than data/ has free, or anything outside its folder, a link, a name
no file system takes or a file where it also needs a folder, is refused whole.
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
import time
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
REPO_DATA = ROOT / "data"
DEBIAN_PACKAGE = "dataset-fashion-mnist"
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
APT_TIMEOUT_S = 300
# A machine without network must not wait long before the next option: each wait of the probe is cut at
# PROBE_TIMEOUT_S, and all of it (every mirror, however slowly a server sends its headers) at PROBE_DEADLINE_S.
PROBE_TIMEOUT_S = 5
PROBE_DEADLINE_S = 15

# CIFAR-10 as helpers/datasets.py and image_folders.py know it (tests/test_get_test_data.py keeps these equal to
# theirs; mirrored, so that the CIFAR-10 step runs without importing torch): the class folders of an image folder,
# the names load_dataset finds one under in a data folder, and what counts as an image.
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_FOLDERS = ("cifar10-jpeg", "cifar10", "CIFAR-10-images")
CIFAR10_UNPACKED = "cifar10-jpeg"  # the folder in data/ an archive is unpacked into
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}  # the files an image folder's class folders count as images
CIFAR10_IMAGES = {"train": 5_000, "test": 1_000}  # images per class in each split: less is a partial copy
STAGING_PREFIX = f".{CIFAR10_UNPACKED}.unpacking-"  # then the unpacking process's id: .cifar10-jpeg.unpacking-<pid>-*
# What an archive may write into data/, read from its headers before anything is written. CIFAR-10 is 60,000
# images in 23 folders, 55 MB as JPEG and under 200 MB even as PNG; the bounds leave room for a copy's extras (a
# decoded cache, macOS's ._ files) and refuse an archive that would fill the disk.
MAX_MEMBERS = 150_000
MAX_BYTES = 500_000_000
BLOCK_BYTES = 4096  # the least a file or folder takes on disk, counted in the free-space check
NAME_MAX_BYTES = 255  # the longest file or folder name Linux's, macOS's and Windows' file systems take
PATH_MAX_BYTES = 4095  # the longest path Linux opens
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
    """The first folder with all four IDX files (gzipped or not), where the tests' fashion_mnist_dir looks: in
    $DATA_DIR or data/, then where load_dataset finds a system copy (helpers.environment.dataset_folders)."""
    from helpers.environment import dataset_folders

    roots = dict.fromkeys([*data_roots(), *dataset_folders("fashion_mnist")])
    for folder in (folder for root in roots for folder in (root / "FashionMNIST" / "raw", root)):
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


def host_answers(urls: list[str]) -> bool:
    """True when one of the hosts behind urls answers at all (any HTTP status), all of them tried within
    PROBE_DEADLINE_S: the helpers' bounded probe, which a server that drips its headers cannot hold."""
    from helpers.downloads import host_answers as answers

    deadline = time.monotonic() + PROBE_DEADLINE_S
    return any(answers(url, timeout=PROBE_TIMEOUT_S, deadline=deadline) for url in urls)


def download(root: Path) -> bool:
    """Download into root/FashionMNIST/raw with the helpers' bounded download, if one of its mirrors answers."""
    from torchvision import datasets

    from helpers.datasets import DatasetUnavailableError, load_dataset

    if not host_answers(datasets.FashionMNIST.mirrors):
        print(f"torchvision's Fashion-MNIST host did not answer within {PROBE_DEADLINE_S} s (no network here, "
              "or the host is down).")
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
    """A CIFAR-10 copy (CIFAR10_ARCHIVE's, or one in data/) that cannot be used; the message says what, and the fix."""


TRUSTED_SOURCE = "Use cifar10-jpeg.tar.xz from a source you trust."


def count_images(folder: Path) -> int | None:
    """How many images (by their suffix, as load_dataset counts them; no dotfiles) a class folder holds; None
    when there is no such folder."""
    if not folder.is_dir():
        return None
    return sum(1 for entry in os.scandir(folder) if not entry.name.startswith(".")
               and os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES and entry.is_file())


def cifar10_shortfalls(folder: Path) -> list[str]:
    """What keeps folder from being all of CIFAR-10, class folder by class folder; empty when it is complete."""
    shortfalls = []
    for split, expected in CIFAR10_IMAGES.items():
        for name in CIFAR10_CLASSES:
            count = count_images(folder / split / name)
            if count is None:
                shortfalls.append(f"{split}/{name}/ is missing")
            elif count != expected:
                shortfalls.append(f"{split}/{name}/ has {count:,} image{'' if count == 1 else 's'}, not {expected:,}")
    return shortfalls


def is_complete_cifar10(folder: Path) -> bool:
    """True when train/ and test/ hold the ten class folders with all of CIFAR-10's images (5,000 and 1,000 each)."""
    return not cifar10_shortfalls(folder)


def looks_like_cifar10(folder: Path) -> bool:
    """True when folder is meant as a CIFAR-10 image folder: it has one of its class folders, complete or not."""
    return any((folder / split / name).is_dir() for split in CIFAR10_IMAGES for name in CIFAR10_CLASSES)


def what_is_missing(folder: Path) -> str:
    """The shortfalls of a partial copy in a few words: the first three, and how many more."""
    shortfalls = cifar10_shortfalls(folder)
    more = f", and {len(shortfalls) - 3} more" if len(shortfalls) > 3 else ""
    return "; ".join(shortfalls[:3]) + more


def candidates(folder: Path) -> tuple[Path, ...]:
    """Where an image folder may be in a folder given as CIFAR-10: the folder itself, or under one of its names."""
    return (folder, *(folder / name for name in CIFAR10_FOLDERS))


def find_cifar10() -> Path | None:
    """The first data folder ($DATA_DIR, data/) where load_dataset finds CIFAR-10: torchvision's copy, or a complete
    image folder in it (or it is one). A partial image folder there stops with what it lacks: the real-CIFAR
    tests would read it."""
    for root in data_roots():
        if (root / "cifar-10-batches-py").is_dir() or any(is_complete_cifar10(folder) for folder in candidates(root)):
            return root
        partial = next((folder for folder in candidates(root) if looks_like_cifar10(folder)), None)
        if partial is not None:
            raise ArchiveError(f"{partial} is an incomplete copy of CIFAR-10 ({what_is_missing(partial)}), which the "
                               "real-CIFAR tests would read: complete it or delete it, then run `make test-data` "
                               "again.")
    return None


def use_named_copy(path: Path) -> Path:
    """The folder CIFAR10_ARCHIVE names (used in place), or data/cifar10-jpeg unpacked from its archive."""
    if path.is_dir():
        if any(is_complete_cifar10(folder) for folder in candidates(path)):
            return path
        partial = next((folder for folder in candidates(path) if looks_like_cifar10(folder)), None)
        if partial is not None:
            raise ArchiveError(f"CIFAR10_ARCHIVE={path} holds an incomplete copy of CIFAR-10 in {partial} "
                               f"({what_is_missing(partial)}): point CIFAR10_ARCHIVE at a complete copy, or at "
                               "cifar10-jpeg.tar.xz.")
        raise ArchiveError(
            f"CIFAR10_ARCHIVE={path} is a folder without a CIFAR-10 image folder "
            f"(train/<class>/ and test/<class>/ for all ten classes, in it or in {'/, '.join(CIFAR10_FOLDERS)}/ "
            "inside it): point CIFAR10_ARCHIVE at such a folder or at cifar10-jpeg.tar.xz."
        )
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
        raise ArchiveError(f"{target} is there but incomplete ({what_is_missing(target)}; an old copy, or one made "
                           "by hand): delete it, then run `make test-data` again to unpack the archive afresh.")
    if not archive.name.lower().endswith(ARCHIVE_SUFFIXES):
        raise ArchiveError(f"CIFAR10_ARCHIVE={archive} is not an archive this script reads "
                           f"({', '.join(ARCHIVE_SUFFIXES)}): point it at cifar10-jpeg.tar.xz or an unpacked copy.")
    data.mkdir(parents=True, exist_ok=True)
    print(f"Unpacking {archive} into {target} (once).")
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=data))
    try:
        extract(archive, staging)
        unpacked = next((folder for folder in (staging, *sorted(staging.iterdir())) if is_complete_cifar10(folder)),
                        None)
        if unpacked is None:
            raise ArchiveError(archive_without_cifar10(archive, staging))
        unpacked.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def archive_without_cifar10(archive: Path, staging: Path) -> str:
    """Why an unpacked archive is no CIFAR-10: what a partial copy in it lacks, or that it holds none."""
    partial = next((folder for folder in (staging, *sorted(staging.iterdir())) if looks_like_cifar10(folder)), None)
    if partial is not None:
        return (f"{archive} holds an incomplete copy of CIFAR-10 ({what_is_missing(partial)}): point "
                "CIFAR10_ARCHIVE at a complete cifar10-jpeg.tar.xz.")
    return (f"{archive} holds no CIFAR-10 image folder (train/<class>/ and test/<class>/ for all ten classes): "
            "point CIFAR10_ARCHIVE at cifar10-jpeg.tar.xz.")


# --------------------------------------------------------------------------- reading an archive safely


class Member(NamedTuple):
    """What the headers of an archive say about one member."""

    name: str
    is_folder: bool
    size: int  # the bytes it writes


def extract(archive: Path, destination: Path) -> None:
    """Unpack a tar (plain, gzip or xz) or zip archive into destination, after reading all its headers: nothing is
    written unless every member is acceptable (see refuse_bad_members) and the whole fits within MAX_MEMBERS,
    MAX_BYTES and the free space."""
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as zipped:  # zipfile stops each member at the size its header declares
                members = read_headers(archive, (Member(info.filename, info.is_dir(), info.file_size)
                                                 for info in zipped.infolist()))
                refuse_bad_members(archive, members, destination)
                zipped.extractall(destination)
            return
        with tarfile.open(archive) as tarred:
            members = read_headers(archive, (Member(member.name, member.isdir(), member.size if member.isfile() else 0)
                                             for member in tarred))
            odd = next((member.name for member in tarred.getmembers() if not (member.isfile() or member.isdir())),
                       None)
            if odd is not None:
                raise ArchiveError(f"{archive} holds {odd!r}, a link or device file: refusing to unpack it. "
                                   f"{TRUSTED_SOURCE}")
            refuse_bad_members(archive, members, destination)
            # filter="data" (Python 3.11.4+) refuses what refuse_bad_members might miss; older Pythons lack it.
            tarred.extractall(destination, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    except UNREADABLE as error:
        raise ArchiveError(f"CIFAR10_ARCHIVE={archive} is not a readable archive ({type(error).__name__}: {error}): "
                           "point it at cifar10-jpeg.tar.xz (or an unpacked copy).") from error
    except OSError as error:  # what the checks cannot foresee: another program filling the disk meanwhile...
        raise ArchiveError(f"Unpacking {archive} into {destination.parent} failed ({error.strerror or error}"
                           f"{f': {error.filename}' if error.filename else ''}): make room there, or fix what the "
                           "error names, then run `make test-data` again.") from error


def read_headers(archive: Path, members: Iterable[Member]) -> list[Member]:
    """Every member the archive's headers list, stopping at the first past MAX_MEMBERS or MAX_BYTES in all: a tar's
    headers are read one by one, so an archive of millions of tiny members is refused before it fills memory."""
    listed, total = [], 0
    for member in members:
        listed.append(member)
        total += member.size
        if len(listed) > MAX_MEMBERS:
            raise ArchiveError(f"{archive} holds more than {MAX_MEMBERS:,} files and folders, where CIFAR-10 has "
                               f"about 60,000: refusing to unpack it. {TRUSTED_SOURCE}")
        if total > MAX_BYTES:
            raise ArchiveError(f"{archive} would write more than {MAX_BYTES / 1e6:,.0f} MB, where CIFAR-10 takes "
                               f"about 55 MB as JPEG: refusing to unpack it. {TRUSTED_SOURCE}")
    return listed


def refuse_bad_members(archive: Path, members: list[Member], destination: Path) -> None:
    """Stop before unpacking anything at a member that would land outside destination, whose name no file system
    takes, or that is a file where another member needs a folder; or when the whole does not fit on the disk."""
    inside = destination.resolve()
    files, folders = set(), set()
    for member in members:
        path = PurePosixPath(member.name)
        if path.is_absolute() or not (inside / member.name).resolve().is_relative_to(inside):
            raise ArchiveError(f"{archive} holds {member.name!r}, which would land outside {destination}: refusing "
                               f"to unpack it. {TRUSTED_SOURCE}")
        refuse_long_names(archive, member.name, inside)
        (folders if member.is_folder else files).add(path)
        folders.update(parent for parent in path.parents if parent != PurePosixPath("."))
    clash = sorted(files & folders)
    if clash:
        raise ArchiveError(f"{archive} holds {str(clash[0])!r} both as a file and as a folder, so it cannot be "
                           f"unpacked: refusing it. {TRUSTED_SOURCE}")
    refuse_without_room(archive, members, destination)


def refuse_long_names(archive: Path, name: str, inside: Path) -> None:
    """Stop at a member name that no file system takes: a part over NAME_MAX_BYTES, or a path over PATH_MAX_BYTES."""
    for part in PurePosixPath(name).parts:
        length = len(os.fsencode(part))
        if length > NAME_MAX_BYTES:
            raise ArchiveError(f"{archive} holds a member named {part[:40]!r}... ({length:,} bytes long), where a "
                               f"file or folder name may have at most {NAME_MAX_BYTES} bytes: refusing to unpack it. "
                               f"{TRUSTED_SOURCE}")
    length = len(os.fsencode(str(inside / name)))
    if length > PATH_MAX_BYTES:
        raise ArchiveError(f"{archive} holds {name[:40]!r}..., whose path here would be {length:,} bytes long, where "
                           f"a path may have at most {PATH_MAX_BYTES:,}: refusing to unpack it. {TRUSTED_SOURCE}")


def free_space(folder: Path) -> int:
    """Bytes free to this user on the disk that holds folder."""
    return shutil.disk_usage(folder).free


def refuse_without_room(archive: Path, members: list[Member], destination: Path) -> None:
    """Stop before unpacking when the members would not fit: their bytes, and a block more for each (the rest of
    its last block, or a folder's own)."""
    needed = sum(member.size for member in members) + len(members) * BLOCK_BYTES
    free = free_space(destination)
    if needed > free:
        raise ArchiveError(f"Unpacking {archive} needs about {needed / 1e6:,.0f} MB in {destination.parent}, which "
                           f"has {free / 1e6:,.0f} MB free: make room there, then run `make test-data` again.")


def remove_dead_unpacks(data: Path) -> list[Path]:
    """Remove the temporary folders that killed unpacks left in data/ (SIGKILL leaves no time to clean up), never
    one that a live process is still filling; returns what was removed."""
    removed = []
    for folder in sorted(data.glob(f"{STAGING_PREFIX}*")) if data.is_dir() else ():
        if folder.is_dir() and not folder.is_symlink() and not unpacker_alive(folder):
            shutil.rmtree(folder, ignore_errors=True)
            if not folder.exists():
                removed.append(folder)
    return removed


def unpacker_alive(folder: Path) -> bool:
    """Whether the process that made this temporary folder (its id is in the name) still runs on this machine.

    A name without an id comes from a version of this script that named none; it is treated as dead: that
    version ran only before this one was checked out, in this same folder.
    """
    pid = folder.name.removeprefix(STAGING_PREFIX).split("-")[0]
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)  # signal 0: asks whether the process exists, sends nothing
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def prepare_cifar10() -> int:
    """CIFAR-10 where the tests find it, when there is a copy; 1 (with the fix) for a CIFAR10_ARCHIVE that
    cannot be used, or a partial copy. No copy at all is not a failure: the real-CIFAR tests are skipped, saying
    so. First, what killed unpacks left in data/ is removed."""
    for folder in remove_dead_unpacks(REPO_DATA):
        print(f"Removed {folder}, left by an unpack that was killed.")
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
