"""Serving images: both pipelines, the device pipeline's steps, the recipe and what a loader tells."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset
from torchvision import transforms

from helpers import environment, loaders, set_all_seeds
from helpers.datasets import DATASETS, make_synthetic_data, split_indices
from helpers.device_pipeline import DeviceLoader, resize_images
from helpers.loaders import data_signature, get_dataloaders, is_augmented
from helpers.recipe import ImageRecipe, compute_channel_stats, unnormalize

CIFAR_RECIPE = ImageRecipe(resize=70, crop=64, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
CIFAR_CLASSES = DATASETS["cifar10"].classes


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


@pytest.mark.parametrize("pipeline", ["device", "classic"])
@pytest.mark.parametrize(("recipe", "augmented"), [
    (ImageRecipe(), False), (ImageRecipe(resize=32), False), (ImageRecipe(resize=32, crop=32), False),
    (ImageRecipe(resize=32, crop=28), True), (ImageRecipe(hflip=True), True)])
def test_a_loader_says_whether_its_training_images_are_augmented(pipeline, recipe, augmented):
    data = make_synthetic_data("mnist", num_train=40, num_test=8)
    train_loader, valid_loader, test_loader = get_dataloaders("mnist", 8, recipe=recipe, data=data, pipeline=pipeline,
                                                              num_workers=0, device="cpu")
    assert is_augmented(train_loader) is augmented
    assert is_augmented(valid_loader) is False and is_augmented(test_loader) is False


def test_augmentation_of_custom_transforms_and_foreign_loaders():
    data = make_synthetic_data("mnist", num_train=40, num_test=8)
    flips = transforms.Compose([transforms.RandomHorizontalFlip(), transforms.ToTensor()])
    train_loader, valid_loader, _ = get_dataloaders("mnist", 8, data=data, pipeline="classic", num_workers=0,
                                                    train_transforms=flips, test_transforms=transforms.ToTensor())
    assert is_augmented(train_loader) is True and is_augmented(valid_loader) is False
    assert is_augmented(DataLoader(TensorDataset(torch.zeros(4, 1, 2, 2), torch.zeros(4)))) is None


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
    with pytest.raises(ValueError, match="batch_size must be a whole number of at least 1"):
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



@pytest.mark.parametrize("pipeline", ["device", "classic"])
def test_a_batch_larger_than_the_training_set_still_gives_one_batch(pipeline, empty_data_dir):
    train, _, _ = get_dataloaders("mnist", 1000, pipeline=pipeline, num_workers=0, download=False, smoke_test=True)
    batches = list(train)
    assert len(train) == len(batches) == 1
    assert len(batches[0][1]) == environment.SMOKE_TRAIN_SIZE - round(0.1 * environment.SMOKE_TRAIN_SIZE)


# ----------------------------------------------------------------- the recipe checks itself


@pytest.mark.parametrize("options, message", [
    ({"mean": (0.5,)}, "mean without std"),
    ({"std": (0.5,)}, "std without mean"),
    ({"mean": (0.5, 0.5), "std": (0.5,)}, "2 mean values but 1 std"),
    ({"mean": (0.5,), "std": (0.0,)}, "std must be positive"),
    ({"mean": (0.5, 0.5, 0.5), "std": (0.2, -0.2, 0.2)}, "std must be positive"),
    ({"mean": 0.5, "std": 0.5}, "one value per channel"),
    ({"mean": (), "std": ()}, "one finite number per channel"),
    ({"crop": 0}, "crop must be at least 1"),
    ({"resize": -70}, "resize must be at least 1"),
    ({"resize": 70.5}, "whole number of pixels"),
    ({"crop": "64"}, "whole number of pixels"),
    ({"resize": 60, "crop": 64}, "crop <= resize"),
])
def test_a_wrong_recipe_is_refused_where_it_is_written(options, message):
    with pytest.raises(ValueError, match=message):
        ImageRecipe(**options)


def test_a_recipe_takes_numpy_numbers_and_lists():
    recipe = ImageRecipe(resize=np.int64(70), crop=np.int32(64), mean=[0.5, np.float32(0.25)], std=np.array([0.5, 0.5]))
    assert recipe == ImageRecipe(resize=70, crop=64, mean=(0.5, 0.25), std=(0.5, 0.5))
    assert type(recipe.resize) is int and hash(recipe) == hash(ImageRecipe(resize=70, crop=64, mean=(0.5, 0.25),
                                                                           std=(0.5, 0.5)))


def test_mean_and_std_must_fit_the_channels(empty_data_dir):
    two_channels = ImageRecipe(mean=(0.5, 0.5), std=(0.5, 0.5))
    with pytest.raises(ValueError, match="the images have 3 channel"):
        get_dataloaders("cifar10", 8, recipe=two_channels, download=False, smoke_test=True)
    with pytest.raises(ValueError, match="the images have 1 channel"):
        DeviceLoader(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.zeros(4, dtype=torch.long), 2, two_channels,
                     ["a", "b"])
    # One value serves every channel, as with torchvision's Normalize.
    get_dataloaders("cifar10", 8, recipe=ImageRecipe(mean=(0.5,), std=(0.5,)), download=False, smoke_test=True)


@pytest.mark.parametrize("batch_size", ["64", 1.5, 64.0, True, None])
@pytest.mark.parametrize("pipeline", ["device", "classic"])
def test_batch_size_must_be_a_whole_number(batch_size, pipeline, empty_data_dir):
    with pytest.raises(TypeError, match="batch_size must be a whole number of at least 1, e.g. 64"):
        get_dataloaders("mnist", batch_size, pipeline=pipeline, num_workers=0, download=False, smoke_test=True)


@pytest.mark.parametrize("pipeline", ["device", "classic"])
def test_a_numpy_batch_size_is_welcome(pipeline, empty_data_dir):
    train, _, _ = get_dataloaders("mnist", np.int64(16), pipeline=pipeline, num_workers=0, download=False,
                                  smoke_test=True)
    assert train.batch_size == 16 and type(train.batch_size) is int
    assert len(next(iter(train))[1]) == 16


# ----------------------------------------------------------------- data in memory


def test_data_in_memory_is_served_as_given(monkeypatch):
    """data= skips loading (and smoke mode's subset): the benchmarks feed the loaders this way."""
    monkeypatch.setenv("SMOKE_TEST", "1")
    monkeypatch.setattr(loaders, "load_dataset", lambda *args, **kwargs: pytest.fail("nothing may be loaded"))
    data = make_synthetic_data("cifar10", num_train=500, num_test=70)
    train, valid, test = get_dataloaders("my_images", 32, data=data, recipe=CIFAR_RECIPE, device="cpu")
    assert (train.num_images, valid.num_images, test.num_images) == (450, 50, 70)
    assert torch.equal(test.images, resize_images(data.test_images, 70))
    assert train.classes == data.classes and data_signature(train)["dataset"] == "my_images"


# ----------------------------------------------------------------- labels and images, checked when loaders are made


def with_test_labels(data, change):
    """The data with its test labels changed by change(labels) (a seeded copy: the training labels stay good)."""
    return data._replace(test_labels=change(data.test_labels.clone()))


def at_random_places(value):
    def change(labels):
        generator = torch.Generator().manual_seed(3)
        labels[torch.randperm(len(labels), generator=generator)[:5]] = value
        return labels
    return change


BAD_LABELS = {
    "-1": (at_random_places(-1), r"The test labels include -1, but classes are numbered from 0"),
    "-100": (at_random_places(-100), r"The test labels include -100.*ignore_index.*leave those images out"),
    "10": (at_random_places(10), r"The test labels include class 10, but there are 10 classes, numbered 0 to 9"),
    "1000": (at_random_places(1000), r"The test labels include class 1000, but there are 10 classes"),
    "float": (lambda labels: labels.float(), r"The test labels are torch.float32.*torch.long.*labels.long\(\)"),
    "int32": (lambda labels: labels.int(), r"The test labels are torch.int32.*torch.long.*labels.long\(\)"),
    "(N, 1)": (lambda labels: labels[:, None], r"The test labels have shape \(70, 1\).*shape \(N,\).*view\(-1\)"),
}


@pytest.mark.parametrize("pipeline", ["device", "classic"])
@pytest.mark.parametrize("bad", BAD_LABELS)
def test_bad_labels_in_one_split_are_refused_when_the_loaders_are_made(pipeline, bad):
    change, message = BAD_LABELS[bad]
    data = with_test_labels(make_synthetic_data("cifar10", num_train=100, num_test=70), change)
    with pytest.raises(ValueError, match=message):
        get_dataloaders("my_images", 32, data=data, recipe=CIFAR_RECIPE, pipeline=pipeline, num_workers=0,
                        device="cpu")


def test_labels_counting_from_one_are_named_as_such():
    data = with_test_labels(make_synthetic_data("mnist", num_train=100, num_test=70), lambda labels: labels + 1)
    with pytest.raises(ValueError, match=r"include class 10.*count from 1: subtract 1"):
        get_dataloaders("my_images", 32, data=data, device="cpu")


@pytest.mark.parametrize("pipeline", ["device", "classic"])
def test_float_images_already_scaled_are_refused_not_divided_by_255_again(pipeline):
    data = make_synthetic_data("mnist", num_train=100, num_test=70)
    scaled = data._replace(train_images=data.train_images.float() / 255)
    with pytest.raises(TypeError, match=r"The training images are torch.float32 in \[0, 1\], already scaled.*"
                                        r"\(images \* 255\).round\(\).to\(torch.uint8\)"):
        get_dataloaders("my_images", 32, data=scaled, pipeline=pipeline, num_workers=0, device="cpu")
    with pytest.raises(TypeError, match=r"The images are torch.float32 in \[0, 1\], already scaled"):
        DeviceLoader(scaled.train_images, data.train_labels, 32, ImageRecipe(), data.classes)


def test_images_of_another_type_or_without_a_channel_dimension_are_refused():
    labels = torch.zeros(4, dtype=torch.long)
    with pytest.raises(TypeError, match=r"The images are torch.float32, but the loaders take uint8 pixels"):
        DeviceLoader(torch.full((4, 1, 8, 8), 200.0), labels, 2, ImageRecipe(), ["x"])
    with pytest.raises(ValueError, match=r"shape \(N, C, H, W\).*\(got shape \(4, 8, 8\)\).*unsqueeze\(1\)"):
        DeviceLoader(torch.zeros(4, 8, 8, dtype=torch.uint8), labels, 2, ImageRecipe(), ["x"])


# ----------------------------------------------------------------- like a torch DataLoader


@pytest.mark.parametrize("pipeline", ["device", "classic"])
def test_course_code_for_dataloaders_works(pipeline, empty_data_dir):
    train, valid, _ = get_dataloaders("cifar10", 16, recipe=CIFAR_RECIPE, pipeline=pipeline, num_workers=0,
                                      download=False, smoke_test=True)
    num_valid = round(0.1 * environment.SMOKE_TRAIN_SIZE)
    assert len(train.dataset) == environment.SMOKE_TRAIN_SIZE - num_valid and len(valid.dataset) == num_valid
    assert train.batch_size == valid.batch_size == 16
    images, labels = next(iter(train))
    assert images.shape == (16, 3, 64, 64) and labels.shape == (16,)
    # Twice through, each pass a whole epoch: validation the same images in the same order.
    first, second = ([batch for batch in valid] for _ in range(2))
    assert len(first) == len(second) == len(valid) == -(-num_valid // 16)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, second))
    assert sum(len(labels) for _, labels in first) == len(valid.dataset)
    # The dataset's items are the loader's images, one by one.
    image, label = valid.dataset[1]
    assert torch.equal(image, first[0][0][1]) and label == int(first[0][1][1])
    assert tuple(valid.dataset.classes) == CIFAR_CLASSES


def test_a_device_dataset_indexes_like_a_sequence(empty_data_dir):
    _, valid, _ = get_dataloaders("mnist", 8, download=False, smoke_test=True)
    assert torch.equal(valid.dataset[-1][0], valid.dataset[len(valid.dataset) - 1][0])
    with pytest.raises(IndexError):
        valid.dataset[len(valid.dataset)]
    assert torch.equal(valid.dataset.targets, valid.labels)


# ----------------------------------------------------------------- data_signature


def signature_of(pipeline="device", recipe=CIFAR_RECIPE, seed=123, data=None, split=0):
    data = data if data is not None else make_synthetic_data("cifar10", num_train=60, num_test=20)
    loaders_ = get_dataloaders("cifar10", 8, recipe=recipe, pipeline=pipeline, num_workers=0, seed=seed, data=data,
                               device="cpu")
    return data_signature(loaders_[split])


@pytest.mark.parametrize("pipeline", ["device", "classic"])
def test_a_signature_is_plain_json_and_repeats(pipeline):
    signature = signature_of(pipeline)
    assert json.loads(json.dumps(signature)) == signature
    assert signature == signature_of(pipeline)
    assert signature["pipeline"] == pipeline and signature["num_images"] == 54 and signature["dataset"] == "cifar10"
    assert signature["recipe"] == {"resize": 70, "crop": 64, "mean": [0.5] * 3, "std": [0.5] * 3, "hflip": False}


@pytest.mark.parametrize("pipeline", ["device", "classic"])
@pytest.mark.parametrize("change", [
    {"recipe": ImageRecipe(resize=70, crop=60, mean=(0.5,) * 3, std=(0.5,) * 3)},
    {"recipe": ImageRecipe(resize=70, crop=64, mean=(0.4,) * 3, std=(0.5,) * 3)},
    {"recipe": ImageRecipe(resize=70, crop=64, mean=(0.5,) * 3, std=(0.5,) * 3, hflip=True)},
    {"recipe": ImageRecipe(resize=72, crop=64, mean=(0.5,) * 3, std=(0.5,) * 3)},
    {"seed": 7},  # another validation split
    {"split": 1},  # the validation loader, not the training loader
])
def test_a_signature_changes_with_the_recipe_and_the_split(pipeline, change):
    assert signature_of(pipeline, **change) != signature_of(pipeline)


@pytest.mark.parametrize("pipeline", ["device", "classic"])
def test_a_signature_changes_with_one_pixel_or_one_label(pipeline):
    data = make_synthetic_data("cifar10", num_train=60, num_test=20)
    first_training_image = split_indices(60, 0.1, seed=123)[0][0]
    train_images, other_label = data.train_images.clone(), data.train_labels.clone()
    train_images[first_training_image, 0, 0, 0] ^= 1
    other_label[first_training_image] = (other_label[first_training_image] + 1) % 10
    original = signature_of(pipeline, data=data, split=2)  # the test split: unchanged data
    assert signature_of(pipeline, data=data._replace(train_images=train_images), split=2) == original
    assert signature_of(pipeline, data=data._replace(train_images=train_images)) != signature_of(pipeline, data=data)
    assert signature_of(pipeline, data=data._replace(train_labels=other_label)) != signature_of(pipeline, data=data)


def test_both_pipelines_see_the_same_content():
    device, classic = signature_of("device"), signature_of("classic")
    assert device["content"] == classic["content"] and device != classic


def test_a_custom_transform_is_part_of_the_classic_signature():
    data = make_synthetic_data("mnist", num_train=40, num_test=10)

    def signature(transform):
        train, _, _ = get_dataloaders("mnist", 8, pipeline="classic", num_workers=0, data=data,
                                      train_transforms=transform)
        return data_signature(train)

    flip = transforms.Compose([transforms.RandomHorizontalFlip(p=1.0), transforms.ToTensor()])
    identity = transforms.Compose([transforms.Lambda(lambda image: image), transforms.ToTensor()])
    assert signature(flip) != signature(transforms.ToTensor())
    assert "RandomHorizontalFlip(p=1.0)" in signature(flip)["transform"]
    assert " at 0x" not in signature(identity)["transform"]  # no memory address, which differs on every run


def test_a_foreign_dataloader_is_described_by_what_can_be_read_from_it():
    images = torch.rand(10, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    loader = DataLoader(TensorDataset(images, torch.zeros(10)), batch_size=4, shuffle=True)
    signature = data_signature(loader)
    assert {key: signature[key] for key in ("loader", "dataset", "num_images", "batch_size", "order", "num_workers")} \
        == {"loader": "DataLoader", "dataset": "TensorDataset", "num_images": 10, "batch_size": 4,
            "order": "RandomSampler", "num_workers": 0}
    assert signature["content"].startswith("values ")  # a TensorDataset's tensors are hashed
    other = DataLoader(TensorDataset(images + 1, torch.zeros(10)), batch_size=4, shuffle=True)
    assert data_signature(other)["content"] != signature["content"]


# ----------------------------------------------------------------- on a GPU


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_device_pipeline_on_cuda_serves_the_cpu_batches_and_signature():
    data = make_synthetic_data("cifar10", num_train=100, num_test=20)
    recipe = ImageRecipe(resize=70, crop=64, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3), hflip=True)
    on_cpu, on_gpu = (get_dataloaders("cifar10", 16, recipe=recipe, data=data, device=device)
                      for device in ("cpu", "cuda"))
    for cpu_loader, gpu_loader in zip(on_cpu, on_gpu):
        set_all_seeds(3)
        cpu_images, cpu_labels = next(iter(cpu_loader))
        set_all_seeds(3)
        gpu_images, gpu_labels = next(iter(gpu_loader))
        assert gpu_images.is_cuda and gpu_labels.is_cuda
        torch.testing.assert_close(gpu_images.cpu(), cpu_images)
        assert torch.equal(gpu_labels.cpu(), cpu_labels)
        assert data_signature(gpu_loader) == data_signature(cpu_loader)
        assert gpu_loader.dataset[0][0].is_cuda and len(gpu_loader.dataset) == len(cpu_loader.dataset)


def test_both_pipelines_tell_the_same_things_about_their_loaders():
    """A notebook may switch to pipeline="classic" and keep every line that reads its loaders."""
    data = make_synthetic_data("cifar10", num_train=40, num_test=8)
    device_loaders = get_dataloaders("cifar10", 8, recipe=CIFAR_RECIPE, data=data, device="cpu")
    classic_loaders = get_dataloaders("cifar10", 8, recipe=CIFAR_RECIPE, data=data, pipeline="classic", num_workers=0)
    for device_loader, classic_loader in zip(device_loaders, classic_loaders):
        assert torch.equal(device_loader.images, classic_loader.images)  # uint8, resized once to 70x70
        assert device_loader.images.shape[1:] == (3, 70, 70)
        assert device_loader.num_images == classic_loader.num_images == len(classic_loader.dataset)
        assert device_loader.classes == classic_loader.classes == CIFAR_CLASSES
        assert device_loader.recipe == classic_loader.recipe == CIFAR_RECIPE
        assert device_loader.augmented == classic_loader.augmented
        assert device_loader.synthetic is classic_loader.synthetic is True
