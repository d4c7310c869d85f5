"""scripts/get_test_data.py, the first step of `make test`: each way of getting Fashion-MNIST, and the way it fails.

apt-get and sudo are replaced by small shell scripts on PATH, and torchvision's host by a local HTTP server,
so every branch runs here without touching the machine's packages or the network.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import socket
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from torchvision import datasets

ROOT = Path(__file__).resolve().parent.parent
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
    monkeypatch.setattr(module, "DEBIAN_DIR", tmp_path / "debian")
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data-dir"))
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
    assert "No network to torchvision's Fashion-MNIST host." in output.out
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
