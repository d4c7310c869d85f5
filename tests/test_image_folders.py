"""Image folders (helpers/image_folders.py): train/<class>/* and test/<class>/* read as a dataset, in a fixed
order, with clear errors, and decoded once (then read from the folder's cache).

Every folder here is made by the test: a few seeded random images per class, PNG (lossless, so pixels can be
compared exactly) and JPEG, under tmp_path.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


# ----------------------------------------------------------------- the cache, guarded


def test_a_flipped_byte_in_the_cache_is_caught_and_the_images_decoded_again(folder, capsys):
    expected = read(folder)
    (cache,) = cache_files(folder)
    content = bytearray(cache.read_bytes())
    pixels = expected["train_images"][5].numpy().tobytes()  # random pixels: found once in the file, as stored
    where = content.index(pixels[:64]) + 10
    content[where] ^= 0x01
    cache.write_bytes(bytes(content))
    capsys.readouterr()
    data = read(folder)
    assert all(torch.equal(expected[key], data[key]) for key in expected)
    lines = capsys.readouterr().out.splitlines()
    assert "does not match its checksum" in lines[0] and str(cache) in lines[0] and "Decoding 50" in lines[1]


def test_a_cache_edited_by_hand_is_caught_even_with_its_checksum_redone(folder, capsys):
    expected = read(folder)
    (cache,) = cache_files(folder)
    contents = torch.load(cache, weights_only=True)
    tensors = contents.get("tensors", contents)
    tensors["train_labels"][:3] = 9  # the aeroplanes relabelled as trucks
    if "sha256" in contents:
        contents["sha256"] = image_folders.checksum(tensors)
    torch.save(contents, cache)
    capsys.readouterr()
    assert torch.equal(read(folder)["train_labels"], expected["train_labels"])
    assert "decoding the images again" in capsys.readouterr().out


def save_uncompressed(pixels: np.ndarray, path) -> None:
    """A PNG without compression: its size depends on the image's shape alone, as a replacement's might."""
    Image.fromarray(pixels).save(path, compress_level=0)


def test_a_file_replaced_keeping_its_size_and_time_is_decoded_again(folder, tmp_path):
    """cp -p, rsync -t and tar keep the size and modification time; the change time (ctime) still moves."""
    generator = np.random.default_rng(7)
    target = folder / "train" / "airplane" / "0.png"
    save_uncompressed(random_image(generator), target)
    before = os.stat(target)
    read(folder)
    new_pixels = random_image(generator)
    replacement = tmp_path / "replacement.png"
    save_uncompressed(new_pixels, replacement)
    os.utime(replacement, ns=(before.st_atime_ns, before.st_mtime_ns))
    shutil.copy2(replacement, target)  # what cp -p does
    after = os.stat(target)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert after.st_ctime_ns != before.st_ctime_ns  # set by the system: the cache key's witness
    assert torch.equal(read(folder)["train_images"][0], torch.from_numpy(new_pixels).permute(2, 0, 1))


def test_a_symlinked_cache_folder_is_written_through_but_nothing_there_is_deleted(folder, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    unrelated = [elsewhere / "0123456789abcdef01234567.pt", elsewhere / "model.pt"]
    for path in unrelated:
        path.write_bytes(b"someone else's file")
    (folder / CACHE_FOLDER).symlink_to(elsewhere)
    first = read(folder)
    (folder / "train" / "airplane" / "0.png").unlink()  # a new key: the older cache would be stale
    assert torch.equal(read(folder)["train_images"], first["train_images"][1:])
    assert all(path.read_bytes() == b"someone else's file" for path in unrelated)
    image_folders.remove_cache(folder)
    assert not (folder / CACHE_FOLDER).exists() and all(path.exists() for path in unrelated)


DECODE_THAT_STOPS_WRITING = """
import os, signal, sys, time
import torch
from helpers import image_folders
from helpers.datasets import DATASETS

def stops_while_writing(obj, file, *args, **kwargs):
    file.write(b"half a cache")
    file.flush()
    if sys.argv[2] == "killed":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(600)  # a slow disk: the writer is alive

torch.save = stops_while_writing
info = DATASETS["cifar10"]
image_folders.read_image_folder(sys.argv[1], info.classes, info.shape, name=info.name)
"""
ROOT = Path(__file__).resolve().parent.parent


def decode_in_another_process(folder, how: str, wait: bool = True):
    """A second Python process that decodes the folder and stops in the middle of writing the cache."""
    command = [sys.executable, "-c", DECODE_THAT_STOPS_WRITING, str(folder), how]
    options = dict(cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL)
    return subprocess.run(command, timeout=300, **options) if wait else subprocess.Popen(command, **options)


def temporaries(folder) -> list:
    return sorted((folder / CACHE_FOLDER).glob(".*.tmp"))


def test_the_temporary_file_of_a_killed_decode_is_removed_by_the_next_load(folder):
    killed = decode_in_another_process(folder, "killed")
    assert killed.returncode == -signal.SIGKILL and len(temporaries(folder)) == 1
    read(folder)
    assert temporaries(folder) == [] and len(cache_files(folder)) == 1


def test_only_temporaries_whose_writer_is_gone_are_removed(folder):
    with decode_in_another_process(folder, "alive", wait=False) as writer:
        try:
            deadline = time.monotonic() + 300
            while not temporaries(folder) and writer.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            (writing,) = temporaries(folder)
            key = writing.name.split(".")[1]
            other_machine = folder / CACHE_FOLDER / f".{key}.{writer.pid}@another-machine.abcd1234.tmp"
            old_other_machine = folder / CACHE_FOLDER / f".{key}.{writer.pid}@another-machine.efgh5678.tmp"
            old_unnamed = folder / CACHE_FOLDER / f".{key}.ijkl9012.tmp"  # an older version named no writer
            two_days_ago = time.time() - 2 * 24 * 3600
            for path in (other_machine, old_other_machine, old_unnamed):
                path.write_bytes(b"being written")
            for path in (old_other_machine, old_unnamed):
                os.utime(path, (two_days_ago, two_days_ago))
            read(folder)
            assert temporaries(folder) == sorted([writing, other_machine])  # kept: their writers may be alive
        finally:
            writer.kill()
    read(folder)
    assert temporaries(folder) == [other_machine]  # its writer, on another machine, cannot be asked yet


# ----------------------------------------------------------------- symbolic links and empty class folders


def test_a_symlink_to_an_image_elsewhere_is_read_and_its_changes_are_seen(folder, tmp_path):
    generator = np.random.default_rng(8)
    outside = tmp_path / "elsewhere" / "plane.png"
    outside.parent.mkdir()
    old_pixels = random_image(generator)
    save_uncompressed(old_pixels, outside)
    (folder / "train" / "airplane" / "5.png").symlink_to(outside)  # after 0.png and 1.png
    before = os.stat(outside)
    assert torch.equal(read(folder)["train_images"][2], torch.from_numpy(old_pixels).permute(2, 0, 1))
    replacement = tmp_path / "replacement.png"
    new_pixels = random_image(generator)
    save_uncompressed(new_pixels, replacement)
    os.utime(replacement, ns=(before.st_atime_ns, before.st_mtime_ns))
    shutil.copy2(replacement, outside)
    assert torch.equal(read(folder)["train_images"][2], torch.from_numpy(new_pixels).permute(2, 0, 1))


@pytest.mark.parametrize("link, message", [
    ("loop.png", "is a symbolic link that loops back on itself"),
    ("{tmp}/missing.png", "is a symbolic link to .*missing.png, which does not exist"),
    ("/dev/zero", "has an image's name but is a device \\(through a symbolic link to /dev/zero\\)"),
], ids=["self-loop", "dangling", "dev-zero"])
def test_a_symlink_that_is_no_image_is_refused_with_its_path(folder, tmp_path, link, message):
    path = folder / "test" / "cat" / "loop.png"
    path.symlink_to(link.format(tmp=tmp_path))
    with pytest.raises(ImageFolderError, match=re.escape(str(path)) + " " + message):
        read(folder)


def test_an_empty_class_folder_is_refused_with_its_name(folder):
    for path in (folder / "train" / "deer").iterdir():
        path.unlink()
    with pytest.raises(ImageFolderError, match=re.escape(str(folder / "train")) + " has class folders without "
                                               "images: deer"):
        read(folder)
