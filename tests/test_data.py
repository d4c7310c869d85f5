"""Loading, splitting and preparing images: both pipelines, smoke mode and missing data."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from helpers import environment, set_all_seeds
from helpers.data import (
    DatasetUnavailableError,
    DeviceLoader,
    ImageRecipe,
    compute_channel_stats,
    get_dataloaders,
    load_dataset,
    make_synthetic_data,
    read_idx,
    resize_images,
    split_indices,
    unnormalize,
)

CIFAR_RECIPE = ImageRecipe(resize=70, crop=64, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


@pytest.fixture
def empty_data_dir(tmp_path, monkeypatch):
    """A data folder with nothing in it; downloads are off in the tests that use it."""
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    return tmp_path


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


# ----------------------------------------------------------------- loaders


@pytest.mark.parametrize("pipeline", ["device", "classic"])
def test_loaders_give_cifar_shaped_batches(pipeline, empty_data_dir):
    loaders = get_dataloaders("cifar10", 16, recipe=CIFAR_RECIPE, pipeline=pipeline, num_workers=0,
                              download=False, smoke_test=True)
    assert len(loaders) == 3
    for loader in loaders:
        images, labels = next(iter(loader))
        assert images.shape == (16, 3, 64, 64) and images.dtype == torch.float32
        assert labels.dtype == torch.int64 and labels.shape == (16,)
        assert -1.0 <= images.min() and images.max() <= 1.0


def test_mnist_default_recipe_scales_to_unit_range(empty_data_dir):
    train, valid, test = get_dataloaders("mnist", 16, download=False, smoke_test=True)
    images, _ = next(iter(train))
    assert images.shape == (16, 1, 28, 28)
    assert 0.0 <= images.min() and images.max() <= 1.0


def test_split_sizes_reach_the_loaders(empty_data_dir):
    train, valid, test = get_dataloaders("cifar10", 10, validation_fraction=0.25, download=False, smoke_test=True)
    total = environment.SMOKE_TRAIN_SIZE
    assert valid.num_images == round(total * 0.25)
    assert train.num_images == total - valid.num_images
    assert test.num_images == environment.SMOKE_TEST_SIZE


def test_validation_uses_test_transforms(empty_data_dir):
    """Validation batches are centre crops: the same on every pass, unlike training batches."""
    train, valid, _ = get_dataloaders("cifar10", 64, recipe=CIFAR_RECIPE, download=False, smoke_test=True)
    assert torch.equal(next(iter(valid))[0], next(iter(valid))[0])
    assert not torch.equal(next(iter(train))[0], next(iter(train))[0])


def test_custom_transforms_are_used_by_the_classic_pipeline(empty_data_dir):
    flip_all = transforms.Compose([transforms.RandomHorizontalFlip(p=1.0), transforms.ToTensor()])
    train, _, test = get_dataloaders("mnist", 8, pipeline="classic", num_workers=0, train_transforms=flip_all,
                                     download=False, smoke_test=True)
    plain = transforms.ToTensor()(Image.fromarray(train.dataset.images[0][:, :, 0], mode="L"))
    assert torch.equal(train.dataset[0][0], plain.flip(-1))
    assert torch.equal(test.dataset[0][0], transforms.ToTensor()(Image.fromarray(test.dataset.images[0][:, :, 0])))


def test_custom_transforms_with_the_device_pipeline_is_an_error(empty_data_dir):
    with pytest.raises(ValueError, match="pipeline='classic'"):
        get_dataloaders("mnist", 8, train_transforms=transforms.ToTensor(), download=False, smoke_test=True)


@pytest.mark.parametrize("batch_size", [0, -5])
def test_batch_size_below_one_is_an_error(batch_size, empty_data_dir):
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        get_dataloaders("mnist", batch_size, download=False, smoke_test=True)


@pytest.mark.parametrize("pipeline", ["device", "classic"])
def test_set_all_seeds_repeats_the_training_batches(pipeline, empty_data_dir):
    train, _, _ = get_dataloaders("cifar10", 8, recipe=CIFAR_RECIPE, pipeline=pipeline, num_workers=0,
                                  download=False, smoke_test=True)
    batches = []
    for seed in (5, 5, 6):
        set_all_seeds(seed)
        batches.append(next(iter(train)))
    assert torch.equal(batches[0][0], batches[1][0]) and torch.equal(batches[0][1], batches[1][1])
    assert not torch.equal(batches[0][0], batches[2][0])


def test_a_loader_with_its_own_seed_repeats_its_batches():
    def first_batch():
        train = DeviceLoader(*make_synthetic_data("cifar10")[:2], 16, CIFAR_RECIPE, range(10),
                             train=True, shuffle=True, seed=7)
        return next(iter(train))

    (images_a, labels_a), (images_b, labels_b) = first_batch(), first_batch()
    assert torch.equal(images_a, images_b) and torch.equal(labels_a, labels_b)


# ----------------------------------------------------------------- the device pipeline


def test_resize_matches_pil_within_one_grey_level():
    images = make_synthetic_data("cifar10", num_train=32, num_test=1).train_images
    ours = resize_images(images, 70)
    classic = torch.stack([
        torch.from_numpy(np.array(transforms.Resize((70, 70))(Image.fromarray(img.permute(1, 2, 0).numpy()))))
        .permute(2, 0, 1) for img in images
    ])
    difference = (ours.int() - classic.int()).abs()
    assert difference.max() <= 1
    assert difference.float().mean() < 0.3


def _loader_over(images, train, hflip=False, seed=0):
    recipe = ImageRecipe(crop=64, hflip=hflip)
    return DeviceLoader(images, torch.zeros(len(images), dtype=torch.long), len(images), recipe, ["x"],
                        train=train, seed=seed)


def test_random_crops_are_windows_at_every_offset():
    image = torch.arange(70 * 70, dtype=torch.int32).view(1, 1, 70, 70)
    # Each pixel value encodes its position, so a crop's first pixel tells its offset.
    loader = _loader_over((image % 251).to(torch.uint8).repeat(400, 1, 1, 1), train=True)
    crops = loader.prepare(loader.images)
    offsets = set()
    for crop in crops:
        values = (crop[0] * 255).round().to(torch.int32)
        matches = [(top, left) for top in range(7) for left in range(7)
                   if torch.equal(values, (image[0, 0, top:top + 64, left:left + 64] % 251))]
        assert len(matches) == 1, "every crop is exactly one 64x64 window of the image"
        offsets.add(matches[0])
    assert offsets == {(top, left) for top in range(7) for left in range(7)}


def test_centre_crop_equals_torchvision_centre_crop():
    images = make_synthetic_data("cifar10", num_train=8, num_test=1).train_images
    images = resize_images(images, 70)
    ours = _loader_over(images, train=False).prepare(images)
    classic = torch.stack([transforms.Compose([transforms.CenterCrop(64), transforms.ToTensor()])(
        Image.fromarray(img.permute(1, 2, 0).numpy())) for img in images])
    assert torch.equal(ours, classic)


def test_horizontal_flips_happen_about_half_the_time():
    image = torch.randint(0, 256, (1, 1, 64, 64), dtype=torch.uint8)
    loader = _loader_over(image.repeat(1000, 1, 1, 1), train=True, hflip=True)
    out = loader.prepare(loader.images)
    original = image.float() / 255
    unchanged = (out == original).flatten(1).all(1)
    flipped = (out == original.flip(-1)).flatten(1).all(1)
    assert (unchanged ^ flipped).all()
    assert 400 < int(unchanged.sum()) < 600


def test_normalisation_matches_torchvision():
    images = make_synthetic_data("cifar10", num_train=4, num_test=1).train_images
    recipe = ImageRecipe(mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    ours = DeviceLoader(images, torch.zeros(4, dtype=torch.long), 4, recipe, ["x"]).prepare(images)
    classic = torch.stack([recipe.test_transforms()(Image.fromarray(img.permute(1, 2, 0).numpy())) for img in images])
    torch.testing.assert_close(ours, classic)


def test_unnormalize_inverts_normalize_and_leaves_its_input_alone():
    images = torch.rand(2, 3, 8, 8)
    normalized = transforms.Normalize((0.4, 0.5, 0.6), (0.2, 0.25, 0.3))(images)
    before = normalized.clone()
    restored = unnormalize(normalized, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    torch.testing.assert_close(restored, images)
    assert torch.equal(normalized, before)


def test_channel_stats_are_exact():
    images = torch.randint(0, 256, (50, 3, 9, 9), dtype=torch.uint8)
    mean, std = compute_channel_stats(images, chunk_size=7)
    as_float = images.double() / 255
    torch.testing.assert_close(torch.tensor(mean, dtype=torch.float64), as_float.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(torch.tensor(std, dtype=torch.float64),
                               as_float.permute(1, 0, 2, 3).flatten(1).std(dim=1, unbiased=False))


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


@pytest.mark.parametrize("value, expected", [("1", True), ("true", True), ("YES", True), ("0", False),
                                             ("false", False), ("", False)])
def test_smoke_mode_reads_the_environment(value, expected, monkeypatch):
    monkeypatch.setenv("SMOKE_TEST", value)
    assert environment.is_smoke_test() is expected


def test_smoke_mode_off_when_unset(monkeypatch):
    monkeypatch.delenv("SMOKE_TEST", raising=False)
    assert environment.is_smoke_test() is False


def test_unclear_smoke_setting_is_an_error(monkeypatch):
    monkeypatch.setenv("SMOKE_TEST", "maybe")
    with pytest.raises(ValueError, match="SMOKE_TEST=1"):
        environment.is_smoke_test()


def test_smoke_mode_substitutes_synthetic_data_and_says_so(empty_data_dir, capsys):
    data = load_dataset("cifar10", download=False, smoke_test=True)
    assert data.synthetic
    assert "synthetic" in capsys.readouterr().out


def test_missing_data_outside_smoke_mode_is_a_clear_error(empty_data_dir):
    with pytest.raises(DatasetUnavailableError) as error:
        load_dataset("cifar10", download=False, smoke_test=False)
    message = str(error.value)
    assert str(empty_data_dir) in message and "SMOKE_TEST=1" in message and "download=True" in message


def test_failed_download_outside_smoke_mode_is_a_clear_error(empty_data_dir, monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr("urllib.request.urlopen", no_network)
    with pytest.raises(DatasetUnavailableError, match="could not be downloaded"):
        load_dataset("mnist", download=True, smoke_test=False)


def test_data_dir_comes_from_argument_then_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "from-env"))
    assert environment.default_data_dir() == tmp_path / "from-env"
    assert environment.default_data_dir(tmp_path / "given") == tmp_path / "given"
    monkeypatch.delenv("DATA_DIR")
    assert environment.default_data_dir() == environment.repo_root() / "data"


def test_unknown_dataset_is_named_in_the_error():
    with pytest.raises(ValueError, match="cifar10"):
        load_dataset("imagenet")


# ----------------------------------------------------------------- real data from a system package


def test_real_fashion_mnist_loads_with_its_true_shape():
    # From data/ (torchvision's layout) or Debian's dataset-fashion-mnist, which .ci/run installs.
    data = load_dataset("fashion_mnist", download=False, smoke_test=False)
    assert not data.synthetic
    assert data.train_images.shape == (60_000, 1, 28, 28) and data.test_images.shape == (10_000, 1, 28, 28)
    assert torch.bincount(data.train_labels).tolist() == [6_000] * 10


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


@pytest.mark.parametrize("pipeline", ["device", "classic"])
def test_a_batch_larger_than_the_training_set_still_gives_one_batch(pipeline, empty_data_dir):
    train, _, _ = get_dataloaders("mnist", 1000, pipeline=pipeline, num_workers=0, download=False, smoke_test=True)
    batches = list(train)
    assert len(train) == len(batches) == 1
    assert len(batches[0][1]) == environment.SMOKE_TRAIN_SIZE - round(0.1 * environment.SMOKE_TRAIN_SIZE)


def test_run_mode_is_announced_in_one_line(monkeypatch, capsys):
    monkeypatch.setenv("SMOKE_TEST", "1")
    assert environment.print_run_mode() is True
    assert capsys.readouterr().out.count("\n") == 1


def test_a_full_run_without_a_gpu_warns_before_it_starts(monkeypatch, capsys):
    monkeypatch.setenv("SMOKE_TEST", "0")
    monkeypatch.setattr(environment, "get_device", lambda: torch.device("cpu"))
    assert environment.print_run_mode() is False
    assert "No GPU found" in capsys.readouterr().out
