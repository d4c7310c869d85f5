"""The GPU paths: mixed precision, channels-last, the device pipeline, exact and cross-precision resume.

Skipped, with the reason, on a machine without CUDA. On one with it: `make gpu-check`.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import helpers.preflight
from helpers import CheckpointError, ImageRecipe, set_all_seeds, set_deterministic, train_model
from helpers.checkpoint import load_checkpoint
from tests.resume_job import tiny_loaders_on
from tests.support import tiny_loaders, tiny_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA GPU here: these tests run on a machine with one (make gpu-check)")

JOB = Path(__file__).resolve().parent / "resume_job.py"
needs_bf16 = pytest.mark.skipif(torch.cuda.is_available() and not torch.cuda.is_bf16_supported(),
                                reason="this GPU has no bfloat16")


def train_on(device, num_epochs=2, lr=0.1, **options):
    """The tiny run of test_training, on the given device; returns (model, history)."""
    set_all_seeds(0)
    train_loader, valid_loader, test_loader = tiny_loaders_on(device)
    model = tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    history = train_model(model, num_epochs, train_loader, valid_loader, test_loader, optimizer, device, **options)
    return model, history


# ----------------------------------------------------------------- precision and layout


def test_the_default_precision_suits_the_gpu():
    device = torch.device("cuda", torch.cuda.current_device())
    expected = torch.bfloat16 if torch.cuda.get_device_capability(device) >= (8, 0) else torch.float16
    assert helpers.preflight.amp_dtype(device, None) == expected
    assert helpers.preflight.amp_dtype(device, False) is None


def test_fp16_autocast_with_a_gradient_scaler_learns(tmp_path):
    model, history = train_on("cuda", num_epochs=4, amp=torch.float16, checkpoint_path=tmp_path / "run.pt")
    assert history.valid_acc[-1] > 80
    assert all(parameter.dtype == torch.float32 for parameter in model.parameters())  # autocast, not .half()
    scaler = load_checkpoint(tmp_path / "run.pt")["scaler"]
    assert scaler["scale"] > 0 and set(scaler) >= {"scale", "growth_factor", "backoff_factor"}


@needs_bf16
def test_bf16_autocast_learns_without_a_scaler(tmp_path):
    _, history = train_on("cuda", num_epochs=4, amp=torch.bfloat16, checkpoint_path=tmp_path / "run.pt")
    assert history.valid_acc[-1] > 80
    assert load_checkpoint(tmp_path / "run.pt")["scaler"] == {}


def test_channels_last_is_the_default_on_cuda_and_trains_alike():
    model, history = train_on("cuda", num_epochs=1, amp=False)
    assert model.features[3].weight.is_contiguous(memory_format=torch.channels_last)  # 8x4x3x3: not trivially so
    _, history_plain = train_on("cuda", num_epochs=1, amp=False, channels_last=False)
    # cuDNN picks other kernels for the two layouts (TF32 on Ampere+): equal up to rounding, not bit for bit.
    assert history.batch_losses == pytest.approx(history_plain.batch_losses, rel=1e-2, abs=1e-3)


# ----------------------------------------------------------------- the device pipeline


def test_the_device_pipeline_on_cuda_serves_the_cpus_batches():
    recipe = ImageRecipe(resize=32, crop=28, hflip=True, mean=(0.5,), std=(0.25,))
    on_cpu, on_gpu = tiny_loaders(recipe=recipe), tiny_loaders_on("cuda", recipe=recipe)
    for cpu_loader, gpu_loader in zip(on_cpu, on_gpu):
        assert len(gpu_loader) == len(cpu_loader) and gpu_loader.batch_size == cpu_loader.batch_size
        for _ in range(2):  # a second epoch draws new crops and flips, the same on both
            for (cpu_images, cpu_labels), (gpu_images, gpu_labels) in zip(cpu_loader, gpu_loader):
                assert gpu_images.is_cuda and gpu_labels.is_cuda
                assert torch.equal(gpu_labels.cpu(), cpu_labels)
                torch.testing.assert_close(gpu_images.cpu(), cpu_images, rtol=0, atol=1e-6)


# ----------------------------------------------------------------- resuming


def job(checkpoint, result, mode):
    return subprocess.run([sys.executable, str(JOB), str(checkpoint), str(result), mode, "cuda"],
                          capture_output=True, text=True, timeout=600)


def results_equal(path_a, path_b) -> bool:
    a, b = torch.load(path_a, map_location="cpu"), torch.load(path_b, map_location="cpu")
    a["history"].pop("epoch_times"), b["history"].pop("epoch_times")
    return a["history"] == b["history"] and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_set_deterministic_repeats_a_cuda_run_exactly(tmp_path):
    for name in ("first", "second"):
        finished = job(tmp_path / f"{name}.pt", tmp_path / f"{name}.result", "none")
        assert finished.returncode == 0, finished.stderr
    assert results_equal(tmp_path / "first.result", tmp_path / "second.result")


def test_a_cuda_run_killed_mid_epoch_resumes_exactly_with_its_gpu_random_state(tmp_path):
    straight = job(tmp_path / "straight.pt", tmp_path / "straight.result", "none")
    assert straight.returncode == 0, straight.stderr
    killed = job(tmp_path / "killed.pt", tmp_path / "unused.result", "mid-epoch")
    assert killed.returncode == -signal.SIGKILL
    state = load_checkpoint(tmp_path / "killed.pt")
    assert len(state["history"]["valid_acc"]) == 1 and len(state["rng"]["cuda"]) == torch.cuda.device_count()
    resumed = job(tmp_path / "killed.pt", tmp_path / "resumed.result", "none")
    assert resumed.returncode == 0, resumed.stderr
    assert "Resuming from" in resumed.stdout
    assert results_equal(tmp_path / "straight.result", tmp_path / "resumed.result")


def test_set_deterministic_sets_the_cuda_switches(deterministic_settings_restored):
    set_deterministic(allow_tf32=False)
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32


@needs_bf16
def test_a_run_moves_between_the_cpu_fp16_and_bf16(tmp_path):
    path = tmp_path / "run.pt"
    steps = [("cpu", None), ("cuda", torch.float16), ("cuda", torch.bfloat16), ("cpu", None)]
    for epochs, (device, amp) in enumerate(steps, start=1):
        _, history = train_on(device, num_epochs=epochs, amp=amp, checkpoint_path=path)
        assert history.num_epochs == epochs
        assert bool(load_checkpoint(path)["scaler"]) == (amp == torch.float16)
    assert history.valid_acc[-1] > 80


def test_a_cuda_checkpoint_of_another_run_is_refused_on_the_cpu(tmp_path):
    path = tmp_path / "run.pt"
    train_on("cuda", num_epochs=1, checkpoint_path=path)
    with pytest.raises(CheckpointError, match="optimizer / groups / 0 / lr: checkpoint has 0.1, this run has 0.2"):
        train_on("cpu", num_epochs=2, lr=0.2, checkpoint_path=path)
