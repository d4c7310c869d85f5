"""Trained CIFAR-10 ResNets of the paper's 6n+2 family, loaded into notebook 05's CifarResNet.

The weights are those of an independent reproduction of He et al. (2016), section 4.2: ResNet-20, 32, 44
and 56 with option A shortcuts, trained by Yerlan Idelbayev and published in
https://github.com/akamaster/pytorch_resnet_cifar10 (folder pretrained_models) under the BSD 2-clause
licence, whose notice the repository keeps as helpers/LICENSE-cifar10-resnets. They are not shipped with the
collection: they are downloaded from that repository, or read from a copy named by $CIFAR10_RESNETS.

Their network pads the new zero channels of a shortcut half before and half after the old ones; notebook
05's appends them after. The two compute the same function once the channels of stages 2 and 3 are
reordered, which load_trained_cifar_resnet does (see _stage_orders).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from .downloads import download_first
from .environment import default_data_dir, is_smoke_test

WEIGHTS_FILES = {20: "resnet20-12fca82f.th", 32: "resnet32-d509ac18.th",
                 44: "resnet44-014dd654.th", 56: "resnet56-4bfd9763.th"}
TRAINED_DEPTHS = tuple(WEIGHTS_FILES)
DOWNLOAD_URL = "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/{file}"
FOLDER_NAME = "cifar10-resnets"  # under the data folder, beside the datasets
ENVIRONMENT_VARIABLE = "CIFAR10_RESNETS"  # a folder holding the four files (tests and CI: the offline copy)
# The normalisation the networks were trained with (ImageNet's statistics, not CIFAR-10's own).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WIDTH = 16  # channels of the first stage; stages 2 and 3 have 32 and 64
NUM_CLASSES = 10
# The file stores no BatchNorm step count; its recipe ran 200 epochs of 391 batches (50,000 images, batch 128).
TRAINING_STEPS = 200 * 391


class TrainedModelUnavailableError(RuntimeError):
    """The trained weights cannot be had here: not found, not downloadable, or damaged."""


class TrainedWeights(NamedTuple):
    """What was loaded: the depth, the file, its stored best test accuracy (%), and the input normalisation."""

    depth: int
    path: Path | None  # None: a smoke run without the file, whose network stays untrained
    stored_accuracy: float | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def load_trained_cifar_resnet(model: nn.Module, *, data_dir=None, download: bool | None = None,
                              smoke_test: bool | None = None) -> TrainedWeights:
    """Load the trained weights of the model's depth into it (in place, left in eval mode).

    The model is notebook 05's CifarResNet (or its plain twin, which has the same weights) with width 16.
    The file is read from $CIFAR10_RESNETS, else from <data_dir>/cifar10-resnets/, else downloaded there.
    download: None (default) downloads a missing file unless $CIFAR10_RESNETS names a folder (then that
    copy is meant to be complete); True downloads a missing file even then; False never downloads.
    Feed the network images normalised with the returned mean and std: ImageRecipe(mean=..., std=...).
    In smoke mode (smoke_test; default: the SMOKE_TEST setting) weights that cannot be had leave the network
    untrained, say so once, and come back with path and stored_accuracy None, so that the notebook still runs.
    """
    depth = trained_depth(model)
    try:
        path = trained_weights_path(depth, data_dir=data_dir, download=download)
    except TrainedModelUnavailableError:
        smoke = is_smoke_test() if smoke_test is None else smoke_test
        if not smoke or _local_copy(WEIGHTS_FILES[depth], data_dir) is not None:  # a damaged file is to be fixed
            raise
        _say_untrained_once()
        return TrainedWeights(depth, None, None, IMAGENET_MEAN, IMAGENET_STD)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = notebook_state_dict(checkpoint["state_dict"])
    _check_shapes(model, state, depth)
    model.load_state_dict(state, strict=True)
    model.eval()
    return TrainedWeights(depth, path, round(float(checkpoint["best_prec1"]), 2), IMAGENET_MEAN, IMAGENET_STD)


_said_untrained = []  # the smoke-mode notice goes out once per process, not once per network


def _say_untrained_once() -> None:
    if not _said_untrained:
        _said_untrained.append(True)
        print(f"The trained ResNets are not on this machine and cannot be downloaded here: this smoke run uses "
              f"untrained networks in their place. To use the real ones, set {ENVIRONMENT_VARIABLE} to a folder "
              f"holding the four files, or run where {DOWNLOAD_URL.split('{')[0]} can be reached.")


def trained_depth(model: nn.Module) -> int:
    """The depth 6n+2 of a CifarResNet with n blocks per stage, refused unless trained weights exist for it."""
    stages = [getattr(model, name, None) for name in ("layer1", "layer2", "layer3")]
    if any(stage is None for stage in stages) or not hasattr(model, "fc"):
        raise ValueError(f"load_trained_cifar_resnet needs notebook 05's CifarResNet (layer1..layer3 and fc); "
                         f"got a {type(model).__name__}.")
    depth = 6 * len(model.layer1) + 2
    if depth not in WEIGHTS_FILES or len({len(stage) for stage in stages}) != 1:
        raise ValueError(f"Trained weights exist for ResNet-20, 32, 44 and 56 only; this network has "
                         f"{' + '.join(str(len(stage)) for stage in stages)} blocks (depth {depth}): build "
                         f"CifarResNet(depth) with depth one of {', '.join(map(str, TRAINED_DEPTHS))}.")
    return depth


def available_trained_depths(data_dir=None) -> tuple[int, ...]:
    """The depths whose weights are already on this machine (in $CIFAR10_RESNETS or the data folder): no download."""
    return tuple(depth for depth in TRAINED_DEPTHS if _local_copy(WEIGHTS_FILES[depth], data_dir) is not None)


def trained_weights_path(depth: int, *, data_dir=None, download: bool | None = None) -> Path:
    """The checked file of the weights of ResNet-depth: found in $CIFAR10_RESNETS or the data folder, or downloaded."""
    if depth not in WEIGHTS_FILES:
        raise ValueError(f"Trained weights exist for depths {', '.join(map(str, TRAINED_DEPTHS))} only (got {depth}).")
    file = WEIGHTS_FILES[depth]
    path = _local_copy(file, data_dir)
    if path is None:
        if download is False:
            raise TrainedModelUnavailableError(_missing_message(file, data_dir, why="download=False was given"))
        if download is None and os.environ.get(ENVIRONMENT_VARIABLE):  # a named copy is meant to be complete
            why = f"{ENVIRONMENT_VARIABLE} names {os.environ[ENVIRONMENT_VARIABLE]}, which lacks it"
            raise TrainedModelUnavailableError(_missing_message(file, data_dir, why=why))
        path = _download(file, data_dir)
    _check_hash(path)
    return path


def _local_copy(file: str, data_dir) -> Path | None:
    for folder in _folders(data_dir):
        if (folder / file).is_file():
            return folder / file
    return None


def _folders(data_dir) -> list[Path]:
    """Where the files are looked for, in order: $CIFAR10_RESNETS, then the data folder's cifar10-resnets/."""
    named = os.environ.get(ENVIRONMENT_VARIABLE)
    return ([Path(named).expanduser()] if named else []) + [_cache_folder(data_dir)]


def _cache_folder(data_dir) -> Path:
    return default_data_dir(data_dir) / FOLDER_NAME


def _download(file: str, data_dir) -> Path:
    """Fetch a file into the data folder; a download that fails its hash is deleted, never kept."""
    path = _cache_folder(data_dir) / file
    partial = path.with_name(path.name + ".download")
    try:
        download_first([DOWNLOAD_URL.format(file=file)], partial)
        if not _hash_matches(partial, file):
            raise OSError("what came does not have the SHA-256 its name promises")
        partial.replace(path)
    except Exception as error:  # no network, a host that answers 404, a damaged download...
        raise TrainedModelUnavailableError(
            _missing_message(file, data_dir, why=f"downloading it failed ({error})")) from error
    finally:
        partial.unlink(missing_ok=True)
    return path


def _missing_message(file: str, data_dir, why: str) -> str:
    return (f"The trained weights {file} are not on this machine and {why}: set {ENVIRONMENT_VARIABLE} to a "
            f"folder holding them, or download {DOWNLOAD_URL.format(file=file)} into "
            f"{_cache_folder(data_dir).resolve()}.")


def _check_hash(path: Path) -> None:
    """Refuse a file whose SHA-256 does not start with the hex digits in its name (torch.hub's convention)."""
    if not _hash_matches(path, path.name):
        raise TrainedModelUnavailableError(
            f"{path} is damaged (its SHA-256 does not start with the {_name_hash(path.name)} in its name): delete "
            f"it and run again to download it afresh from {DOWNLOAD_URL.format(file=path.name)}.")


def _hash_matches(path: Path, file: str) -> bool:
    return hashlib.sha256(path.read_bytes()).hexdigest().startswith(_name_hash(file))


def _name_hash(file: str) -> str:
    """The hex digits after the last hyphen of a name such as resnet20-12fca82f.th."""
    return file.rsplit("-", 1)[-1].split(".")[0]


def notebook_state_dict(file_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The file's state dict renamed and with its channels reordered for notebook 05's CifarResNet."""
    orders = _stage_orders()
    state = {}
    for file_key, tensor in file_state.items():
        key = _notebook_key(file_key)
        if key == "fc.weight":
            tensor = tensor[:, orders[2]]
        elif key != "fc.bias":
            out_order, in_order = _layer_orders(key, orders)
            # A convolution's weight is (out, in, 3, 3); a BatchNorm's tensors have one value per channel.
            tensor = tensor[out_order][:, in_order] if key.endswith("conv1.weight") or key.endswith("conv2.weight") \
                else tensor[out_order]
        state[key] = tensor.contiguous()
    for key in [key for key in state if key.endswith("running_var")]:
        state[key.replace("running_var", "num_batches_tracked")] = torch.tensor(TRAINING_STEPS)
    return state


def _notebook_key(file_key: str) -> str:
    """module.layer1.0.conv1.weight -> layer1.0.conv1.weight; the head `linear` is our `fc`."""
    key = file_key.removeprefix("module.")
    return "fc." + key.removeprefix("linear.") if key.startswith("linear.") else key


def _stage_orders() -> list[torch.Tensor]:
    """For each stage, order[i] = the file's channel that is our channel i.

    Stage 1 (16 channels) has no padded shortcut: the identity. Where a shortcut doubles C channels to 2C,
    the file puts old channel c at c + C/2 and ours at c. If our input channel c is the file's channel
    order_in[c], our output channel c (for c < C) must be the file's order_in[c] + C/2, so that both
    shortcuts add the same input to the same unit; our appended channels C..2C-1 receive zeros, and so must
    be the file's zero-fed channels: the rest, in ascending order. Identity shortcuts within a stage are
    unchanged by any order applied to the whole stage.
    """
    orders = [torch.arange(WIDTH)]
    for channels in (2 * WIDTH, 4 * WIDTH):
        shifted = orders[-1] + channels // 4
        rest = torch.tensor([c for c in range(channels) if c not in set(shifted.tolist())])
        orders.append(torch.cat([shifted, rest]))
    return orders


def _layer_orders(key: str, orders: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(output channel order, input channel order) of the convolution or BatchNorm a key belongs to."""
    if not key.startswith("layer"):  # the stem: RGB in, stage 1's channels out
        return orders[0], torch.arange(3)
    stage, block, layer = int(key[len("layer")]) - 1, int(key.split(".")[1]), key.split(".")[2]
    takes_previous_stage = stage > 0 and block == 0 and layer == "conv1"
    return orders[stage], orders[stage - 1] if takes_previous_stage else orders[stage]


def _check_shapes(model: nn.Module, state: dict[str, torch.Tensor], depth: int) -> None:
    """Refuse, in one sentence, a network whose parameters are not those of the file (e.g. another width)."""
    difference = _first_difference(model.state_dict(), state)
    if difference is not None:
        raise ValueError(f"This network is not the ResNet-{depth} of the trained weights ({difference}): build it "
                         f"as CifarResNet({depth}) with the defaults width={WIDTH}, num_classes={NUM_CLASSES}, "
                         "in_channels=3.")


def _first_difference(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> str | None:
    """The first way the network's state dict differs from the file's, in words; None when they match."""
    for key in expected:
        if key not in state:
            return f"the file has no {key}"
        if expected[key].shape != state[key].shape:
            return f"{key} is {tuple(expected[key].shape)} here but {tuple(state[key].shape)} in the file"
    extra = [key for key in state if key not in expected]
    return f"the network has no {extra[0]}" if extra else None
