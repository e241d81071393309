"""`sigen judge` on the packaged model, served by the tests' shared `vllm serve` (the transformers
engine's own contract is tested in test_engines.py): every task gets a row, a second call scores
nothing twice, and after a kill (simulated: half the rows and a torn line left) the same command
scores exactly the tasks that are missing. The 135M model's scores are not expected to be good,
only well-formed."""

from __future__ import annotations

import json
import re

import pytest

from selfinstruct_local.quality.gate import SCORES
from tests.conftest import sigen
from tests.quality_helpers import write_run

pytestmark = pytest.mark.engine

TASKS = [
    ("Give three tips for staying healthy.", "",
     "1. Eat vegetables. 2. Sleep eight hours. 3. Walk every day."),
    ("Translate the sentence into French.", "Good morning, my friend.", "Bonjour, mon ami."),
    ("Translate the sentence into French.", "Where is the station?", "Où est la gare ?"),
    ("What is 2 + 2?", "", "5"),
]
IDS = ["mi-000001-1", "mi-000002-1", "mi-000002-2", "mi-000003-1"]
JUDGE = ("judge", "--engine", "openai", "--batch-size", "2")


def rows(run):
    return [json.loads(line) for line in (run / SCORES).read_text(encoding="utf-8").splitlines()]


def check_rows(found: list[dict]) -> None:
    for row in found:
        assert row["judge"] == "smollm2-135m" and row["attempts"] in (1, 2)
        assert row["instruction_id"] == row["id"].rsplit("-", 1)[0]
        if row["score"] is None:  # unparsed: the reply is kept to see why
            assert "reply" in row and row["attempts"] == 2
        else:
            assert row["score"] in range(1, 6) and isinstance(row["reason"], str)


def test_judge_scores_every_task_once_and_resumes(tmp_path, vllm_server):
    run = write_run(tmp_path / "run", TASKS)
    judge = (*JUDGE, "--base-url", vllm_server.base_url)
    first = sigen(*judge, str(run), timeout=1800)
    assert first.returncode == 0, first.stderr
    found = rows(run)
    assert [r["id"] for r in found] == IDS
    check_rows(found)
    summary = re.search(r"4 tasks judged in \d+ s \(1: (\d+), 2: (\d+), 3: (\d+), 4: (\d+), "
                        r"5: (\d+); unparsed: (\d+)\)", first.stdout)
    assert summary, first.stdout
    histogram = [sum(r["score"] == s for r in found) for s in (1, 2, 3, 4, 5, None)]
    assert [int(n) for n in summary.groups()] == histogram

    # A second call loads no model and writes nothing.
    before = (run / SCORES).read_bytes()
    again = sigen(*judge, str(run), timeout=300)
    assert again.returncode == 0, again.stderr
    assert "All 4 tasks" in again.stderr and "Loading" not in again.stderr
    assert (run / SCORES).read_bytes() == before

    # Killed after the first batch, in the middle of writing the second.
    lines = before.decode("utf-8").splitlines(keepends=True)
    kept = "".join(lines[:2])
    (run / SCORES).write_text(kept + lines[2][: len(lines[2]) // 2], encoding="utf-8")
    resumed = sigen(*judge, str(run), timeout=1800)
    assert resumed.returncode == 0, resumed.stderr
    assert "torn last line" in resumed.stderr
    assert "Judging 2 of 4 tasks" in resumed.stderr
    text = (run / SCORES).read_text(encoding="utf-8")
    assert text.startswith(kept)  # the rows before the kill are untouched
    found = rows(run)
    assert [r["id"] for r in found] == IDS  # each task exactly once
    check_rows(found)

    stats = sigen("stats", str(run), timeout=300)
    assert stats.returncode == 0, stats.stderr
    assert re.search(r"Judge scores \(smollm2-135m\)", stats.stdout)
    assert re.search(r"not judged\s+0", stats.stdout)
