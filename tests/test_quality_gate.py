"""What the judge's scores and the decontamination do downstream: `sigen export --min-score`
and the contamination exclusion, and the score histogram of `sigen stats`."""

from __future__ import annotations

import json
import re

import pytest

from selfinstruct_local.errors import SigenError
from selfinstruct_local.export import export
from selfinstruct_local.quality.contamination import decontaminate_run
from selfinstruct_local.quality.gate import SCORES, select_instances, task_ids
from selfinstruct_local.report import format_summary, summarize, write_report
from selfinstruct_local.runstore import load_run
from tests.conftest import sigen
from tests.quality_helpers import write_jsonl, write_run

BENCH_ITEM = ("Explain why the sky looks blue on a clear day, using the idea of light "
              "scattering by the molecules of the air.")
TASKS = [  # ids mi-000001-1, mi-000001-2, mi-000002-1, ...
    ("Write a haiku about the sea.", "", "Waves fold into foam."),
    ("Write a haiku about the sea.", "Tone: calm", "Still water, soft light."),
    ("Answer the science question.", BENCH_ITEM, "Rayleigh scattering."),  # contaminated
    ("Name three prime numbers.", "", "2, 3 and 5."),
    ("请写一句关于春天的话。", "", "春风吹绿了江南岸。"),
    ("Summarize the text.", "Cats sleep a lot.", "Cats nap."),
]
# mi-000002-1 (contaminated) also scores 5: it is left out as contaminated, counted once.
SCORE_ROWS = [("mi-000001-1", 2), ("mi-000001-2", 5), ("mi-000002-1", 5), ("mi-000003-1", None),
              ("mi-000004-1", 3), ("mi-000003-1", 4)]  # the later row for mi-000003-1 wins
TORN = '{"id": "mi-000005-1", "score": 5, "rea'  # a judge killed mid-write


@pytest.fixture
def run_dir(tmp_path):
    run = write_run(tmp_path / "run", TASKS)
    write_jsonl(run / SCORES, [{"id": i, "instruction_id": i.rsplit("-", 1)[0], "score": s,
                                "reason": "r", "judge": "smollm2-135m"} for i, s in SCORE_ROWS],
                tail=TORN)
    bench = tmp_path / "bench.txt"
    bench.write_text(f"{BENCH_ITEM}\n", encoding="utf-8")
    decontaminate_run(run, [bench])
    return run


def export_rows(run_dir, fmt, **options):
    done = export(run_dir, fmt, card=False, **options)
    return done.path, done.rows, done.left_out


def exported(path):
    return [row["instruction"] + "|" + row["input"] for row in
            json.loads(path.read_text(encoding="utf-8"))]


def test_task_ids_number_instances_within_their_instruction(run_dir):
    assert task_ids(load_run(run_dir).instances) == [
        "mi-000001-1", "mi-000001-2", "mi-000002-1", "mi-000003-1", "mi-000004-1",
        "mi-000005-1"]


def test_contaminated_tasks_are_left_out_by_default(run_dir):
    path, count, left_out = export_rows(run_dir, "alpaca")
    assert (count, left_out) == (5, {"contaminated": 1})
    assert "Answer the science question.|" + BENCH_ITEM not in exported(path)
    _, count, left_out = export_rows(run_dir, "alpaca", keep_contaminated=True)
    assert (count, left_out) == (6, {})


def test_min_score_keeps_tasks_scored_at_least_that(run_dir):
    path, count, left_out = export_rows(run_dir, "jsonl", min_score=4)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [(r["instruction_id"], r["input"]) for r in rows] == [("mi-000001", "Tone: calm"),
                                                                 ("mi-000003", "")]
    # The torn row of mi-000005-1 does not count: that task is not judged yet.
    assert left_out == {"below_min_score": 2, "contaminated": 1, "unscored": 1}
    _, count, left_out = export_rows(run_dir, "jsonl", min_score=2, keep_contaminated=True)
    assert (count, left_out) == (5, {"unscored": 1})


def test_sharegpt_ids_stay_the_task_ids_when_tasks_are_left_out(run_dir):
    path, _, _ = export_rows(run_dir, "sharegpt", min_score=4)
    ids = [r["id"] for r in json.loads(path.read_text(encoding="utf-8"))]
    assert ids == ["mi-000001-2", "mi-000003-1"]  # as in scores.jsonl, not renumbered


def test_unparsed_scores_are_counted_apart(run_dir):
    with (run_dir / SCORES).open("a", encoding="utf-8") as handle:  # completes the torn line
        handle.write('son": ""}\n' + json.dumps({"id": "mi-000005-1", "score": None}) + "\n")
    _, _, left_out = export_rows(run_dir, "alpaca", min_score=1)
    assert left_out == {"contaminated": 1, "unparsed": 1}


def test_min_score_on_an_unjudged_run_is_a_clear_error(tmp_path):
    run = write_run(tmp_path / "run", TASKS)
    with pytest.raises(SigenError, match=r"has no judge scores.*run `sigen judge "):
        export_rows(run, "alpaca", min_score=3)


def test_tasks_newer_than_the_decontamination_get_a_note(run_dir):
    meta = json.loads((run_dir / "contamination.json").read_text())
    (bench,) = meta["benchmarks"]
    meta["benchmarks"][bench]["tasks_checked"] = 4
    (run_dir / "contamination.json").write_text(json.dumps(meta))
    notes: list[str] = []
    kept, _ = select_instances(load_run(run_dir), warn=notes.append)
    assert len(kept) == 5
    assert (f"2 tasks added after `sigen decontaminate` against {bench} were not checked "
            "against it") in notes[0]


def test_stats_shows_the_histogram_and_the_thresholds(run_dir):
    s = summarize(run_dir, warn=lambda _m: None)
    judge = s["judge"]
    assert (judge["tasks"], judge["judged"], judge["unparsed"]) == (6, 5, 0)
    assert [h["count"] for h in judge["histogram"]] == [0, 1, 1, 1, 2]
    assert [(a["score"], a["count"], a["share"]) for a in judge["at_least"]] == [
        (2, 5, 0.8333), (3, 4, 0.6667), (4, 3, 0.5), (5, 2, 0.3333)]
    assert s["contamination"]["contaminated"] == 1
    text = format_summary(s)
    assert re.search(r"Judge scores \(smollm2-135m\)\n\s+score\s+tasks\s+share\n\s+1\s+0\s+0\.0%",
                     text)
    assert re.search(r">= 4\s+3\s+50\.0%", text) and re.search(r"not judged\s+1", text)
    assert re.search(r"any\s+1 of 6 checked", text)
    report = write_report(run_dir).read_text(encoding="utf-8")
    assert "![Judge scores of the run's tasks](report-judge-scores.png)" in report
    assert (run_dir / "report-judge-scores.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_export_counts_what_it_left_out(run_dir, tmp_path):
    out = tmp_path / "a.json"
    result = sigen("export", str(run_dir), "-f", "alpaca", "-o", str(out), "--min-score", "4",
                   timeout=120)
    assert result.returncode == 0, result.stderr
    assert (f"2 examples (alpaca) -> {out}; left out: 2 scored below 4, 1 contaminated, "
            "1 not judged") in result.stdout
    assert "1 task has not been judged yet" in result.stderr
    bad = sigen("export", str(run_dir), "-f", "alpaca", "--min-score", "6", timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
