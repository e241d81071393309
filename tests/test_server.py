"""`sigen run --engine openai` against a real `vllm serve` started by the tests on 127.0.0.1:
a run as complete as an in-process one, a dead replica beside a live one, and the server
killed in the middle of a run (the run stops resumably; the same command completes it)."""

import json
import os
import re
import resource
import signal
import subprocess
import sys
import time

import pytest

from selfinstruct_local.engines.server import free_port
from tests.conftest import REPO, sigen
from tests.test_e2e import check_judged_as_it_went, check_run_directory, read_jsonl
from tests.test_resume import rows

pytestmark = pytest.mark.engine


def test_openai_engine_run(tmp_path, vllm_server):
    out = tmp_path / "run"
    result = sigen("run", "--engine", "openai", "--base-url", vllm_server.base_url,
                   "-n", "5", "--batch-size", "8", "-o", str(out), "--seed", "3",
                   env={"OPENAI_API_KEY": "sk-not-needed-here"})
    assert result.returncode == 0, result.stderr[-3000:]
    instructions, manifest = check_run_directory(out, 5, engine="openai")
    engine = manifest["engine"]
    assert engine["servers"] == [vllm_server.base_url]
    assert engine["served_model"] == "smollm2-135m"
    assert engine["rendering"] == "local tokenizer"
    assert engine["requests_retried"] == 0 and engine["replicas_dropped"] == 0
    assert manifest["counts"]["classify_requests"] >= 5
    for name in os.listdir(out):  # the API key is never written down
        assert "sk-not-needed" not in (out / name).read_text(encoding="utf-8", errors="replace")
    assert "sk-not-needed" not in result.stderr

    # --judge added to the finished run: its tasks are scored through the server, nothing else
    # is generated.
    judged = sigen("run", "--resume", str(out), "--judge", "--base-url", vllm_server.base_url)
    assert judged.returncode == 0, judged.stderr[-3000:]
    assert "Judging" in judged.stderr and "tasks generated before" in judged.stderr
    after = json.loads((out / "manifest.json").read_text())
    assert read_jsonl(out / "machine_instructions.jsonl") == instructions
    assert after["counts"]["bootstrap_requests"] == manifest["counts"]["bootstrap_requests"]
    check_judged_as_it_went(out, after, judged.stderr)


def test_dead_replica_beside_a_live_one(tmp_path, vllm_server):
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    out = tmp_path / "run"
    result = sigen("run", "--engine", "openai", "--base-url", f"{dead},{vllm_server.base_url}",
                   "-n", "3", "--batch-size", "6", "-o", str(out), "--seed", "4")
    assert result.returncode == 0, result.stderr[-3000:]
    _, manifest = check_run_directory(out, 3, engine="openai")
    assert manifest["engine"]["servers"] == [dead, vllm_server.base_url]
    assert manifest["engine"]["replicas_dropped"] == 1
    assert f"{dead} taken out of rotation (connection refused" in result.stderr


def test_server_killed_mid_run_then_resumed(tmp_path, vllm_server):
    out = tmp_path / "run"
    args = ["run", "--engine", "openai", "--base-url", vllm_server.base_url, "-n", "6",
            "--batch-size", "4", "-o", str(out), "--seed", "9", "--server-timeout", "15"]
    stderr = tmp_path / "stderr.txt"
    with open(stderr, "w", encoding="utf-8") as err:
        run = subprocess.Popen([sys.executable, "-m", "selfinstruct_local", *args], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=err,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 600
        # Kill the server once instructions wait for their instances: requests are in flight.
        while not rows(out / "pending.jsonl") and time.monotonic() < deadline:
            assert run.poll() is None, stderr.read_text()[-3000:]
            time.sleep(0.2)
        os.killpg(vllm_server.process.pid, signal.SIGKILL)
        vllm_server.stop()
        status = run.wait(timeout=300)
    finally:
        if run.poll() is None:
            run.kill()
        if vllm_server.process is None:
            vllm_server.start()  # the server comes back (for the resume and other tests)
    text = stderr.read_text(encoding="utf-8")
    assert status == 2, text[-3000:]
    assert "no server answered for 15 s" in text and f"sigen run --resume {out}" in text
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    assert manifest["stop_reason"].startswith("no server answered for 15 s")
    assert manifest["engine"]["requests_retried"] > 0
    before = (out / "pending.jsonl").read_text(encoding="utf-8")
    finals_before = read_jsonl(out / "machine_instructions.jsonl") \
        if (out / "machine_instructions.jsonl").exists() else []

    again = sigen(*args)  # the same command, once the server is back
    assert again.returncode == 0, again.stderr[-3000:]
    instructions, manifest = check_run_directory(out, 6, engine="openai")
    assert (out / "pending.jsonl").read_text(encoding="utf-8").startswith(before)
    assert instructions[:len(finals_before)] == finals_before  # nothing rewritten
    assert len({r["instruction"] for r in instructions}) == len(instructions)


def test_a_request_the_server_refuses_is_a_clear_error(tmp_path, vllm_server):
    """HTTP 400 (more tokens than the context holds) cannot be fixed by retrying: the run stops
    with the server's own message, and the manifest says it failed and why."""
    out = tmp_path / "run"
    result = sigen("run", "--engine", "openai", "--base-url", vllm_server.base_url, "-n", "2",
                   "--max-new-tokens", "4000", "-o", str(out))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {vllm_server.base_url} rejected a request with HTTP 400")
    assert "max_model_len=2048" in last  # the server's own words
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "HTTP 400" in manifest["error"]


def test_a_write_failure_stops_cleanly_and_resumes(tmp_path, vllm_server):
    """A file size limit (as a full disk would) stops the run with a message naming the file;
    the manifest says why; the same command without the limit completes the run. (The openai
    engine keeps vLLM's own large files, such as its shared memory, out of sigen's process.)"""
    out = tmp_path / "run"
    args = ["run", "--engine", "openai", "--base-url", vllm_server.base_url, "-n", "6",
            "--batch-size", "4", "--seed", "2", "-o", str(out)]

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (12_000, 12_000))

    limited = subprocess.run([sys.executable, "-m", "selfinstruct_local", *args], cwd=REPO,
                             capture_output=True, text=True, timeout=900, preexec_fn=small_files)
    assert limited.returncode == 2, limited.stderr[-3000:]
    last = limited.stderr.strip().splitlines()[-1]
    assert re.match(rf"error: cannot write {re.escape(str(out))}/\S+\.jsonl: the file size "
                    r"limit is reached \(ulimit -f\)", last), last
    assert "run the same command again to resume" in last
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "cannot write" in manifest["error"]

    again = sigen(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    instructions, _ = check_run_directory(out, 6, engine="openai")
    assert len({r["instruction"] for r in instructions}) == 6
