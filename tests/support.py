"""Shared test helpers: a tiny learnable dataset and network, a tiny run and its comparisons, where real
Fashion-MNIST and CIFAR-10 may be, and local servers on 127.0.0.1 that answer as slowly or as badly as a test needs."""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import re
import socket
import ssl
import threading
import time
import warnings
from dataclasses import asdict
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from torch import nn

from helpers import CheckpointError, DeviceLoader, ImageRecipe, set_all_seeds, train_model
from helpers.datasets import DATASETS, make_synthetic_data
from helpers.environment import dataset_folders
from helpers.image_folders import find_image_folder


class TinyNet(nn.Module):
    """Conv, BatchNorm and Dropout: enough to exercise every random state a run depends on."""

    def __init__(self, num_classes: int = 10, channels: int = 1):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
            nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        )
        with warnings.catch_warnings():
            # torch 2.3 (the floor) warns on every lazy module it builds ("Lazy modules are a new feature..."): a note
            # about this test network, not output of the helpers, which tests that read stderr must not see.
            warnings.filterwarnings("ignore", "Lazy modules are a new feature", UserWarning)
            self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.LazyLinear(num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


def tiny_model(seed: int = 0, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    model = TinyNet(**kwargs)
    model(torch.zeros(1, kwargs.get("channels", 1), 28, 28))  # materialise the lazy layer
    return model


def tiny_loaders(num_train: int = 256, batch_size: int = 32, seed: int = 0, recipe=None):
    data = make_synthetic_data("mnist", num_train=num_train + 64, num_test=64)
    recipe = recipe or ImageRecipe()
    train = DeviceLoader(data.train_images[:num_train], data.train_labels[:num_train], batch_size, recipe,
                         data.classes, train=True, shuffle=True, drop_last=True, seed=seed, device="cpu")
    valid = DeviceLoader(data.train_images[num_train:], data.train_labels[num_train:], batch_size, recipe,
                         data.classes, device="cpu")
    test = DeviceLoader(data.test_images, data.test_labels, batch_size, recipe, data.classes, device="cpu")
    return train, valid, test


def fashion_mnist_folders() -> list[Path]:
    """Where real Fashion-MNIST's IDX files may be: $DATA_DIR, the checkout's data/ (each in torchvision's layout
    or not), then where load_dataset finds a system copy (Debian's package: helpers.environment.dataset_folders)."""
    roots = [Path(os.environ["DATA_DIR"]).expanduser()] if os.environ.get("DATA_DIR") else []
    roots.append(Path(__file__).resolve().parent.parent / "data")
    roots = list(dict.fromkeys([*roots, *dataset_folders("fashion_mnist")]))
    return [folder for root in roots for folder in (root / "FashionMNIST" / "raw", root)]


def cifar10_data_dirs() -> list[Path]:
    """Where real CIFAR-10 may be: the folder CIFAR10_ARCHIVE names (an archive it names is unpacked into data/ by
    `make test-data`), $DATA_DIR, the checkout's data/."""
    named = Path(os.environ.get("CIFAR10_ARCHIVE", "").strip() or "/nonexistent").expanduser()
    roots = [named] if named.is_dir() else []
    if os.environ.get("DATA_DIR"):
        roots.append(Path(os.environ["DATA_DIR"]).expanduser())
    return roots + [Path(__file__).resolve().parent.parent / "data"]


def holds_cifar10(data_dir: Path) -> bool:
    """True when load_dataset("cifar10", data_dir=...) finds a copy there: torchvision's, or an image folder."""
    image_folder = find_image_folder(data_dir, DATASETS["cifar10"].image_folders)
    return (data_dir / "cifar-10-batches-py").is_dir() or image_folder is not None


def run(num_epochs=2, lr=0.05, scheduler_factory=None, optimizer_class=torch.optim.SGD, model=None,
        loaders=None, **options):
    """Train the tiny net from a fixed seed; returns (model, history)."""
    set_all_seeds(0)
    train_loader, valid_loader, test_loader = loaders or tiny_loaders()
    model = model or tiny_model()
    optimizer = optimizer_class(model.parameters(), lr=lr)
    scheduler = scheduler_factory(optimizer) if scheduler_factory else None
    history = train_model(model, num_epochs, train_loader, valid_loader, test_loader, optimizer, "cpu",
                          scheduler=scheduler, **options)
    return model, history


def same_run(history_a, history_b) -> bool:
    """Two histories alike in everything but the time each epoch took."""
    a, b = asdict(history_a), asdict(history_b)
    a.pop("epoch_times"), b.pop("epoch_times")
    return a == b


def same_weights(model_a, model_b) -> bool:
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    return state_a.keys() == state_b.keys() and all(torch.equal(state_a[k], state_b[k]) for k in state_a)


def snapshot(model) -> dict:
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


def unchanged(model, before: dict) -> bool:
    return all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())


def refused(path, num_epochs=2, match: str | None = None, **run_options) -> str:
    """The refusal message of a run on `path`; the checkpoint must come out byte for byte as it went in."""
    before = path.read_bytes()
    with pytest.raises(CheckpointError) as error:
        run(num_epochs=num_epochs, checkpoint_path=path, **run_options)
    assert path.read_bytes() == before, "a checkpoint of another run must never be overwritten"
    message = str(error.value)
    assert "delete" not in message.lower(), "never advise deleting a checkpoint that holds finished epochs"
    if match is not None:
        assert re.search(match, message), f"{match!r} not in {message!r}"
    return message


def failing_save(monkeypatch, error: BaseException, on_call: int):
    """torch.save writes half of the on_call-th checkpoint, then raises error (a full disk, Ctrl-C...)."""
    real_save, calls = torch.save, [0]

    def save(obj, file, *args, **kwargs):
        calls[0] += 1
        if calls[0] != on_call:
            return real_save(obj, file, *args, **kwargs)
        buffer = io.BytesIO()
        real_save(obj, buffer)
        file.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise error

    monkeypatch.setattr(torch, "save", save)


# ----------------------------------------------------------------- local servers that misbehave (127.0.0.1 only)


def local_server(backlog: int) -> tuple[socket.socket, str]:
    """A socket listening on a free port of 127.0.0.1, and its http:// address."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(backlog)
    return server, f"http://127.0.0.1:{server.getsockname()[1]}"


DRIP_INTERVAL_S = 0.05  # 20 bytes a second, as in the hostile trials of issue 21
SERVER_GIVES_UP_S = 20.0  # a client that ignores its deadline fails a test, instead of hanging the suite


@contextlib.contextmanager
def scripted_server(head: bytes, drip: bytes = b"", tls: ssl.SSLContext | None = None):
    """A server on 127.0.0.1 that answers each request with `head` at once, then sends `drip` (repeated)
    one byte every DRIP_INTERVAL_S until the test ends, or closes the connection after `head` if there
    is nothing to drip; over TLS if given a context. Yields its host:port. On leaving, every thread and
    socket it opened is gone, and so are the client's."""
    sockets_before, threads_before = open_sockets(), set(threading.enumerate())
    server, url = local_server(backlog=8)
    server.settimeout(DRIP_INTERVAL_S)  # accept() wakes up to see whether the test has ended
    stop = threading.Event()
    answering = []

    def answer(connection):
        connection.settimeout(SERVER_GIVES_UP_S)
        # Closed even when the TLS handshake fails; with TLS, the wrapped socket takes over its descriptor.
        with connection, tls.wrap_socket(connection, server_side=True) if tls else connection as connection:
            connection.recv(65536)  # the request (or, for a raw server of an https:// address, the TLS hello)
            connection.sendall(head)
            give_up = time.monotonic() + SERVER_GIVES_UP_S
            for byte in itertools.cycle(drip) if drip else ():
                if stop.wait(DRIP_INTERVAL_S) or time.monotonic() > give_up:
                    return
                try:
                    connection.sendall(bytes([byte]))
                except OSError:  # the client gave up
                    return

    def accept():
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            answering.append(threading.Thread(target=answer, args=(connection,)))
            answering[-1].start()

    acceptor = threading.Thread(target=accept)
    acceptor.start()
    try:
        yield url.removeprefix("http://")
    finally:
        stop.set()
        acceptor.join()
        for thread in answering:
            thread.join()
        server.close()
    assert set(threading.enumerate()) <= threads_before, "a thread outlived the download"
    assert open_sockets() == sockets_before, "a socket outlived the download"


def open_sockets() -> int:
    """How many sockets this process holds open (Linux: its file descriptors that are sockets)."""
    folder = Path("/proc/self/fd")
    if not folder.is_dir():
        pytest.skip("counting open sockets needs Linux's /proc")
    count = 0
    for entry in folder.iterdir():
        try:
            count += os.readlink(entry).startswith("socket:")
        except OSError:  # the descriptor closed while we looked
            pass
    return count


class FileServer:
    """A local HTTP server for the files of a folder, counting the requests it serves."""

    def __init__(self, folder):
        self.folder, self.requests = folder, []
        requests = self.requests

        class Handler(SimpleHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def send_head(self):
                requests.append(self.path)
                return super().send_head()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(folder)))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
