"""Error analysis and visual explanations: right numbers, the evidence found, the model left as it was."""

from __future__ import annotations

import warnings

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from helpers import (
    ImageData,
    ImageRecipe,
    figure_style,
    get_dataloaders,
    grad_cam,
    most_confused_pairs,
    show_confident_mistakes,
    show_feature_maps,
    show_first_layer_filters,
    show_grad_cam,
)

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
RECIPE = ImageRecipe(mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))


@pytest.fixture(autouse=True)
def quiet_and_closed():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # Not ResourceWarning: it comes from whatever the garbage collector finalises now, often another test's.
        warnings.simplefilter("default", ResourceWarning)
        yield
    plt.close("all")
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------- models and data


def mini_vgg(num_classes: int = 10) -> nn.Module:
    """VGG's layout in small: a flat `features` with in-place ReLUs and max-pools, then a classifier."""
    torch.manual_seed(0)
    model = nn.Module()
    model.features = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
    )
    model.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(16 * 4 * 4, num_classes))
    model.forward = lambda x: model.classifier(model.features(x))
    return model


class Residual(nn.Module):
    """d2l's residual block: two 3x3 convolutions, an optional 1x1 convolution on the shortcut."""

    def __init__(self, in_channels, channels, use_1x1conv=False, strides=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, padding=1, stride=strides)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv3 = nn.Conv2d(in_channels, channels, 1, stride=strides) if use_1x1conv else None
        self.bn1, self.bn2 = nn.BatchNorm2d(channels), nn.BatchNorm2d(channels)

    def forward(self, x):
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(y + (x if self.conv3 is None else self.conv3(x)))


def d2l_resnet18(in_channels: int = 1, num_classes: int = 10) -> nn.Sequential:
    """ResNet-18 as d2l builds it: nn.Sequential(b1, ..., b5, pool, flatten, linear), stages named '0'..'4'."""
    torch.manual_seed(0)

    def stage(in_ch, channels, num_blocks, first_block=False):
        return nn.Sequential(*[Residual(in_ch if i == 0 else channels, channels, use_1x1conv=i == 0 and not first_block,
                                        strides=2 if i == 0 and not first_block else 1) for i in range(num_blocks)])

    b1 = nn.Sequential(nn.Conv2d(in_channels, 64, 7, stride=2, padding=3), nn.BatchNorm2d(64), nn.ReLU(),
                       nn.MaxPool2d(3, stride=2, padding=1))
    return nn.Sequential(b1, stage(64, 64, 2, first_block=True), stage(64, 128, 2), stage(128, 256, 2),
                         stage(256, 512, 2), nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Linear(512, num_classes))


def resnet18(num_classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=num_classes)


def image_data(num_test: int = 40, size: int = 32, seed: int = 0) -> ImageData:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (num_test, 3, size, size), dtype=torch.uint8, generator=generator)
    labels = torch.arange(num_test) % len(CLASSES)
    return ImageData(images, labels, images, labels, CLASSES, synthetic=True)


def loader_of(pipeline: str = "device", data: ImageData | None = None, batch_size: int = 16):
    """The test loader of one pipeline over `data`, normalised with RECIPE."""
    data = data or image_data()
    loaders = get_dataloaders("cifar10", batch_size, recipe=RECIPE, data=data, pipeline=pipeline,
                              validation_fraction=0.25, num_workers=0, device="cpu")
    return loaders[2]


def normalised(images: torch.Tensor) -> torch.Tensor:
    """uint8 images as the loaders serve them with RECIPE."""
    mean, std = (torch.tensor(values).view(1, -1, 1, 1) for values in (RECIPE.mean, RECIPE.std))
    return (images.float() / 255 - mean) / std


def shown_images(fig) -> list[np.ndarray]:
    """The pictures (not the heat maps) drawn in a figure's panels, in order."""
    return [np.asarray(ax.images[0].get_array()) for ax in fig.axes if ax.images]


def figure_title(fig) -> str:
    """The figure's title (its suptitle, the one figure-level text)."""
    (title,) = (text.get_text() for text in fig.texts)
    return title


def batch_of(images: torch.Tensor) -> list:
    """The simplest loader: one batch of the given images, all labelled 0."""
    return [(images, torch.zeros(len(images), dtype=torch.long))]


# --------------------------------------------------------------------------- most confused pairs


def test_most_confused_pairs_are_the_largest_off_diagonal_cells(capsys):
    matrix = np.array([[5, 2, 0], [7, 3, 1], [0, 4, 9]])
    pairs = most_confused_pairs(matrix, ["cat", "dog", "ship"], k=3)
    assert [(p.true_class, p.predicted_class, p.count) for p in pairs] == [
        ("dog", "cat", 7), ("ship", "dog", 4), ("cat", "dog", 2)]
    assert [p.share_of_class for p in pairs] == pytest.approx([7 / 11, 4 / 13, 2 / 7])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["true", "class"] and len(lines) == 4
    assert lines[1].split() == ["dog", "cat", "7", "of", "11", "63.6%"]  # a small class's count, not only its share


def test_most_confused_pairs_of_a_smoke_run_say_so_above_the_table(capsys):
    figure_style.set_run_mode(True)
    most_confused_pairs(np.array([[5, 2], [7, 3]]), ["cat", "dog"], k=1)
    banner, header, row = capsys.readouterr().out.splitlines()
    assert banner == "[SMOKE RUN: a quick check that the code runs, not a trained network]"
    assert row.split() == ["dog", "cat", "7", "of", "10", "70.0%"]


def test_most_confused_pairs_accepts_tensors_and_float_matrices(capsys):
    counts = torch.tensor([[3, 1], [6, 0]])
    pairs = most_confused_pairs(counts, ["a", "b"], k=2, show=False)
    assert [(p.true_class, p.count) for p in pairs] == [("b", 6), ("a", 1)]
    rates = most_confused_pairs(counts.double() / counts.sum(1, keepdim=True), ["a", "b"], k=1)
    assert rates[0].count == pytest.approx(1.0) and "b" in capsys.readouterr().out


def test_most_confused_pairs_refuses_more_pairs_than_there_are():
    with pytest.raises(ValueError, match="has 6 pairs of different classes: choose k from 1 to 6"):
        most_confused_pairs(np.ones((3, 3)), ["a", "b", "c"], k=7)
    with pytest.raises(ValueError, match="one row per class name"):
        most_confused_pairs(np.ones((3, 3)), ["a", "b"], k=1)


# --------------------------------------------------------------------------- Grad-CAM finds the evidence


class RegionModel(nn.Module):
    """The class depends on one region only: class 1 = bright minus dark in the top-right corner."""

    REGION = (slice(0, 12), slice(20, 32))

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, bias=False), nn.ReLU(inplace=True))
        with torch.no_grad():
            self.features[0].weight.copy_(torch.stack([torch.ones(1, 3, 3), -torch.ones(1, 3, 3)]) / 9)
        self.head = nn.Linear(2, 2)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[-1.0, 1.0], [1.0, -1.0]]))
            self.head.bias.zero_()

    def forward(self, x):
        rows, columns = self.REGION
        return self.head(self.features(x)[:, :, rows, columns].mean(dim=(2, 3)))


def region_images(count: int = 6) -> torch.Tensor:
    """A bright square somewhere in the region, a dark square elsewhere, and some noise."""
    generator = torch.Generator().manual_seed(0)
    images = 0.05 * torch.randn(count, 1, 32, 32, generator=generator)
    for image in images:
        top, left = (torch.randint(low, low + 8, (1,), generator=generator).item() for low in (0, 20))
        image[0, top:top + 4, left:left + 4] = 1.0
        image[0, 22:26, 4:8] = -1.0  # outside the region: it does not change the class
    return images


@pytest.mark.parametrize("layer", ["features", "features.0"])
def test_grad_cam_finds_the_evidence_in_the_region_the_class_depends_on(layer):
    model, images = RegionModel(), region_images()
    assert model(images).argmax(1).tolist() == [1] * len(images)
    heat_maps = grad_cam(model, images, layer)
    assert heat_maps.shape == (len(images), 32, 32)
    assert heat_maps.min() >= 0 and torch.allclose(heat_maps.amax(dim=(1, 2)), torch.ones(len(images)))
    rows, columns = RegionModel.REGION
    for heat_map in heat_maps:
        row, column = divmod(heat_map.argmax().item(), 32)
        assert rows.start <= row < rows.stop and columns.start <= column < columns.stop
    # The dark square outside the region is evidence against class 1: no heat there.
    assert heat_maps[:, 22:26, 4:8].max() < 0.05


def test_grad_cam_for_a_given_target_shows_that_class_evidence():
    model, images = RegionModel(), region_images(2)
    against = grad_cam(model, images, "features.0", target=0)  # class 0's evidence: the dark square
    for heat_map in against:
        row, column = divmod(heat_map.argmax().item(), 32)
        assert 20 <= row < 28 and 2 <= column < 10
    per_image = grad_cam(model, images, model.features[0], target=torch.tensor([0, 1]))
    torch.testing.assert_close(per_image[0], against[0])
    torch.testing.assert_close(per_image[1], grad_cam(model, images[1:], "features.0")[0])


# --------------------------------------------------------------------------- the same as captum's


def captum_grad_cam(model, images, layer, target):
    """Captum's LayerGradCam, upsampled and scaled to [0, 1] as grad_cam does."""
    from captum.attr import LayerAttribution, LayerGradCam

    model.eval()
    maps = LayerGradCam(model, layer).attribute(images, target=target, relu_attributions=True)
    maps = LayerAttribution.interpolate(maps, tuple(images.shape[-2:]), interpolate_mode="bilinear").squeeze(1)
    return maps / maps.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)


@pytest.mark.parametrize("build, layer_name, size", [
    (mini_vgg, "features.7", 32),  # the last convolution, followed by an in-place ReLU
    (mini_vgg, "features.3", 32),
    (resnet18, "layer4", 64),
    (resnet18, "layer3.1", 64),
])
def test_grad_cam_matches_captum(build, layer_name, size):
    pytest.importorskip("captum", reason="captum (in the test extra) is the reference implementation")
    model = build()
    images = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        predicted = model.eval()(images).argmax(1)
    ours = grad_cam(model, images, layer_name)
    reference = captum_grad_cam(model, images, model.get_submodule(layer_name), predicted)
    assert ours.amax() == 1.0 and reference.amax() > 0.99  # a real map, not all zeros
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-4)


# --------------------------------------------------------------------------- clear errors


def test_grad_cam_names_what_is_wrong_with_the_layer_or_target():
    model, images = resnet18(), torch.randn(2, 3, 64, 64)
    with pytest.raises(ValueError, match="no layer named 'layer5'.*conv1, bn1, relu, maxpool, layer1"):
        grad_cam(model, images, "layer5")
    with pytest.raises(ValueError, match=r"'fc' \(Linear\) is not a convolution"):
        grad_cam(model, images, "fc")
    with pytest.raises(ValueError, match="not part of the model"):
        grad_cam(model, images, nn.Conv2d(3, 3, 1))
    with pytest.raises(ValueError, match="target must be None.*one class in 0..9"):
        grad_cam(model, images, "layer4", target=10)
    with pytest.raises(ValueError, match="for each of the 2 images"):
        grad_cam(model, images, "layer4", target=[1, 2, 3])
    flattening_block = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten())
    with pytest.raises(ValueError, match=r"output of shape \(2, 1800\), not a feature map"):
        grad_cam(nn.Sequential(flattening_block, nn.Linear(1800, 3)), torch.randn(2, 3, 32, 32), "0")


# --------------------------------------------------------------------------- no side effects


def model_state(model: nn.Module):
    """Every module's mode, every parameter's flag and gradient, every buffer's values."""
    return ([module.training for module in model.modules()],
            [(p.requires_grad, None if p.grad is None else p.grad.clone()) for p in model.parameters()],
            [buffer.clone() for buffer in model.buffers()])


def assert_same_state(model, before):
    modes, parameters, buffers = model_state(model)
    assert modes == before[0]
    for (flag, grad), (flag_before, grad_before) in zip(parameters, before[1]):
        assert flag == flag_before
        assert (grad is None and grad_before is None) or torch.equal(grad, grad_before)
    assert all(torch.equal(a, b) for a, b in zip(buffers, before[2]))
    for module in model.modules():
        assert not module._forward_hooks and not module._backward_hooks and not module._forward_pre_hooks


def awkward_model() -> nn.Module:
    """Training mode with a frozen eval-mode part, a frozen weight and a gradient left from training."""
    model = mini_vgg().train()
    model.features[3:6].eval()
    model.features[0].weight.requires_grad_(False)
    model.classifier[2].weight.grad = torch.full_like(model.classifier[2].weight, 0.5)
    return model


def every_helper(model, loader):
    images = next(iter(loader))[0]
    grad_cam(model, images, "features.7")
    show_grad_cam(model, loader, "features.7", num_examples=3)
    show_feature_maps(model, loader)
    show_confident_mistakes(model, loader, num_examples=3)
    show_first_layer_filters(model)


def test_every_helper_leaves_the_model_as_it_was():
    model, loader = awkward_model(), loader_of()
    before = model_state(model)
    every_helper(model, loader)
    assert_same_state(model, before)
    assert model.classifier[2].weight.grad.eq(0.5).all()


class BrokenLoader:
    """Yields images with the wrong number of channels: the model raises mid-way."""

    classes = CLASSES
    recipe = RECIPE

    def __iter__(self):
        yield torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
        yield torch.randn(4, 5, 32, 32), torch.tensor([0, 1, 2, 3])


@pytest.mark.parametrize("call", [
    lambda model: grad_cam(model, torch.randn(2, 5, 32, 32), "features.7"),
    lambda model: grad_cam(model, torch.randn(2, 3, 32, 32), "features.7", target=99),
    lambda model: show_feature_maps(model, batch_of(torch.randn(1, 3, 32, 32)), layers=["features.2", "classifier"]),
    lambda model: show_feature_maps(model, batch_of(torch.randn(1, 5, 32, 32))),
    lambda model: show_confident_mistakes(model, BrokenLoader()),
])
def test_helpers_leave_the_model_as_it_was_also_when_they_raise(call):
    model = awkward_model()
    before = model_state(model)
    with pytest.raises((ValueError, RuntimeError)):
        call(model)
    assert_same_state(model, before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; none on this machine")
def test_grad_cam_on_cuda_matches_the_cpu():
    model, images = resnet18(), torch.randn(3, 3, 64, 64)
    on_cpu = grad_cam(model, images, "layer4")
    on_gpu = grad_cam(model.cuda(), images, "layer4")  # the helper moves the images to the model
    assert on_gpu.device.type == "cpu"
    torch.testing.assert_close(on_gpu, on_cpu, atol=1e-3, rtol=1e-3)


# --------------------------------------------------------------------------- figures, with both pipelines


def luminance(pictures: np.ndarray) -> np.ndarray:
    return pictures @ np.array([0.299, 0.587, 0.114])


@pytest.mark.parametrize("pipeline", ["device", "classic"])
def test_grad_cam_figure_shows_the_loader_images_unnormalised(pipeline):
    data = image_data()
    model = mini_vgg()
    fig = show_grad_cam(model, loader_of(pipeline, data), "features.7", num_examples=5)
    pictures = shown_images(fig)
    assert len(pictures) == 10  # each image beside its overlay
    expected = data.test_images[:5].permute(0, 2, 3, 1).float().numpy() / 255
    np.testing.assert_allclose(np.stack(pictures[0::2]), expected, atol=1e-5)
    # Under the heat map in grey, so that the only colours there are the heat map's.
    np.testing.assert_allclose(np.stack(pictures[1::2]), luminance(expected), atol=1e-5)
    heat_maps = [np.asarray(ax.images[1].get_array()) for ax in fig.axes if len(ax.images) == 2]
    np.testing.assert_allclose(np.stack(heat_maps), grad_cam(model, normalised(data.test_images[:5]),
                                                             "features.7").numpy(), atol=1e-4)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles[0] == f"T: {CLASSES[data.test_labels[0]]}" and titles[1].startswith("P: ")
    assert "'features.7'" in figure_title(fig)


def test_grad_cam_figure_reads_as_pairs_with_a_uniform_colour_map_and_a_colour_bar():
    fig = show_grad_cam(mini_vgg(), loader_of(), "features.7", num_examples=4)
    heat_maps = [ax.images[1] for ax in fig.axes if len(ax.images) == 2]
    assert len(heat_maps) == 4
    for heat_map in heat_maps:  # one colour scale for all: one colour bar reads every map
        assert heat_map.get_cmap().name == "inferno" and 0 < heat_map.get_alpha() < 1
        assert heat_map.get_clim() == (0, 1)
    (colour_bar,) = [heat_map.colorbar for heat_map in heat_maps if heat_map.colorbar is not None]
    assert colour_bar.ax.get_ylabel().startswith("Grad-CAM")
    fig.canvas.draw()
    first_pair = [ax.get_position() for ax in fig.axes[:2]]
    second_pair_image = fig.axes[2].get_position()
    inside_gap = first_pair[1].x0 - first_pair[0].x1
    between_pairs = second_pair_image.x0 - first_pair[1].x1
    assert first_pair[0].y0 == pytest.approx(second_pair_image.y0)  # two pairs side by side
    assert between_pairs > 3 * max(inside_gap, 0.002)  # a pair's two panels sit together, apart from the next pair
    assert all(ax.title.get_fontsize() >= 11 for ax in fig.axes[:8])
    assert fig.get_size_inches()[0] <= 10  # a notebook shows it at full size


def test_figures_of_synthetic_images_say_so_in_their_title():
    loader, model = loader_of(), mini_vgg()
    loader.synthetic = True  # what the loaders say when the dataset was replaced by synthetic images
    for fig in (show_grad_cam(model, loader, "features.7", num_examples=2), show_feature_maps(model, loader),
                show_confident_mistakes(model, loader, num_examples=2)):
        assert figure_title(fig).startswith("Synthetic stand-in images")
    assert not figure_title(show_first_layer_filters(model)).startswith("Synthetic")  # weights, not images


@pytest.mark.parametrize("pipeline", ["device", "classic"])
def test_confident_mistakes_are_the_wrong_predictions_with_the_highest_probability(pipeline):
    data, model = image_data(), mini_vgg()
    with torch.no_grad():
        probabilities = torch.softmax(model.eval()(normalised(data.test_images)), dim=1)
    confidence, predicted = probabilities.max(1)
    wrong = (predicted != data.test_labels).nonzero().flatten()
    expected = wrong[confidence[wrong].argsort(descending=True)][:4]

    fig = show_confident_mistakes(model, loader_of(pipeline, data), num_examples=4)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == [f"P: {CLASSES[predicted[i]]} ({confidence[i]:.0%})\nT: {CLASSES[data.test_labels[i]]}"
                      for i in expected.tolist()]
    np.testing.assert_allclose(np.stack(shown_images(fig)),
                               data.test_images[expected].permute(0, 2, 3, 1).float().numpy() / 255, atol=1e-5)


def test_confident_mistakes_of_a_perfect_model_says_so(capsys):
    labels = torch.arange(10)
    one_hot_images = torch.eye(10)[labels].view(10, 10, 1, 1)  # each image shows its own label
    perfect = nn.Sequential(nn.Flatten(), nn.Linear(10, 10))
    with torch.no_grad():
        perfect[1].weight.copy_(torch.eye(10))
    assert show_confident_mistakes(perfect, [(one_hot_images, labels)], classes=CLASSES) is None
    assert "No mistakes" in capsys.readouterr().out and not plt.get_fignums()


def test_mistakes_that_are_no_confident_ones_are_called_so(capsys):
    """An untrained network's "most confident" mistakes sit near chance: the figure and the text say so."""
    labels = torch.arange(10)
    images = torch.rand(10, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    unsure = nn.Sequential(nn.Flatten(), nn.Linear(16, 10))
    with torch.no_grad():
        unsure[1].weight.zero_()
        unsure[1].bias.copy_(torch.linspace(0, 0.9, 10))  # every image: class 9 at 15%, the others 6-14%
    fig = show_confident_mistakes(unsure, [(images, labels)], num_examples=4, classes=CLASSES)
    assert figure_title(fig).endswith("none is confident, every one under 50%")
    said = capsys.readouterr().out
    assert "No mistake here is a confident one: the most probable is at 15%, under 50%" in said
    assert "(chance, for 10 classes, is 10%)" in said


def test_num_examples_must_be_positive():
    with pytest.raises(ValueError, match="num_examples must be at least 1"):
        show_confident_mistakes(mini_vgg(), loader_of(), num_examples=0)
    with pytest.raises(ValueError, match="num_examples must be at least 1"):
        show_grad_cam(mini_vgg(), loader_of(), "features.7", num_examples=0)


@pytest.mark.parametrize("conv, shape", [
    (nn.Conv2d(3, 64, 3), (3, 3, 3)),  # VGG16's first layer
    (nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False), (7, 7, 3)),  # ResNet's stem
    (nn.Conv2d(1, 16, 5), (5, 5)),  # one input channel: grey
])
def test_first_layer_filters_are_drawn_each_scaled_to_its_range(conv, shape):
    kernels = shown_images(show_first_layer_filters(conv))
    assert len(kernels) == conv.out_channels and all(kernel.shape == shape for kernel in kernels)
    weight = conv.weight.detach()[5]
    weight = weight.permute(1, 2, 0) if weight.shape[0] == 3 else weight[0]
    np.testing.assert_allclose(kernels[5], ((weight - weight.min()) / (weight.max() - weight.min())).numpy(),
                               atol=1e-6)


def test_first_layer_filters_of_a_model_are_its_first_convolution():
    fig = show_first_layer_filters(resnet18(), max_filters=16)
    assert len(shown_images(fig)) == 16
    assert figure_title(fig) == "conv1: 64 filters of 3x7x7, the first 16 shown"
    assert figure_title(show_first_layer_filters(d2l_resnet18())).startswith("0.0: 64 filters of 1x7x7")
    with pytest.raises(ValueError, match="not a convolution and contains none"):
        show_first_layer_filters(nn.Linear(3, 4))


def row_labels(fig) -> list[str]:
    """The labels left of each row of feature maps, with the line break read as a colon."""
    return [ax.get_ylabel().replace("\n", ": ") for ax in fig.axes if ax.get_ylabel()]


def test_feature_maps_of_a_resnet_show_resolution_halving_and_channels_growing():
    model, image = resnet18(), torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    fig = show_feature_maps(model, batch_of(image), num_channels=4)
    assert row_labels(fig) == ["input: 3 x 64 x 64", "layer1: 64 x 16 x 16", "layer2: 128 x 8 x 8",
                               "layer3: 256 x 4 x 4", "layer4: 512 x 2 x 2"]
    with torch.no_grad():
        x = model.eval().maxpool(model.relu(model.bn1(model.conv1(image))))
        layer1 = model.layer1(x)[0]
    most_active = layer1.mean(dim=(1, 2)).argmax()
    np.testing.assert_allclose(shown_images(fig)[1], layer1[most_active].numpy(), atol=1e-5)


def test_feature_maps_show_the_loader_first_image_unnormalised_and_refuse_a_bare_image():
    data = image_data()
    fig = show_feature_maps(mini_vgg(), loader_of(data=data))
    np.testing.assert_allclose(shown_images(fig)[0], data.test_images[0].permute(1, 2, 0).float().numpy() / 255,
                               atol=1e-5)
    with pytest.raises(TypeError, match="Pass the loader, not an image.*show_feature_maps\\(model, test_loader\\)"):
        show_feature_maps(mini_vgg(), normalised(data.test_images[:1])[0])


def test_feature_maps_of_vgg_default_to_its_pools_and_of_d2l_to_the_stages_named():
    fig = show_feature_maps(mini_vgg(), batch_of(torch.randn(1, 3, 32, 32)))
    assert row_labels(fig)[1:] == ["features.2: 8 x 16 x 16", "features.6: 16 x 8 x 8", "features.9: 16 x 4 x 4"]
    net, images = d2l_resnet18(), batch_of(torch.randn(1, 1, 96, 96))
    with pytest.raises(ValueError, match=r"pass layers=\[\.\.\.\].*0, 1, 2, 3, 4, 5, 6, 7"):
        show_feature_maps(net, images)
    fig = show_feature_maps(net, images, layers=["0", "1", "2", "3", "4"])
    assert row_labels(fig)[1:] == ["0: 64 x 24 x 24", "1: 64 x 24 x 24", "2: 128 x 12 x 12",
                                   "3: 256 x 6 x 6", "4: 512 x 3 x 3"]
    with pytest.raises(ValueError, match="not feature maps"):
        show_feature_maps(net, images, layers=["7"])
