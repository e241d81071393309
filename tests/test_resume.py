"""Runs killed with SIGKILL at different moments resume with nothing lost or duplicated."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from selfinstruct_local.engines.reaper import proc_stat
from tests.conftest import REPO, sigen

pytestmark = pytest.mark.engine


def rows(path):
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.endswith("}")]


def start(args):
    # A session of its own, so the kill reaches vLLM's engine process too, as `kill -9` of a
    # whole job would.
    return subprocess.Popen([sys.executable, "-m", "selfinstruct_local", *args], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def descendants(pid):
    """Ids of every live process under `pid` (vLLM's engine core and its workers)."""
    parents = {}
    for name in os.listdir("/proc"):
        info = proc_stat(int(name)) if name.isdigit() else None
        if info and info[0] != "Z":
            parents[int(name)] = info[1]
    found, grown = set(), True
    while grown:
        new = {p for p, parent in parents.items() if parent in found | {pid}} - found
        grown = bool(new)
        found |= new
    return found


def kill_when(process, condition, timeout=900, whole_group=True):
    """SIGKILL the run when `condition()` holds: its whole process group, as the end of a job
    does, or (`whole_group=False`) only sigen itself, as `kill -9 PID` does; then vLLM's
    processes must end as well (the watchdog in engines/reaper.py)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the run ended (status {process.returncode}) before the kill point")
        if condition():
            engine = descendants(process.pid)
            if whole_group:
                os.killpg(process.pid, signal.SIGKILL)
            else:
                assert engine, "vLLM runs its engine in processes of its own"
                os.kill(process.pid, signal.SIGKILL)
            process.wait()
            end = time.monotonic() + 20
            while engine & descendants(1) and time.monotonic() < end:
                time.sleep(0.2)  # they are re-parented, not gone, if nothing ends them
            assert not engine & descendants(1), "engine processes outlived sigen"
            return
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    pytest.fail("kill point not reached in time")


def test_killed_twice_then_resumed(tmp_path, smollm2):
    out = tmp_path / "run"
    args = ["run", "-n", "12", "--batch-size", "4", "-o", str(out), "--seed", "11"]
    finals = out / "machine_instructions.jsonl"

    # 1: mid-round, as soon as instructions wait for classification and instances.
    kill_when(start(args), lambda: rows(out / "pending.jsonl"))
    first = rows(finals)
    assert rows(out / "pending.jsonl")
    assert json.loads((out / "manifest.json").read_text())["status"] == "running"

    # 2: after at least one more instruction is final; only sigen itself, as `kill -9 PID`.
    # The target is well above what one round adds, so the kill lands with work still to do.
    kill_when(start(args), lambda: len(rows(finals)) > len(first), whole_group=False)
    second = rows(finals)
    assert len(second) < 12

    # A write cut short by the kill leaves a torn line; simulate one in a file it appends to.
    with open(out / "rejected.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"stage": "instruction", "reason": "too_sh')

    result = sigen(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "torn last line" in result.stderr and "Resuming" in result.stderr

    final = rows(finals)
    assert len(final) == 12
    ids = [r["id"] for r in final]
    texts = [r["instruction"] for r in final]
    assert len(set(ids)) == 12 and len(set(texts)) == 12
    for before in (first, second):  # nothing accepted before a kill is lost or changed
        assert all(row in final for row in before)
    instances = rows(out / "instances.jsonl")
    per_instruction = Counter(r["instruction_id"] for r in instances)
    assert set(per_instruction) == set(ids)
    assert sum(r["num_instances"] for r in final) == len(instances)
    pending_ids = [r["id"] for r in rows(out / "pending.jsonl")]
    assert len(pending_ids) == len(set(pending_ids))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "finished"
    assert manifest["counts"]["accepted"] == 12
    # Totals add up over the three processes, as far as their manifests recorded them.
    assert manifest["tokens"]["generated"] == sum(
        v for k, v in manifest["counts"].items() if k.endswith("_tokens"))
    assert manifest["counts"]["instances"] == len(instances)
    assert len(json.loads((out / "data.json").read_text())) == len(instances)


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
