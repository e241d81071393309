"""--method evol on the packaged model, kept small: in-process vLLM evolving the tasks of another
run's directory (then `sigen stats` and an export), and Chinese through the shared `vllm serve`
with --judge. The method's logic is tested on the scripted engine in test_evol.py."""

from __future__ import annotations

import json

import pytest

from selfinstruct_local.methods.evol import OPERATIONS
from selfinstruct_local.seeds import default_seed_path, load_seed_tasks
from tests.conftest import sigen
from tests.scripted import ScriptedEngine, scripted_loop
from tests.test_e2e import read_jsonl

pytestmark = pytest.mark.engine


def check_lines(out, target: int, generations: int, starting: set[str]) -> list[dict]:
    """The run finished with `target` rows, each of whose parent is a starting instruction
    (generation 1) or an earlier row of the run one generation up."""
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["status"] == "finished" and manifest["config"]["method"] == "evol"
    finals = read_jsonl(out / "machine_instructions.jsonl")
    assert len(finals) == target
    by_id = {r["id"]: r for r in finals}
    for row in finals:
        assert row["operation"] in OPERATIONS and 1 <= row["generation"] <= generations
        if row["generation"] == 1:
            assert row["parent_id"] in starting
        else:
            assert by_id[row["parent_id"]]["generation"] == row["generation"] - 1
    instances = read_jsonl(out / "instances.jsonl")
    assert {r["instruction_id"] for r in instances} == set(by_id)
    assert all(r["input"] == "" and r["output"].strip() for r in instances)
    return finals


def test_evolving_another_runs_tasks_in_process(tmp_path, smollm2):
    demo = tmp_path / "demo"
    scripted_loop(demo, ScriptedEngine(fail=0.0), num_instructions=8).run()
    starting = {f"demo/{r['id']}" for r in read_jsonl(demo / "machine_instructions.jsonl")}
    out = tmp_path / "evolved"
    result = sigen("run", "--method", "evol", "--evolve-from", str(demo), "--generations", "2",
                   "-n", "3", "--batch-size", "8", "-o", str(out), "--seed", "3",
                   "--max-answer-tokens", "128")
    assert result.returncode == 0, result.stderr[-3000:]
    check_lines(out, 3, 2, starting)
    stats = sigen("stats", str(out))
    assert stats.returncode == 0, stats.stderr[-2000:]
    assert "Evolutions by generation" in stats.stdout and "Evolutions by operation" in stats.stdout
    exported = sigen("export", str(out), "--format", "jsonl", "-o", str(tmp_path / "e.jsonl"))
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert len(read_jsonl(tmp_path / "e.jsonl")) == 3


def test_chinese_evolution_through_the_server_with_a_judge(tmp_path, vllm_server):
    out = tmp_path / "zh"
    result = sigen("run", "--engine", "openai", "--base-url", vllm_server.base_url,
                   "--method", "evol", "--lang", "zh", "--generations", "2", "-n", "2",
                   "--batch-size", "8", "--judge", "-o", str(out), "--seed", "5",
                   "--max-answer-tokens", "128")
    assert result.returncode == 0, result.stderr[-3000:]
    seeds = {f"zh_seed_tasks.jsonl/{t.id}" for t in load_seed_tasks(default_seed_path("zh"))}
    finals = check_lines(out, 2, 2, seeds)
    scores = read_jsonl(out / "scores.jsonl")
    assert {r["instruction_id"] for r in scores} == {r["id"] for r in finals}
