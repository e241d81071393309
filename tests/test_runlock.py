"""One writer per run directory: a second `sigen run` on a run being written exits at once with
status 2 and names the holder; readers say the run is live; a killed holder frees the lock.
A second `sigen run` refused while a real run writes, and that run unharmed: test_resume.py."""

import os
import signal
import subprocess
import sys
import textwrap

from tests.conftest import sigen

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
