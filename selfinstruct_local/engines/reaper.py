"""Ends an engine's processes when `sigen` dies without shutting them down.

vLLM runs its engine core (and, under it, its workers) in separate processes. When `sigen` is
killed outright (`kill -9`, a plain `kill`, the out-of-memory killer, a pre-empted job whose
scheduler signals only the main process), those processes keep running: they hold the GPU memory
and CPU cores that the resumed run then needs. Python cannot clean up after SIGKILL, so a small
watchdog process does it: it holds the read end of a pipe whose write end only `sigen` holds.
When `sigen` exits, however it exits, the pipe closes; the watchdog then kills the engine
processes it was given and all their descendants, but only those whose start time still matches
(a recycled process id is left alone). Linux only (it reads /proc); elsewhere nothing is done.

The watchdog is this module run as `python -m selfinstruct_local.engines.reaper PID:START ...`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys


def proc_stat(pid: int) -> tuple[str, int, str] | None:
    """(state, parent id, start time in clock ticks since boot) from /proc; None if gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return fields[0], int(fields[1]), fields[19]
    except (OSError, IndexError, ValueError):
        return None


def start_time(pid: int) -> str | None:
    info = proc_stat(pid)
    return info[2] if info else None


def guard(pids: list[int]) -> int | None:
    """Start the watchdog for these processes; returns the pipe's write end, which the caller
    keeps open for as long as the processes should live (closing it also ends the watchdog)."""
    marks = [f"{pid}:{t}" for pid in pids if (t := start_time(pid)) is not None]
    if not marks or not sys.platform.startswith("linux"):
        return None
    read_end, write_end = os.pipe()  # not inherited by later children (PEP 446)
    try:
        subprocess.Popen(
            [sys.executable, "-m", __name__, *marks], stdin=read_end,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            # Its own session: a terminal's Ctrl-C must not kill it before it has done its job.
            start_new_session=True,
        )
    except OSError:
        os.close(write_end)
        return None
    finally:
        os.close(read_end)
    return write_end


def watch(marks: list[str]) -> None:
    """The watchdog: wait until sigen is gone, then kill the guarded processes (those whose
    start time matches their mark) and their descendants."""
    sys.stdin.buffer.read()  # returns once sigen, the only writer, is gone
    victims = set()
    for mark in marks:
        pid, started = mark.split(":")
        info = proc_stat(int(pid))
        if info and info[2] == started and info[0] != "Z":
            victims.add(int(pid))
    grown = True
    while grown:  # add the descendants (vLLM's workers are children of its engine core)
        grown = False
        for name in os.listdir("/proc"):
            if name.isdigit() and int(name) not in victims:
                info = proc_stat(int(name))
                if info and info[1] in victims:
                    victims.add(int(name))
                    grown = True
    for pid in victims:
        with contextlib.suppress(OSError):  # already gone
            os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":
    watch(sys.argv[1:])
