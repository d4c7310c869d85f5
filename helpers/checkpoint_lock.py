"""One kernel at a time trains into a checkpoint: a lock file beside it, kept fresh while training.

Two notebook tabs, or two Colab runtimes on one Google Drive folder, writing one checkpoint would
each overwrite the other's epochs. The first kernel writes `<checkpoint>.lock` (its host, process and
a heartbeat it renews every HEARTBEAT_S seconds); another kernel that finds a live lock is refused at
once. A kernel that crashed leaves a lock that goes stale: its process is gone (same machine), or its
heartbeat is older than STALE_S (another machine), and the next kernel takes it over.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from .checkpoint import CheckpointError, another_path

HEARTBEAT_S = 20.0
STALE_S = 120.0  # several missed heartbeats: Google Drive can take a while to show another runtime's write


class CheckpointLock:
    """Held while one train_model call uses a checkpoint; release() (or leaving a `with`) lets it go."""

    def __init__(self, path: Path):
        self.path = lock_path(path)
        self.checkpoint = path
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._heartbeat = None

    def acquire(self) -> CheckpointLock:
        """Take the lock, or raise CheckpointError naming the kernel that holds it."""
        for _ in range(5):  # another kernel may take or drop the lock between our looks
            if self._create():
                self._heartbeat = threading.Thread(target=self._beat, name="checkpoint-lock-heartbeat", daemon=True)
                self._heartbeat.start()
                return self
            holder = read_lock(self.path)
            # Our own process holds no lock outside a train_model call: one it still finds is left over.
            if holder is not None and is_alive(holder) and not is_this_process(holder):
                raise CheckpointError(self._held_message(holder))
            self._remove_stale(holder)
        raise CheckpointError(f"Could not take the lock {self.path}: other kernels keep taking and dropping it. "
                              "Make sure only one notebook trains into this checkpoint, then run the cell again.")

    def release(self) -> None:
        """Stop the heartbeat and remove the lock file, if it is still ours."""
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        holder = read_lock(self.path)
        if holder is not None and holder.get("token") == self.token:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> CheckpointLock:
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()

    def _record(self) -> dict:
        return {"host": socket.gethostname(), "pid": os.getpid(), "token": self.token, "heartbeat": time.time()}

    def _create(self) -> bool:
        try:
            descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        with os.fdopen(descriptor, "w") as file:
            json.dump(self._record(), file)
        return True

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            # Written beside the lock and renamed over it: a reader never sees half a record.
            temporary = self.path.with_name(f"{self.path.name}.{self.token}")
            try:
                temporary.write_text(json.dumps(self._record()))
                os.replace(temporary, self.path)
            except OSError:  # a full or vanished disk: the checkpoint's own write will say so
                temporary.unlink(missing_ok=True)

    def _remove_stale(self, holder: dict | None) -> None:
        """Move a stale lock aside under a name of our own, so that two kernels never both remove one."""
        aside = self.path.with_name(f"{self.path.name}.stale-{self.token}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:  # another kernel removed it first
            return
        moved = read_lock(aside)
        if holder is not None and moved is not None and moved.get("token") != holder.get("token"):
            os.rename(aside, self.path)  # a fresh lock was created meanwhile: put it back
        else:
            aside.unlink(missing_ok=True)

    def _held_message(self, holder: dict) -> str:
        where = "this machine" if holder.get("host") == socket.gethostname() else f"machine {holder.get('host')!r}"
        age = time.time() - float(holder.get("heartbeat", 0))
        return (f"Another kernel (process {holder.get('pid')} on {where}, last seen {age:.0f} s ago) is training "
                f"into {self.checkpoint} right now: two kernels writing one checkpoint would lose it. Nothing was "
                f"trained. Stop the other kernel first (Kernel -> Interrupt), or, to train beside it, "
                f"{another_path(self.checkpoint)}. A lock left by a kernel that crashed clears by itself after "
                f"{STALE_S:.0f} s.")


def lock_path(checkpoint: Path) -> Path:
    return checkpoint.with_name(checkpoint.name + ".lock")


def read_lock(path: Path) -> dict | None:
    """The lock's record; None when there is no lock; a record with no heartbeat when it cannot be read yet."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        record = json.loads(text)
    except ValueError:  # being written right now, or damaged: judge it by the file's age
        return {"heartbeat": path.stat().st_mtime if path.exists() else 0.0}
    return record if isinstance(record, dict) else {"heartbeat": 0.0}


def is_this_process(holder: dict) -> bool:
    return holder.get("host") == socket.gethostname() and holder.get("pid") == os.getpid()


def is_alive(holder: dict) -> bool:
    """Whether the kernel that wrote a lock record may still be running."""
    if time.time() - float(holder.get("heartbeat", 0)) > STALE_S:
        return False
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # alive, under another user
            return True
    return True
