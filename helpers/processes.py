"""Which process wrote a lock or a temporary file, and whether it still runs: what two kernels compare.

A process on this machine is asked about directly (the operating system knows whether it lives, even
paused); a process on another machine (a second Colab runtime on one Google Drive) cannot be asked, and
the lock judges it by its heartbeat instead.
"""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path


def host_name() -> str:
    return socket.gethostname()


def pid_namespace() -> str | None:
    """Containers on one host may share its name but not their process numbers: this tells them apart (Linux)."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def machine_tag() -> str:
    """A short name for this machine (host and process namespace), safe in a file name."""
    return hashlib.sha1(f"{host_name()}/{pid_namespace()}".encode()).hexdigest()[:8]


def start_time(pid: int) -> str | None:
    """When a process started (boot and clock ticks, Linux): a recycled process number starts at another time."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return f"{boot}/{fields[19]}" if len(fields) > 19 else None


def process_alive(pid: int, started: str | None = None) -> bool | None:
    """Whether process `pid` of this machine still runs (paused or not); None where the system cannot say."""
    if os.name != "posix":  # on Windows os.kill(pid, 0) would end the process, not ask about it
        return None
    if pid <= 0:  # os.kill would ask about a whole group of processes
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, under another user
        pass
    now = start_time(pid)
    return started is None or now is None or now == started
