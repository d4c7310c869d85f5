"""The trained CIFAR-10 ResNets (helpers/trained_models.py) in notebook 05's CifarResNet: the same networks.

The weights are read from the folder $CIFAR10_RESNETS names (CI: the offline copy beside the checkout) or from
data/cifar10-resnets; no test downloads anything: the download tests fetch from a server on 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from helpers import (
    TrainedModelUnavailableError,
    available_trained_depths,
    downloads,
    load_trained_cifar_resnet,
    trained_models,
)
from tests import real_cifar
from tests.notebook_code import notebook_namespace
from tests.support import FileServer

FILES = trained_models.WEIGHTS_FILES
# The best test accuracy stored in each file, as the shared copy's README lists it.
STORED_ACCURACY = {20: 91.78, 32: 92.78, 44: 93.14, 56: 93.62}
# The recorded accuracies on the JPEG copy come from the same code on one thread; another torch, CPU or JPEG
# decoder may flip a few borderline images of the 10,000, and 0.25 points is 25 of them.
ACCURACY_MARGIN = 0.25
WEIGHTS_MISSING = ("The trained CIFAR-10 ResNets are not on this machine: set CIFAR10_RESNETS to a folder holding "
                   "resnet20-12fca82f.th, resnet32-d509ac18.th, resnet44-014dd654.th and resnet56-4bfd9763.th "
                   "(from https://github.com/akamaster/pytorch_resnet_cifar10/tree/master/pretrained_models), or put "
                   "them in data/cifar10-resnets.")


@pytest.fixture(scope="session")
def weights_folder() -> Path:
    """The folder holding the four trained files: $CIFAR10_RESNETS, else data/cifar10-resnets; skipped without."""
    named = os.environ.get(trained_models.ENVIRONMENT_VARIABLE)
    places = ([Path(named).expanduser()] if named else []) + [real_cifar.ROOT / "data" / trained_models.FOLDER_NAME]
    found = next((folder for folder in places if all((folder / file).is_file() for file in FILES.values())), None)
    if found is None:
        pytest.skip(WEIGHTS_MISSING)
    return found.resolve()


@pytest.fixture
def weights_here(weights_folder, tmp_path, monkeypatch) -> Path:
    """$CIFAR10_RESNETS names the folder of the four files, and the data folder is empty."""
    monkeypatch.setenv(trained_models.ENVIRONMENT_VARIABLE, str(weights_folder))
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    return weights_folder


@pytest.fixture
def nowhere(tmp_path, monkeypatch) -> Path:
    """No copy anywhere: $CIFAR10_RESNETS unset, an empty data folder; returns the data folder."""
    monkeypatch.delenv(trained_models.ENVIRONMENT_VARIABLE, raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    for name in ("no_proxy", "NO_PROXY"):  # the local server is reached directly, whatever proxy is named
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    monkeypatch.setattr(downloads.tqdm, "monitor_interval", 0)  # no monitor thread left behind
    return tmp_path / "data"


@pytest.fixture(scope="module")
def notebook() -> dict:
    return notebook_namespace(real_cifar.WHY_RESIDUAL_NOTEBOOK)


def random_images(count: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn(count, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def file_state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


# --------------------------------------------------------------------------- the file's own network


def reference_forward(state: dict[str, torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """The file's network, written from its README: keys `module.*`, head `linear`, BatchNorm with the running
    statistics, and option A shortcuts that put the old channels in the middle (half the zeros before)."""
    def weight(name):
        return state[f"module.{name}"]

    def batch_norm(x, name):
        return F.batch_norm(x, weight(f"{name}.running_mean"), weight(f"{name}.running_var"),
                            weight(f"{name}.weight"), weight(f"{name}.bias"), training=False, eps=1e-5)

    def shortcut(x, out_channels, stride):
        if stride == 1:
            return x
        zeros = (out_channels - x.shape[1]) // 2
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, zeros, zeros))  # zero channels half before, half after

    num_blocks = sum(1 for key in state if key.startswith("module.layer1.") and key.endswith("conv1.weight"))
    x = F.relu(batch_norm(F.conv2d(images, weight("conv1.weight"), padding=1), "bn1"))
    for stage in (1, 2, 3):
        for block in range(num_blocks):
            name, stride = f"layer{stage}.{block}", 2 if stage > 1 and block == 0 else 1
            out = F.relu(batch_norm(F.conv2d(x, weight(f"{name}.conv1.weight"), stride=stride, padding=1),
                                    f"{name}.bn1"))
            out = batch_norm(F.conv2d(out, weight(f"{name}.conv2.weight"), padding=1), f"{name}.bn2")
            x = F.relu(out + shortcut(x, out.shape[1], stride))
    return F.linear(x.mean(dim=(2, 3)), weight("linear.weight"), weight("linear.bias"))


@pytest.mark.parametrize("depth", sorted(FILES))
def test_the_loaded_network_computes_what_the_files_own_network_computes(weights_here, notebook, depth):
    model = notebook["CifarResNet"](depth)
    loaded = load_trained_cifar_resnet(model)
    images = random_images()
    with torch.no_grad():
        ours = model(images)
        theirs = reference_forward(file_state(loaded.path), images)
    assert ours.shape == (16, 10)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    assert ours.std() > 1.0  # trained logits, not a network that answers alike for everything


def test_without_the_channel_reordering_the_network_would_differ(weights_here, notebook):
    """The reordering is what makes the two the same: loading the file's channels as they are gives other outputs."""
    model = notebook["CifarResNet"](20)
    path = weights_here / FILES[20]
    state = {trained_models._notebook_key(key): tensor for key, tensor in file_state(path).items()}
    model.load_state_dict(state, strict=False)  # the file has no num_batches_tracked
    model.eval()
    images = random_images()
    with torch.no_grad():
        unordered, theirs = model(images), reference_forward(file_state(path), images)
    assert (unordered - theirs).abs().max() > 1.0


def test_loading_says_what_was_loaded_and_how_to_normalise_and_prints_nothing(weights_here, notebook, capsys):
    model = notebook["CifarResNet"](56).train()
    loaded = load_trained_cifar_resnet(model, download=False)
    assert capsys.readouterr() == ("", "")
    assert loaded == (56, weights_here / FILES[56], STORED_ACCURACY[56], (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert not any(module.training for module in model.modules())
    counts = {buffer.item() for name, buffer in model.named_buffers() if name.endswith("num_batches_tracked")}
    assert counts == {200 * 391}  # set explicitly: the file has none


@pytest.mark.parametrize("depth", sorted(FILES))
def test_each_file_stores_the_accuracy_its_readme_lists(weights_here, notebook, depth):
    assert load_trained_cifar_resnet(notebook["CifarResNet"](depth)).stored_accuracy == STORED_ACCURACY[depth]


def test_the_plain_twin_takes_the_same_weights(weights_here, notebook, capsys):
    plain, residual = notebook["CifarResNet"](20, shortcuts=False), notebook["CifarResNet"](20)
    load_trained_cifar_resnet(plain), load_trained_cifar_resnet(residual)
    assert capsys.readouterr() == ("", "")
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), residual.state_dict().values()))


def test_all_four_depths_are_available_from_the_named_folder(weights_here):
    assert available_trained_depths() == (20, 32, 44, 56)


# --------------------------------------------------------------------------- accuracy on the JPEG copy


@pytest.fixture(scope="module")
def cifar10(cifar10_dir):
    return real_cifar.load_real_cifar(cifar10_dir)


@pytest.fixture(scope="module")
def recorded() -> dict:
    return real_cifar.read_record("trained_resnets")


@pytest.mark.parametrize("depth", sorted(FILES))
def test_each_trained_network_scores_its_recorded_accuracy_on_the_jpeg_copy(weights_here, notebook, cifar10,
                                                                           recorded, one_cpu_thread, depth):
    accuracy, loaded = real_cifar.trained_resnet_accuracy(notebook, cifar10, depth)
    assert accuracy == pytest.approx(recorded["depths"][str(depth)]["jpeg_accuracy"], abs=ACCURACY_MARGIN)
    assert loaded.stored_accuracy == recorded["depths"][str(depth)]["stored_accuracy"]


def test_the_record_says_how_it_was_measured_and_the_readme_quotes_it(recorded):
    assert "scripts/measure_real_cifar.py trained_resnets" in recorded["command"]
    assert recorded["date"] and recorded["machine"]["threads"] == 1 and recorded["machine"]["torch"]
    for depth, result in recorded["depths"].items():
        assert result["stored_accuracy"] == STORED_ACCURACY[int(depth)]
        assert result["difference"] == pytest.approx(result["jpeg_accuracy"] - result["stored_accuracy"], abs=0.005)
    assert real_cifar.trained_resnets_table(recorded) in (real_cifar.ROOT / "README.md").read_text()


# --------------------------------------------------------------------------- what is refused


@pytest.mark.parametrize("depth", [8, 110])
def test_a_depth_without_trained_weights_is_refused_naming_the_four(notebook, depth):
    with pytest.raises(ValueError, match="20, 32, 44, 56"):
        load_trained_cifar_resnet(notebook["CifarResNet"](depth), download=False)


@pytest.mark.parametrize("options, differing", [({"width": 8}, "conv1.weight"), ({"num_classes": 100}, "fc.weight")])
def test_another_structure_is_refused_and_the_network_left_as_it_was(weights_here, notebook, options, differing):
    model = notebook["CifarResNet"](20, **options)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    with pytest.raises(ValueError, match=rf"not the ResNet-20 .*\({differing} is .*width=16") as refused:
        load_trained_cifar_resnet(model)
    assert "\n" not in str(refused.value)
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())


def test_a_damaged_file_is_refused_and_left_as_it_is(notebook, tmp_path, monkeypatch):
    folder = tmp_path / "copy"
    folder.mkdir()
    damaged = folder / FILES[20]
    damaged.write_bytes(b"not the weights")
    monkeypatch.setenv(trained_models.ENVIRONMENT_VARIABLE, str(folder))
    with pytest.raises(TrainedModelUnavailableError, match=r"is damaged .*12fca82f.*delete it and run again"):
        load_trained_cifar_resnet(notebook["CifarResNet"](20))
    assert damaged.read_bytes() == b"not the weights"


def test_a_missing_file_offline_says_in_one_sentence_what_to_do(notebook, nowhere, monkeypatch):
    def offline(urls, path, *args, **kwargs):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(trained_models, "download_first", offline)
    with pytest.raises(TrainedModelUnavailableError) as refused:
        load_trained_cifar_resnet(notebook["CifarResNet"](56), smoke_test=False)
    message = str(refused.value)
    assert message == (
        "The trained weights resnet56-4bfd9763.th are not on this machine and downloading it failed ([Errno -3] "
        "Temporary failure in name resolution): set CIFAR10_RESNETS to a folder holding them, or download "
        "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/resnet56-4bfd9763.th "
        f"into {(nowhere / 'cifar10-resnets').resolve()}.")
    assert isinstance(refused.value, RuntimeError)
    assert not (nowhere / "cifar10-resnets").exists() or not any((nowhere / "cifar10-resnets").iterdir())


def test_a_smoke_run_without_the_files_uses_untrained_networks_and_says_so_once(notebook, nowhere, monkeypatch,
                                                                                  capsys):
    def offline(urls, path, *args, **kwargs):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(trained_models, "download_first", offline)
    monkeypatch.setattr(trained_models, "_said_untrained", [])
    torch.manual_seed(0)
    model = notebook["CifarResNet"](20)
    untrained = {key: value.clone() for key, value in model.state_dict().items()}
    loaded = [load_trained_cifar_resnet(model, smoke_test=True),
              load_trained_cifar_resnet(notebook["CifarResNet"](56), smoke_test=True)]
    assert [(weights.depth, weights.path, weights.stored_accuracy) for weights in loaded] == [(20, None, None),
                                                                                             (56, None, None)]
    assert all(torch.equal(value, untrained[key]) for key, value in model.state_dict().items())
    printed = capsys.readouterr().out
    assert printed.count("\n") == 1 and "untrained networks in their place" in printed and "CIFAR10_RESNETS" in printed
    assert "Error" not in printed


@pytest.mark.parametrize("download, named", [(False, False), (None, True)])
def test_no_download_is_tried_when_it_is_off_or_a_copy_is_named(notebook, nowhere, tmp_path, monkeypatch,
                                                                download, named):
    if named:  # a named copy is meant to be complete: a missing file there is an error, not a download
        monkeypatch.setenv(trained_models.ENVIRONMENT_VARIABLE, str(tmp_path / "empty"))
    monkeypatch.setattr(trained_models, "download_first", lambda *args, **kwargs: pytest.fail("downloaded"))
    why = f"CIFAR10_RESNETS names {tmp_path / 'empty'}, which lacks it" if named else "download=False was given"
    with pytest.raises(TrainedModelUnavailableError) as refused:
        load_trained_cifar_resnet(notebook["CifarResNet"](20), download=download, smoke_test=False)
    assert f"not on this machine and {why}: set CIFAR10_RESNETS to a folder holding them, or download" \
        in str(refused.value)


# --------------------------------------------------------------------------- downloading (from 127.0.0.1)


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A local HTTP server for a folder, standing in for the repository's address; yields (folder, requests)."""
    server = FileServer(tmp_path / "served")
    server.folder.mkdir()
    monkeypatch.setattr(trained_models, "DOWNLOAD_URL", f"{server.url}/{{file}}")
    yield server.folder, server.requests
    server.server.shutdown()
    server.server.server_close()


def test_a_missing_file_is_downloaded_into_the_data_folder_once(weights_folder, notebook, nowhere, served):
    folder, requests = served
    shutil.copy(weights_folder / FILES[20], folder)
    first = load_trained_cifar_resnet(notebook["CifarResNet"](20))
    second = load_trained_cifar_resnet(notebook["CifarResNet"](20))
    assert first.path == second.path == nowhere / "cifar10-resnets" / FILES[20]
    assert first.path.read_bytes() == (weights_folder / FILES[20]).read_bytes()
    assert requests == [f"/{FILES[20]}"]  # the second load found the first's file
    assert sorted(path.name for path in first.path.parent.iterdir()) == [FILES[20]]


def test_a_damaged_download_is_refused_and_nothing_kept(notebook, nowhere, served):
    folder, _ = served
    (folder / FILES[20]).write_bytes(b"an error page, not the weights")
    with pytest.raises(TrainedModelUnavailableError, match="downloading it failed .*SHA-256"):
        load_trained_cifar_resnet(notebook["CifarResNet"](20), smoke_test=False)
    cache = nowhere / "cifar10-resnets"
    assert not cache.exists() or not any(cache.iterdir())
    assert available_trained_depths() == ()


def test_a_damaged_download_never_replaces_a_good_file(weights_folder, nowhere, served):
    folder, _ = served
    (folder / FILES[20]).write_bytes(b"an error page, not the weights")
    good = nowhere / "cifar10-resnets" / FILES[20]
    good.parent.mkdir(parents=True)
    shutil.copy(weights_folder / FILES[20], good)
    with pytest.raises(TrainedModelUnavailableError, match="downloading it failed"):
        trained_models._download(FILES[20], None)
    assert good.read_bytes() == (weights_folder / FILES[20]).read_bytes()
