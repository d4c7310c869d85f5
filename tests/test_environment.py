"""Where the code runs: smoke mode and its one parser, the run mode line, folders, the hardware."""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path

import pytest
import torch

import helpers
from helpers import environment

# ----------------------------------------------------------------- smoke mode


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


def test_run_mode_is_announced_in_one_line(monkeypatch, capsys):
    monkeypatch.setenv("SMOKE_TEST", "1")
    assert environment.print_run_mode() is True
    assert capsys.readouterr().out.count("\n") == 1


def test_a_full_run_without_a_gpu_warns_before_it_starts(monkeypatch, capsys):
    monkeypatch.setenv("SMOKE_TEST", "0")
    monkeypatch.setattr(environment, "get_device", lambda: torch.device("cpu"))
    assert environment.print_run_mode() is False
    assert "No GPU found" in capsys.readouterr().out


def test_data_dir_comes_from_argument_then_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "from-env"))
    assert environment.default_data_dir() == tmp_path / "from-env"
    assert environment.default_data_dir(tmp_path / "given") == tmp_path / "given"
    monkeypatch.delenv("DATA_DIR")
    monkeypatch.setattr(environment, "repo_root", lambda: tmp_path / "checkout")
    assert environment.default_data_dir() == tmp_path / "checkout" / "data"
    monkeypatch.setattr(environment, "repo_root", lambda: None)  # installed with pip, as on Colab
    assert environment.default_data_dir() == Path("data")


def test_an_empty_smoke_setting_means_unset(monkeypatch):
    monkeypatch.setenv("SMOKE_TEST", "  ")
    assert environment.smoke_test_setting() is None and environment.is_smoke_test() is False


def run_notebooks_script():
    """scripts/run_notebooks.py as a module (it is a script, not part of the package)."""
    path = Path(__file__).resolve().parent.parent / "scripts" / "run_notebooks.py"
    spec = importlib.util.spec_from_file_location("run_notebooks", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("value", ["1", "true", "YES", "on", "0", "false", "No", "off"])
def test_make_notebooks_reads_smoke_test_by_the_same_rule(value, monkeypatch):
    monkeypatch.setenv("SMOKE_TEST", value)
    assert run_notebooks_script().choose_mode() is environment.is_smoke_test()


@pytest.mark.parametrize("value", ["maybe", "nope", "2"])
def test_make_notebooks_refuses_an_unknown_smoke_test_value(value, monkeypatch, capsys):
    """It used to read any unknown value as smoke mode; now it says what it takes and runs nothing."""
    monkeypatch.setenv("SMOKE_TEST", value)
    script = run_notebooks_script()
    monkeypatch.setattr(script, "run", lambda *args: pytest.fail("no notebook may run"))
    assert script.main([]) == 2
    assert "SMOKE_TEST=1" in capsys.readouterr().err


def test_smoke_mode_no_longer_claims_to_override_the_epochs(monkeypatch, capsys):
    monkeypatch.setenv("SMOKE_TEST", "1")
    environment.print_run_mode()
    assert "NUM_EPOCHS" not in capsys.readouterr().out


# ----------------------------------------------------------------- folders and Google Drive


@pytest.fixture
def fake_colab(tmp_path, monkeypatch):
    """Colab as the helpers see it: a google.colab module whose drive.mount records its calls."""
    mounts = []
    drive = types.SimpleNamespace(mount=mounts.append)
    colab = types.ModuleType("google.colab")
    colab.drive = drive
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setattr(environment, "GOOGLE_DRIVE", tmp_path / "drive")
    return mounts


def test_on_colab_google_drive_keeps_the_datasets(fake_colab, tmp_path):
    assert environment.in_colab()
    folder = environment.dataset_dir(use_google_drive=True)
    assert folder == tmp_path / "drive" / "MyDrive" / "deep-cnn-data" and folder.is_dir()
    assert fake_colab == [str(tmp_path / "drive")]


def test_on_colab_google_drive_keeps_the_checkpoints(fake_colab, tmp_path, no_smoke):
    folder = environment.checkpoint_dir(use_google_drive=True)
    assert folder == tmp_path / "drive" / "MyDrive" / "deep-cnn-checkpoints" and folder.is_dir()
    assert fake_colab == [str(tmp_path / "drive")]


def test_without_google_drive_datasets_stay_in_the_data_folder(fake_colab, tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    assert environment.dataset_dir(use_google_drive=False) == tmp_path / "data"
    assert fake_colab == []


def test_outside_colab_google_drive_is_not_mounted_and_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    assert environment.dataset_dir(use_google_drive=True) == tmp_path / "data"
    assert "works on Google Colab only" in capsys.readouterr().out
    environment.dataset_dir(use_google_drive=False)
    assert capsys.readouterr().out == ""  # nothing to say when Drive was not asked for


def test_run_checkpoint_path_expands_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    path = environment.run_checkpoint_path("~/runs", "vgg16", lr=0.01, batch=256)
    assert path == tmp_path / "runs" / "vgg16_lr0.01_batch256.pt"


# ----------------------------------------------------------------- the hardware in one line


def test_the_cpu_is_described_by_its_model_and_cores(monkeypatch):
    monkeypatch.setattr(environment, "cpu_model", lambda: "AMD EPYC 7B13")
    monkeypatch.setattr(environment.os, "cpu_count", lambda: 2)
    assert environment.describe_hardware("cpu") == "CPU (AMD EPYC 7B13, 2 cores)"
    monkeypatch.setattr(environment, "cpu_model", lambda: None)
    assert environment.describe_hardware("cpu") == "CPU (2 cores)"


def test_the_cpu_model_comes_from_proc_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n\n"
                       "processor\t: 1\nmodel name\t: AMD EPYC 7B13\n")
    assert environment.cpu_model(cpuinfo) == "AMD EPYC 7B13"


def test_a_gpu_is_described_by_its_name_and_memory(monkeypatch):
    properties = types.SimpleNamespace(name="Tesla T4", total_memory=15_828_320_256)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: properties)
    assert environment.describe_hardware("cuda:0") == "Tesla T4 (CUDA, 15 GiB)"


def test_apple_silicon_is_named():
    assert environment.describe_hardware("mps") == "Apple MPS"


def test_this_machine_is_described():
    description = environment.describe_hardware()
    if torch.cuda.is_available():
        assert description.startswith(torch.cuda.get_device_name())
    else:
        assert description.startswith("CPU (") and f"{os.cpu_count()} cores" in description


def test_describe_hardware_is_exported():
    assert helpers.describe_hardware is environment.describe_hardware
    assert helpers.dataset_dir is environment.dataset_dir


@pytest.mark.parametrize("setting", ["argument", "environment"])
def test_smoke_mode_checkpoints_go_to_a_fresh_folder_and_say_so(setting, monkeypatch, capsys):
    monkeypatch.setenv("SMOKE_TEST", "1" if setting == "environment" else "0")
    folder = environment.checkpoint_dir(smoke_test=True if setting == "argument" else None)
    other = environment.checkpoint_dir(smoke_test=True if setting == "argument" else None)
    assert folder != other and folder.is_dir() and not any(folder.iterdir())
    assert f"Smoke mode: checkpoints go to a fresh temporary folder, {folder}" in capsys.readouterr().out


def test_an_explicit_full_run_uses_the_checkpoint_folder_whatever_the_environment(monkeypatch, capsys):
    monkeypatch.setenv("SMOKE_TEST", "1")
    folder = environment.checkpoint_dir(smoke_test=False)
    assert folder.name == "checkpoints" and "Smoke mode" not in capsys.readouterr().out


def test_print_run_mode_sets_the_style_and_the_smoke_banner(monkeypatch, capsys):
    import matplotlib

    matplotlib.rcParams["font.size"] = 8  # as a notebook backend or another library might leave it
    monkeypatch.setenv("SMOKE_TEST", "1")
    environment.print_run_mode()
    assert matplotlib.rcParams["font.size"] == 13 and matplotlib.rcParams["figure.dpi"] == 120
    assert matplotlib.rcParams["figure.hooks"].count("helpers.figure_style:add_smoke_banner") == 1
    monkeypatch.setenv("SMOKE_TEST", "0")
    monkeypatch.setattr(environment, "get_device", lambda: torch.device("cpu"))
    environment.print_run_mode()
    assert "helpers.figure_style:add_smoke_banner" not in matplotlib.rcParams["figure.hooks"]


def test_make_notebooks_ends_saying_which_notebooks_used_stand_in_data():
    script = run_notebooks_script()
    text = script.summary({"01_mnist": "real", "02_vgg16": "synthetic", "03_resnet34": "synthetic"}, smoke=True)
    first, stand_in = text.splitlines()
    assert first == ("Summary: 3 notebooks run in smoke mode (small data, one epoch: the code runs, the numbers "
                     "are no results).")
    assert stand_in.startswith("Synthetic stand-in data, not the real datasets, in: 02_vgg16, 03_resnet34.")
    assert script.summary({"01_mnist": "real"}, smoke=False).splitlines()[1] == "Every notebook used real data."


def test_the_data_report_cell_finds_synthetic_loaders_in_the_notebook():
    from helpers import figure_style
    from helpers.datasets import make_synthetic_data

    synthetic = make_synthetic_data("mnist", num_train=4, num_test=4)
    assert figure_style.data_report({"data": synthetic}) == "synthetic"
    assert figure_style.data_report({"loaders": (1, synthetic)}) == "synthetic"  # e.g. get_dataloaders's tuple
    assert figure_style.data_report({"data": synthetic._replace(synthetic=False), "x": 1}) == "real"
    script = run_notebooks_script()
    printed = {"outputs": [{"output_type": "stream", "name": "stdout", "text": "synthetic\n"}]}
    assert script.data_used(printed) == "synthetic" and script.data_used({"outputs": []}) == "unknown"
