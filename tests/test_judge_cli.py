"""`sigen judge` and `sigen decontaminate` on the command line, where no model needs to load:
a judged run, another judge's scores, a run that another process is writing."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from selfinstruct_local.quality.gate import SCORES
from tests.conftest import REPO, sigen
from tests.quality_helpers import write_jsonl, write_run

TASKS = [("Name a color.", "", "Blue."), ("Name a color.", "Warm", "Red."),
         ("Count to three.", "", "1, 2, 3.")]
IDS = ["mi-000001-1", "mi-000001-2", "mi-000002-1"]


def scores(judge: str) -> list[dict]:
    return [{"id": i, "instruction_id": i.rsplit("-", 1)[0], "score": 4, "reason": "ok",
             "judge": judge, "attempts": 1} for i in IDS]


def test_a_judged_run_loads_no_model(tmp_path):
    run = write_run(tmp_path / "run", TASKS)
    write_jsonl(run / SCORES, scores("smollm2-135m"))
    before = (run / SCORES).read_bytes()
    result = sigen("judge", str(run), timeout=120)
    assert result.returncode == 0, result.stderr
    assert "All 3 tasks" in result.stderr and "nothing to do" in result.stderr
    assert result.stdout == "" and (run / SCORES).read_bytes() == before


def test_another_judges_scores_are_not_mixed_in(tmp_path):
    run = write_run(tmp_path / "run", TASKS)
    write_jsonl(run / SCORES, scores("qwen2.5-14b-instruct")[:2])
    result = sigen("judge", str(run), "--engine", "transformers", timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "holds scores by qwen2.5-14b-instruct; one judge per run" in result.stderr
    assert "--model qwen2.5-14b-instruct" in result.stderr


def test_not_a_run_directory(tmp_path):
    result = sigen("judge", str(tmp_path), timeout=120)
    assert result.returncode == 2 and "is not a complete sigen run directory" in result.stderr


def test_a_run_being_written_is_left_alone(tmp_path):
    run = write_run(tmp_path / "run", TASKS)
    bench = tmp_path / "bench.txt"
    bench.write_text("Count to three and then stop counting, please, before you reach four.\n")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from selfinstruct_local.runlock import "
         "hold_run_lock; hold_run_lock(sys.argv[1]); print('held', flush=True); "
         "time.sleep(120)", str(run)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for command in (("judge", str(run)),
                        ("decontaminate", str(run), "--against", str(bench))):
            result = sigen(*command, timeout=120)
            assert result.returncode == 2, result.stderr
            assert f"is being written by another sigen process (pid {holder.pid}" in \
                result.stderr
            assert f"Run `sigen {command[0]}` again once it has finished" in result.stderr
        assert not (run / SCORES).exists() and not (run / "contamination.jsonl").exists()
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    result = sigen("decontaminate", str(run), "--against", str(bench), timeout=120)
    assert result.returncode == 0, result.stderr
    checks = json.loads((run / "contamination.json").read_text())["benchmarks"]
    assert [check["tasks_checked"] for check in checks.values()] == [3]
