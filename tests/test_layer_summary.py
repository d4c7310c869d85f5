"""layer_summary: a header, every layer's output shape and parameters, or one row per stage or block."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from helpers import count_parameters, layer_summary
from tests.support import tiny_model


def resnet34() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet34(num_classes=10)


def test_layer_summary_lists_every_layer_with_its_shape_and_parameters_under_a_header(capsys):
    model = tiny_model()
    rows = layer_summary(model, (1, 28, 28))
    assert [row.output_shape for row in rows][:3] == [(4, 14, 14)] * 3
    assert rows[-1].output_shape == (10,)
    assert sum(row.num_params for row in rows) == count_parameters(model)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["Layer", "(type)", "Output", "shape", "Parameters"]
    assert set(lines[1]) == {"-"} and lines[2].split() == ["input", "(1,", "28,", "28)"]
    assert lines[3].split() == ["features.0", "(Conv2d)", "(4,", "14,", "14)", "40"]
    assert lines[-1].split() == ["Total", "parameters", f"{count_parameters(model):,}"]
    assert len(lines) == len(rows) + 5 and all(line == line.rstrip() for line in lines)


def test_layer_summary_of_resnet34_per_stage_and_per_block():
    model = resnet34()
    every_layer = layer_summary(model, (3, 64, 64), show=False)
    stages = layer_summary(model, (3, 64, 64), depth=1, show=False)
    blocks = layer_summary(model, (3, 64, 64), depth=2, show=False)
    assert [row.name for row in stages] == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3",
                                            "layer4", "avgpool", "fc"]
    assert [row.output_shape for row in stages[4:8]] == [(64, 16, 16), (128, 8, 8), (256, 4, 4), (512, 2, 2)]
    assert [row.name for row in blocks[4:7]] == ["layer1.0", "layer1.1", "layer1.2"]
    assert {row.kind for row in blocks[4:-2]} == {"BasicBlock"} and len(blocks) == 4 + 16 + 2  # 3+4+6+3 blocks
    assert len(every_layer) > 100  # what depth= saves the student from reading
    for rows in (every_layer, stages, blocks):  # each lists every parameter once
        assert sum(row.num_params for row in rows) == count_parameters(model)


def test_layer_summary_depth_of_a_sequential_model_lists_its_numbered_parts():
    model = nn.Sequential(nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU()), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))
    rows = layer_summary(model, (1, 28, 28), depth=1, show=False)
    assert [(row.name, row.kind, row.output_shape) for row in rows] == [
        ("0", "Sequential", (4, 26, 26)), ("1", "Flatten", (2704,)), ("2", "Linear", (10,))]


@pytest.mark.parametrize("depth", [0, -1, 1.5, True, "1"])
def test_layer_summary_refuses_a_depth_that_is_not_a_level(depth):
    with pytest.raises(ValueError, match="depth must be None .* or a whole number of at least 1"):
        layer_summary(tiny_model(), (1, 28, 28), depth=depth)
