"""Ends an engine's processes when `sigen` dies without shutting them down, at any moment.

vLLM runs its engine core (and, under it, its workers) in separate processes; `vllm serve` too.
When `sigen` is killed outright (`kill -9`, a plain `kill`, the out-of-memory killer, a
pre-empted job whose scheduler signals only the main process), those processes keep running,
re-parented to init: they hold the GPU memory and CPU cores that the resumed run then needs.
Python cannot clean up after SIGKILL, so a small watchdog process does it.

Why it works this way:
- It is started *before* the engine spawns anything (`Watchdog()`), because a kill can land at
  any moment of the half-minute or more that loading takes, while the engine core already runs.
  Until it is told which processes the engine kept, it records, a few times a second, every
  process that sigen started since the watchdog began and all of theirs (id and start time from
  /proc). Processes sigen started before (another engine's) are not its business.
- A process spawned in the last moment before a kill, not yet seen by a poll, is found another
  way: sigen's orphans are re-parented to the same process as the watchdog itself (init or a
  subreaper), so the watchdog takes the processes of that parent that are in sigen's session and
  started since its last poll. Nothing older qualifies: a poll would have seen it under sigen.
- Once the engine is up, sigen hands over the processes it kept (`hand_over`); the watchdog then
  guards those and their descendants only, polling every few seconds, so a second engine or
  server that sigen starts later is left to its own watchdog.
- Sigen's death is noticed two ways: the pipe whose write end only sigen holds closes (EOF), and
  the watchdog's own parent changes (a forked child that inherited the write end keeps the pipe
  open, but not the parent). On a normal `close()` sigen writes "done": the watchdog then ends
  only what sigen failed to stop, of what it guards, and exits; it never outlives sigen.
- Killing is exact: every victim is frozen (SIGSTOP, so it cannot fork any more) and its
  descendants searched again until none is new, then all are killed (SIGKILL: vLLM's engine core
  ignores SIGTERM). A process is signalled through a pidfd only if its start time still matches
  the one recorded, so a recycled process id never names a victim.
- multiprocessing's resource tracker is spared: it exits by itself once the processes that share
  it are gone, after removing the shared memory they leaked.

Linux only (it reads /proc); elsewhere a `Watchdog` does nothing. The watchdog is this module run
as `python -m selfinstruct_local.engines.reaper SIGEN_PID SIGEN_SESSION [PID:START ...]` (the
processes sigen had already), reading sigen's lines on stdin: "own PID:START ..." (the hand-over)
and "done" (the close).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterable
from typing import NamedTuple

LOADING_POLL = 0.2  # seconds between looks at sigen's processes while the engine starts
GUARDING_POLL = 2.0  # after the hand-over: only the engine's own descendants are looked for
SLACK_TICKS = 2  # start times are whole clock ticks; "since the last poll" allows for rounding
MODULE = "selfinstruct_local.engines.reaper"  # not __name__, which is "__main__" in the watchdog
SPARED = ("multiprocessing.resource_tracker", MODULE)  # cmdline marks: the tracker, watchdogs


class Proc(NamedTuple):
    state: str
    parent: int
    start: int  # clock ticks since boot
    session: int


def proc_stat(pid: int) -> Proc | None:
    """State, parent, start time and session of a process, from /proc; None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return Proc(fields[0], int(fields[1]), int(fields[19]), int(fields[3]))
    except (OSError, IndexError, ValueError):
        return None


def start_time(pid: int) -> int | None:
    info = proc_stat(pid)
    return info.start if info else None


def live_processes() -> dict[int, Proc]:
    """Every process that has not ended (zombies have)."""
    found = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (info := proc_stat(int(name))) and info.state not in "ZX":
            found[int(name)] = info
    return found


def now_ticks() -> int:
    """This moment in the clock ticks of /proc's start times (both count from boot)."""
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * os.sysconf("SC_CLK_TCK"))


Mark = tuple[int, int]  # a process: its id and start time (an id alone may be recycled)


def descendants(procs: dict[int, Proc], tops: dict[Mark, Mark | None],
                skip=lambda mark: False) -> dict[Mark, Mark]:
    """The live processes under `tops`, each with its root: the root of its top, or (a top
    whose root is None, sigen) the child of that top it descends from. `skip` prunes a branch."""
    children = defaultdict(list)
    for pid, info in procs.items():
        children[info.parent].append((pid, info.start))
    found: dict[Mark, Mark] = {}
    stack = [(pid, root) for (pid, start), root in tops.items()
             if pid in procs and procs[pid].start == start]
    while stack:
        parent, root = stack.pop()
        for child in children[parent]:
            if child not in found and child not in tops and not skip(child):
                found[child] = root or child
                stack.append((child[0], root or child))
    return found


class Watchdog:
    """sigen's side: start it before the engine spawns anything, `hand_over` the processes the
    engine kept once it is up, `close` it once they are shut down."""

    def __init__(self) -> None:
        self.pid: int | None = None  # the watchdog process
        self._pipe: int | None = None
        me = (os.getpid(), start_time(os.getpid()))
        if not sys.platform.startswith("linux") or me[1] is None:
            return
        # What sigen runs already (another engine, a server) is not this watchdog's business.
        before = [f"{pid}:{t}" for pid, t in descendants(live_processes(), {me: None})]
        read_end, write_end = os.pipe()  # not inherited by spawned children (PEP 446)
        try:
            self.pid = subprocess.Popen(
                [sys.executable, "-m", MODULE, str(me[0]), str(os.getsid(0)), *before],
                stdin=read_end, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                # Its own session: a terminal's Ctrl-C must not kill it before it has done its job.
                start_new_session=True,
            ).pid
        except OSError:
            os.close(write_end)
            return
        finally:
            os.close(read_end)
        self._pipe = write_end

    def hand_over(self, pids: Iterable[int]) -> None:
        """From now on guard these processes and their descendants only."""
        marks = [f"{pid}:{t}" for pid in pids if (t := start_time(pid)) is not None]
        self._send(" ".join(["own", *marks]))

    def close(self) -> None:
        """The engine is shut down: the watchdog ends what is left of it, then exits."""
        self._send("done")
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            os.close(pipe)

    def _send(self, line: str) -> None:
        if self._pipe is not None:
            with contextlib.suppress(OSError):  # the watchdog is gone (killed by hand)
                os.write(self._pipe, line.encode() + b"\n")


def parse_marks(marks: Iterable[str]) -> list[Mark]:
    return [(int(pid), int(t)) for pid, t in (mark.split(":") for mark in marks)]


class Keeper:
    """The watchdog's memory: the processes it guards, each with the process it descends from
    (a child of sigen, or a process sigen handed over)."""

    def __init__(self, sigen: int, session: int, before: list[Mark]) -> None:
        self.sigen, self.session, self.me = sigen, session, os.getpid()
        self.before = set(before)
        self.since = start_time(self.me) or now_ticks()  # sigen's processes from here on
        self.last_poll = self.since
        self.guarded: dict[Mark, Mark] = {}
        self.handed_over = False
        self._spared: dict[Mark, bool] = {}

    def skip(self, mark: Mark) -> bool:
        return mark[0] == self.me or mark in self.before or self.spared(mark)

    def poll(self) -> None:
        began = now_ticks()
        procs = live_processes()
        alive = {m: root for m, root in self.guarded.items()
                 if m[0] in procs and procs[m[0]].start == m[1]}
        if self.handed_over:
            found = descendants(procs, alive, self.skip)
        else:
            found = descendants(procs, {(self.sigen, procs[self.sigen].start): None}, self.skip) \
                if self.sigen in procs else {}
        if os.getppid() == self.sigen:
            self.last_poll = began  # sigen lived through the scan: it saw all of sigen's tree
        elif not self.handed_over:
            found = {}  # sigen died meanwhile: orphans() finds its children
        self.guarded = {**alive, **found}

    def hand_over(self, handed: list[Mark]) -> None:
        """Keep the processes handed over and what was seen under them (even if orphaned)."""
        self.guarded = {**{m: root for m, root in self.guarded.items() if root in handed},
                        **{m: m for m in handed}}
        self.handed_over = True
        self.poll()

    def spared(self, mark: Mark) -> bool:
        if mark not in self._spared:
            try:
                with open(f"/proc/{mark[0]}/cmdline", "rb") as handle:
                    command = handle.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                command = ""
            self._spared[mark] = any(spared in command for spared in SPARED)
        return self._spared[mark]

    def orphans(self) -> set[Mark]:
        """Sigen's children it had no time to see: re-parented where the watchdog was, in
        sigen's session, started since the last poll."""
        adopter, since = os.getppid(), max(self.since, self.last_poll - SLACK_TICKS)
        return {(pid, info.start) for pid, info in live_processes().items()
                if info.parent == adopter and info.session == self.session
                and info.start >= since and not self.skip((pid, info.start))}

    def end(self, victims: Iterable[Mark]) -> None:
        """Freeze the victims and every descendant (frozen, none can fork), then kill them."""
        frozen: dict[Mark, None] = {}
        for _ in range(50):  # a few rounds suffice: each freezes a generation
            new = [m for m in victims if m not in frozen]
            if not new:
                break
            frozen.update((m, None) for m in new if signal_exactly(*m, signal.SIGSTOP))
            victims = descendants(live_processes(), frozen, self.skip)
        for mark in frozen:
            signal_exactly(*mark, signal.SIGKILL)


def signal_exactly(pid: int, started: int, signum: int) -> bool:
    """Signal the process only if it is still the one that started at `started`."""
    try:
        handle = os.pidfd_open(pid)  # pins the process: its id cannot name another one now
    except ProcessLookupError:
        return False
    except OSError:  # a kernel without pidfds (before 5.3): check, then signal by id
        if start_time(pid) != started:
            return False
        with contextlib.suppress(OSError):
            os.kill(pid, signum)
            return True
        return False
    try:
        if start_time(pid) != started:
            return False
        signal.pidfd_send_signal(handle, signum)
        return True
    except OSError:
        return False
    finally:
        os.close(handle)


def watch(sigen: int, session: int, before: list[Mark]) -> None:
    """The watchdog: record sigen's new processes until it dies or says "done", then act."""
    keeper = Keeper(sigen, session, before)
    pending = b""
    while os.getppid() == sigen:  # otherwise sigen is dead (its children were re-parented)
        interval = GUARDING_POLL if keeper.handed_over else LOADING_POLL
        if select.select([0], [], [], interval)[0]:
            data = os.read(0, 65536)
            if not data:
                break  # EOF: sigen, the only writer, is exiting
            *lines, pending = (pending + data).split(b"\n")
            for line in lines:
                if line == b"done":  # a normal close: end only what sigen failed to stop
                    keeper.poll()
                    keeper.end(keeper.guarded)
                    return
                if line.startswith(b"own"):
                    keeper.hand_over(parse_marks(line.decode().split()[1:]))
        keeper.poll()
    deadline = time.monotonic() + 5  # EOF comes a moment before sigen's children are moved
    while os.getppid() == sigen and time.monotonic() < deadline:
        time.sleep(0.01)
    died = os.getppid() != sigen
    late = keeper.orphans() if died and not keeper.handed_over else set()
    keeper.end([*keeper.guarded, *late])


if __name__ == "__main__":
    watch(int(sys.argv[1]), int(sys.argv[2]), parse_marks(sys.argv[3:]))
