"""One kernel at a time trains into a checkpoint: a lock file beside it, kept fresh while training.

Two notebook tabs, or two Colab runtimes on one Google Drive folder, writing one checkpoint would
each overwrite the other's epochs. The first kernel writes `<checkpoint>.lock` (its host, process and
a heartbeat it renews every HEARTBEAT_S seconds); another kernel that finds a live lock is refused at
once. A kernel on this machine keeps its lock as long as its process lives, however long it is paused
(a laptop asleep, SIGSTOP): the operating system is asked, not the heartbeat. A kernel on another
machine cannot be asked: its lock goes stale when its heartbeat is older than STALE_S. A kernel that
finds its lock taken over never writes it again, and refuses its next save (check_owned).
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
import uuid
from pathlib import Path

from .checkpoint import CheckpointError, another_path, error_text, write_problem
from .processes import host_name, pid_namespace, process_alive, start_time

HEARTBEAT_S = 20.0
STALE_S = 120.0  # several missed heartbeats: Google Drive can take a while to show another runtime's write
UNWRITTEN_S = 10.0  # a lock is written at once after it is created: one left empty this long was abandoned


class CheckpointLock:
    """Held while one train_model call uses a checkpoint; release() (or leaving a `with`) lets it go."""

    def __init__(self, path: Path, heartbeat_s: float | None = None):
        self.path = lock_path(path)
        self.checkpoint = path
        self.token = uuid.uuid4().hex
        self.heartbeat_s = HEARTBEAT_S if heartbeat_s is None else heartbeat_s
        self._stop = threading.Event()
        self._heartbeat = None

    def acquire(self) -> CheckpointLock:
        """Take the lock, or raise CheckpointError naming the kernel that holds it."""
        if self.path.is_dir():
            raise CheckpointError(
                f"{self.path} is a folder, but this is where the lock file of {self.checkpoint} goes. Nothing was "
                f"trained. Move or rename that folder, or, to train beside it, {another_path(self.checkpoint)}.")
        for _ in range(5):  # another kernel may take or drop the lock between our looks
            if self._create():
                self._heartbeat = threading.Thread(target=self._beat, name="checkpoint-lock-heartbeat", daemon=True)
                self._heartbeat.start()
                return self
            holder = read_lock(self.path)
            # Our own process holds no lock outside a train_model call: one it still finds is left over.
            if holder is not None and not is_this_process(holder) and is_alive(holder):
                raise CheckpointError(self._held_message(holder))
            self._remove_stale(holder)
        raise CheckpointError(f"Could not take the lock {self.path}: other kernels keep taking and dropping it. "
                              "Make sure only one notebook trains into this checkpoint, then run the cell again.")

    def check_owned(self) -> None:
        """Raise CheckpointError if another kernel has taken this lock over: asked before every save."""
        holder = read_lock(self.path)
        if holder is None or holder.get("token") != self.token:
            raise CheckpointError(self._lost_message(holder))

    def release(self) -> None:
        """Stop the heartbeat and remove the lock file, if it is still ours.

        It never raises: when a folder turns read-only mid-run, the error that stopped training is the one
        to show, and a lock left behind by this process is cleared by the next kernel once this one ends.
        """
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        try:
            holder = read_lock(self.path)
            if holder is not None and holder.get("token") == self.token:
                self.path.unlink(missing_ok=True)
        except (OSError, CheckpointError) as error:
            print(f"Note: the lock file {self.path} could not be removed ({write_problem(error)}); the next kernel "
                  "takes it over once this kernel has ended.")

    def __enter__(self) -> CheckpointLock:
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()

    def _record(self) -> dict:
        return {"host": host_name(), "pid": os.getpid(), "token": self.token, "heartbeat": time.time(),
                "pid_namespace": pid_namespace(), "started": start_time(os.getpid())}

    def _create(self) -> bool:
        try:
            descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            return False
        with os.fdopen(descriptor, "w") as file:
            json.dump(self._record(), file)
        return True

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            if not self._renew():
                return  # taken over: never write another kernel's lock; the next save says what happened

    def _renew(self) -> bool:
        """Write a fresh heartbeat while the lock is ours; False, writing nothing, once it is not."""
        try:
            holder = read_lock(self.path)
        except CheckpointError:  # unreadable for a moment (a flaky network drive): try again at the next beat
            return True
        if holder is None or holder.get("token") != self.token:
            return False
        # Written beside the lock and renamed over it: a reader never sees half a record.
        temporary = self.path.with_name(f"{self.path.name}.{self.token}")
        try:
            temporary.write_text(json.dumps(self._record()))
            os.replace(temporary, self.path)
        except OSError:  # a full or vanished disk: the checkpoint's own write will say so
            temporary.unlink(missing_ok=True)
        return True

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
        age = time.time() - holder["heartbeat"]
        if "problem" in holder:
            return (f"The lock file {self.path} {holder['problem']} ({age:.0f} s old): a kernel was stopped while "
                    f"taking the lock, or is writing it right now. Nothing was trained. A lock like this is cleared "
                    f"when it is {UNWRITTEN_S:.0f} s old: run this cell again in a few seconds.")
        if on_this_machine(holder):
            paused = f", paused or very busy: its last heartbeat is {age:.0f} s old" if age > STALE_S else ""
            who = f"Another kernel (process {holder['pid']} on this machine{paused})"
            clears = ("It keeps the lock as long as its process runs, even paused; a lock left by a kernel that "
                      "has ended is cleared at once.")
        else:
            who = f"Another kernel (process {holder['pid']} on machine {holder['host']!r}, last seen {age:.0f} s ago)"
            clears = f"A lock left by a kernel that crashed clears by itself {STALE_S:.0f} s after its last heartbeat."
        return (f"{who} is training into {self.checkpoint} right now: two kernels writing one checkpoint would lose "
                f"it. Nothing was trained. Stop the other kernel first (Kernel -> Interrupt), or, to train beside "
                f"it, {another_path(self.checkpoint)}. {clears}")

    def _lost_message(self, holder: dict | None) -> str:
        if holder is None:
            taken = "its lock file is gone (another kernel took it over and has finished, or it was deleted)"
        elif "problem" in holder:
            taken = f"its lock file {holder['problem']}"
        else:
            where = "this machine" if on_this_machine(holder) else f"machine {holder['host']!r}"
            taken = f"another kernel (process {holder['pid']} on {where}) has taken its lock over"
        return (f"This kernel no longer holds the lock on {self.checkpoint}: {taken}, most likely while this kernel "
                f"was paused for more than {STALE_S:.0f} s (a laptop asleep, a frozen tab). So that no epoch of the "
                "other kernel is overwritten, nothing more was saved: the checkpoint is as that kernel left it. "
                "Let one kernel train: to continue in this one, stop the other, then rerun this cell.")


def lock_path(checkpoint: Path) -> Path:
    return checkpoint.with_name(checkpoint.name + ".lock")


def read_lock(path: Path) -> dict | None:
    """The lock's record; None when there is no lock.

    A lock that is empty or not a record of ours gets {"problem": what it is, "heartbeat": the file's age}:
    it is judged by its age, and named for what it is.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise CheckpointError(f"{path} is a folder, where the lock file of a checkpoint must go: move or rename "
                              "it, or pass another checkpoint_path.") from None
    except OSError as error:
        raise CheckpointError(f"The lock file {path} cannot be read ({error_text(error)}). Make it readable, or "
                              "pass a checkpoint_path in a folder of your own.") from error
    record, problem = _parsed(data)
    if problem is None:
        return record
    try:
        modified = path.stat().st_mtime
    except FileNotFoundError:  # removed since we read it
        return None
    return {"problem": problem, "heartbeat": modified}


def _parsed(data: bytes) -> tuple[dict | None, str | None]:
    """(the record, None), or (None, what is wrong with it in a few words)."""
    if not data.strip():
        return None, "is empty"
    try:
        record = json.loads(data.decode())
    except ValueError:  # also UnicodeDecodeError
        return None, "is not a lock record (not valid JSON)"
    valid = (isinstance(record, dict) and isinstance(record.get("host"), str)
             and isinstance(record.get("token"), str)
             and isinstance(record.get("pid"), int) and not isinstance(record.get("pid"), bool) and record["pid"] > 0
             and isinstance(record.get("heartbeat"), (int, float)) and not isinstance(record.get("heartbeat"), bool)
             and math.isfinite(record["heartbeat"]))
    return (record, None) if valid else (None, "is not a lock record of these helpers (a field is missing or wrong)")


def on_this_machine(holder: dict) -> bool:
    """The same host name, and no sign of another container under it."""
    namespace = holder.get("pid_namespace")
    return holder.get("host") == host_name() and (namespace is None or namespace == pid_namespace())


def is_this_process(holder: dict) -> bool:
    return "problem" not in holder and on_this_machine(holder) and holder.get("pid") == os.getpid()


def is_alive(holder: dict) -> bool:
    """Whether the kernel that wrote a lock record may still be running.

    A process on this machine is asked first: it keeps its lock however old its heartbeat, and a dead one
    loses it at once. Only where that cannot be asked (another machine) does the heartbeat's age decide.
    """
    age = time.time() - holder["heartbeat"]
    if "problem" in holder:
        return age <= UNWRITTEN_S
    if on_this_machine(holder):
        alive = process_alive(holder["pid"], holder.get("started"))
        if alive is not None:
            return alive
    return age <= STALE_S
