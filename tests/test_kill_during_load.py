"""`kill -9` of sigen alone while its engine loads (in-process vLLM, or the vllm serve it starts
for replicas): nothing sigen started outlives it (vLLM's engine core and worker hold a GPU's
memory), whatever vLLM has spawned by then."""

import subprocess
import sys
import time

import pytest

from tests.conftest import REPO
from tests.processes import descendants, kill_when, start_sigen
from tests.test_reaper import session_members

pytestmark = [pytest.mark.engine,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")]


def command(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""  # it has just ended


def commands_under(pid):
    return [command(child) for child in descendants(pid)]


RUN = ("run", "-n", "6", "--batch-size", "4", "--seed", "13")

# Moments of loading, in the order they come (about 5, 9 and 15 s after the start here).
MOMENTS = {
    # The engine's watchdog is up, vLLM has spawned nothing yet.
    "loading-starts": lambda pid, stderr: "Loading" in stderr and descendants(pid),
    # vLLM's engine core has just been spawned (multiprocessing's spawn_main, still importing).
    "engine-core-spawned": lambda pid, stderr: any(
        "spawn_main" in c or "EngineCore" in c for c in commands_under(pid)),
    # The engine core has spawned its worker, which loads the weights: a grandchild of sigen.
    "worker-spawned": lambda pid, stderr: any(
        descendants(child) for child in descendants(pid)),
}


# sigen's replicas on one node: a vllm serve it starts (ManagedServer), here on the CPU.
SERVER_OWNER = """
from selfinstruct_local.engines.server import ManagedServer
from selfinstruct_local.models import load_registry
spec = load_registry().resolve("smollm2-135m")
ManagedServer(spec, spec.path).start()
"""


@pytest.mark.parametrize("moment", MOMENTS)
def test_nothing_outlives_sigen_killed_while_the_engine_loads(tmp_path, smollm2, moment):
    stderr = tmp_path / "stderr.txt"
    process = start_sigen([*RUN, "-o", str(tmp_path / "run")], stderr)
    # Only sigen's own process, as `kill -9 PID` does; then the processes found under it (the
    # watchdog among them) must end.
    kill_when(process, lambda: MOMENTS[moment](process.pid, stderr.read_text()), timeout=300,
              whole_group=False)
    assert_session_empty(process.pid)


def test_nothing_outlives_sigen_killed_while_its_server_loads(smollm2):
    process = subprocess.Popen([sys.executable, "-c", SERVER_OWNER], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    kill_when(process, lambda: MOMENTS["worker-spawned"](process.pid, ""), timeout=300,
              whole_group=False)  # the server's engine core has been spawned
    assert_session_empty(process.pid)


def assert_session_empty(session):
    """Nothing is left in the run's session: a process spawned after kill_when looked, or
    re-parented since, is there too (the watchdog has a session of its own)."""
    deadline = time.monotonic() + 30
    while session_members(session) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not session_members(session), [command(p) for p in session_members(session)]
