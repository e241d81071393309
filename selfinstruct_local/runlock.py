"""One writer per run directory.

Two processes appending to one run (a job resubmitted on a cluster while the first still runs,
a resume typed in a second terminal) would interleave ids and rows. `sigen run` therefore holds
an exclusive OS file lock (flock) on DIR/.sigen.lock for as long as it lives; the kernel frees
it the moment the process ends, however it ends, so a killed run never leaves a stale lock.
The file says who holds it (pid, host, start time) for the error message of the second process.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from datetime import datetime
from pathlib import Path

from selfinstruct_local.errors import SigenError
from selfinstruct_local.runstore import writing

LOCK_FILE = ".sigen.lock"
_held: dict[Path, int] = {}  # run directory -> the open lock file (kept open: the lock lives)


def describe(holder: dict) -> str:
    return (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, "
            f"started {holder.get('started', '?')}")


def _read_holder(fd: int) -> dict:
    with contextlib.suppress(OSError, ValueError):
        os.lseek(fd, 0, os.SEEK_SET)
        return json.loads(os.read(fd, 4096).decode("utf-8") or "{}")
    return {}


def hold_run_lock(root: Path) -> None:
    """Take the run directory's lock for the rest of this process; a SigenError naming the
    holder when another process has it."""
    root = Path(root).resolve()
    if root in _held:
        return
    with writing(root / LOCK_FILE):
        fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(fd)
        os.close(fd)
        raise SigenError(
            f"{root} is being written by another sigen process ({describe(holder)}). "
            "Wait for it to finish or stop it, or write to another --output.") from None
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "started": datetime.now().isoformat(timespec="seconds")}).encode())
    _held[root] = fd


def run_writer(root: Path) -> dict | None:
    """Who is writing this run now (for readers such as `sigen stats`); None when no one."""
    path = Path(root) / LOCK_FILE
    if not path.is_file() or Path(root).resolve() in _held:
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_holder(fd) or {}
    finally:
        os.close(fd)  # also drops the shared lock if it was taken
    return None
