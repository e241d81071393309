"""One writer per run directory: a second `sigen run` on a run being written exits at once with
status 2 and names the holder; readers say the run is live; a killed holder frees the lock."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.conftest import REPO, sigen

HOLD = textwrap.dedent("""
    import sys, time
    from selfinstruct_local.runlock import hold_run_lock
    hold_run_lock(sys.argv[1])
    print("held", flush=True)
    time.sleep(600)
""")


def holder(run_dir):
    """Another process holding the run's lock, as a `sigen run` writing it does."""
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_second_writer_is_refused_and_readers_note_it(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    first = holder(run_dir)
    try:
        result = sigen("run", "-n", "1", "-o", str(run_dir))
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert f"is being written by another sigen process (pid {first.pid} on " in \
            result.stderr
        assert not (run_dir / "manifest.json").exists()  # refused before writing anything
        stats = sigen("stats", str(run_dir))
        assert f"is still being written (pid {first.pid}" in stats.stderr
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    # The kernel freed the lock with the process: the next one takes it.
    again = holder(run_dir)
    again.kill()
    again.wait()


@pytest.mark.engine
def test_two_real_runs_on_one_directory(tmp_path, smollm2):
    """The second `sigen run` is refused with the first one's pid; the first is unharmed."""
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "selfinstruct_local", "run", "-n", "2", "--batch-size", "4",
            "--seed", "5", "-o", str(run_dir)]
    first = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             cwd=REPO)
    try:
        deadline = time.monotonic() + 300
        while not (run_dir / "manifest.json").exists():  # written once the lock is held
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        second = sigen("run", "-n", "2", "--batch-size", "4", "--seed", "5", "-o", str(run_dir))
        assert second.returncode == 2
        assert f"being written by another sigen process (pid {first.pid} on " in second.stderr
        _, err = first.communicate(timeout=900)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err[-3000:]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["counts"]["accepted"] == 2
