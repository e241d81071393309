"""engine.log: what vLLM writes goes there and not to the terminal; a failed start is told in one
line. The fast tests use real descriptors, a real child process and logs recorded from vLLM's
CPU build; the engine-marked test starts the real vLLM on a checkpoint whose weights are wrong."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from selfinstruct_local.engines.enginelog import (
    last_error_line,
    log_size,
    logger_to,
    output_to,
    start_failure,
)
from tests.conftest import REPO, sigen

LOGS = Path(__file__).parent / "fixtures" / "engine_logs"


SCRIPT = """
import os, subprocess, sys
from pathlib import Path
from selfinstruct_local.engines.enginelog import output_to
print("before", flush=True)
print("unflushed")  # written before the block: still reaches the terminal
with output_to(Path(sys.argv[1])):
    os.write(1, b"fd one\\n")
    os.write(2, b"fd two\\n")
    print("buffered text")
    print("a warning", file=sys.stderr)
    # A process started meanwhile keeps the descriptors, as vLLM's engine core does.
    child = subprocess.Popen([sys.executable, "-c", "import sys, time; time.sleep(0.5); "
                              "print('child out'); print('child err', file=sys.stderr)"])
print("after")
print("after, on stderr", file=sys.stderr)
child.wait(timeout=30)
"""


def test_output_of_this_process_and_its_children_goes_to_the_log(tmp_path):
    log = tmp_path / "run" / "engine.log"
    # A process of its own: stdout and stderr as sigen has them (pipes here), not pytest's,
    # and block-buffered, as Python makes them when they are not a terminal.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(log)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert sorted(log.read_text().splitlines()) == sorted(
        ["fd one", "fd two", "buffered text", "a warning", "child out", "child err"])
    assert result.stdout == "before\nunflushed\nafter\n"
    assert result.stderr == "after, on stderr\n"


def test_output_to_nothing_is_a_no_op(capfd):
    with output_to(None):
        os.write(1, b"shown\n")
    assert capfd.readouterr().out == "shown\n"


def test_the_descriptors_come_back_after_an_error(tmp_path, capfd):
    with pytest.raises(RuntimeError), output_to(tmp_path / "engine.log"):
        raise RuntimeError("start failed")
    os.write(2, b"visible\n")
    assert capfd.readouterr().err == "visible\n"


def test_logger_to_writes_only_to_the_log(tmp_path, capfd):
    logger = logging.getLogger("sigen-test-vllm")
    logger.setLevel(logging.INFO)
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(logging.Formatter("X %(levelname)s %(message)s"))
    logger.addHandler(stream)
    log = tmp_path / "engine.log"
    try:
        logger_to("sigen-test-vllm", log)
        logger.info("engine ready")
        logger.warning("slow")
    finally:
        for handler in list(logger.handlers):
            handler.close()
            logger.removeHandler(handler)
    assert log.read_text().splitlines() == ["X INFO engine ready", "X WARNING slow"]
    assert capfd.readouterr().err == ""


def test_last_error_line_finds_the_cause_in_recorded_vllm_logs(tmp_path):
    # The worker's own exception, not the engine core's "see the stack trace for root cause".
    weights = last_error_line(LOGS / "worker_failed_to_load_weights.log")
    assert weights.startswith("ValueError: There is no module or parameter named "
                              "'not_a_weight' in LlamaForCausalLM.")
    assert weights.endswith("...") and len(weights) == 300
    kv = last_error_line(LOGS / "kv_cache_too_large.log")
    assert kv.startswith("ValueError: Available memory on node 0 ")
    assert "VLLM_CPU_KVCACHE_SPACE" in kv
    # Only what this start wrote counts: the log is appended to across resumes.
    log = tmp_path / "engine.log"
    shutil.copy(LOGS / "kv_cache_too_large.log", log)
    start = log_size(log)
    with open(log, "a") as handle:
        handle.write("(EngineCore pid=7) INFO 12-01 10:00:00 [core.py:1] starting\n")
    assert last_error_line(log, start) is None
    with open(log, "a") as handle:
        handle.write("(EngineCore pid=7) ERROR 12-01 10:00:01 [core.py:2] EngineCore died\n")
    assert last_error_line(log, start) == ("(EngineCore pid=7) ERROR 12-01 10:00:01 "
                                           "[core.py:2] EngineCore died")
    assert last_error_line(tmp_path / "missing.log") is None


def test_start_failure_message(tmp_path):
    log = tmp_path / "engine.log"
    log.write_text("RuntimeError: no memory\n")
    assert start_failure("vLLM", log, 0, "Exception: see above") == (
        f"vLLM failed to start: RuntimeError: no memory; full log: {log}")
    assert start_failure("vllm serve", log, log_size(log), "it exited with status 1") == (
        f"vllm serve failed to start: it exited with status 1; full log: {log}")
    assert start_failure("vLLM", None, 0, "ValueError: bad") == (
        "vLLM failed to start: ValueError: bad")


@pytest.mark.engine
def test_vllm_start_failure_is_one_line_pointing_at_the_log(tmp_path, smollm2):
    # A real checkpoint whose weights file holds the wrong tensor: vLLM's worker process fails
    # while loading it, after the engine core has started (the cause is only in its output).
    checkpoint = tmp_path / "broken"
    checkpoint.mkdir()
    for name in os.listdir(smollm2.path):
        if not name.endswith(".safetensors"):
            shutil.copy(smollm2.path / name, checkpoint / name)
    import torch
    from safetensors.torch import save_file

    save_file({"not_a_weight": torch.zeros(2)}, str(checkpoint / "model.safetensors"))
    out = tmp_path / "run"
    result = sigen("run", "--model", str(checkpoint), "-n", "1", "-o", str(out), timeout=600)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    error = result.stderr.splitlines()[-1]
    assert error.startswith("error: vLLM failed to start: ValueError: There is no module or "
                            "parameter named 'not_a_weight'")
    assert error.endswith(f"; full log: {out / 'engine.log'}")
    log = (out / "engine.log").read_text(encoding="utf-8")
    assert "Traceback (most recent call last)" in log and "not_a_weight" in log


@pytest.mark.engine
def test_vllm_serve_start_failure_points_at_the_log(tmp_path, smollm2):
    from selfinstruct_local.engines.server import ManagedServer
    from selfinstruct_local.errors import SigenError

    log = tmp_path / "engine.log"
    log.write_text("RuntimeError: from an earlier start, not this one\n")
    server = ManagedServer(smollm2, tmp_path / "no-such-checkpoint", log_path=log)
    with pytest.raises(SigenError) as failure:
        server.start(timeout=300)
    message = str(failure.value)
    assert message.startswith("vllm serve failed to start: ")
    assert message.endswith(f"; full log: {log}")
    assert "earlier start" not in message and "no-such-checkpoint" in log.read_text()
