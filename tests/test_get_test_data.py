"""scripts/get_test_data.py, the first step of `make test`: each way of getting Fashion-MNIST, and the way it fails;
then real CIFAR-10 from the archive or folder CIFAR10_ARCHIVE names, and every archive it refuses.

apt-get and sudo are replaced by small shell scripts on PATH, torchvision's host by a local HTTP server on
127.0.0.1, and the CIFAR-10 archive by a tiny one each test builds (CIFAR-10's 5,000 and 1,000 images per class
become 2 and 1), so every branch runs here without touching the machine's packages, its data or the network.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import os
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import datasets

from helpers import environment, image_folders
from helpers.datasets import DATASETS, load_dataset
from tests.support import scripted_server

ROOT = Path(__file__).resolve().parent.parent
SMALL_CIFAR = {"train": 2, "test": 1}  # images per class in each split of the tiny CIFAR-10 the tests build
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

FAKE_APT = """#!/bin/sh
# Pretends to be apt-get: installing works only once the package lists exist (after an update).
echo "DEBIAN_FRONTEND=$DEBIAN_FRONTEND $*" >> "$FAKE_APT_LOG"
case "$*" in
  *update*) touch "$FAKE_APT_LISTS"; exit 0 ;;
  *install*)
    [ -f "$FAKE_APT_LISTS" ] || { echo "E: Unable to locate package dataset-fashion-mnist" >&2; exit 100; }
    mkdir -p "$FAKE_DEBIAN_DIR"
    for name in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
      : > "$FAKE_DEBIAN_DIR/$name.gz"
    done ;;
esac
"""

FAKE_SUDO = """#!/bin/sh
# Pretends to be sudo: with -n it runs the command, unless this account needs a password.
[ "$1" = "-n" ] && shift
[ -z "$FAKE_SUDO_ASKS_PASSWORD" ] || { echo "sudo: a password is required" >&2; exit 1; }
exec "$@"
"""


def write_executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


def closed_port_url() -> str:
    """An address on this machine where nothing listens: connecting is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}/"


@pytest.fixture
def script(tmp_path, monkeypatch):
    """The script as a module, looking only in empty folders under tmp_path, with no torchvision host."""
    spec = importlib.util.spec_from_file_location("get_test_data", ROOT / "scripts" / "get_test_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "REPO_DATA", tmp_path / "repo-data")
    monkeypatch.setattr(environment, "SYSTEM_DATASET_FOLDERS", {"fashion_mnist": (tmp_path / "debian",)})
    monkeypatch.setattr(module, "CIFAR10_IMAGES", SMALL_CIFAR)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data-dir"))
    monkeypatch.delenv("CIFAR10_ARCHIVE", raising=False)  # `make test` may name the real one: never unpack it here
    monkeypatch.setattr(datasets.FashionMNIST, "mirrors", [closed_port_url()])
    for proxy in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    return module


@pytest.fixture
def fake_apt(tmp_path, monkeypatch):
    """apt-get and sudo shims first on PATH; returns the log of apt-get's calls."""
    shims = tmp_path / "bin"
    shims.mkdir()
    write_executable(shims / "apt-get", FAKE_APT)
    write_executable(shims / "sudo", FAKE_SUDO)
    log = tmp_path / "apt.log"
    monkeypatch.setenv("PATH", f"{shims}:/usr/bin:/bin")
    monkeypatch.setenv("FAKE_APT_LOG", str(log))
    monkeypatch.setenv("FAKE_APT_LISTS", str(tmp_path / "lists"))
    monkeypatch.setenv("FAKE_DEBIAN_DIR", str(tmp_path / "debian"))
    monkeypatch.delenv("FAKE_SUDO_ASKS_PASSWORD", raising=False)
    return log


def apt_calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def touch_files(folder: Path, suffix: str = "") -> None:
    folder.mkdir(parents=True)
    for name in FILES:
        (folder / f"{name}{suffix}").write_bytes(b"")


@pytest.mark.parametrize("where, suffix", [("data-dir/FashionMNIST/raw", ""), ("data-dir", ".gz"),
                                           ("repo-data/FashionMNIST/raw", ""), ("debian", ".gz")])
def test_a_copy_on_disk_is_used_without_apt_or_download(script, fake_apt, tmp_path, capsys, where, suffix):
    touch_files(tmp_path / where, suffix)
    assert script.main() == 0
    assert f"Fashion-MNIST for the real-data tests: {tmp_path / where}" in capsys.readouterr().out
    assert apt_calls(fake_apt) == []


def test_an_incomplete_copy_does_not_count(script, tmp_path):
    touch_files(tmp_path / "data-dir", ".gz")
    (tmp_path / "data-dir" / f"{FILES[0]}.gz").unlink()
    assert script.find_copy() is None


@pytest.mark.parametrize("lists_exist", [True, False], ids=["fresh-lists", "no-lists"])
@pytest.mark.parametrize("user", ["root", "sudo-without-password"])
def test_debian_package_is_installed_and_apt_update_runs_only_when_needed(
        script, fake_apt, tmp_path, monkeypatch, lists_exist, user):
    if lists_exist:
        (tmp_path / "lists").touch()
    monkeypatch.setattr(script.os, "geteuid", lambda: 0 if user == "root" else 1000)
    assert script.shutil.which("apt-get") == str(tmp_path / "bin" / "apt-get")  # never the real one
    assert script.main() == 0
    install = "DEBIAN_FRONTEND=noninteractive -qq install -y dataset-fashion-mnist"
    update = "DEBIAN_FRONTEND=noninteractive -qq update"
    assert apt_calls(fake_apt) == ([install] if lists_exist else [install, update, install])
    assert script.find_copy() == tmp_path / "debian"


def test_sudo_that_asks_for_a_password_is_never_used(script, fake_apt, monkeypatch, capsys):
    monkeypatch.setattr(script.os, "geteuid", lambda: 1000)
    monkeypatch.setenv("FAKE_SUDO_ASKS_PASSWORD", "1")
    assert script.main() == 1
    assert apt_calls(fake_apt) == []
    assert capsys.readouterr().err.splitlines() == [
        "Fashion-MNIST, which the real-data tests need, is not on this machine and could not be fetched: "
        "run `sudo apt-get install dataset-fashion-mnist`, then `make test` again."
    ]


def test_failed_apt_install_falls_back_to_the_download(script, fake_apt, tmp_path, monkeypatch):
    (tmp_path / "lists").touch()
    monkeypatch.setenv("FAKE_DEBIAN_DIR", str(tmp_path / "not-where-the-files-should-be"))
    monkeypatch.setattr(script.os, "geteuid", lambda: 0)
    tried = []
    monkeypatch.setattr(script, "download", lambda root: tried.append(root) or False)
    assert script.main() == 1
    assert len(apt_calls(fake_apt)) == 1 and tried == [tmp_path / "data-dir"]


def test_no_apt_and_no_network_fails_at_once_with_one_sentence(script, tmp_path, monkeypatch, capsys):
    (tmp_path / "empty-bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    started = time.monotonic()
    assert script.main() == 1
    assert time.monotonic() - started < script.PROBE_TIMEOUT_S
    output = capsys.readouterr()
    assert "torchvision's Fashion-MNIST host did not answer" in output.out
    assert output.err.splitlines() == [
        "Fashion-MNIST, which the real-data tests need, is not on this machine and could not be fetched: "
        "run `make test-data` on a machine with internet and copy its data/FashionMNIST folder into data/ here "
        "(or into $DATA_DIR), then `make test` again."
    ]


def idx_gz(path: Path, magic: int, shape: tuple[int, ...], values: bytes) -> None:
    header = bytes([0, 0, 8, magic]) + b"".join(size.to_bytes(4, "big") for size in shape)
    path.write_bytes(gzip.compress(header + values, mtime=0))


@pytest.fixture
def local_mirror(tmp_path, monkeypatch):
    """A tiny Fashion-MNIST (3 training and 2 test images) served over HTTP from this machine."""
    served = tmp_path / "mirror"
    served.mkdir()
    for split, count in (("train", 3), ("t10k", 2)):
        idx_gz(served / f"{split}-images-idx3-ubyte.gz", 3, (count, 28, 28), bytes(range(count)) * 28 * 28)
        idx_gz(served / f"{split}-labels-idx1-ubyte.gz", 1, (count,), bytes(range(count)))
    resources = [(f"{name}.gz", hashlib.md5((served / f"{name}.gz").read_bytes()).hexdigest()) for name in FILES]
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(datasets.FashionMNIST, "mirrors", [f"http://127.0.0.1:{server.server_port}/"])
    monkeypatch.setattr(datasets.FashionMNIST, "resources", resources)
    yield
    server.shutdown()
    server.server_close()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output to what the script prints
        pass


def test_without_apt_torchvision_downloads_where_the_loaders_look(script, local_mirror, tmp_path, monkeypatch):
    (tmp_path / "empty-bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert script.main() == 0
    assert script.find_copy() == tmp_path / "data-dir" / "FashionMNIST" / "raw"
    test_set = datasets.FashionMNIST(tmp_path / "data-dir", train=False, download=False)
    assert tuple(test_set.data.shape) == (2, 28, 28) and test_set.targets.tolist() == [0, 1]


# ----------------------------------------------------------------- CIFAR-10 from CIFAR10_ARCHIVE

CIFAR = DATASETS["cifar10"]


def cifar_folder(folder: Path, counts: dict[str, int] = SMALL_CIFAR) -> Path:
    """A tiny CIFAR-10 image folder: counts[split] random 32x32 JPEGs per class and split (PNGs for the airplanes,
    to compare)."""
    generator = np.random.default_rng(0)
    for split, count in counts.items():
        for name in CIFAR.classes:
            (folder / split / name).mkdir(parents=True)
            for number in range(1, count + 1):
                pixels = generator.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                suffix = "png" if name == "airplane" else "jpg"
                Image.fromarray(pixels).save(folder / split / name / f"{number:04d}.{suffix}")
    return folder


def archive_of(folder: Path, archive: Path) -> Path:
    """folder packed as archive (.tar.xz, .tar.gz, .tar or .zip), with folder's name at the top, as the real one."""
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive, "w") as zipped:
            for path in sorted(folder.rglob("*")):
                zipped.write(path, path.relative_to(folder.parent).as_posix())
        return archive
    mode = {".xz": "w:xz", ".gz": "w:gz", ".tar": "w"}[archive.suffix]
    with tarfile.open(archive, mode) as tarred:
        tarred.add(folder, arcname=folder.name)
    return archive


@pytest.fixture
def cifar_archive(tmp_path):
    return archive_of(cifar_folder(tmp_path / "made" / "cifar10-jpeg"), tmp_path / "cifar10-jpeg.tar.xz")


def unpacked(tmp_path) -> Path:
    return tmp_path / "repo-data" / "cifar10-jpeg"


def leftovers(tmp_path) -> list[str]:
    """What an unpack left in data/ besides data/cifar10-jpeg: never a temporary folder."""
    return sorted(path.name for path in (tmp_path / "repo-data").iterdir() if path.name != "cifar10-jpeg")


def test_the_script_knows_cifar10_as_the_helpers_do(script):
    assert script.CIFAR10_CLASSES == CIFAR.classes and script.CIFAR10_FOLDERS == CIFAR.image_folders
    assert script.CIFAR10_UNPACKED in CIFAR.image_folders and script.IMAGE_SUFFIXES == image_folders.IMAGE_SUFFIXES
    fresh = importlib.util.module_from_spec(importlib.util.spec_from_file_location("fresh", script.__file__))
    fresh.__spec__.loader.exec_module(fresh)
    assert fresh.CIFAR10_IMAGES == {"train": 5_000, "test": 1_000}  # the script's own, not this file's tiny one


@pytest.mark.parametrize("suffix", [".tar.xz", ".tar.gz", ".tar", ".zip"])
def test_an_archive_is_unpacked_into_data_where_load_dataset_finds_it(script, tmp_path, monkeypatch, capsys, suffix):
    made = cifar_folder(tmp_path / "made" / "cifar10-jpeg")
    monkeypatch.setenv("CIFAR10_ARCHIVE", str(archive_of(made, tmp_path / f"cifar10-jpeg{suffix}")))
    assert script.prepare_cifar10() == 0
    assert f"CIFAR-10 for the real-CIFAR tests: {unpacked(tmp_path)}" in capsys.readouterr().out
    assert leftovers(tmp_path) == []
    data = load_dataset("cifar10", data_dir=tmp_path / "repo-data", download=False, smoke_test=False)
    with Image.open(made / "train" / "airplane" / "0001.png") as image:
        expected = torch.from_numpy(np.array(image)).permute(2, 0, 1)
    assert torch.equal(data.train_images[0], expected)
    assert data.train_labels.tolist() == [label for label in range(10) for _ in range(SMALL_CIFAR["train"])]


def test_a_second_run_finds_the_unpacked_copy_and_unpacks_nothing(script, cifar_archive, tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR10_ARCHIVE", str(cifar_archive))
    assert script.prepare_cifar10() == 0
    monkeypatch.setattr(script, "extract", lambda *args: pytest.fail("the archive was unpacked again"))
    assert script.prepare_cifar10() == 0
    assert script.is_complete_cifar10(unpacked(tmp_path))


def test_a_folder_is_used_in_place(script, tmp_path, monkeypatch, capsys):
    folder = cifar_folder(tmp_path / "mine" / "cifar10-jpeg")
    for named in (folder, folder.parent):  # the image folder itself, or a folder that holds it
        monkeypatch.setenv("CIFAR10_ARCHIVE", str(named))
        assert script.prepare_cifar10() == 0
        assert f"CIFAR-10 for the real-CIFAR tests: {named}" in capsys.readouterr().out
    assert not (tmp_path / "repo-data").exists(), "nothing is copied"


def test_an_interrupted_unpack_leaves_nothing_that_looks_complete(script, cifar_archive, tmp_path, monkeypatch):
    real_extract = script.extract

    def interrupted(archive, destination):
        real_extract(archive, destination)
        raise KeyboardInterrupt  # Ctrl-C after the files are out, before the rename

    monkeypatch.setenv("CIFAR10_ARCHIVE", str(cifar_archive))
    monkeypatch.setattr(script, "extract", interrupted)
    with pytest.raises(KeyboardInterrupt):
        script.prepare_cifar10()
    assert not unpacked(tmp_path).exists() and leftovers(tmp_path) == []


def test_without_a_copy_the_real_cifar_tests_are_skipped_saying_how_to_get_one(script, capsys):
    assert script.prepare_cifar10() == 0
    output = capsys.readouterr()
    assert output.out.splitlines() == [script.CIFAR10_MISSING] and output.err == ""
    assert "CIFAR10_ARCHIVE=" in script.CIFAR10_MISSING and "download=True" in script.CIFAR10_MISSING


def test_a_copy_in_data_is_found_without_cifar10_archive(script, tmp_path, capsys):
    cifar_folder(tmp_path / "data-dir" / "CIFAR-10-images")
    assert script.prepare_cifar10() == 0
    assert f"CIFAR-10 for the real-CIFAR tests: {tmp_path / 'data-dir'}" in capsys.readouterr().out


def fails_naming(script, capsys, *names: str) -> str:
    """prepare_cifar10 fails, and says on stderr what went wrong: every one of names is in its message."""
    assert script.prepare_cifar10() == 1
    message = capsys.readouterr().err
    assert all(name in message for name in names), message
    return message


def test_a_missing_archive_fails_naming_it(script, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CIFAR10_ARCHIVE", str(tmp_path / "nowhere.tar.xz"))
    fails_naming(script, capsys, str(tmp_path / "nowhere.tar.xz"), "CIFAR10_ARCHIVE")


@pytest.mark.parametrize("name, content", [("cifar10-jpeg.tar.xz", b"not an archive"), ("notes.txt", b"hello"),
                                           ("cifar10-jpeg.zip", b"PK\x03\x04 cut short")])
def test_a_file_that_is_not_an_archive_fails_naming_it(script, tmp_path, monkeypatch, capsys, name, content):
    (tmp_path / name).write_bytes(content)
    monkeypatch.setenv("CIFAR10_ARCHIVE", str(tmp_path / name))
    fails_naming(script, capsys, str(tmp_path / name))
    assert not unpacked(tmp_path).exists()
    assert not (tmp_path / "repo-data").exists() or leftovers(tmp_path) == []


def test_an_archive_without_cifar10_fails(script, tmp_path, monkeypatch, capsys):
    (tmp_path / "other" / "train").mkdir(parents=True)
    monkeypatch.setenv("CIFAR10_ARCHIVE", str(archive_of(tmp_path / "other", tmp_path / "other.tar.gz")))
    fails_naming(script, capsys, str(tmp_path / "other.tar.gz"))
    assert not unpacked(tmp_path).exists() and leftovers(tmp_path) == []


def test_a_folder_without_cifar10_fails(script, tmp_path, monkeypatch, capsys):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("CIFAR10_ARCHIVE", str(tmp_path / "empty"))
    fails_naming(script, capsys, str(tmp_path / "empty"))


def escaping_tar(path: Path, member: str) -> Path:
    with tarfile.open(path, "w:xz") as tarred:
        info = tarfile.TarInfo(member)
        info.size = 5
        tarred.addfile(info, io.BytesIO(b"owned"))
    return path


def escaping_zip(path: Path, member: str) -> Path:
    with zipfile.ZipFile(path, "w") as zipped:
        zipped.writestr(member, b"owned")
    return path


@pytest.mark.parametrize("member", ["../escaped.txt", "cifar10-jpeg/../../escaped.txt", "/tmp/escaped.txt"])
@pytest.mark.parametrize("make", [escaping_tar, escaping_zip], ids=["tar", "zip"])
def test_an_archive_whose_paths_escape_data_is_refused(script, tmp_path, monkeypatch, capsys, member, make):
    archive = make(tmp_path / ("evil.zip" if make is escaping_zip else "evil.tar.xz"), member)
    monkeypatch.setenv("CIFAR10_ARCHIVE", str(archive))
    fails_naming(script, capsys, repr(member))
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "repo-data" / "escaped.txt").exists()
    assert leftovers(tmp_path) == []


def test_a_link_in_a_tar_is_refused(script, tmp_path, monkeypatch, capsys):
    archive = tmp_path / "links.tar"
    with tarfile.open(archive, "w") as tarred:
        link = tarfile.TarInfo("cifar10-jpeg/passwd")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tarred.addfile(link)
    monkeypatch.setenv("CIFAR10_ARCHIVE", str(archive))
    fails_naming(script, capsys, "cifar10-jpeg/passwd")
    assert leftovers(tmp_path) == []


def test_an_incomplete_unpacked_copy_is_never_deleted_but_named(script, cifar_archive, tmp_path, monkeypatch, capsys):
    (unpacked(tmp_path) / "train" / "cat").mkdir(parents=True)
    monkeypatch.setenv("CIFAR10_ARCHIVE", str(cifar_archive))
    fails_naming(script, capsys, str(unpacked(tmp_path)), "delete")
    assert (unpacked(tmp_path) / "train" / "cat").is_dir()


def test_a_bad_cifar10_archive_fails_make_test_data(script, tmp_path, monkeypatch):
    touch_files(tmp_path / "data-dir", ".gz")  # Fashion-MNIST is there
    monkeypatch.setenv("CIFAR10_ARCHIVE", str(tmp_path / "nowhere.tar.xz"))
    assert script.main() == 1
    monkeypatch.delenv("CIFAR10_ARCHIVE")
    assert script.main() == 0  # no CIFAR-10 at all is no failure


# ----------------------------------------------------------------- Fashion-MNIST: one list of places, one bounded probe


def test_the_script_and_load_dataset_find_the_same_system_copy(script, fake_apt, tmp_path, capsys):
    """Debian's folder is listed once (helpers.environment.dataset_folders): what `make test-data` finds there,
    load_dataset reads, without naming it."""
    (tmp_path / "debian").mkdir()
    for split, count in (("train", 3), ("t10k", 2)):
        idx_gz(tmp_path / "debian" / f"{split}-images-idx3-ubyte.gz", 3, (count, 28, 28), bytes(range(count)) * 784)
        idx_gz(tmp_path / "debian" / f"{split}-labels-idx1-ubyte.gz", 1, (count,), bytes(range(count)))
    assert script.main() == 0
    assert f"Fashion-MNIST for the real-data tests: {tmp_path / 'debian'}" in capsys.readouterr().out
    assert apt_calls(fake_apt) == []
    data = load_dataset("fashion_mnist", download=False, smoke_test=False)  # DATA_DIR is an empty folder
    assert not data.synthetic and data.train_labels.tolist() == [0, 1, 2] and data.test_labels.tolist() == [0, 1]


@pytest.mark.parametrize("answer", ["drip", "too many headers"])
def test_a_host_that_drips_or_floods_its_headers_cannot_hold_the_probe(script, tmp_path, monkeypatch, capsys, answer):
    """The hostile trials' server sent one header byte a second: each wait is short, so only a deadline stops it.
    More than 100 header lines raise http.client.HTTPException, which must end as the plain failure too."""
    (tmp_path / "empty-bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no apt-get: the download is the last way
    monkeypatch.setattr(script, "PROBE_DEADLINE_S", 1)
    head, drip = ((b"HTTP/1.1 200 OK\r\n", b"X-Padding: 0\r\n") if answer == "drip" else
                  (b"HTTP/1.1 200 OK\r\n" + b"X-Padding: 0\r\n" * 101 + b"\r\n", b""))
    with scripted_server(head, drip) as address:
        monkeypatch.setattr(datasets.FashionMNIST, "mirrors", [f"http://{address}/", f"http://{address}/again/"])
        started = time.monotonic()
        assert script.main() == 1
        assert time.monotonic() - started < script.PROBE_DEADLINE_S + 2.5  # what a busy machine may add
    output = capsys.readouterr()
    assert "torchvision's Fashion-MNIST host did not answer within 1 s" in output.out
    assert output.err.splitlines() == [script.failure_sentence()]


# ----------------------------------------------------------------- archives: bounded, checked before any write


@pytest.fixture
def nothing_unpacked(script, monkeypatch):
    """Extraction itself fails the test: what follows must be refused from the headers alone."""
    def never(*args, **kwargs):
        pytest.fail("the archive was unpacked before it was refused")

    monkeypatch.setattr(tarfile.TarFile, "extractall", never)
    monkeypatch.setattr(zipfile.ZipFile, "extractall", never)


def refused(script, tmp_path, monkeypatch, capsys, archive: Path, *names: str) -> str:
    """prepare_cifar10 refuses the archive with one message naming each of names, and leaves nothing in data/."""
    monkeypatch.setenv("CIFAR10_ARCHIVE", str(archive))
    message = fails_naming(script, capsys, str(archive), *names)
    assert "Traceback" not in message and len(message.strip().splitlines()) == 1
    assert not unpacked(tmp_path).exists() and leftovers(tmp_path) == []
    return message


@pytest.mark.parametrize("suffix", [".tar.xz", ".zip"])
def test_an_archive_with_too_many_members_is_refused_from_its_headers(
        script, nothing_unpacked, tmp_path, monkeypatch, capsys, suffix):
    archive = archive_of(cifar_folder(tmp_path / "made" / "cifar10-jpeg"), tmp_path / f"cifar10-jpeg{suffix}")
    monkeypatch.setattr(script, "MAX_MEMBERS", 40)  # the tiny copy has 30 images in 23 folders
    refused(script, tmp_path, monkeypatch, capsys, archive, "more than 40 files and folders")


def zeros_tar(path: Path, sizes: dict[str, int]) -> Path:
    """A tar.xz of files of zeros: tiny on disk, as large as sizes says once unpacked."""
    with tarfile.open(path, "w:xz") as tarred:
        for name, size in sizes.items():
            info = tarfile.TarInfo(name)
            info.size = size
            tarred.addfile(info, io.BytesIO(bytes(size)))
    return path


def zeros_zip(path: Path, sizes: dict[str, int]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zipped:
        for name, size in sizes.items():
            zipped.writestr(name, bytes(size))
    return path


@pytest.mark.parametrize("make", [zeros_tar, zeros_zip], ids=["tar", "zip"])
def test_an_archive_that_would_write_too_many_bytes_is_refused_from_its_headers(
        script, nothing_unpacked, tmp_path, monkeypatch, capsys, make):
    """The hostile trials' 92 KB archive wrote 579 MiB; here 3 MB of zeros against a 2 MB bound."""
    archive = make(tmp_path / ("bomb.zip" if make is zeros_zip else "bomb.tar.xz"),
                   {f"cifar10-jpeg/train/cat/{number}.jpg": 1_000_000 for number in range(3)})
    assert archive.stat().st_size < 100_000
    monkeypatch.setattr(script, "MAX_BYTES", 2_000_000)
    refused(script, tmp_path, monkeypatch, capsys, archive, "would write more than 2 MB")


def test_an_archive_larger_than_the_free_space_is_refused_before_unpacking(
        script, nothing_unpacked, cifar_archive, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(script, "free_space", lambda folder: 50_000)  # 50 kB free; the tiny copy needs ~200 kB
    message = refused(script, tmp_path, monkeypatch, capsys, cifar_archive, "MB free", "make room")
    assert str(tmp_path / "repo-data") in message


def test_the_bounds_fit_the_real_cifar10_archive(script):
    """60,023 members and 55 MB: well inside the bounds, which still refuse the hostile trials' 579 MiB."""
    assert 60_023 * 2 < script.MAX_MEMBERS and 200_000_000 < script.MAX_BYTES < 579 * 2**20


@pytest.mark.parametrize("name", ["a" * 256 + ".jpg", "é" * 128])  # 260 and 256 bytes (128 characters)
@pytest.mark.parametrize("make", [zeros_tar, zeros_zip], ids=["tar", "zip"])
def test_a_member_name_over_255_bytes_is_refused_in_a_sentence(
        script, nothing_unpacked, tmp_path, monkeypatch, capsys, make, name):
    archive = make(tmp_path / ("long.zip" if make is zeros_zip else "long.tar.xz"), {f"cifar10-jpeg/{name}": 5})
    refused(script, tmp_path, monkeypatch, capsys, archive, "at most 255 bytes", f"({len(name.encode())} bytes long)")


def test_a_path_longer_than_linux_opens_is_refused_in_a_sentence(
        script, nothing_unpacked, tmp_path, monkeypatch, capsys):
    name = "/".join(["cifar10-jpeg", *["d" * 250] * 17, "0001.jpg"])  # each part short enough, the whole 4,300 bytes
    archive = zeros_tar(tmp_path / "deep.tar.xz", {name: 5})
    refused(script, tmp_path, monkeypatch, capsys, archive, "a path may have at most 4,095")


@pytest.mark.parametrize("order", ["file first", "folder first"])
@pytest.mark.parametrize("make", [zeros_tar, zeros_zip], ids=["tar", "zip"])
def test_a_file_and_a_folder_of_the_same_name_are_refused_in_a_sentence(
        script, nothing_unpacked, tmp_path, monkeypatch, capsys, make, order):
    members = {"cifar10-jpeg/train": 5, "cifar10-jpeg/train/cat/0001.jpg": 5}
    if order == "folder first":
        members = dict(reversed(members.items()))
    archive = make(tmp_path / ("clash.zip" if make is zeros_zip else "clash.tar.xz"), members)
    refused(script, tmp_path, monkeypatch, capsys, archive, "'cifar10-jpeg/train' both as a file and as a folder")


def test_an_error_while_unpacking_is_a_sentence_and_leaves_nothing(
        script, cifar_archive, tmp_path, monkeypatch, capsys):
    """What no check can foresee (the disk filled by another program meanwhile) ends as a sentence too."""
    def disk_fills(*args, **kwargs):
        raise OSError(28, "No space left on device", "cifar10-jpeg/train/cat/0002.jpg")

    monkeypatch.setattr(tarfile.TarFile, "extractall", disk_fills)
    refused(script, tmp_path, monkeypatch, capsys, cifar_archive, "No space left on device", "make room")


# ----------------------------------------------------------------- the content, not only the layout


def test_one_image_per_class_is_not_cifar10(script, tmp_path, monkeypatch, capsys):
    """The hostile trials' copy: the layout right, one JPEG per class. Against CIFAR-10's real counts it is refused."""
    monkeypatch.setattr(script, "CIFAR10_IMAGES", {"train": 5_000, "test": 1_000})
    made = cifar_folder(tmp_path / "made" / "cifar10-jpeg", {"train": 1, "test": 1})
    archive = archive_of(made, tmp_path / "cifar10-jpeg.tar.xz")
    refused(script, tmp_path, monkeypatch, capsys, archive, "incomplete copy of CIFAR-10",
            "train/airplane/ has 1 image, not 5,000", "and 17 more")


def test_a_partial_archive_is_refused_naming_what_is_missing(script, tmp_path, monkeypatch, capsys):
    made = cifar_folder(tmp_path / "made" / "cifar10-jpeg")
    (made / "train" / "cat" / "0002.jpg").unlink()
    for image in (made / "test" / "truck").iterdir():
        image.unlink()
    (made / "test" / "truck").rmdir()
    archive = archive_of(made, tmp_path / "cifar10-jpeg.zip")
    message = refused(script, tmp_path, monkeypatch, capsys, archive, "train/cat/ has 1 image, not 2",
                      "test/truck/ is missing")
    assert "more" not in message  # two shortfalls, both named


def test_a_partial_folder_named_or_found_is_refused_naming_what_is_missing(script, tmp_path, monkeypatch, capsys):
    folder = cifar_folder(tmp_path / "data-dir" / "cifar10")
    (folder / "test" / "dog" / "0001.jpg").unlink()
    monkeypatch.setenv("CIFAR10_ARCHIVE", str(folder))
    fails_naming(script, capsys, str(folder), "test/dog/ has 0 images, not 1")
    monkeypatch.delenv("CIFAR10_ARCHIVE")  # found in $DATA_DIR: the real-CIFAR tests would read it
    fails_naming(script, capsys, str(folder), "test/dog/ has 0 images, not 1", "delete it")


def test_a_folder_of_another_dataset_in_data_is_no_partial_cifar10(script, tmp_path, capsys):
    (tmp_path / "data-dir" / "train" / "T-shirt_top").mkdir(parents=True)  # a Fashion-MNIST image folder
    assert script.prepare_cifar10() == 0
    assert capsys.readouterr().out.splitlines() == [script.CIFAR10_MISSING]


def test_an_incomplete_unpacked_copy_says_what_it_lacks(script, cifar_archive, tmp_path, monkeypatch, capsys):
    cifar_folder(unpacked(tmp_path))
    (unpacked(tmp_path) / "train" / "ship" / "0001.jpg").unlink()
    monkeypatch.setenv("CIFAR10_ARCHIVE", str(cifar_archive))
    fails_naming(script, capsys, str(unpacked(tmp_path)), "train/ship/ has 1 image, not 2", "delete it")
    assert (unpacked(tmp_path) / "train" / "ship" / "0002.jpg").is_file()  # named, never deleted


# ----------------------------------------------------------------- what killed unpacks leave behind

KILLED_UNPACK = """
import importlib.util, os, signal, sys
from pathlib import Path

spec = importlib.util.spec_from_file_location("get_test_data", sys.argv[1])
script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(script)


def killed(archive, destination):  # SIGKILL halfway through the unpack: no finally runs
    (destination / "cifar10-jpeg" / "train").mkdir(parents=True)
    (destination / "cifar10-jpeg" / "train" / "half-written.jpg").write_bytes(b"\\xff\\xd8")
    os.kill(os.getpid(), signal.SIGKILL)


script.extract = killed
script.unpack_cifar10(Path(sys.argv[2]), Path(sys.argv[3]))
"""


def killed_unpack(archive: Path, data: Path) -> int:
    """Run an unpack in a second process that SIGKILL ends halfway; returns that process's id."""
    with subprocess.Popen([sys.executable, "-c", KILLED_UNPACK, str(ROOT / "scripts" / "get_test_data.py"),
                           str(archive), str(data)], stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        _, errors = process.communicate(timeout=300)
    assert process.returncode == -signal.SIGKILL, errors.decode()
    return process.pid


@pytest.mark.slow  # starts other processes
def test_folders_of_killed_unpacks_are_removed_on_the_next_run_and_live_ones_kept(
        script, cifar_archive, tmp_path, monkeypatch, capsys):
    data = tmp_path / "repo-data"
    pids = [killed_unpack(cifar_archive, data) for _ in range(2)]
    left = sorted(data.glob(".cifar10-jpeg.unpacking-*"))  # .cifar10-jpeg.unpacking-<pid>-<random>
    assert sorted(int(folder.name.split("-")[2]) for folder in left) == sorted(pids)
    live = data / f".cifar10-jpeg.unpacking-{os.getpid()}-inprogress"  # this process: alive, so never touched
    live.mkdir()
    old = data / ".cifar10-jpeg.unpacking-k2x9_q1z"  # named by the version before pids were in the name
    old.mkdir()
    monkeypatch.setenv("CIFAR10_ARCHIVE", str(cifar_archive))
    assert script.prepare_cifar10() == 0
    assert sorted(data.glob(".cifar10-jpeg.unpacking-*")) == [live]
    output = capsys.readouterr().out
    assert all(f"Removed {folder}, left by an unpack that was killed." in output for folder in [*left, old])
    assert script.is_complete_cifar10(unpacked(tmp_path))
