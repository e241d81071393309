"""The watchdog ends an engine's processes (and theirs) when sigen is killed outright."""

import os
import signal
import subprocess
import sys
import time

import pytest

from selfinstruct_local.engines import reaper
from selfinstruct_local.engines.reaper import guard, proc_stat, start_time

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

# Stands in for sigen: starts an "engine" process that has a child of its own (as vLLM's engine
# core has workers), guards it, and reports the ids.
SIGEN_LIKE = """
import subprocess, sys, time
from selfinstruct_local.engines.reaper import guard
engine = subprocess.Popen([sys.executable, "-c",
    "import subprocess, sys, time\\n"
    "w = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\\n"
    "print(w.pid, flush=True)\\n"
    "time.sleep(600)"], stdout=subprocess.PIPE, text=True)
worker = int(engine.stdout.readline())
keep = guard([engine.pid])
print(engine.pid, worker, keep is not None, flush=True)
time.sleep(600)
"""


def gone(pid):
    info = proc_stat(pid)
    return info is None or info[0] == "Z"  # a zombie has ended


def wait_until_gone(pids, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(gone(p) for p in pids):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_engine_processes_end_when_sigen_is_killed(signum):
    sigen = subprocess.Popen([sys.executable, "-c", SIGEN_LIKE], stdout=subprocess.PIPE,
                             text=True)
    engine, worker, guarded = sigen.stdout.readline().split()
    engine, worker = int(engine), int(worker)
    try:
        assert guarded == "True"
        time.sleep(0.5)
        assert not gone(engine) and not gone(worker)
        os.kill(sigen.pid, signum)
        sigen.wait()
        assert wait_until_gone([engine, worker])
    finally:
        for pid in (engine, worker):
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)


def test_closing_the_pipe_ends_the_guarded_process():
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        os.close(guard([sleeper.pid]))  # what sigen's exit does
        assert wait_until_gone([sleeper.pid])
    finally:
        sleeper.kill()
        sleeper.wait()
    assert start_time(sleeper.pid) is None and guard([sleeper.pid]) is None  # reaped: no id


def test_a_recycled_process_id_is_spared():
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        wrong = int(start_time(sleeper.pid)) + 1  # the id now names another process
        watchdog = subprocess.Popen([sys.executable, "-m", reaper.__name__,
                                     f"{sleeper.pid}:{wrong}"], stdin=subprocess.PIPE)
        watchdog.stdin.close()
        assert watchdog.wait(timeout=15) == 0
        assert not gone(sleeper.pid)
    finally:
        sleeper.kill()
        sleeper.wait()
