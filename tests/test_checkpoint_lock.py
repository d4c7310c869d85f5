"""The lock of a checkpoint: a live kernel on this machine never loses it, a kernel that lost it saves nothing
more, and a lock that is empty, damaged or a folder is said for what it is."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import helpers.checkpoint_lock
from helpers import CheckpointError
from helpers.checkpoint import leftover_partials, load_checkpoint, partial_prefix
from helpers.checkpoint_lock import CheckpointLock, is_alive, lock_path, read_lock
from helpers.processes import machine_tag
from tests.support import failing_save, run

TWO_KERNELS = Path(__file__).resolve().parent / "two_kernels_job.py"
SHORT_STALE_S = 0.5  # the lock's timeout in these tests: a paused kernel passes it in a moment, not in 2 minutes


def dead_pid() -> int:
    """The process number of a process that has ended."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def record(**changes) -> dict:
    """A lock record of a kernel on this machine, as CheckpointLock writes it."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "token": "theirs",
            "heartbeat": time.time(), **changes}


def wait_until_stale(path: Path, limit_s: float = 30.0) -> None:
    """Wait until the lock's heartbeat is older than the (shortened) timeout: its holder is paused."""
    deadline = time.monotonic() + limit_s
    while time.time() - read_lock(lock_path(path))["heartbeat"] <= SHORT_STALE_S:
        assert time.monotonic() < deadline, "the paused holder's heartbeat kept changing"
        time.sleep(0.05)


# ----------------------------------------------------------------- whether a holder lives


def test_a_live_process_on_this_machine_holds_its_lock_however_old_its_heartbeat():
    assert is_alive(record(pid=os.getppid(), heartbeat=time.time() - 10_000))


def test_an_ended_process_on_this_machine_loses_its_lock_at_once():
    assert not is_alive(record(pid=dead_pid(), heartbeat=time.time()))


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="start times are read from Linux's /proc")
def test_a_recycled_process_number_does_not_hold_a_lock():
    """The process that wrote the lock ended, and its number now belongs to another process (started later)."""
    assert not is_alive(record(pid=os.getppid(), started="another boot/0"))


def test_a_kernel_on_another_machine_is_judged_by_its_heartbeat(monkeypatch):
    monkeypatch.setattr(helpers.checkpoint_lock, "STALE_S", 60.0)
    assert is_alive(record(host="another-runtime", pid=dead_pid(), heartbeat=time.time() - 30))
    assert not is_alive(record(host="another-runtime", pid=os.getpid(), heartbeat=time.time() - 90))


# ----------------------------------------------------------------- locks that are not a record


def test_an_empty_lock_left_by_a_kill_is_taken_over_once_it_is_old(tmp_path):
    path = tmp_path / "run.pt"
    lock_path(path).write_text("")
    an_hour_ago = time.time() - 3600
    os.utime(lock_path(path), (an_hour_ago, an_hour_ago))
    _, history = run(num_epochs=1, checkpoint_path=path)
    assert history.num_epochs == 1 and not lock_path(path).exists()


def test_a_fresh_empty_lock_is_said_to_be_empty(tmp_path):
    path = tmp_path / "run.pt"
    lock_path(path).write_text("")
    with pytest.raises(CheckpointError) as error:
        run(num_epochs=1, checkpoint_path=path)
    message = str(error.value)
    assert f"The lock file {lock_path(path)} is empty" in message and "run this cell again in a few seconds" in message
    assert "None" not in message and not path.exists()


@pytest.mark.parametrize("heartbeat", ["soon", None, [1]])
def test_a_lock_with_a_heartbeat_that_is_no_number_is_said_to_be_damaged(tmp_path, heartbeat):
    path = tmp_path / "run.pt"
    lock_path(path).write_text(json.dumps(record(host="another-runtime", heartbeat=heartbeat)))
    with pytest.raises(CheckpointError, match="is not a lock record of these helpers"):
        run(num_epochs=1, checkpoint_path=path)
    an_hour_ago = time.time() - 3600
    os.utime(lock_path(path), (an_hour_ago, an_hour_ago))
    _, history = run(num_epochs=1, checkpoint_path=path)  # an old damaged lock is taken over, as an empty one
    assert history.num_epochs == 1


def test_a_lock_path_that_is_a_folder_is_said_to_be_one(tmp_path):
    path = tmp_path / "run.pt"
    lock_path(path).mkdir()
    with pytest.raises(CheckpointError, match=r"run\.pt\.lock is a folder(.|\n)*Move or rename that folder"):
        run(num_epochs=1, checkpoint_path=path)
    assert lock_path(path).is_dir() and not path.exists()


# ----------------------------------------------------------------- a lock taken over


def test_a_heartbeat_never_overwrites_a_lock_another_kernel_took(tmp_path):
    lock = CheckpointLock(tmp_path / "run.pt", heartbeat_s=3600).acquire()
    try:
        taken = record(host="another-runtime", pid=12345)
        lock.path.write_text(json.dumps(taken))
        assert not lock._renew()
        assert read_lock(lock.path) == taken
        with pytest.raises(CheckpointError, match="process 12345 on machine 'another-runtime'\\) has taken"):
            lock.check_owned()
    finally:
        lock.release()
    assert read_lock(lock.path) == taken  # and releasing leaves the other kernel's lock alone


def test_a_folder_turned_read_only_mid_run_shows_the_write_error_not_the_lock_s(tmp_path, monkeypatch):
    path = tmp_path / "run.pt"
    failing_save(monkeypatch, PermissionError(errno.EROFS, "Read-only file system"), on_call=2)
    real_unlink = Path.unlink

    def read_only_unlink(self, *args, **kwargs):
        if self.name.endswith(".lock"):
            raise PermissionError(errno.EROFS, "Read-only file system", str(self))
        return real_unlink(self, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", read_only_unlink)
    with pytest.raises(CheckpointError, match="could not be written after epoch 2 \\(the folder is not writable\\)"):
        run(num_epochs=3, checkpoint_path=path)
    assert len(load_checkpoint(path)["history"]["valid_acc"]) == 1


# ----------------------------------------------------------------- temporary files of other writers


def test_only_temporary_files_of_ended_writers_are_removed_before_training(tmp_path):
    path = tmp_path / "run.pt"
    ended = tmp_path / f"{partial_prefix(path)}{machine_tag()}-{dead_pid()}-abcd1234.partial"
    running = tmp_path / f"{partial_prefix(path)}{machine_tag()}-{os.getppid()}-abcd1234.partial"
    remote = tmp_path / f"{partial_prefix(path)}0000ffff-{os.getppid()}-abcd1234.partial"
    old_unnamed = tmp_path / f"{partial_prefix(path)}killed.partial"
    for partial in (ended, running, remote, old_unnamed):
        partial.write_bytes(b"half a checkpoint")
    an_hour_ago = time.time() - 3600
    os.utime(old_unnamed, (an_hour_ago, an_hour_ago))
    run(num_epochs=1, checkpoint_path=path)
    assert leftover_partials(path) == sorted([running, remote])  # alive here, or too recent to judge elsewhere


@pytest.mark.slow
def test_a_new_kernel_keeps_the_temporary_file_of_a_save_in_progress(tmp_path):
    path = tmp_path / "run.pt"
    writer = subprocess.Popen([sys.executable, str(TWO_KERNELS), "save-slowly", str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "writing"
        in_progress = leftover_partials(path)
        assert len(in_progress) == 1
        run(num_epochs=1, checkpoint_path=path)  # this kernel takes the free lock, and cleans up what is abandoned
        assert in_progress[0].exists()
        _, errors = writer.communicate("go\n", timeout=120)
        assert writer.returncode == 0, errors
    finally:
        writer.kill()
        writer.wait()
    assert not leftover_partials(path)


# ----------------------------------------------------------------- a kernel paused past the timeout (two processes)


@pytest.mark.slow
def test_a_paused_kernel_on_this_machine_keeps_its_lock(tmp_path, monkeypatch):
    path = tmp_path / "run.pt"
    monkeypatch.setattr(helpers.checkpoint_lock, "STALE_S", SHORT_STALE_S)
    holder = subprocess.Popen([sys.executable, str(TWO_KERNELS), "hold", str(path), "0.05"], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        token = read_lock(lock_path(path))["token"]
        os.kill(holder.pid, signal.SIGSTOP)  # a laptop asleep, a frozen tab
        wait_until_stale(path)
        with pytest.raises(CheckpointError, match=f"process {holder.pid} on this machine, paused"):
            run(num_epochs=1, checkpoint_path=path)
        assert not path.exists()
        os.kill(holder.pid, signal.SIGCONT)
        assert read_lock(lock_path(path))["token"] == token
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_a_kernel_that_lost_its_lock_while_paused_saves_nothing_more(tmp_path, monkeypatch):
    """A kernel on another machine (a Colab runtime on a shared Drive) paused past the timeout loses its lock; when
    it wakes it must neither write the lock back nor save over the kernel that took it."""
    path = tmp_path / "run.pt"
    monkeypatch.setattr(helpers.checkpoint_lock, "STALE_S", SHORT_STALE_S)
    paused = subprocess.Popen([sys.executable, str(TWO_KERNELS), "train", str(path), "another-runtime"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "in epoch 2" in (line.strip() for line in paused.stdout), paused.stderr.read()  # epoch 1 is saved
        os.kill(paused.pid, signal.SIGSTOP)
        wait_until_stale(path)
        monkeypatch.setattr(helpers.checkpoint_lock, "HEARTBEAT_S", 3600.0)  # the taker's own beats are not needed
        taker = CheckpointLock(path).acquire()
        saved = path.read_bytes()
        os.kill(paused.pid, signal.SIGCONT)
        _, errors = paused.communicate("go\n", timeout=120)
        assert paused.returncode != 0
        assert "This kernel no longer holds the lock on" in errors and "nothing more was saved" in errors
        assert read_lock(lock_path(path))["token"] == taker.token
        assert path.read_bytes() == saved and len(load_checkpoint(path)["history"]["valid_acc"]) == 1
        taker.release()
    finally:
        paused.kill()
        paused.wait()
