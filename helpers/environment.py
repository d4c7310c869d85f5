"""Where the code runs: smoke mode, the training device, and the folders for data and checkpoints."""

from __future__ import annotations

import os
import platform
import re
import sys
import tempfile
from pathlib import Path

import torch

from .figure_style import set_run_mode

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

# Smoke mode trains on this many images (training + validation) and tests on this many: enough
# for every code path, few enough that VGG16 runs a notebook in about a minute on 2 CPU cores.
SMOKE_TRAIN_SIZE = 192
SMOKE_TEST_SIZE = 64


def smoke_test_setting() -> bool | None:
    """What the SMOKE_TEST environment variable says: True, False, or None when it is unset or empty."""
    value = os.environ.get("SMOKE_TEST", "").strip().lower()
    if value == "":
        return None
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(
        f"SMOKE_TEST={value!r} is not understood. Use SMOKE_TEST=1 for a quick run on small data, "
        "or SMOKE_TEST=0 (or leave it unset) for the full recipe."
    )


def is_smoke_test() -> bool:
    """True when the SMOKE_TEST environment variable asks for a quick run on small data."""
    return smoke_test_setting() is True


def print_run_mode() -> bool:
    """Say in one line whether this is a smoke test or the full recipe; return is_smoke_test().

    From here on, every figure has the collection's style, and a smoke run's figures and result tables say
    that they come from a smoke run (helpers.figure_style).
    """
    smoke = is_smoke_test()
    set_run_mode(smoke)
    if smoke:
        print(
            "SMOKE TEST: small data subsets, so the numbers below show that the code runs, "
            "not what the model can reach."
        )
        return True
    print("Full run: the complete datasets and the recipe's number of epochs.")
    if get_device().type == "cpu":
        print("No GPU found: fine for the MNIST notebook, but VGG16 and ResNet-34 would train for days. "
              "On Colab choose Runtime -> Change runtime type -> T4 GPU; or set SMOKE_TEST=1 for a quick run.")
    return False


def get_device(device: str | torch.device | None = None) -> torch.device:
    """The device to train on: the one given, else CUDA, else Apple's MPS, else the CPU."""
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        # The current device, never a hard-coded ordinal that single-GPU machines lack.
        return torch.device("cuda", torch.cuda.current_device())
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def in_colab() -> bool:
    """True inside Google Colab."""
    return "google.colab" in sys.modules


def repo_root() -> Path | None:
    """The repository's top folder when the helpers run from a checkout, else None."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() and (root / "notebooks").is_dir() else None


def default_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Where datasets live: the argument, else $DATA_DIR, else the checkout's data/, else ./data."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    if os.environ.get("DATA_DIR"):
        return Path(os.environ["DATA_DIR"]).expanduser()
    root = repo_root()
    return root / "data" if root is not None else Path("data")


# Where a system package installs a dataset: Debian's dataset-fashion-mnist puts Fashion-MNIST's four IDX files
# here. load_dataset, `make test-data` and the tests all look there, through dataset_folders.
SYSTEM_DATASET_FOLDERS = {"fashion_mnist": (Path("/usr/share/datasets/fashion-mnist"),)}


def dataset_folders(name: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Where the dataset `name` may be, in the order to look: the data folder (default_data_dir), then the
    folders a system package installs it into (SYSTEM_DATASET_FOLDERS)."""
    return [default_data_dir(data_dir), *SYSTEM_DATASET_FOLDERS.get(name, ())]


GOOGLE_DRIVE = Path("/content/drive")
DRIVE_FOLDERS = {"checkpoints": "deep-cnn-checkpoints", "data": "deep-cnn-data"}  # under MyDrive


def google_drive_folder(kind: str) -> Path:
    """A folder on Google Drive for "checkpoints" or "data", mounting Drive first (Colab only)."""
    from google.colab import drive  # only importable on Colab

    drive.mount(str(GOOGLE_DRIVE))
    return GOOGLE_DRIVE / "MyDrive" / DRIVE_FOLDERS[kind]


def _say_drive_is_colab_only(use_google_drive: bool) -> None:
    if use_google_drive:  # never ignore a setting silently
        print("USE_GOOGLE_DRIVE = True works on Google Colab only; here the local folders are used.")


def checkpoint_dir(use_google_drive: bool = False, smoke_test: bool | None = None) -> Path:
    """The folder for checkpoints.

    Smoke runs (smoke_test=True; by default the SMOKE_TEST setting) get a fresh temporary folder, and
    say so, so that a quick test never resumes from, or overwrites, a real run. On Colab,
    use_google_drive=True mounts Google Drive so that checkpoints outlive a disconnected runtime.
    """
    if is_smoke_test() if smoke_test is None else smoke_test:
        folder = Path(tempfile.mkdtemp(prefix="smoke-checkpoints-"))
        print(f"Smoke mode: checkpoints go to a fresh temporary folder, {folder}, so that this quick run neither "
              "resumes nor overwrites a real one.")
        return folder
    if use_google_drive and in_colab():
        folder = google_drive_folder("checkpoints")
    else:
        _say_drive_is_colab_only(use_google_drive)
        root = repo_root()
        folder = root / "checkpoints" if root is not None else Path("checkpoints")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def dataset_dir(use_google_drive: bool = False) -> Path:
    """The folder for datasets: on Colab with use_google_drive=True a folder on Google Drive, so that a
    new runtime finds CIFAR-10 there instead of downloading it again; else default_data_dir()."""
    if not (use_google_drive and in_colab()):
        _say_drive_is_colab_only(use_google_drive)
        return default_data_dir()
    folder = google_drive_folder("data")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def run_checkpoint_path(folder: str | os.PathLike, name: str, **settings) -> Path:
    """A checkpoint file named after the run's settings, so that changing one starts a new run."""
    parts = [name] + [f"{key.lower()}{value}" for key, value in settings.items()]
    filename = re.sub(r"[^A-Za-z0-9_.=-]+", "-", "_".join(parts))
    return Path(folder).expanduser() / f"{filename}.pt"


def describe_hardware(device: str | torch.device | None = None) -> str:
    """The training device in words: the GPU's name and memory, "Apple MPS", or the CPU's model and cores."""
    device = get_device(device)
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        return f"{properties.name} (CUDA, {properties.total_memory / 2**30:.0f} GiB)"
    if device.type == "mps":
        return "Apple MPS"
    model = cpu_model()
    cores = f"{os.cpu_count()} cores"
    return f"CPU ({model}, {cores})" if model else f"CPU ({cores})"


def cpu_model(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> str | None:
    """The CPU's model name where the system says it cheaply (Linux), else None."""
    try:
        lines = Path(cpuinfo).read_text().splitlines()
    except OSError:  # not Linux
        return platform.processor() or None
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else None
