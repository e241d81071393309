"""The watchdog ends an engine's processes (and theirs) when sigen is killed outright, at any
moment: while the engine loads, once it is up, or a moment after it spawned its first process."""

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest

from selfinstruct_local.engines.reaper import MODULE, live_processes, proc_stat, start_time

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

# Stands in for an engine: it starts a worker of its own (as vLLM's engine core does).
ENGINE = """
import subprocess, sys, time
worker = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])
print(worker.pid, flush=True)
time.sleep(600)
"""

# Stands in for sigen: a process it started before the watchdog (not the engine's), the
# watchdog, then the engine. MODE says how far it gets: "at-once" is killed by itself right
# after spawning the engine (before the watchdog can have looked), "loading" waits without
# handing the engine over, "guarding" hands it over, "close" hands it over, then kills the
# engine alone (its worker is left behind, as a crashed engine core leaves one) and closes.
SIGEN_LIKE = """
import os, signal, subprocess, sys, time
from selfinstruct_local.engines.reaper import Watchdog
mode = sys.argv[1]
before = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
watchdog = Watchdog()
engine = subprocess.Popen([sys.executable, "-c", sys.argv[2]], stdout=subprocess.PIPE, text=True)
if mode == "at-once":
    print(before.pid, watchdog.pid, engine.pid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
worker = int(engine.stdout.readline())
if mode != "loading":
    watchdog.hand_over([engine.pid])
if mode == "close":
    time.sleep(0.5)  # the watchdog has seen the worker under the engine
    engine.kill()
    engine.wait()
    watchdog.close()
print(before.pid, watchdog.pid, engine.pid, worker, flush=True)
time.sleep(600)
"""


def gone(pid):
    info = proc_stat(pid)
    return info is None or info.state == "Z"  # a zombie has ended


def wait_until_gone(pids, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(gone(p) for p in pids):
            return True
        time.sleep(0.1)
    return False


def session_members(session):
    """Live processes of a session: what a run started in a session of its own has left."""
    return {pid for pid, info in live_processes().items() if info.session == session}


def run_sigen_like(mode):
    sigen = subprocess.Popen([sys.executable, "-c", SIGEN_LIKE, mode, ENGINE],
                             stdout=subprocess.PIPE, text=True, start_new_session=True)
    before, watchdog, *engine = map(int, sigen.stdout.readline().split())
    return sigen, before, watchdog, engine


def clean_up(sigen):
    for pid in session_members(sigen.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    sigen.wait()


@pytest.mark.parametrize(("mode", "signum"), [
    ("loading", signal.SIGKILL), ("loading", signal.SIGTERM), ("guarding", signal.SIGKILL)])
def test_engine_processes_end_when_sigen_is_killed(mode, signum):
    sigen, before, watchdog, engine = run_sigen_like(mode)
    try:
        time.sleep(0.5)  # the watchdog has looked at least once
        assert not any(gone(p) for p in engine)
        os.kill(sigen.pid, signum)
        sigen.wait()
        assert wait_until_gone([*engine, watchdog])
        assert session_members(sigen.pid) == {before}  # started before the watchdog: spared
    finally:
        clean_up(sigen)


def test_a_process_spawned_just_before_the_kill_ends_too():
    sigen, before, watchdog, [engine] = run_sigen_like("at-once")
    try:
        sigen.wait()
        assert wait_until_gone([engine, watchdog])
        assert session_members(sigen.pid) == {before}  # nor did the engine's worker outlive it
    finally:
        clean_up(sigen)


def test_a_normal_close_ends_what_is_left_and_the_watchdog():
    sigen, before, watchdog, [engine, worker] = run_sigen_like("close")
    try:
        assert wait_until_gone([engine, worker, watchdog])
        assert sigen.poll() is None and not gone(before)  # sigen's other processes live on
    finally:
        clean_up(sigen)


@pytest.mark.parametrize("recycled", [True, False])
def test_only_the_process_handed_over_is_killed_never_a_recycled_id(recycled):
    # The test process plays sigen, talking to the watchdog as Watchdog does.
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        started = start_time(sleeper.pid) + (1 if recycled else 0)  # +1: another process
        watchdog = subprocess.Popen([sys.executable, "-m", MODULE, str(os.getpid()),
                                     str(os.getsid(0))], stdin=subprocess.PIPE)
        watchdog.stdin.write(f"own {sleeper.pid}:{started}\ndone\n".encode())
        watchdog.stdin.close()
        assert watchdog.wait(timeout=15) == 0
        assert gone(sleeper.pid) != recycled
    finally:
        sleeper.kill()
        sleeper.wait()
