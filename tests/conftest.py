"""Shared test settings, and the real Fashion-MNIST (and, where it is here, CIFAR-10) for the real-data tests."""

import sys
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")  # tests draw figures without a screen

# Fixtures that bring real data: a test that uses one (directly or through another fixture) trains or
# tests on real images, and is left out of `make test-fast` (marker real_data).
REAL_DATA_FIXTURES = {"fashion_mnist_dir", "cifar10_dir"}

# Real CIFAR-10 is optional (`make test` never fails for want of it): the tests that need it say how to get it.
CIFAR10_MISSING = (
    "Real CIFAR-10 is not on this machine; get it with torchvision's download (about 170 MB): "
    "`python -c \"from torchvision import datasets; datasets.CIFAR10('data', download=True)\"`, "
    "or name a copy: `CIFAR10_ARCHIVE=path/to/cifar10-jpeg.tar.xz make test`."
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if REAL_DATA_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.real_data)


@pytest.fixture(scope="module")
def one_cpu_thread():
    """Train on one torch thread: trained weights depend on the thread count (the order of sums), and
    one thread keeps a busy machine from stalling the threads on each other."""
    import torch  # here: the Agg backend is chosen before anything loads pyplot

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def no_run_mode_left_behind():
    """print_run_mode() in one test (or a notebook's settings cell) must not put the smoke banner on the next
    test's figures: each test starts without a run mode, as a Python session before print_run_mode() does."""
    yield
    figure_style = sys.modules.get("helpers.figure_style")  # only if a test loaded it: some must not load torch
    if figure_style is not None:
        figure_style.set_run_mode(False)


@pytest.fixture
def no_smoke(monkeypatch):
    """Tests of full-recipe behaviour run outside smoke mode, whatever SMOKE_TEST the suite runs under."""
    monkeypatch.setenv("SMOKE_TEST", "0")


@pytest.fixture(scope="session")
def fashion_mnist_dir() -> Path:
    """A folder with real Fashion-MNIST's four IDX files, for load_dataset / get_dataloaders(data_dir=...)."""
    from helpers.datasets import find_idx_files  # here: the Agg backend is chosen before helpers load pyplot
    from tests.support import fashion_mnist_folders

    for folder in fashion_mnist_folders():
        if find_idx_files(folder) is not None:
            return folder
    places = ", ".join(str(folder) for folder in fashion_mnist_folders())
    pytest.fail(f"Real Fashion-MNIST, which this test needs, is in none of {places}: install it with "
                "`sudo apt-get install dataset-fashion-mnist` (or run `make test-data`, which downloads it "
                "where apt cannot), then run the tests again.", pytrace=False)


@pytest.fixture(scope="session")
def cifar10_dir() -> Path:
    """A data_dir where load_dataset finds real CIFAR-10 (torchvision's copy, or an image folder such as the JPEG
    copy `make test-data` unpacks from CIFAR10_ARCHIVE); the test is skipped, saying how to get it, without one."""
    from tests.support import cifar10_data_dirs, holds_cifar10  # here: the Agg backend is chosen first

    found = next((folder for folder in cifar10_data_dirs() if holds_cifar10(folder)), None)
    if found is None:
        pytest.skip(CIFAR10_MISSING)
    return found


@pytest.fixture
def empty_data_dir(tmp_path, monkeypatch):
    """A data folder with nothing in it; downloads are off in the tests that use it."""
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture
def saved_run(tmp_path):
    """A checkpoint holding one finished epoch of the tiny run of tests/support.py."""
    from tests.support import run

    path = tmp_path / "run.pt"
    run(num_epochs=1, checkpoint_path=path)
    return path


@pytest.fixture
def deterministic_settings_restored(monkeypatch):
    """set_deterministic changes process-wide switches; put them back for the tests that follow."""
    import torch

    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
     torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) = saved[2:]
