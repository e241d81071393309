"""`sigen run --engine openai` against the real `vllm serve` the tests share on 127.0.0.1: a run
as complete as an in-process one (the shared finished run), --judge added to it, the server
killed in the middle of extending it (the run stops resumably; the same command completes it:
a relay in front of the shared server is what is killed), and a request the server refuses.
(A dead replica beside a live one: test_e2e's Alpaca run on chapters; a write failure mid-run:
test_resume.)"""

import json
import os
import shutil
import signal

import pytest

from tests.conftest import SERVED_RUN_KEY, sigen
from tests.processes import rows, start_sigen, wait_until
from tests.relay import Relay
from tests.test_e2e import (
    check_every_core_computes,
    check_judged_as_it_went,
    check_run_directory,
    read_jsonl,
)

pytestmark = pytest.mark.engine


def test_openai_engine_run(tmp_path, served_run, vllm_server):
    """The shared finished run (sigen run --engine openai, given an API key), then --judge
    added to a copy of it."""
    instructions, manifest = check_run_directory(served_run.path, 2, engine="openai")
    engine = manifest["engine"]
    assert engine["servers"] == [vllm_server.base_url]
    assert engine["served_model"] == "smollm2-135m"
    assert engine["rendering"] == "local tokenizer"
    assert engine["requests_retried"] == 0 and engine["replicas_dropped"] == 0
    check_every_core_computes(vllm_server.log_path.read_text(encoding="utf-8"))
    assert manifest["counts"]["classify_requests"] >= 2
    for path in served_run.path.iterdir():  # the API key is never written down
        assert SERVED_RUN_KEY not in path.read_text(encoding="utf-8", errors="replace"), path
    assert SERVED_RUN_KEY not in served_run.stderr

    # --judge added to the finished run: its tasks are scored through the server, nothing else
    # is generated.
    out = tmp_path / "run"
    shutil.copytree(served_run.path, out)
    judged = sigen("run", "--resume", str(out), "--judge", "--base-url", vllm_server.base_url)
    assert judged.returncode == 0, judged.stderr[-3000:]
    assert "Judging" in judged.stderr and "tasks generated before" in judged.stderr
    after = json.loads((out / "manifest.json").read_text())
    assert read_jsonl(out / "machine_instructions.jsonl") == instructions
    assert after["counts"]["bootstrap_requests"] == manifest["counts"]["bootstrap_requests"]
    check_judged_as_it_went(out, after, judged.stderr)


def test_server_killed_mid_run_then_resumed(tmp_path, served_run, vllm_server):
    """The shared finished run (a copy) extended by one instruction; the server killed (kill -9)
    while requests are in flight: the run stops resumably; once the server is back the same
    command completes it. sigen talks to the shared server through a relay of its own
    (tests/relay.py), and the relay is what is killed and started again: for sigen the server
    goes away and comes back, while the real one runs on for the other tests."""
    out = tmp_path / "run"
    shutil.copytree(served_run.path, out)
    proposed = len(rows(out / "pending.jsonl"))
    target = len(rows(out / "machine_instructions.jsonl")) + 1
    stderr = tmp_path / "stderr.txt"
    with Relay(vllm_server.port) as server:
        args = ["run", "--engine", "openai", "--base-url", server.url, "-n", str(target),
                "--batch-size", "4", "-o", str(out), "--seed", "3", "--server-timeout", "5"]
        run = start_sigen(args, stderr)
        try:
            # Kill the server once new instructions wait for their instances: requests are in
            # flight.
            wait_until(run, lambda: len(rows(out / "pending.jsonl")) > proposed, timeout=600,
                       what="the server's kill")
            server.kill()
            status = run.wait(timeout=300)
        finally:
            if run.poll() is None:
                os.killpg(run.pid, signal.SIGKILL)
        text = stderr.read_text(encoding="utf-8")
        assert status == 2, text[-3000:]
        assert "no server answered for 5 s" in text and f"sigen run --resume {out}" in text
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["status"] == "interrupted"
        assert manifest["stop_reason"].startswith("no server answered for 5 s")
        assert manifest["engine"]["requests_retried"] > 0
        before = (out / "pending.jsonl").read_text(encoding="utf-8")
        finals_before = read_jsonl(out / "machine_instructions.jsonl")
        assert len(finals_before) < target

        server.start()  # the server is back, at the same address
        again = sigen(*args)  # the same command
    assert again.returncode == 0, again.stderr[-3000:]
    instructions, manifest = check_run_directory(out, target, engine="openai")
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
