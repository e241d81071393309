"""Ctrl-C: the SIGINT handler on its own, then `sigen run` given Ctrl-C as a terminal sends it,
to the whole process group (vLLM's engine and worker processes too).
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from selfinstruct_local.interrupt import RunInterrupted, StopRequest
from tests.conftest import REPO, sigen
from tests.test_resume import rows

ARGS = ("run", "-n", "6", "--batch-size", "4", "--seed", "13")


def start(out, stderr_path):
    # A session of its own: the test can signal the whole group, as a terminal does.
    with open(stderr_path, "w", encoding="utf-8") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "selfinstruct_local", *ARGS, "-o", str(out)], cwd=REPO,
            stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def wait_until(process, condition, timeout=900):
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the run ended (status {process.returncode}) before the interrupt")
        if time.monotonic() > deadline:
            pytest.fail("the interrupt point was not reached in time")
        time.sleep(0.2)


def interrupt(process, times, timeout=120):
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


def group_gone(pgid, timeout=20):
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


def check_files(out, torn_last_line_allowed=False):
    """Every JSONL line parses; a torn last line only where allowed (resume repairs it)."""
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


def manifest_status(out):
    try:
        return json.loads((out / "manifest.json").read_text(encoding="utf-8"))["status"]
    except (OSError, ValueError, KeyError):
        return None


def test_first_ctrl_c_waits_for_a_safe_point_or_abandons_an_engine_call():
    # What was there before: Python's default handler, or SIG_IGN when the suite was started
    # in the background by a shell (which then ignores Ctrl-C for it).
    before = signal.getsignal(signal.SIGINT)
    messages = []
    with StopRequest(messages.append) as stop:
        signal.raise_signal(signal.SIGINT)  # between steps: only asks
        assert stop.requested and messages[-1].startswith("Stopping at the next safe point")
        with pytest.raises(RunInterrupted), stop.abortable():
            pass  # an engine call is not even started once a stop is asked for
    with StopRequest(messages.append) as stop:
        with pytest.raises(RunInterrupted), stop.abortable():
            signal.raise_signal(signal.SIGINT)  # during an engine call: at once
        assert messages[-1].startswith("Stopping now")
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)  # the second Ctrl-C
    assert signal.getsignal(signal.SIGINT) is before  # restored


@pytest.mark.engine
def test_ctrl_c_stops_cleanly_and_the_run_resumes(tmp_path, smollm2):
    """One run directory, three invocations (each loads the model, about 30 s): one Ctrl-C, two
    in quick succession on the resumed run, then the same command completes the run."""
    out = tmp_path / "run"

    # 1: one Ctrl-C while instructions wait for classification and instances.
    process = start(out, tmp_path / "first.err")
    wait_until(process, lambda: rows(out / "pending.jsonl"))
    status, seconds = interrupt(process, 1)
    stderr = (tmp_path / "first.err").read_text(encoding="utf-8")
    assert status == 130, stderr[-3000:]
    assert group_gone(process.pid), "vLLM processes left running after the run exited"
    assert "Stopping" in stderr
    assert f"Resume with: sigen run --resume {out}" in stderr
    manifest = check_files(out)
    assert manifest["status"] == "interrupted"
    assert manifest["summary"]["status"] == "interrupted"
    assert manifest["summary"]["counts"]["accepted_instructions"] == \
        manifest["counts"]["accepted"]
    print(f"first interrupt: exited {seconds:.1f} s after Ctrl-C")

    # 2: the resumed run, twice in quick succession during generation: it exits promptly.
    process = start(out, tmp_path / "second.err")
    wait_until(process, lambda: manifest_status(out) == "running")  # engine loaded
    time.sleep(1.0)
    status, seconds = interrupt(process, 2)
    stderr = (tmp_path / "second.err").read_text(encoding="utf-8")
    assert status == 130, stderr[-3000:]
    assert seconds < 30, f"took {seconds:.1f} s to exit after the second Ctrl-C"
    assert f"Resume with: sigen run --resume {out}" in stderr
    assert group_gone(process.pid), "vLLM processes left running after the run exited"
    check_files(out, torn_last_line_allowed=True)
    print(f"second interrupt: exited {seconds:.1f} s after the second Ctrl-C")

    # 3: the same command again completes the run, nothing duplicated.
    result = sigen(*ARGS, "-o", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resuming" in result.stderr
    final = rows(out / "machine_instructions.jsonl")
    assert len(final) == 6
    assert len({r["id"] for r in final}) == 6 and len({r["instruction"] for r in final}) == 6
    pending_ids = [r["id"] for r in rows(out / "pending.jsonl")]
    assert len(pending_ids) == len(set(pending_ids))
    manifest = check_files(out)
    assert manifest["status"] == "finished" and manifest["counts"]["accepted"] == 6
    assert manifest["summary"]["counts"]["accepted_instructions"] == 6
