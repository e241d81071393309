"""A run stopped every way a user or a machine stops it resumes with nothing lost or duplicated:
one run directory on the real vLLM engine in sigen's process (a whole run, then extended through
Ctrl-C, two Ctrl-C, kill -9 and a second writer); a full disk through a server; a resume with
other settings is refused."""

import json
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from selfinstruct_local.runlock import run_writer
from tests.conftest import REPO, sigen
from tests.fake_openai import FakeOpenAIServer
from tests.processes import (
    check_files,
    group_gone,
    interrupt,
    kill_when,
    manifest_status,
    rows,
    start_sigen,
    wait_until,
)
from tests.scripted import scripted_completions
from tests.test_e2e import check_quiet_engine, check_run_directory

FIRST, TARGET = 1, 5  # instructions of the first run, then of the run extended
# Shorter requests than the defaults (512, 320 tokens) keep its 5 runs within the suite's budget.
SHORT = ("--max-new-tokens", "256", "--max-answer-tokens", "128")


@pytest.mark.engine
def test_a_run_then_extended_and_stopped_every_way(tmp_path, smollm2, monkeypatch, request):
    """`sigen run` with vLLM in its process (each start loads the model, about 30 s): a whole
    run, its output kept off the terminal; then the same run extended with a larger -n and
    stopped every way: one Ctrl-C mid-round (a clean stop, status 130), two in quick succession
    during generation (out at once), kill -9 of sigen alone (its watchdog ends vLLM's
    processes); then the same command completes it while a second writer is refused. Nothing
    accepted before a stop is lost, changed or repeated, and no socket file is left in the
    temporary folder (engines/sockets.py), not even by the killed process."""
    out = tmp_path / "run"
    # A temporary folder of its own, every sigen below inherits it; short, as /tmp is (a socket's
    # path must fit in 107 bytes, engines/sockets.py), so not under tmp_path.
    temporary = Path(tempfile.mkdtemp(prefix="sg"))
    request.addfinalizer(lambda: shutil.rmtree(temporary, ignore_errors=True))
    monkeypatch.setenv("TMPDIR", str(temporary))
    first = sigen("run", "-n", str(FIRST), "--batch-size", "4", "-o", str(out), "--seed", "11",
                  *SHORT)
    assert first.returncode == 0, first.stderr[-3000:]
    check_whole_run(out, first.stderr, FIRST)
    again = sigen("run", "-n", str(FIRST), "-o", str(out))
    assert again.returncode == 0 and "already finished" in again.stderr

    args = ["run", "-n", str(TARGET), "--batch-size", "4", "-o", str(out), "--seed", "11", *SHORT]
    finals = out / "machine_instructions.jsonl"
    resume_hint = f"Resume with: sigen run --resume {out}"
    kept = [rows(finals)]  # the accepted rows before each stop: none may be lost or changed

    # 1: one Ctrl-C while new instructions wait for classification and instances.
    proposed = len(rows(out / "pending.jsonl"))
    process = start_sigen(args, tmp_path / "1.err")
    wait_until(process, lambda: len(rows(out / "pending.jsonl")) > proposed)
    status, seconds = interrupt(process, 1)
    stderr = (tmp_path / "1.err").read_text(encoding="utf-8")
    assert status == 130, stderr[-3000:]
    assert group_gone(process.pid), "vLLM processes left running after the run exited"
    assert "Stopping" in stderr and resume_hint in stderr
    manifest = check_files(out)  # a clean stop: no torn line anywhere
    assert manifest["status"] == "interrupted"
    assert manifest["summary"]["status"] == "interrupted"
    assert manifest["summary"]["counts"]["accepted_instructions"] == \
        manifest["counts"]["accepted"]
    kept.append(rows(finals))
    print(f"one Ctrl-C: exited {seconds:.1f} s after it")

    # 2: the resumed run, Ctrl-C twice in quick succession during generation: out promptly.
    process = start_sigen(args, tmp_path / "2.err")
    wait_until(process, lambda: manifest_status(out) == "running")  # the engine is loaded
    time.sleep(1.0)
    status, seconds = interrupt(process, 2)
    stderr = (tmp_path / "2.err").read_text(encoding="utf-8")
    assert status == 130, stderr[-3000:]
    assert seconds < 30, f"took {seconds:.1f} s to exit after the second Ctrl-C"
    assert resume_hint in stderr
    assert group_gone(process.pid), "vLLM processes left running after the run exited"
    check_files(out, torn_last_line_allowed=True)
    kept.append(rows(finals))
    print(f"two Ctrl-C: exited {seconds:.1f} s after the second")

    # 3: kill -9 of sigen alone (`kill -9 PID`) once one more instruction is final.
    done = len(kept[-1])
    kill_when(start_sigen(args), lambda: len(rows(finals)) > done, whole_group=False)
    kept.append(rows(finals))
    assert len(kept[-1]) < TARGET
    assert manifest_status(out) == "running"  # nothing ran after the kill
    # A write cut short by the kill leaves a torn line; simulate one in a file it appends to.
    with open(out / "rejected.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"stage": "instruction", "reason": "too_sh')

    # 4: the same command completes the run; a second `sigen run` on it meanwhile is refused.
    process = start_sigen(args, tmp_path / "4.err")
    wait_until(process, lambda: run_writer(out) is not None, what="the run lock")
    second = sigen(*args)
    assert second.returncode == 2 and "Traceback" not in second.stderr
    assert f"being written by another sigen process (pid {process.pid} on " in second.stderr
    status = process.wait(timeout=900)
    stderr = (tmp_path / "4.err").read_text(encoding="utf-8")
    assert status == 0, stderr[-3000:]
    assert "torn last line" in stderr and "Resuming" in stderr

    final, manifest = check_run_directory(out, TARGET)
    assert len(final) == TARGET and len({r["instruction"] for r in final}) == TARGET
    for before_stop in kept:  # nothing accepted before a stop is lost or changed
        assert all(row in final for row in before_stop)
    instances = rows(out / "instances.jsonl")
    assert sum(r["num_instances"] for r in final) == len(instances)
    pending_ids = [r["id"] for r in rows(out / "pending.jsonl")]
    assert len(pending_ids) == len(set(pending_ids))
    assert check_files(out)["summary"]["counts"]["accepted_instructions"] == TARGET
    # vLLM's sockets were in a folder of sigen's, gone with it. (Left by vLLM and not sigen's:
    # a torch.distributed file store, vllm_dist_*, per engine killed; torch's cache folder.)
    assert not [p for p in temporary.iterdir() if p.is_socket() or p.name.startswith("sigen")]
    # Totals add up over the processes, as far as their manifests recorded them.
    assert manifest["tokens"]["generated"] == sum(
        v for k, v in manifest["counts"].items() if k.endswith("_tokens"))


def check_whole_run(out, stderr, target):
    """A run that went from start to finish in one process: the run directory, vLLM's output
    in engine.log only, one plain progress line per round."""
    instructions, manifest = check_run_directory(out, target)
    check_quiet_engine(out, stderr)
    assert manifest["counts"]["classify_requests"] >= target
    # stderr is a pipe: plain progress lines, one per round, and no terminal control codes.
    rounds = re.findall(rf"^round (\d+): (\d+)/{target} accepted, \d+ rejected \(.*\), "
                        r"\d+ tok/s, elapsed \d+m\d\ds", stderr, flags=re.M)
    assert rounds and int(rounds[-1][0]) == manifest["counts"]["rounds"]
    assert int(rounds[-1][1]) == target
    assert "\x1b[" not in stderr
    assert sum(manifest["rejected_by_reason"].values()) == manifest["counts"][
        "instructions_rejected"]


def test_a_write_failure_stops_cleanly_and_resumes(tmp_path, smollm2):
    """A file size limit (as a full disk would) stops the run with a message naming the file;
    the manifest says why; the same command without the limit completes the run. The answers
    come from the scripted engine behind a server on 127.0.0.1: what is under test is how the
    run writes, in a real `sigen` process."""

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (6_000, 6_000))

    out = tmp_path / "run"
    with FakeOpenAIServer(completions=scripted_completions()) as server:
        args = ["run", "--engine", "openai", "--base-url", server.url, "-n", "6",
                "--batch-size", "4", "--seed", "2", "-o", str(out)]
        limited = subprocess.run([sys.executable, "-m", "selfinstruct_local", *args], cwd=REPO,
                                 capture_output=True, text=True, timeout=300,
                                 preexec_fn=small_files)
        assert limited.returncode == 2, limited.stderr[-3000:]
        last = limited.stderr.strip().splitlines()[-1]
        assert re.match(rf"error: cannot write {re.escape(str(out))}/\S+\.jsonl: the file "
                        r"size limit is reached \(ulimit -f\)", last), last
        assert "run the same command again to resume" in last
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["status"] == "failed" and "cannot write" in manifest["error"]

        again = sigen(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    instructions, _ = check_run_directory(out, 6, engine="openai")
    assert len({r["instruction"] for r in instructions}) == 6


def test_resume_with_another_configuration_is_refused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    manifest = {"status": "interrupted", "config": {"model": "smollm2-135m",
                                                    "method": "self-instruct", "lang": "en"}}
    (out / "manifest.json").write_text(json.dumps(manifest))
    result = sigen("run", "--method", "alpaca", "-o", str(out))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "method: 'self-instruct' in the run, 'alpaca' now" in result.stderr
    assert "--force" in result.stderr
