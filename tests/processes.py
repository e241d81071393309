"""Starting `sigen` in a process of its own and stopping it as a user or a machine would: Ctrl-C
to its process group (as a terminal sends it), kill -9 of the group or of sigen alone; then
checking what it left: the run's files, and no process of the engine left running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from selfinstruct_local.engines.reaper import proc_stat
from tests.conftest import REPO


def rows(path: Path) -> list[dict]:
    """The complete rows of a JSONL file (a torn last line left out); none if it is missing."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.endswith("}")]


def start_sigen(args, stderr_path: Path | None = None) -> subprocess.Popen:
    """`sigen ARGS` in a session of its own, so that a signal can reach its whole process group
    (vLLM's engine and worker processes too), as a terminal's Ctrl-C or the end of a job does;
    its stderr goes to `stderr_path`."""
    stderr = open(stderr_path, "w", encoding="utf-8") if stderr_path else None  # noqa: SIM115
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "selfinstruct_local", *args], cwd=REPO,
            stdout=subprocess.DEVNULL, stderr=stderr or subprocess.DEVNULL,
            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    finally:
        if stderr:
            stderr.close()  # the child has its own copy


def descendants(pid: int) -> set[int]:
    """Ids of every live process under `pid` (vLLM's engine core and its workers)."""
    parents = {}
    for name in os.listdir("/proc"):
        info = proc_stat(int(name)) if name.isdigit() else None
        if info and info[0] != "Z":
            parents[int(name)] = info[1]
    found, grown = set(), True
    while grown:
        new = {p for p, parent in parents.items() if parent in found | {pid}} - found
        grown = bool(new)
        found |= new
    return found


def wait_until(process: subprocess.Popen, condition, timeout: float = 900,
               what: str = "the stop point") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the run ended (status {process.returncode}) before {what}")
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail(f"{what} was not reached in time")
        time.sleep(0.2)


def kill_when(process: subprocess.Popen, condition, timeout: float = 900,
              whole_group: bool = True) -> None:
    """SIGKILL the run when `condition()` holds: its whole process group, as the end of a job
    does, or (`whole_group=False`) only sigen itself, as `kill -9 PID` does; then vLLM's
    processes must end as well (the watchdog in engines/reaper.py)."""
    wait_until(process, condition, timeout, "the kill point")
    engine = descendants(process.pid)
    if whole_group:
        os.killpg(process.pid, signal.SIGKILL)
    else:
        assert engine, "vLLM runs its engine in processes of its own"
        os.kill(process.pid, signal.SIGKILL)
    process.wait()
    end = time.monotonic() + 20
    while engine & descendants(1) and time.monotonic() < end:
        time.sleep(0.2)  # they are re-parented, not gone, if nothing ends them
    assert not engine & descendants(1), "engine processes outlived sigen"


def interrupt(process: subprocess.Popen, times: int, timeout: float = 120
              ) -> tuple[int, float]:
    """SIGINT to the process group `times` times, 0.1 s apart; the exit status and how long the
    run took to exit after the last one."""
    for i in range(times):
        if i:
            time.sleep(0.1)
        os.killpg(process.pid, signal.SIGINT)
    sent = time.monotonic()
    try:
        status = process.wait(timeout=timeout)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    return status, time.monotonic() - sent


def group_gone(pgid: int, timeout: float = 20) -> bool:
    """Whether every process of the group (vLLM's engine and workers) has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    os.killpg(pgid, signal.SIGKILL)
    return False


def check_files(out: Path, torn_last_line_allowed: bool = False) -> dict:
    """Every JSONL line parses; a torn last line only where allowed (resume repairs it). The
    manifest."""
    torn = []
    for path in sorted(out.glob("*.jsonl")):
        *complete, last = path.read_bytes().split(b"\n")
        for line in complete:
            assert isinstance(json.loads(line), dict), path
        if last:
            torn.append(path.name)
    assert not torn or torn_last_line_allowed, f"torn last lines: {torn}"
    json.loads((out / "data.json").read_text(encoding="utf-8"))
    return json.loads((out / "manifest.json").read_text(encoding="utf-8"))


def manifest_status(out: Path) -> str | None:
    try:
        return json.loads((out / "manifest.json").read_text(encoding="utf-8"))["status"]
    except (OSError, ValueError, KeyError):
        return None
