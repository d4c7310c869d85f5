"""notebooks/02_vgg16_cifar10.ipynb: VGG16's size, shapes and torchvision layout, and the numbers its text states."""

import math
import re

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from helpers import ImageRecipe, grad_cam, solutions
from tests.notebook_code import code_cell, notebook_namespace

NOTEBOOK = "02_vgg16_cifar10.ipynb"

# Output channels of VGG16's thirteen 3x3 convolutions, block by block.
BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def expected_parameter_count(num_classes: int, pool_size: int = 3) -> int:
    """Parameters of VGG16 computed from the architecture: weights plus biases of every layer."""
    channels = [3] + [c for block in BLOCKS for c in block]
    convolutions = sum((c_in * 3 * 3 + 1) * c_out for c_in, c_out in zip(channels, channels[1:]))
    widths = [512 * pool_size * pool_size, 4096, 4096, num_classes]
    linears = sum((w_in + 1) * w_out for w_in, w_out in zip(widths, widths[1:]))
    return convolutions + linears


@pytest.fixture(scope="module")
def notebook() -> dict:
    return notebook_namespace(NOTEBOOK)


@pytest.fixture(scope="module")
def vgg16_class(notebook):
    return notebook["VGG16"]


@pytest.fixture(scope="module")
def model(vgg16_class):
    torch.manual_seed(0)
    return vgg16_class(num_classes=10).eval()


@pytest.fixture(scope="module")
def torchvision_features():
    return torchvision.models.vgg16().features  # built once: the whole network takes seconds on a CPU


def test_parameter_count_matches_the_architecture(model):
    count = sum(p.numel() for p in model.parameters())
    assert count == expected_parameter_count(10) == 50_415_434  # the course's "50.4 M"


def test_forward_gives_one_score_per_class_at_64x64(model):
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()


def test_final_feature_map_is_2x2_at_64x64_and_pooled_to_3x3(model):
    with torch.no_grad():
        feature_map = model.features(torch.randn(1, 3, 64, 64))
        pooled = model.avgpool(feature_map)
    assert feature_map.shape == (1, 512, 2, 2)
    assert pooled.shape == (1, 512, 3, 3)


def test_features_is_flat_and_in_torchvision_order(model, torchvision_features):
    reference = torchvision_features
    assert [type(layer) for layer in model.features] == [type(layer) for layer in reference]
    assert all(not list(layer.children()) for layer in model.features)


def output_shapes(model: nn.Module, names: list[str], size: int = 64) -> dict[str, tuple[int, ...]]:
    """(channels, height, width) of each named layer's output for one size x size image, read with hooks."""
    modules, shapes = dict(model.named_modules()), {}
    hooks = [modules[name].register_forward_hook(
        lambda _module, _inputs, output, name=name: shapes.__setitem__(name, tuple(output.shape[1:])))
        for name in names]
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    for hook in hooks:
        hook.remove()
    return {name: shapes[name] for name in names}


def test_feature_maps_and_grad_cam_layer_stated_in_the_text(model):
    pools = [name for name, layer in model.named_modules() if isinstance(layer, nn.MaxPool2d)]
    convolutions = [name for name, layer in model.named_modules() if isinstance(layer, nn.Conv2d)]
    shapes = output_shapes(model, pools + ["features.28"])
    assert [shapes[name] for name in pools] == [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4), (512, 2, 2)]
    assert convolutions[-1] == "features.28" and shapes["features.28"] == (512, 4, 4)
    assert model.features[0].weight.shape == (64, 3, 3, 3)  # the first-layer filters: 64 of 3x3x3
    heat_maps = grad_cam(model, torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)), "features.28")
    assert heat_maps.shape == (2, 64, 64)  # upsampled from the layer's 4x4 to the image


def test_torchvision_vgg16_features_load_strictly(vgg16_class, torchvision_features):
    reference = torchvision_features
    ours = vgg16_class(num_classes=10)
    result = ours.features.load_state_dict(reference.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    with torch.no_grad():
        probe = torch.randn(1, 3, 32, 32)
        assert torch.equal(ours.features(probe), reference(probe))


def test_kaiming_uniform_initialisation(model):
    for layer in model.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            fan_in = layer.weight[0].numel()
            bound = math.sqrt(6 / fan_in)  # kaiming_uniform_ with the ReLU gain
            assert layer.weight.abs().max() <= bound
            assert layer.weight.abs().max() > 0.9 * bound  # not PyTorch's default, 1/sqrt(fan_in)
            assert torch.all(layer.bias == 0)


@pytest.mark.parametrize("resize, crop, centre", [(70, 64, 3), (40, 32, 4), (36, 32, 2)])
def test_crop_offsets_read_from_the_recipes_transforms(notebook, resize, crop, centre):
    state = torch.get_rng_state()
    found_centre, offsets = notebook["crop_offsets"](ImageRecipe(resize=resize, crop=crop))
    assert torch.equal(torch.get_rng_state(), state)  # the seeded training's draws are left alone
    assert found_centre == centre
    assert offsets == list(range(resize - crop + 1))


def test_the_notebooks_recipe_shifts_a_crop_at_most_3_pixels_from_the_centre(notebook):
    centre, offsets = notebook["crop_offsets"](ImageRecipe(resize=70, crop=64))
    assert max(abs(offset - centre) for offset in offsets) == 3  # not 6: that is the range between two crops
    assert offsets[-1] - offsets[0] == 6


@pytest.mark.parametrize("options, cut_epoch", [
    ({"mode": "max", "factor": 0.1}, 12),       # patience 10: cut in the 11th epoch without improvement
    ({"mode": "max", "factor": 0.1, "patience": 3}, 5),
    ({"mode": "max", "factor": 0.5, "patience": 0}, 2),
])
def test_plateau_scheduler_cuts_after_more_than_patience_epochs_without_improvement(notebook, options, cut_epoch):
    scheduler, epoch = notebook["first_lr_cut"](**options)
    assert epoch == cut_epoch == scheduler.patience + 2  # epoch 1 is the best, then patience + 1 bad ones
    assert (scheduler.threshold, scheduler.threshold_mode) == (1e-4, "rel")


def test_torchvisions_1000_class_vgg16_differs_only_in_the_classifier():
    """The numbers of the text: 87,942,110 parameters more, 83,886,080 from the 7x7 pool, 4,056,030 from 990 classes."""
    with torch.device("meta"):
        theirs = sum(p.numel() for p in torchvision.models.vgg16().parameters())
    assert theirs == expected_parameter_count(1000, pool_size=7) == 138_357_544
    assert theirs - expected_parameter_count(10) == 87_942_110
    assert expected_parameter_count(10, pool_size=7) - expected_parameter_count(10) == 83_886_080
    assert expected_parameter_count(1000) - expected_parameter_count(10) == 4_056_030


def test_block_dropout_puts_one_dropout_after_each_of_the_five_blocks(vgg16_class):
    """The exercise's runs: the notebook's VGG16 with the reference add_block_dropout, as the notebook falls back to."""
    torch.manual_seed(0)
    plain = vgg16_class(num_classes=10).eval()
    features = plain.features
    with_dropout = solutions.add_block_dropout(features, nn.Dropout2d, 0.2)
    kinds = [type(layer).__name__ for layer in with_dropout]
    assert kinds.count("Dropout2d") == 5 and len(with_dropout) == len(features) + 5
    assert all(kinds[index - 1] == "MaxPool2d" for index, kind in enumerate(kinds) if kind == "Dropout2d")
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # in eval mode dropout does nothing: the same network
        assert torch.equal(with_dropout.eval()(images), features(images))


def test_the_exercise_checks_say_not_attempted_pass_and_fail_without_the_answer(notebook, capsys):
    check = code_cell(NOTEBOOK, 'check_quiz("window_dropped"')
    exec(check, {**notebook, "WINDOW_DROPPED": None})
    assert capsys.readouterr().out.startswith("NOT ATTEMPTED")
    for right in (1 / 512, 0.002, 0.00195):
        exec(check, {**notebook, "WINDOW_DROPPED": right})
        assert capsys.readouterr().out.startswith("PASS")
    for wrong in (0.5, 0.5 / 9, "1/512"):
        exec(check, {**notebook, "WINDOW_DROPPED": wrong})
        said = capsys.readouterr().out
        assert said.startswith("FAIL") and "0.00195" not in said


def test_the_block_dropout_exercise_starts_unwritten(notebook):
    """The notebook's own exercise cell raises NotImplementedError, so its check says NOT ATTEMPTED."""
    namespace = dict(notebook)
    exec(code_cell(NOTEBOOK, "def add_block_dropout("), namespace)
    with pytest.raises(NotImplementedError):
        namespace["add_block_dropout"](nn.Sequential(), nn.Dropout, 0.2)


@pytest.mark.parametrize(("in_size", "out_size", "windows"), [
    (2, 3, [(0,), (0, 1), (1,)]),  # the notebook's 2x2 map made into 3x3: the windows overlap
    (4, 2, [(0, 1), (2, 3)]),
    (7, 3, [(0, 1, 2), (2, 3, 4), (4, 5, 6)]),
])
def test_pool_windows_reads_the_adaptive_pools_windows(notebook, in_size, out_size, windows):
    assert notebook["pool_windows"](in_size, out_size) == windows


def test_adaptive_pool_windows_overlap_exactly_when_the_sizes_do_not_divide(notebook):
    for in_size in range(1, 13):
        for out_size in range(2, 8):
            windows = notebook["pool_windows"](in_size, out_size)
            overlap = any(set(first) & set(second) for first, second in zip(windows, windows[1:]))
            assert overlap == (in_size % out_size != 0), (in_size, out_size, windows)
            assert windows == [tuple(range(math.floor(i * in_size / out_size), math.ceil((i + 1) * in_size / out_size)))
                               for i in range(out_size)]


@pytest.mark.parametrize(("matrix", "expected"), [
    (np.full((10, 10), 7), (630, 336, 48 / 90)),  # every mistake equally likely: the random share itself
    (np.diag(np.arange(1, 11)), (0, 0, 0.0)),  # no mistakes
])
def test_crossing_share_counts_mistakes_between_vehicles_and_animals(notebook, matrix, expected):
    classes = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    mistakes, crossing, random_share = notebook["crossing_share"](matrix, classes)
    assert (mistakes, crossing) == expected[:2] and random_share == pytest.approx(expected[2])


def test_crossing_share_weighs_the_random_share_by_each_class_mistakes(notebook):
    classes = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    matrix = np.zeros((10, 10), dtype=int)
    matrix[3, 5] = 9  # nine cats taken for dogs: none crosses, and a cat's mistake would cross at 4/9
    matrix[9, 1] = 3  # three trucks taken for automobiles
    assert notebook["crossing_share"](matrix, classes) == (12, 0, pytest.approx((9 * 4 / 9 + 3 * 6 / 9) / 12))


@pytest.mark.parametrize(("synthetic", "source"), [(True, "synthetic stand-in images, not CIFAR-10"),
                                                   (False, "CIFAR-10 training images")])
def test_the_transforms_figure_says_where_its_images_come_from(notebook, synthetic, source):
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    recipe = ImageRecipe(resize=70, crop=64, mean=(0.5,) * 3, std=(0.5,) * 3)
    with torch.random.fork_rng(devices=[]):
        fig = notebook["show_transforms"](images, [0, 9], ("airplane",) + ("?",) * 8 + ("truck",), recipe,
                                          synthetic=synthetic)
    assert fig.get_suptitle() == f"What the recipe does to 2 {source}"
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == 2 * 6 and titles[:2] == ["airplane, 32x32", "resized 70x70"]
    assert titles[5] == titles[11] == "centre crop at (3, 3)"
    plt.close(fig)


def test_the_transforms_figure_frames_each_crop_where_its_title_says(notebook):
    """Every random crop is the part of the resized image that its title's offset names, framed on the resized image."""
    images = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    recipe = ImageRecipe(resize=70, crop=64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        fig = notebook["show_transforms"](images, [0], ("airplane",) * 10, recipe)
    resized_panel, crops = fig.axes[1], fig.axes[2:6]
    resized = resized_panel.get_images()[0].get_array()
    frames = [(round(patch.get_y() + 0.5), round(patch.get_x() + 0.5)) for patch in resized_panel.patches]
    offsets = []
    for ax in crops:
        top, left = map(int, re.fullmatch(r"(?:random|centre) crop at \((\d+), (\d+)\)", ax.get_title()).groups())
        assert 0 <= top <= 6 and 0 <= left <= 6
        assert np.array_equal(ax.get_images()[0].get_array(), resized[top:top + 64, left:left + 64])
        offsets.append((top, left))
    assert frames == offsets and offsets[-1] == (3, 3)
    assert [patch.get_linestyle() for patch in resized_panel.patches][-1] == "--"  # the centre window, dashed
    plt.close(fig)
