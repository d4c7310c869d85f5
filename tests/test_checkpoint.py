"""Writing checkpoints: failures found before training, failed writes that keep the last good epoch,
Ctrl-C during a write, and resuming under another device or precision (simulated on the CPU)."""

from __future__ import annotations

import errno
import io
import tempfile

import pytest
import torch

import helpers.checkpoint
import helpers.training
from helpers import CheckpointError
from helpers.checkpoint import load_checkpoint, partial_path, save_checkpoint
from tests.support import tiny_model
from tests.test_training import run, same_run, same_weights


def unchanged(model, before: dict) -> bool:
    return all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())


def snapshot(model) -> dict:
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


def failing_save(monkeypatch, error: BaseException, on_call: int):
    """torch.save writes half of the on_call-th checkpoint, then raises error (a full disk, Ctrl-C...)."""
    real_save, calls = torch.save, [0]

    def save(obj, file, *args, **kwargs):
        calls[0] += 1
        if calls[0] != on_call:
            return real_save(obj, file, *args, **kwargs)
        buffer = io.BytesIO()
        real_save(obj, buffer)
        file.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise error

    monkeypatch.setattr(torch, "save", save)


# ----------------------------------------------------------------- before training


def test_a_folder_that_cannot_be_written_is_found_before_training(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise PermissionError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    model = tiny_model()
    before = snapshot(model)
    with pytest.raises(CheckpointError, match="cannot be written to .* \\(the folder is not writable\\). Nothing was "
                                              "trained"):
        run(num_epochs=1, model=model, checkpoint_path=tmp_path / "run.pt")
    assert unchanged(model, before)


def test_a_full_disk_is_found_before_training(tmp_path, monkeypatch):
    usage = helpers.checkpoint.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(helpers.checkpoint.shutil, "disk_usage", lambda folder: usage._replace(free=1000))
    model = tiny_model()
    before = snapshot(model)
    with pytest.raises(CheckpointError, match="has 0 MB free, but a checkpoint of this run needs about"):
        run(num_epochs=1, model=model, checkpoint_path=tmp_path / "run.pt")
    assert unchanged(model, before)
    assert not (tmp_path / "run.pt").exists()


def test_a_partial_file_left_by_a_crash_is_removed_before_training(tmp_path):
    path = tmp_path / "run.pt"
    partial_path(path).write_bytes(b"half a checkpoint from a killed run")
    run(num_epochs=1, checkpoint_path=path)
    assert not partial_path(path).exists()


# ----------------------------------------------------------------- failed writes


def test_save_checkpoint_removes_its_partial_file_when_the_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "run.pt"
    save_checkpoint({"format": 2, "epoch": 1}, path)
    failing_save(monkeypatch, OSError(errno.ENOSPC, "No space left on device"), on_call=1)
    with pytest.raises(OSError):
        save_checkpoint({"format": 2, "epoch": 2}, path)
    assert torch.load(path, weights_only=True)["epoch"] == 1
    assert not partial_path(path).exists()


def test_a_full_disk_mid_run_keeps_the_last_good_epoch_and_resumes_from_it(tmp_path, monkeypatch):
    path = tmp_path / "run.pt"
    model_straight, history_straight = run(num_epochs=3, checkpoint_path=tmp_path / "straight.pt")
    with monkeypatch.context() as patch:
        failing_save(patch, OSError(errno.ENOSPC, "No space left on device"), on_call=2)
        with pytest.raises(CheckpointError) as error:
            run(num_epochs=3, checkpoint_path=path)
    message = str(error.value)
    assert "could not be written after epoch 2 (the disk is full)" in message
    assert "still holds epoch 1, the last good one, and is safe" in message
    assert not partial_path(path).exists()
    assert len(load_checkpoint(path)["history"]["valid_acc"]) == 1
    model_resumed, history_resumed = run(num_epochs=3, checkpoint_path=path)
    assert same_run(history_straight, history_resumed)
    assert same_weights(model_straight, model_resumed)


def test_ctrl_c_during_a_checkpoint_write_reports_the_epoch_the_file_holds(tmp_path, monkeypatch, capsys):
    path = tmp_path / "run.pt"
    failing_save(monkeypatch, KeyboardInterrupt(), on_call=2)
    with pytest.raises(KeyboardInterrupt):
        run(num_epochs=3, checkpoint_path=path)
    message = capsys.readouterr().out
    assert "stopped during epoch 2" in message and "keeps epoch 1" in message
    assert len(load_checkpoint(path)["history"]["valid_acc"]) == 1
    assert not partial_path(path).exists()


def test_ctrl_c_during_the_first_write_says_nothing_was_saved(tmp_path, monkeypatch, capsys):
    failing_save(monkeypatch, KeyboardInterrupt(), on_call=1)
    with pytest.raises(KeyboardInterrupt):
        run(num_epochs=2, checkpoint_path=tmp_path / "run.pt")
    assert "before any epoch was saved" in capsys.readouterr().out
    assert not (tmp_path / "run.pt").exists()


def test_the_home_folder_is_expanded_in_a_checkpoint_path(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    run(num_epochs=1, checkpoint_path="~/runs/run.pt")
    assert (tmp_path / "home" / "runs" / "run.pt").is_file()
    assert not (tmp_path / "~").exists()


# ----------------------------------------------------------------- another device or precision


def simulated(monkeypatch, dtype):
    """Train on the CPU as a GPU would: fp16 autocast with a gradient scaler, or bf16 without one."""
    monkeypatch.setattr(helpers.training, "_amp_dtype", lambda device, amp: dtype)


@pytest.mark.parametrize("first, second", [
    (None, torch.float16), (torch.bfloat16, torch.float16), (torch.float16, None), (torch.float16, torch.bfloat16),
], ids=["cpu to fp16", "bf16 to fp16", "fp16 to cpu", "fp16 to bf16"])
def test_a_run_resumes_under_another_precision(tmp_path, monkeypatch, first, second):
    path = tmp_path / "run.pt"
    with monkeypatch.context() as patch:
        simulated(patch, first)
        run(num_epochs=1, checkpoint_path=path)
    assert bool(load_checkpoint(path)["scaler"]) == (first == torch.float16)
    with monkeypatch.context() as patch:
        simulated(patch, second)
        _, history = run(num_epochs=2, checkpoint_path=path)
    assert history.num_epochs == 2 and all(0 <= accuracy <= 100 for accuracy in history.valid_acc)
    state = load_checkpoint(path)
    assert bool(state["scaler"]) == (second == torch.float16)
    if second == torch.float16:
        # The scaler started fresh (no saved state to take over) and has been stepping since.
        assert state["scaler"]["scale"] > 0


def test_scaler_state_carries_over_between_fp16_sessions(tmp_path, monkeypatch):
    path = tmp_path / "run.pt"
    simulated(monkeypatch, torch.float16)
    run(num_epochs=1, checkpoint_path=path)
    saved = load_checkpoint(path)["scaler"]
    loaded = []
    real_load = torch.amp.GradScaler.load_state_dict
    monkeypatch.setattr(torch.amp.GradScaler, "load_state_dict",
                        lambda scaler, state: (loaded.append(dict(state)), real_load(scaler, state))[1])
    run(num_epochs=2, checkpoint_path=path)
    assert loaded == [saved]
