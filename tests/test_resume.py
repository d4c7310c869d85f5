"""Resuming a run: exactly where it stopped (after Ctrl-C, a killed kernel, a full disk, on another precision),
a finished run loaded at once, and writes that never lose the last good epoch."""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

import helpers.checkpoint
import helpers.training
from helpers import (
    CheckpointError,
    DeviceLoader,
    compute_accuracy,
    train_model,
)
from helpers.checkpoint import (
    checkpoint_estimate,
    leftover_partials,
    load_checkpoint,
    partial_prefix,
)
from helpers.checkpoint_lock import STALE_S, lock_path
from tests.support import (
    failing_save,
    run,
    same_run,
    same_weights,
    snapshot,
    tiny_loaders,
    tiny_model,
    unchanged,
)

LR_SCHEDULER = torch.optim.lr_scheduler


# ----------------------------------------------------------------- exact resume


JOB = Path(__file__).resolve().parent / "resume_job.py"


def test_stopping_and_resuming_gives_the_same_run(tmp_path):
    model_straight, history_straight = run(num_epochs=4, checkpoint_path=tmp_path / "straight.pt")
    run(num_epochs=2, checkpoint_path=tmp_path / "stopped.pt")
    model_resumed, history_resumed = run(num_epochs=4, checkpoint_path=tmp_path / "stopped.pt")
    assert same_run(history_straight, history_resumed)
    assert same_weights(model_straight, model_resumed)


def test_more_epochs_of_the_same_run_continue_exactly(tmp_path):
    def step_lr(opt):
        return LR_SCHEDULER.StepLR(opt, step_size=1, gamma=0.5)

    model_straight, history_straight = run(num_epochs=3, checkpoint_path=tmp_path / "straight.pt",
                                           scheduler_factory=step_lr)
    run(num_epochs=1, checkpoint_path=tmp_path / "extended.pt", scheduler_factory=step_lr)
    model_extended, history_extended = run(num_epochs=3, checkpoint_path=tmp_path / "extended.pt",
                                           scheduler_factory=step_lr)
    assert same_run(history_straight, history_extended)
    assert same_weights(model_straight, model_extended)


def test_a_finished_run_loads_without_training(tmp_path, capsys):
    model_trained, history_trained = run(num_epochs=2, checkpoint_path=tmp_path / "run.pt")
    model_loaded, history_loaded = run(num_epochs=2, checkpoint_path=tmp_path / "run.pt")
    assert "holds a finished run" in capsys.readouterr().out
    assert same_run(history_trained, history_loaded)
    assert same_weights(model_trained, model_loaded)


def test_a_finished_run_says_how_to_train_again_without_deleting_it(saved_run, capsys):
    run(num_epochs=1, checkpoint_path=saved_run)
    output = capsys.readouterr().out
    assert "holds a finished run" in output and "delete" not in output.lower()
    assert f"checkpoint_path='{saved_run.with_name('run-2.pt')}'" in output


def test_a_finished_run_tested_on_other_data_is_tested_again(tmp_path):
    path = tmp_path / "run.pt"
    _, trained = run(num_epochs=1, checkpoint_path=path)
    train, valid, test = tiny_loaders()
    flipped = DeviceLoader(test.images.flip(-1), (test.labels + 1) % 10, test.batch_size, test.recipe, test.classes,
                           device="cpu")
    model, loaded = run(num_epochs=1, checkpoint_path=path, loaders=(train, valid, flipped))
    assert loaded.test_acc == pytest.approx(compute_accuracy(model, flipped)) and loaded.test_acc != trained.test_acc


@pytest.mark.slow
@pytest.mark.parametrize("kill", ["mid-epoch", "mid-save"])
def test_a_run_killed_part_way_resumes_to_the_same_result(kill, tmp_path):
    def job(checkpoint, result, mode):
        return subprocess.run([sys.executable, str(JOB), str(checkpoint), str(result), mode],
                              capture_output=True, text=True, timeout=300)

    straight = job(tmp_path / "straight.pt", tmp_path / "straight.result", "none")
    assert straight.returncode == 0, straight.stderr
    killed = job(tmp_path / "killed.pt", tmp_path / "unused.result", kill)
    assert killed.returncode == -signal.SIGKILL
    assert load_checkpoint(tmp_path / "killed.pt")["history"]["valid_acc"].__len__() == 1
    resumed = job(tmp_path / "killed.pt", tmp_path / "resumed.result", "none")
    assert resumed.returncode == 0, resumed.stderr
    assert "Resuming from" in resumed.stdout
    expected, actual = torch.load(tmp_path / "straight.result"), torch.load(tmp_path / "resumed.result")
    expected["history"].pop("epoch_times"), actual["history"].pop("epoch_times")
    assert expected["history"] == actual["history"]
    assert all(torch.equal(expected["model"][k], actual["model"][k]) for k in expected["model"])


def test_ctrl_c_keeps_the_checkpoint_and_says_how_to_resume(tmp_path, capsys):
    path = tmp_path / "run.pt"
    model_straight, history_straight = run(num_epochs=3, checkpoint_path=tmp_path / "straight.pt")
    loaders = tiny_loaders()
    prepare, calls = loaders[0].prepare, [0]

    def interrupt_in_epoch_two(images, *args):
        calls[0] += 1
        if calls[0] == 1 + len(loaders[0]) + 2:
            raise KeyboardInterrupt
        return prepare(images, *args)

    loaders[0].prepare = interrupt_in_epoch_two
    with pytest.raises(KeyboardInterrupt):
        run(num_epochs=3, loaders=loaders, checkpoint_path=path)
    message = capsys.readouterr().out
    assert "stopped during epoch 2" in message and "keeps epoch 1" in message and "run this cell again" in message
    model_resumed, history_resumed = run(num_epochs=3, checkpoint_path=path)
    assert same_run(history_straight, history_resumed)
    assert same_weights(model_straight, model_resumed)


def test_rerunning_after_ctrl_c_with_the_same_optimizer_says_it_moved_on(tmp_path):
    """The scheduler lowered the learning rate before Ctrl-C: the objects moved on, the run did not change."""
    path = tmp_path / "run.pt"
    train_loader, valid_loader, test_loader = tiny_loaders(num_train=64)
    model = tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scheduler = LR_SCHEDULER.StepLR(optimizer, step_size=1, gamma=0.7)
    prepare, calls = train_loader.prepare, [0]

    def interrupt_in_epoch_two(images, *args):
        calls[0] += 1
        if calls[0] == 1 + len(train_loader) + 1:
            raise KeyboardInterrupt
        return prepare(images, *args)

    train_loader.prepare = interrupt_in_epoch_two
    with pytest.raises(KeyboardInterrupt):
        train_model(model, 3, train_loader, valid_loader, test_loader, optimizer, "cpu", scheduler=scheduler,
                    checkpoint_path=path)
    train_loader.prepare = prepare
    saved = path.read_bytes()
    with pytest.raises(CheckpointError) as error:
        train_model(model, 3, train_loader, valid_loader, test_loader, optimizer, "cpu", scheduler=scheduler,
                    checkpoint_path=path)
    message = str(error.value)
    assert "The optimizer and scheduler given to this call have already trained" in message
    assert "(the learning rate is now 0.035; the run started at 0.05)" in message
    assert "rerun the cell that builds the model, its optimizer and its scheduler, then this one" in message
    assert "undo these changes" not in message and path.read_bytes() == saved


@pytest.mark.slow
def test_a_file_size_limit_is_said_as_such_not_as_a_full_disk(tmp_path):
    """`ulimit -f` in the shell that started Jupyter: torch's short write must not read as a full disk."""
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    limit = 16_384  # less than one checkpoint of the tiny run

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))

    job = subprocess.run([sys.executable, str(JOB), str(tmp_path / "run.pt"), str(tmp_path / "result"), "none"],
                         capture_output=True, text=True, timeout=300, preexec_fn=limited)
    assert job.returncode != 0
    assert "its file-size limit is 16 kB (set by `ulimit -f`" in job.stderr, job.stderr[-2000:]
    assert "disk is full" not in job.stderr and "Raise the limit" in job.stderr
    assert not (tmp_path / "run.pt").exists() and not leftover_partials(tmp_path / "run.pt")


def test_the_home_folder_is_expanded_in_a_checkpoint_path(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    run(num_epochs=1, checkpoint_path="~/runs/run.pt")
    assert (tmp_path / "home" / "runs" / "run.pt").is_file()
    assert not (tmp_path / "~").exists()



# ----------------------------------------------------------------- before training: a folder to write to, and room


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
    with pytest.raises(CheckpointError, match="has 1.0 kB free, but this run's checkpoints need about"):
        run(num_epochs=1, model=model, checkpoint_path=tmp_path / "run.pt")
    assert unchanged(model, before)
    assert not (tmp_path / "run.pt").exists()


def test_room_for_one_checkpoint_but_not_two_is_found_before_training(tmp_path, monkeypatch):
    """The second save writes a whole new file while the first one still exists: room for 1.5 is not enough."""
    model = tiny_model()
    one = checkpoint_estimate(model, torch.optim.SGD(model.parameters(), lr=0.1))
    usage = helpers.checkpoint.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(helpers.checkpoint.shutil, "disk_usage", lambda folder: usage._replace(free=int(1.5 * one)))
    with pytest.raises(CheckpointError, match="checkpoints need about .* \\(each new file is written in full"):
        run(num_epochs=2, model=model, checkpoint_path=tmp_path / "run.pt")
    assert not (tmp_path / "run.pt").exists()


def test_a_partial_file_left_by_a_crash_is_removed_before_training(tmp_path):
    """Here an hour-old file of a name no writer of this version gives; tests/test_checkpoint_lock.py has the rest."""
    path = tmp_path / "run.pt"
    leftover = tmp_path / f"{partial_prefix(path)}killed.partial"
    leftover.write_bytes(b"half a checkpoint from a killed run")
    an_hour_ago = time.time() - 3600
    os.utime(leftover, (an_hour_ago, an_hour_ago))
    others = tmp_path / f"{partial_prefix(tmp_path / 'other.pt')}writing.partial"
    others.write_bytes(b"another checkpoint's write in progress")
    run(num_epochs=1, checkpoint_path=path)
    assert not leftover.exists() and others.exists()  # only this checkpoint's leftovers are removed



# ----------------------------------------------------------------- failed writes


@pytest.mark.slow
def test_a_full_disk_mid_run_keeps_the_last_good_epoch_and_resumes_from_it(tmp_path, monkeypatch):
    path = tmp_path / "run.pt"
    model_straight, history_straight = run(num_epochs=3, checkpoint_path=tmp_path / "straight.pt")
    with monkeypatch.context() as patch:
        failing_save(patch, OSError(errno.ENOSPC, "No space left on device"), on_call=2)
        with pytest.raises(CheckpointError) as error:
            run(num_epochs=3, checkpoint_path=path)
    message = str(error.value)
    assert "could not be written after epoch 2 (the disk is full, " in message
    assert "still holds epoch 1, the last good one, and is safe" in message
    assert not leftover_partials(path)
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
    assert not leftover_partials(path)


def test_ctrl_c_during_the_first_write_says_nothing_was_saved(tmp_path, monkeypatch, capsys):
    failing_save(monkeypatch, KeyboardInterrupt(), on_call=1)
    with pytest.raises(KeyboardInterrupt):
        run(num_epochs=2, checkpoint_path=tmp_path / "run.pt")
    assert "before any epoch was saved" in capsys.readouterr().out
    assert not (tmp_path / "run.pt").exists()



# ----------------------------------------------------------------- another device or precision


def simulated(monkeypatch, dtype):
    """Train on the CPU as a GPU would: fp16 autocast with a gradient scaler, or bf16 without one."""
    monkeypatch.setattr(helpers.training, "amp_dtype", lambda device, amp: dtype)


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



# ----------------------------------------------------------------- two kernels, one checkpoint

TWO_KERNELS = Path(__file__).resolve().parent / "two_kernels_job.py"


@pytest.mark.slow
def test_two_processes_saving_one_checkpoint_never_break_it(tmp_path):
    """Each write has a temporary file of its own: no write deletes or interleaves with another's."""
    path = tmp_path / "shared.pt"
    jobs = [subprocess.Popen([sys.executable, str(TWO_KERNELS), "save", str(path), str(value)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for value in (1, 2)]
    results = [job.communicate(timeout=300) for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], [error for _, error in results]
    assert torch.load(path, weights_only=True)["w"][0].item() in (1, 2)
    assert not leftover_partials(path)


@pytest.mark.slow
def test_a_second_kernel_is_refused_while_the_first_trains_and_takes_over_when_it_dies(tmp_path):
    path = tmp_path / "run.pt"
    holder = subprocess.Popen([sys.executable, str(TWO_KERNELS), "hold", str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        model = tiny_model()
        before = snapshot(model)
        with pytest.raises(CheckpointError, match=f"Another kernel \\(process {holder.pid} on this machine(.|\n)*"
                                                  "Nothing was trained(.|\n)*checkpoint_path='.*run-2.pt'"):
            run(num_epochs=1, model=model, checkpoint_path=path)
        assert unchanged(model, before) and not path.exists()
    finally:
        holder.kill()
        holder.wait()
    _, history = run(num_epochs=1, checkpoint_path=path)  # the dead kernel's lock no longer counts
    assert history.num_epochs == 1 and path.exists() and not lock_path(path).exists()


def test_a_lock_whose_heartbeat_stopped_is_taken_over(tmp_path):
    """A kernel on another machine (a second Colab runtime on one Drive) that stopped renewing its lock."""
    path = tmp_path / "run.pt"
    lock_path(path).write_text(json.dumps({"host": "another-runtime", "pid": 1, "token": "theirs",
                                           "heartbeat": time.time() - STALE_S - 1}))
    _, history = run(num_epochs=1, checkpoint_path=path)
    assert history.num_epochs == 1 and not lock_path(path).exists()
    lock_path(path).write_text(json.dumps({"host": "another-runtime", "pid": 1, "token": "theirs",
                                           "heartbeat": time.time()}))
    with pytest.raises(CheckpointError, match="machine 'another-runtime'"):
        run(num_epochs=2, checkpoint_path=path)


# ----------------------------------------------------------------- finished runs


def test_rerunning_the_training_call_of_a_finished_run_loads_it(tmp_path, capsys):
    """The same kernel, the same optimizer object: the checkpoint has the run, so the trained optimizer is no bar."""
    train_loader, valid_loader, test_loader = tiny_loaders()
    model = tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    path = tmp_path / "run.pt"
    first = train_model(model, 1, train_loader, valid_loader, test_loader, optimizer, "cpu", checkpoint_path=path)
    again = train_model(model, 1, train_loader, valid_loader, test_loader, optimizer, "cpu", checkpoint_path=path)
    assert "holds a finished run" in capsys.readouterr().out and same_run(first, again)


def test_a_finished_run_in_a_folder_that_takes_no_file_is_tested_and_shown(tmp_path, monkeypatch, capsys):
    """Lecture mode from a read-only copy: the result is printed, and the sentence says it could not be saved."""
    path = tmp_path / "run.pt"
    _, untested = run(num_epochs=1, loaders=(*tiny_loaders()[:2], None), checkpoint_path=path)
    assert untested.test_acc is None
    before = path.read_bytes()

    def read_only(*args, **kwargs):
        raise PermissionError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    capsys.readouterr()
    _, history = run(num_epochs=1, checkpoint_path=path)
    output = capsys.readouterr().out
    assert f"Test accuracy: {history.test_acc:.2f}%" in output
    assert "could not be saved in" in output and "(the folder is not writable)" in output
    assert path.read_bytes() == before
    with pytest.raises(CheckpointError, match="cannot be written to .* \\(the folder is not writable\\)"):
        run(num_epochs=2, checkpoint_path=path)  # more epochs need a writable folder, and say so before training


def test_a_file_name_too_long_for_the_file_system_is_refused_before_training(tmp_path):
    with pytest.raises(CheckpointError, match="file name is 253 bytes long(.|\n)*choose a shorter checkpoint_path"):
        run(num_epochs=1, checkpoint_path=tmp_path / ("x" * 250 + ".pt"))
