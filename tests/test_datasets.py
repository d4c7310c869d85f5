"""Getting datasets: splits, synthetic data, smoke mode, missing data, IDX files, real Fashion-MNIST and CIFAR-10."""

from __future__ import annotations

import gzip
import logging
import re
import socket
import urllib.error

import pytest
import torch

from helpers import environment, image_folders
from helpers.datasets import (
    DATASETS,
    DatasetUnavailableError,
    find_idx_files,
    load_dataset,
    make_synthetic_data,
    read_idx,
    smoke_subset,
    split_indices,
)
from helpers.environment import SMOKE_TEST_SIZE, SMOKE_TRAIN_SIZE

# ----------------------------------------------------------------- splits


def test_split_is_disjoint_complete_and_sized():
    train, valid = split_indices(50_000, 0.1, seed=123)
    assert len(valid) == 5_000 and len(train) == 45_000
    assert set(train.tolist()).isdisjoint(valid.tolist())
    assert sorted(train.tolist() + valid.tolist()) == list(range(50_000))


def test_split_is_reproducible_and_depends_on_seed():
    first, second, other = (split_indices(1_000, 0.2, seed) for seed in (1, 1, 2))
    assert torch.equal(first[1], second[1])
    assert not torch.equal(first[1], other[1])


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5])
def test_split_rejects_fractions_outside_zero_one(fraction):
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        split_indices(100, fraction, seed=0)


def test_split_rejects_a_fraction_that_empties_a_set():
    with pytest.raises(ValueError, match="empty"):
        split_indices(10, 0.01, seed=0)

# ----------------------------------------------------------------- synthetic data and smoke mode


def test_synthetic_data_has_the_real_shape_and_is_the_same_every_run():
    first, second = make_synthetic_data("cifar10"), make_synthetic_data("cifar10")
    assert first.train_images.shape[1:] == (3, 32, 32) and first.train_images.dtype == torch.uint8
    assert set(first.train_labels.tolist()) == set(range(10))
    assert torch.equal(first.train_images, second.train_images)
    assert first.synthetic


def test_synthetic_data_is_learnable_from_its_class_templates():
    """A nearest-class-mean classifier fitted on the training images labels test images well."""
    data = make_synthetic_data("mnist")
    train = data.train_images.float().flatten(1)
    means = torch.stack([train[data.train_labels == k].mean(0) for k in range(10)])
    guesses = torch.cdist(data.test_images.float().flatten(1), means).argmin(1)
    assert (guesses == data.test_labels).float().mean() > 0.9


def test_smoke_mode_substitutes_synthetic_data_and_says_so(empty_data_dir, capsys):
    data = load_dataset("cifar10", download=False, smoke_test=True)
    assert data.synthetic
    assert capsys.readouterr().out.splitlines() == [
        f"CIFAR-10 is not in {empty_data_dir.resolve()} (and download=False), so this smoke run uses a small "
        "synthetic stand-in with the same image shape and 10 classes; for the real images, allow the download "
        "(download=True) on a machine with internet."
    ]


def no_name_resolution(*args, **kwargs):
    """What connecting does on a machine without network: the host's name cannot be looked up."""
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


# An exception's class name (URLError, TimeoutError, HTTPException...) or urllib's own wording of one.
EXCEPTION_TEXT = re.compile(r"[A-Za-z]*(Error|Exception)\b|urlopen|Errno|<|>")


def test_the_smoke_notice_is_one_plain_sentence_and_the_error_goes_to_the_debug_log(
        empty_data_dir, monkeypatch, capsys, caplog):
    monkeypatch.setattr("socket.create_connection", no_name_resolution)  # where every HTTP(S) connection starts
    with caplog.at_level(logging.DEBUG, logger="helpers"):
        data = load_dataset("cifar10", download=True, smoke_test=True)
    assert data.synthetic
    notice = capsys.readouterr().out.splitlines()
    assert notice == [
        f"CIFAR-10 is not in {empty_data_dir.resolve()} and could not be downloaded, so this smoke run uses a small "
        "synthetic stand-in with the same image shape and 10 classes; for the real images, run this once on a "
        "machine with internet, which downloads it there."
    ]
    assert EXCEPTION_TEXT.search(notice[0]) is None
    # The error is kept for whoever asks for it: the debug log holds it, traceback and all.
    (record,) = [record for record in caplog.records if record.name == "helpers.datasets"]
    assert record.levelno == logging.DEBUG and record.exc_info is not None
    assert isinstance(record.exc_info[1], urllib.error.URLError)
    assert "Name or service not known" in caplog.text


def test_the_smoke_notice_matches_no_exception_text_that_urllib_gives():
    """The pattern the test above applies really catches what the old notice printed."""
    old = ("CIFAR-10 is not available here (URLError: <urlopen error [Errno -2] Name or service not known>): using a "
           "small synthetic stand-in with the same image shape and 10 classes.")
    assert EXCEPTION_TEXT.findall(old)
    assert EXCEPTION_TEXT.search("a TimeoutError") and EXCEPTION_TEXT.search("http.client.HTTPException")


def test_missing_data_outside_smoke_mode_is_a_clear_error(empty_data_dir):
    with pytest.raises(DatasetUnavailableError) as error:
        load_dataset("cifar10", download=False, smoke_test=False)
    message = str(error.value)
    assert str(empty_data_dir) in message and "SMOKE_TEST=1" in message and "download=True" in message


def test_failed_download_outside_smoke_mode_is_a_clear_error(empty_data_dir, monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr("socket.create_connection", no_network)  # where every HTTP(S) connection starts
    with pytest.raises(DatasetUnavailableError, match="could not be downloaded"):
        load_dataset("mnist", download=True, smoke_test=False)


def test_unknown_dataset_is_named_in_the_error():
    with pytest.raises(ValueError, match="cifar10"):
        load_dataset("imagenet")


# ----------------------------------------------------------------- IDX files and real data


def test_real_fashion_mnist_loads_with_its_true_shape(fashion_mnist_dir):
    # A folder of its four IDX files: torchvision's data/FashionMNIST/raw or Debian's dataset-fashion-mnist.
    data = load_dataset("fashion_mnist", data_dir=fashion_mnist_dir, download=False, smoke_test=False)
    assert not data.synthetic
    assert data.train_images.shape == (60_000, 1, 28, 28) and data.test_images.shape == (10_000, 1, 28, 28)
    assert torch.bincount(data.train_labels).tolist() == [6_000] * 10


def test_real_cifar_loads(cifar10_dir, monkeypatch):
    """All of real CIFAR-10 (torchvision's copy, or a JPEG copy of it, as CI has); an image folder is decoded once,
    then served from its cache."""
    data = load_dataset("cifar10", data_dir=cifar10_dir, download=False, smoke_test=False)
    assert not data.synthetic
    assert data.train_images.shape == (50_000, 3, 32, 32) and data.test_images.shape == (10_000, 3, 32, 32)
    assert data.train_images.dtype == data.test_images.dtype == torch.uint8
    assert data.train_labels.dtype == data.test_labels.dtype == torch.int64
    assert torch.bincount(data.train_labels).tolist() == [5_000] * 10
    assert torch.bincount(data.test_labels).tolist() == [1_000] * 10
    # torchvision's CIFAR10.classes (read from the dataset's own batches.meta, so spelled out here)
    assert data.classes == ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

    folder = image_folders.find_image_folder(cifar10_dir, DATASETS["cifar10"].image_folders)
    if folder is not None and not any((folder / image_folders.CACHE_FOLDER).glob("*.pt")):
        pytest.skip(f"{folder} cannot be written, so its images are decoded on every load (no cache to test).")

    def decode_again(path, shape):
        raise AssertionError(f"{path} was decoded again: the second load must come from the cache")

    monkeypatch.setattr(image_folders, "decode_image", decode_again)
    again = load_dataset("cifar10", data_dir=cifar10_dir, download=False, smoke_test=False)
    assert torch.equal(again.train_images, data.train_images) and torch.equal(again.test_labels, data.test_labels)


@pytest.mark.parametrize("compressed", [True, False])
def test_read_idx_reads_what_was_written(tmp_path, compressed):
    images = torch.randint(0, 256, (3, 4, 5), dtype=torch.uint8)
    raw = b"\x00\x00\x08\x03" + b"".join(n.to_bytes(4, "big") for n in images.shape) + images.numpy().tobytes()
    path = tmp_path / ("images.gz" if compressed else "images")
    path.write_bytes(gzip.compress(raw) if compressed else raw)
    assert torch.equal(read_idx(path), images)


def test_read_idx_rejects_other_files(tmp_path):
    path = tmp_path / "not-idx"
    path.write_bytes(b"hello world")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(path)


def write_idx_folder(folder, compressed: bool, num_train: int = 12, num_test: int = 5) -> dict[str, torch.Tensor]:
    """The four IDX files of a tiny MNIST-format dataset; returns what they hold."""
    generator = torch.Generator().manual_seed(1)
    parts = {
        "train-images-idx3-ubyte": torch.randint(0, 256, (num_train, 28, 28), dtype=torch.uint8, generator=generator),
        "train-labels-idx1-ubyte": torch.randint(0, 10, (num_train,), dtype=torch.uint8, generator=generator),
        "t10k-images-idx3-ubyte": torch.randint(0, 256, (num_test, 28, 28), dtype=torch.uint8, generator=generator),
        "t10k-labels-idx1-ubyte": torch.randint(0, 10, (num_test,), dtype=torch.uint8, generator=generator),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, tensor in parts.items():
        raw = bytes([0, 0, 8, tensor.ndim]) + b"".join(n.to_bytes(4, "big") for n in tensor.shape)
        raw += tensor.numpy().tobytes()
        path = folder / (f"{name}.gz" if compressed else name)
        path.write_bytes(gzip.compress(raw) if compressed else raw)
    return parts


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
@pytest.mark.parametrize("compressed", [True, False])
def test_a_folder_of_idx_files_is_a_data_dir(tmp_path, name, compressed):
    parts = write_idx_folder(tmp_path / "idx", compressed)
    data = load_dataset(name, data_dir=tmp_path / "idx", download=False, smoke_test=False)
    assert torch.equal(data.train_images, parts["train-images-idx3-ubyte"].unsqueeze(1))
    assert torch.equal(data.train_labels, parts["train-labels-idx1-ubyte"].long())
    assert torch.equal(data.test_images, parts["t10k-images-idx3-ubyte"].unsqueeze(1))
    assert torch.equal(data.test_labels, parts["t10k-labels-idx1-ubyte"].long())
    assert not data.synthetic and data.classes == DATASETS[name].classes


@pytest.fixture
def no_system_copies(monkeypatch):
    """No folder of a system package is looked in (this machine may have Debian's Fashion-MNIST)."""
    monkeypatch.setattr(environment, "SYSTEM_DATASET_FOLDERS", {})


def test_a_folder_missing_one_idx_file_is_not_a_dataset(tmp_path, no_system_copies):
    write_idx_folder(tmp_path, compressed=True)
    assert set(find_idx_files(tmp_path)) == {"train_images", "train_labels", "test_images", "test_labels"}
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    assert find_idx_files(tmp_path) is None
    with pytest.raises(DatasetUnavailableError, match="four IDX files"):
        load_dataset("fashion_mnist", data_dir=tmp_path, download=False, smoke_test=False)


def test_cifar10_is_never_read_from_idx_files(tmp_path):
    write_idx_folder(tmp_path, compressed=False)
    with pytest.raises(DatasetUnavailableError) as error:
        load_dataset("cifar10", data_dir=tmp_path, download=False, smoke_test=False)
    assert "IDX" not in str(error.value)


def test_a_system_copy_is_used_when_the_data_folder_has_none(tmp_path, monkeypatch, capsys):
    system = write_idx_folder(tmp_path / "debian", compressed=True)
    monkeypatch.setattr(environment, "SYSTEM_DATASET_FOLDERS", {"fashion_mnist": (tmp_path / "debian",)})
    data = load_dataset("fashion_mnist", data_dir=tmp_path / "empty", download=False, smoke_test=False)
    assert torch.equal(data.train_images, system["train-images-idx3-ubyte"].unsqueeze(1)) and not data.synthetic
    assert capsys.readouterr().out == ""
    # A copy in the data folder comes first; and MNIST, which no system folder lists, is never read from it.
    mine = write_idx_folder(tmp_path / "mine", compressed=False, num_train=7)
    data = load_dataset("fashion_mnist", data_dir=tmp_path / "mine", download=False, smoke_test=False)
    assert torch.equal(data.train_labels, mine["train-labels-idx1-ubyte"].long())
    with pytest.raises(DatasetUnavailableError, match="is not in"):
        load_dataset("mnist", data_dir=tmp_path / "empty", download=False, smoke_test=False)


def test_the_missing_data_error_names_the_system_folder_too(tmp_path, monkeypatch):
    monkeypatch.setattr(environment, "SYSTEM_DATASET_FOLDERS", {"fashion_mnist": (tmp_path / "debian",)})
    with pytest.raises(DatasetUnavailableError) as error:
        load_dataset("fashion_mnist", data_dir=tmp_path / "empty", download=False, smoke_test=False)
    assert f"is not in {(tmp_path / 'empty').resolve()} nor in {tmp_path / 'debian'}," in str(error.value)


@pytest.mark.real_data
def test_debian_fashion_mnist_is_found_without_naming_it(empty_data_dir, capsys):
    """Where Debian's dataset-fashion-mnist is installed, a smoke run trains on its real images, not on synthetic."""
    (debian,) = environment.SYSTEM_DATASET_FOLDERS["fashion_mnist"]
    if find_idx_files(debian) is None:
        pytest.skip(f"Debian's dataset-fashion-mnist is not installed here ({debian} lacks its four IDX files).")
    data = load_dataset("fashion_mnist", download=False, smoke_test=True)
    assert not data.synthetic and len(data.train_labels) == SMOKE_TRAIN_SIZE
    assert capsys.readouterr().out == ""
    whole = load_dataset("fashion_mnist", data_dir=debian, download=False, smoke_test=False)
    assert torch.equal(data.train_images, smoke_subset(whole).train_images)


def test_smoke_mode_keeps_a_fixed_subset_of_real_data(tmp_path):
    write_idx_folder(tmp_path, compressed=False, num_train=300, num_test=100)
    first, second = (load_dataset("mnist", data_dir=tmp_path, download=False, smoke_test=True) for _ in range(2))
    assert len(first.train_labels) == SMOKE_TRAIN_SIZE and len(first.test_labels) == SMOKE_TEST_SIZE
    assert torch.equal(first.train_images, second.train_images) and not first.synthetic
