"""`sigen stats`: exact numbers from a small hand-made run, report.md with real PNG plots."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from selfinstruct_local.errors import SigenError
from selfinstruct_local.report import format_summary, leading_verb, summarize, write_report
from selfinstruct_local.runstore import read_rows
from tests.conftest import REPO, sigen

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TORN = '{"instruction_id": "mi-000008", "instruction": "Summ'  # a write cut short

# (id, instruction, is_classification, round, max_similarity, [(input, output), ...])
ACCEPTED = [
    ("mi-000001", "Write a poem about the sea.", False, 1, 0.05,
     [("", "The sea is wide and blue."), ("Tone: calm", "Calm waves roll in.")]),
    ("mi-000002", "Classify the sentiment of the review.", True, 1, 0.3,
     [("I loved it!", "positive")]),
    ("mi-000004", "write a short story about a robot.", False, 2, 0.45,
     [("", "A robot learned to paint.")]),
    ("mi-000005", "请写一首关于春天的诗。", True, 2, 0.62, [("", "春风吹绿了江南岸。")]),
    ("mi-000006", "Is this email spam?", None, 2, 0.2, [("Win a free prize now!", "yes")]),
]
REJECTED = [
    {"stage": "instruction", "round": 1, "instruction": "Plot the data.",
     "reason": "blacklist:plot"},
    {"stage": "instruction", "round": 1, "instruction": "Draw a cat.", "reason": "blacklist:draw"},
    {"stage": "instruction", "round": 1, "instruction": "Write a poem about a sea.",
     "reason": "near_duplicate"},
    {"stage": "instance", "round": 1, "instruction_id": "mi-000001",
     "reason": "duplicate_instance", "input": "", "output": "The sea is wide and blue."},
    {"stage": "instance", "round": 1, "instruction_id": "mi-000001",
     "reason": "duplicate_instance", "input": "", "output": "The sea is wide and blue."},
    {"stage": "instance", "round": 1, "instruction_id": "mi-000002",
     "reason": "input_equals_output", "input": "great", "output": "great"},
    {"stage": "instruction", "round": 2, "id": "mi-000003", "instruction": "Guess my name.",
     "reason": "no_valid_instances"},
    {"stage": "instruction", "round": 2, "instruction": "write a short story about robots.",
     "reason": "near_duplicate"},
    {"stage": "instance", "round": 2, "instruction_id": "mi-000004", "reason": "copied_example",
     "input": "", "output": "Once upon a time"},
]


def _jsonl(path: Path, rows: list[dict], tail: str = "") -> None:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    path.write_text(text + tail, encoding="utf-8")


def make_run(root: Path) -> Path:
    """A finished run directory in the exact formats `sigen run` writes."""
    root.mkdir(parents=True, exist_ok=True)
    instructions, instances = [], []
    for ident, text, is_cls, rnd, max_sim, pairs in ACCEPTED:
        instructions.append({
            "id": ident, "instruction": text, "is_classification": is_cls, "round": rnd,
            "num_instances": len(pairs),
            "most_similar": [{"instruction": "Write a poem.", "score": max_sim}],
            "avg_similarity": max_sim / 2, "max_similarity": max_sim,
        })
        instances += [{"instruction_id": ident, "instruction": text, "input": i, "output": o}
                      for i, o in pairs]
    instructions[3]["passage"] = "春天来了。"  # extra keys must be tolerated
    # mi-000007's instances were written but the process died before its instruction row.
    instances.append({"instruction_id": "mi-000007", "instruction": "List three fruits.",
                      "input": "", "output": "apple, pear, plum"})
    _jsonl(root / "machine_instructions.jsonl", instructions)
    _jsonl(root / "instances.jsonl", instances, tail=TORN)
    _jsonl(root / "rejected.jsonl", REJECTED)
    _jsonl(root / "pending.jsonl", [])
    (root / "data.json").write_text("[]\n", encoding="utf-8")
    manifest = {
        "status": "finished",
        "config": {"method": "self-instruct", "lang": "en", "num_instructions": 5},
        "model": {"name": "smollm2-135m"}, "engine": {"name": "vllm"},
        "counts": {"accepted": 5, "instances": 6},
        "tokens": {"generated": 12345, "prompt": 67890},
        "engine_seconds": 61.5, "wall_seconds": 75.25,
    }
    (root / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return root


@pytest.fixture
def run_dir(tmp_path):
    return make_run(tmp_path / "run")


def test_summary_numbers(run_dir):
    before = (run_dir / "instances.jsonl").read_bytes()
    s = summarize(run_dir)
    assert (run_dir / "instances.jsonl").read_bytes() == before  # read only: torn line kept
    assert s["counts"] == {"accepted_instructions": 5, "instances": 6,
                           "rejected_instructions": 5, "dropped_instances": 4}
    assert s["rejected_by_reason"] == {"blacklist": 2, "near_duplicate": 2,
                                       "no_valid_instances": 1}
    assert s["dropped_by_reason"] == {"duplicate_instance": 2, "input_equals_output": 1,
                                      "copied_example": 1}
    assert s["rejected_by_round"] == {1: {"blacklist": 2, "near_duplicate": 1},
                                      2: {"no_valid_instances": 1, "near_duplicate": 1}}
    assert s["dropped_by_round"] == {1: {"duplicate_instance": 2, "input_equals_output": 1},
                                     2: {"copied_example": 1}}
    assert s["classification"] == {"yes": 2, "no": 2, "unknown": 1, "share": 0.5}
    assert s["instances_per_instruction"] == {"mean": 1.2, "min": 1, "max": 2}
    # Instruction lengths 6, 6, 7, 10 (ten Chinese characters), 4.
    assert s["instruction_length"] == {"n": 5, "min": 4, "median": 6, "mean": 6.6, "p90": 10,
                                       "max": 10}
    # Output lengths 6, 4, 1, 5, 8 (eight Chinese characters), 1.
    assert s["output_length"] == {"n": 6, "min": 1, "median": 4.5, "mean": 4.17, "p90": 8,
                                  "max": 8}
    assert s["leading_verbs"] == [("write", 2), ("classify", 1), ("is", 1), ("请写", 1)]
    # 0.05, 0.3 (on a bin edge: goes up), 0.45, 0.62, 0.2
    assert [b["count"] for b in s["max_similarity"]] == [1, 0, 1, 1, 1, 0, 1]
    assert (s["max_similarity"][0]["low"], s["max_similarity"][-1]["high"]) == (0.0, 0.7)
    assert (s["tokens_generated"], s["engine_seconds"], s["wall_seconds"]) == (12345, 61.5, 75.25)
    assert (s["status"], s["model"], s["method"]) == ("finished", "smollm2-135m", "self-instruct")


def test_leading_verb():
    assert leading_verb('"Summarize" the text below.') == "summarize"
    assert leading_verb("请写一首诗") == "请写"
    assert leading_verb("写 Python 代码") == "写"
    assert leading_verb("...") is None


def test_torn_last_line_warns_and_bad_middle_line_fails(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n' + TORN, encoding="utf-8")
    warnings: list[str] = []
    assert read_rows(path, warnings.append) == [{"a": 1}, {"a": 2}]
    assert "a.jsonl:3" in warnings[0]
    path.write_text('{"a": 1}\nnot json\n{"a": 3}\n', encoding="utf-8")
    with pytest.raises(SigenError, match="a.jsonl:2: not a JSON object"):
        read_rows(path)


def test_format_summary_is_a_readable_table(run_dir):
    text = format_summary(summarize(run_dir))
    assert re.search(r"accepted instructions\s+5 of 5 asked", text)
    assert re.search(r"classification tasks\s+2 of 4 \(50\.0%\), 1 unknown", text)
    assert re.search(r"blacklist\s+2\s+40\.0%", text)
    assert re.search(r"instruction\s+5\s+4\s+6\s+6\.6\s+10\s+10", text)
    assert re.search(r"请写\s+1\s+20\.0%", text)
    assert "12,345" in text and "75.2 s" in text


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert len(data) > 5000, path  # a real plot, not an empty canvas


def _check_report(run_dir: Path) -> None:
    text = (run_dir / "report.md").read_text(encoding="utf-8")
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(set(links)) == 5  # with the verb-object chart; no embeddings: no map
    for link in links:
        assert not Path(link).is_absolute()
        _assert_png(run_dir / link)
    assert "| blacklist | 2 | 40.0% |" in text
    assert "| 请写 | 1 | 20.0% |" in text
    # The diversity section: distinct n-grams, the verbs with their objects (the Chinese
    # instruction read by jieba), and how to get the embedding figures.
    assert "# Diversity" in text and "| distinct-1 | 27 | 33 | 0.818 |" in text
    assert "| write | 2 | 40.0% | poem 1, story 1 |" in text
    assert "| 写 | 1 | 20.0% | 诗 1 |" in text
    assert "`sigen stats DIR --embed-model NAME`" in text
    figures = json.loads((run_dir / "diversity.json").read_text(encoding="utf-8"))
    assert figures["instructions"] == 5 and figures["embeddings"] is None
    assert not list(run_dir.glob(".*"))  # no temporary files left behind


@pytest.mark.parametrize("with_file", [False, True])
def test_empty_run(tmp_path, with_file):
    # A run that accepted nothing: the pipeline never created machine_instructions.jsonl.
    root = tmp_path / "empty"
    root.mkdir()
    if with_file:
        (root / "machine_instructions.jsonl").write_text("")
    _jsonl(root / "rejected.jsonl", REJECTED[:3])
    (root / "manifest.json").write_text(json.dumps({
        "status": "stopped", "config": {"method": "self-instruct"},
        "counts": {"accepted": 0, "instances": 0, "instructions_rejected": 3}}))
    s = summarize(root)
    assert s["counts"] == {"accepted_instructions": 0, "instances": 0,
                           "rejected_instructions": 3, "dropped_instances": 0}
    assert s["classification"]["share"] is None
    assert s["instruction_length"]["median"] is None
    assert "(none)" in format_summary(s)
    if not with_file:  # plotting once is enough (it is the slow part)
        assert write_report(root) == root / "report.md"
        for link in re.findall(r"\]\(([^)]+\.png)\)", (root / "report.md").read_text()):
            _assert_png(root / link)


def test_missing_files_are_named(tmp_path):
    (tmp_path / "machine_instructions.jsonl").write_text("")
    with pytest.raises(SigenError, match="manifest.json is missing"):
        summarize(tmp_path)
    (tmp_path / "machine_instructions.jsonl").unlink()
    (tmp_path / "manifest.json").write_text(json.dumps({"config": {}, "counts": {"accepted": 3}}))
    with pytest.raises(SigenError, match="machine_instructions.jsonl is missing, but the run's "
                                         "manifest counts 3 instructions accepted"):
        summarize(tmp_path)
    with pytest.raises(SigenError, match="is not a directory"):
        summarize(tmp_path / "nope")


def test_cli_stats_prints_the_summary_and_writes_the_report(run_dir):
    result = sigen("stats", str(run_dir), timeout=120)
    assert result.returncode == 0, result.stderr
    assert re.search(r"accepted instructions\s+5 of 5", result.stdout)
    assert f"report: {run_dir / 'report.md'}" in result.stdout
    assert "torn last line" in result.stderr  # warnings go to stderr, not stdout
    _check_report(run_dir)


def test_cli_stats_errors_are_clean(tmp_path):
    result = sigen("stats", str(tmp_path), timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert "manifest.json and machine_instructions.jsonl are missing" in result.stderr


def test_cli_stats_without_matplotlib_says_what_to_install(run_dir):
    # A Python where `import matplotlib` fails, as on an install without the [report] extra.
    code = ("import sys; sys.modules['matplotlib'] = None; "
            "from selfinstruct_local.cli import main; main()")
    result = subprocess.run([sys.executable, "-c", code, "stats", str(run_dir)],
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "pip install 'selfinstruct-local[report]'" in result.stderr
