"""Image folders (helpers/image_folders.py): train/<class>/* and test/<class>/* read as a dataset, in a fixed
order, with clear errors, and decoded once (then read from the folder's cache).

Every folder here is made by the test: a few seeded random images per class, PNG (lossless, so pixels can be
compared exactly) and JPEG, under tmp_path.
"""

from __future__ import annotations

import os
import re
import tempfile

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import image_folders
from helpers.datasets import DATASETS, load_dataset
from helpers.environment import SMOKE_TEST_SIZE, SMOKE_TRAIN_SIZE
from helpers.image_folders import CACHE_FOLDER, ImageFolderError, class_folder_name, read_image_folder

CIFAR = DATASETS["cifar10"]


def random_image(generator: np.random.Generator, shape=(3, 32, 32)) -> np.ndarray:
    channels, height, width = shape
    pixels = generator.integers(0, 256, (height, width, channels), dtype=np.uint8)
    return pixels[:, :, 0] if channels == 1 else pixels


def save(pixels: np.ndarray, path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def make_folder(folder, info=CIFAR, per_class: dict[str, int] | None = None, seed: int = 0) -> dict[str, list]:
    """An image folder of `info`'s classes: per split, that many PNG images per class plus one JPEG (2 and 1
    by default). Returns, per split, (pixels (C, H, W) of each PNG, label) in the order a load gives."""
    generator = np.random.default_rng(seed)
    written = {}
    for split, count in (per_class or {"train": 2, "test": 1}).items():
        written[split] = []
        for label, name in enumerate(info.classes):
            for index in range(count):
                pixels = random_image(generator, info.shape)
                save(pixels, folder / split / class_folder_name(name) / f"{index}.png")
                written[split].append((pixels.reshape(info.shape[1], info.shape[2], -1).transpose(2, 0, 1), label))
            save(random_image(generator, info.shape), folder / split / class_folder_name(name) / "z.jpg")
    return written


def read(folder, info=CIFAR) -> dict[str, torch.Tensor]:
    return read_image_folder(folder, info.classes, info.shape, name=info.name)


def cache_files(folder) -> list:
    return sorted((folder / CACHE_FOLDER).glob("*.pt"))


@pytest.fixture
def folder(tmp_path):
    make_folder(tmp_path / "cifar")
    return tmp_path / "cifar"


def no_decoding(monkeypatch):
    """From here on a decode fails the test: what loads must come from the cache."""
    def fail(path, shape):
        raise AssertionError(f"{path} was decoded again")

    monkeypatch.setattr(image_folders, "decode_image", fail)


# ----------------------------------------------------------------- what is read, in which order


@pytest.mark.parametrize("name", ["cifar10", "mnist", "fashion_mnist"])
def test_png_images_come_back_pixel_for_pixel_with_their_labels(tmp_path, name):
    info = DATASETS[name]
    written = make_folder(tmp_path, info)
    data = read(tmp_path, info)
    for split in ("train", "test"):
        images, labels = data[f"{split}_images"], data[f"{split}_labels"]
        assert images.dtype == torch.uint8 and images.shape[1:] == info.shape and labels.dtype == torch.int64
        count = len(written[split]) // len(info.classes)  # PNGs per class; each class ends with its JPEG
        for position, (pixels, label) in enumerate(written[split]):
            index = label * (count + 1) + position % count
            assert torch.equal(images[index], torch.from_numpy(pixels)) and labels[index] == label


def test_classes_follow_torchvisions_order_and_every_image_has_its_label(folder):
    data = read(folder)
    assert data["train_labels"].tolist() == [label for label in range(10) for _ in range(3)]
    assert data["test_labels"].tolist() == [label for label in range(10) for _ in range(2)]


def test_files_are_read_in_natural_order_and_dotfiles_and_other_files_are_left_out(tmp_path):
    folder = tmp_path / "cifar"
    make_folder(folder, per_class={"train": 0, "test": 0})
    airplanes = folder / "train" / "airplane"
    generator = np.random.default_rng(1)
    names = ["10.png", "2.PNG", "1.jpeg", "img9.JPG", "img10.png"]
    pixels = {name: random_image(generator) for name in names}
    for name in names:
        save(pixels[name], airplanes / name)
    (airplanes / ".hidden.png").write_bytes(b"not an image")
    (airplanes / "notes.txt").write_text("not an image either")
    (folder / "train" / ".DS_Store").write_bytes(b"")
    data = read(folder)
    in_order = ["1.jpeg", "2.PNG", "10.png", "img9.JPG", "img10.png", "z.jpg"]
    assert data["train_labels"].tolist()[:6] == [0] * 6 and len(data["train_labels"]) == 6 + 9
    for index, name in enumerate(in_order):
        if name.lower().endswith("png"):  # the lossless ones can be recognised by their pixels
            assert torch.equal(data["train_images"][index], torch.from_numpy(pixels[name]).permute(2, 0, 1))


def test_two_loads_give_the_same_tensors(folder):
    first, second = read(folder), read(folder)
    assert all(torch.equal(first[key], second[key]) for key in first)


# ----------------------------------------------------------------- errors that name the problem


def test_a_missing_class_folder_is_named(folder):
    for path in (folder / "test" / "ship").iterdir():
        path.unlink()
    (folder / "test" / "ship").rmdir()
    with pytest.raises(ImageFolderError, match="ship"):
        read(folder)


def test_an_unknown_class_folder_is_named_with_the_expected_names(folder):
    (folder / "train" / "truck").rename(folder / "train" / "lorry")
    with pytest.raises(ImageFolderError, match="lorry") as error:
        read(folder)
    assert all(name in str(error.value) for name in CIFAR.classes)


@pytest.mark.parametrize("split", ["train", "test"])
def test_a_missing_split_is_named(tmp_path, split):
    make_folder(tmp_path, per_class={"train": 1} if split == "test" else {"test": 1})
    with pytest.raises(ImageFolderError, match=re.escape(str(tmp_path / split))):
        read(tmp_path)


def test_a_split_without_images_is_named(tmp_path):
    make_folder(tmp_path, per_class={"train": 1})
    for name in CIFAR.classes:
        (tmp_path / "test" / name).mkdir(parents=True)
    (tmp_path / "test" / "cat" / "readme.txt").write_text("no images here")
    with pytest.raises(ImageFolderError, match=re.escape(str(tmp_path / "test"))):
        read(tmp_path)


def test_an_image_of_the_wrong_size_is_named(folder):
    save(np.zeros((28, 28, 3), dtype=np.uint8), folder / "train" / "dog" / "small.png")
    with pytest.raises(ImageFolderError, match="small.png") as error:
        read(folder)
    assert "28x28" in str(error.value) and "32x32" in str(error.value)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_an_image_of_the_wrong_mode_is_named_with_its_mode(folder, mode):
    Image.new(mode, (32, 32)).save(folder / "test" / "frog" / "odd.png")
    with pytest.raises(ImageFolderError, match="odd.png") as error:
        read(folder)
    assert repr(mode) in str(error.value)


def test_a_colour_image_in_a_grey_dataset_is_named(tmp_path):
    make_folder(tmp_path, DATASETS["mnist"])
    save(np.zeros((28, 28, 3), dtype=np.uint8), tmp_path / "train" / "7" / "colour.png")
    with pytest.raises(ImageFolderError, match="colour.png") as error:
        read(tmp_path, DATASETS["mnist"])
    assert "'RGB'" in str(error.value)


def test_a_file_that_is_not_an_image_is_named(folder):
    (folder / "train" / "cat" / "broken.jpg").write_bytes(b"this is no JPEG")
    with pytest.raises(ImageFolderError, match="broken.jpg"):
        read(folder)


# ----------------------------------------------------------------- the cache


def test_the_first_load_decodes_saying_so_and_the_second_is_served_from_the_cache(folder, monkeypatch, capsys):
    first = read(folder)
    assert "Decoding 50 CIFAR-10 images" in capsys.readouterr().out
    assert len(cache_files(folder)) == 1
    no_decoding(monkeypatch)
    second = read(folder)
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert capsys.readouterr().out == ""


def test_a_changed_file_makes_the_images_decode_again(folder, monkeypatch):
    read(folder)
    old_cache = cache_files(folder)
    new_pixels = np.full((32, 32, 3), 7, dtype=np.uint8)
    save(new_pixels, folder / "train" / "airplane" / "0.png")
    os.utime(folder / "train" / "airplane" / "0.png", ns=(1, 1))  # a new time even on a coarse-clock filesystem
    data = read(folder)
    assert torch.equal(data["train_images"][0], torch.from_numpy(new_pixels).permute(2, 0, 1))
    assert len(cache_files(folder)) == 1 and cache_files(folder) != old_cache  # the stale cache is gone


def test_an_added_image_makes_the_images_decode_again(folder):
    read(folder)
    save(random_image(np.random.default_rng(5)), folder / "test" / "horse" / "extra.png")
    assert len(read(folder)["test_labels"]) == 21


def test_a_corrupt_cache_is_ignored_and_replaced(folder, monkeypatch):
    expected = read(folder)
    (cache,) = cache_files(folder)
    cache.write_bytes(cache.read_bytes()[:100])  # half a file, as a crash could leave without the rename
    data = read(folder)
    assert all(torch.equal(expected[key], data[key]) for key in expected)
    no_decoding(monkeypatch)
    assert torch.equal(read(folder)["train_images"], expected["train_images"])  # the rewritten cache serves


def test_a_cache_with_other_contents_is_ignored(folder):
    expected = read(folder)
    (cache,) = cache_files(folder)
    torch.save({"train_images": torch.zeros(1)}, cache)
    assert torch.equal(read(folder)["test_images"], expected["test_images"])


def test_a_read_only_folder_loads_without_a_cache_saying_so(folder, monkeypatch, capsys):
    folder.chmod(0o555)
    if os.geteuid() == 0:  # root writes anywhere: make the write fail as it would for anyone else
        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(tempfile, "mkstemp", refuse)  # the cache is written with save_atomically
    try:
        data = read(folder)
    finally:
        folder.chmod(0o755)
    assert len(data["train_labels"]) == 30 and cache_files(folder) == []
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "Could not cache" in lines[1] and str(folder / CACHE_FOLDER) in lines[1]
    assert not [path for path in (folder / CACHE_FOLDER).glob("*") if path.is_file()], "no temporary file is left"


def test_a_failed_cache_write_leaves_no_half_file(folder, monkeypatch):
    def full_disk(obj, file, *args, **kwargs):
        file.write(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(image_folders.torch, "save", full_disk)
    read(folder)
    assert [path for path in (folder / CACHE_FOLDER).iterdir()] == []


# ----------------------------------------------------------------- load_dataset finds the folder


@pytest.mark.parametrize("where", ["", *CIFAR.image_folders], ids=["data_dir", *CIFAR.image_folders])
def test_load_dataset_finds_an_image_folder_under_each_accepted_name(tmp_path, where):
    written = make_folder(tmp_path / where)
    data = load_dataset("cifar10", data_dir=tmp_path, download=False, smoke_test=False)
    assert not data.synthetic and data.classes == CIFAR.classes
    assert data.train_images.shape == (30, 3, 32, 32) and len(data.test_labels) == 20
    assert torch.equal(data.train_images[0], torch.from_numpy(written["train"][0][0]))


def test_load_dataset_reports_a_damaged_folder_instead_of_downloading(tmp_path):
    make_folder(tmp_path / "cifar10-jpeg", per_class={"train": 1})
    with pytest.raises(ImageFolderError, match=re.escape(str(tmp_path / "cifar10-jpeg" / "test"))):
        load_dataset("cifar10", data_dir=tmp_path, download=True, smoke_test=True)


def test_smoke_mode_keeps_its_fixed_subset_of_an_image_folder(tmp_path):
    make_folder(tmp_path, per_class={"train": 20, "test": 7})
    first, second = (load_dataset("cifar10", data_dir=tmp_path, download=False, smoke_test=True) for _ in range(2))
    assert len(first.train_labels) == SMOKE_TRAIN_SIZE and len(first.test_labels) == SMOKE_TEST_SIZE
    assert torch.equal(first.train_images, second.train_images) and not first.synthetic


def test_the_missing_data_error_says_an_image_folder_is_accepted(empty_data_dir):
    from helpers.datasets import DatasetUnavailableError

    with pytest.raises(DatasetUnavailableError) as error:
        load_dataset("cifar10", download=False, smoke_test=False)
    assert "image folder" in str(error.value) and str(empty_data_dir / "cifar10-jpeg") in str(error.value)
