"""The semantic screen in `sigen run` and `sigen dedup` (--embed-model, --semantic-threshold).

The loop's logic runs on the scripted engine behind a fake OpenAI server on 127.0.0.1 whose
/v1/embeddings gives bag-of-words vectors (so cosines are known here and can be recomputed by
brute force); sigen's own openai embedder, screen, index and files are what is tested. The
packaged model as the embedder, run in sigen's process with transformers, is the engine test at
the end."""

from __future__ import annotations

import json
import re
import zlib
from pathlib import Path

import numpy as np
import pytest

from selfinstruct_local.dedup import rouge_l
from selfinstruct_local.seeds import default_seed_path, load_seed_tasks
from selfinstruct_local.semantic_rows import decode_vector
from tests.conftest import sigen as sigen_process
from tests.fake_openai import FakeOpenAIServer, Reply
from tests.scripted import scripted_completions
from tests.test_cli_errors import sigen  # noqa: F401  (the fixture: sigen in this process)

THRESHOLD = 0.75  # the bag-of-words cosine at which a few of the scripted tasks are rejected


def bag_of_words(text: str, dim: int = 24) -> np.ndarray:
    vector = np.zeros(dim)
    for word in re.findall(r"\w+", text.lower()):
        vector[zlib.crc32(word.encode()) % dim] += 1.0
    return vector / (np.linalg.norm(vector) or 1.0)


def embeddings(_headers: dict, body: dict) -> Reply:
    return Reply({"object": "list", "model": body["model"], "data": [
        {"object": "embedding", "index": i, "embedding": bag_of_words(text).tolist()}
        for i, text in enumerate(body["input"])]})


@pytest.fixture
def server():
    with FakeOpenAIServer(completions=scripted_completions(), embeddings=embeddings) as fake:
        yield fake


def run_args(server, out: Path, n: int) -> list[str]:
    return ["run", "--engine", "openai", "--base-url", server.url, "-n", str(n), "-o", str(out),
            "--embed-model", "bag-of-words", "--embed-base-url", server.url,
            "--semantic-threshold", str(THRESHOLD), "-q"]


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def cosine(a: str, b: str) -> float:
    return round(float(bag_of_words(a) @ bag_of_words(b)), 4)


def check_screen(out: Path) -> list[dict]:
    """Every decision of the screen, recomputed by brute force from the texts."""
    seeds = [t.instruction for t in load_seed_tasks(default_seed_path("en"))]
    pending = rows(out / "pending.jsonl")
    # One vector per pool instruction, in the order they joined the pool, as computed.
    stored = rows(out / "embeddings.jsonl")
    assert [r["id"] for r in stored] == [r["id"] for r in pending]
    for row, saved in zip(pending, stored, strict=True):
        assert np.allclose(decode_vector(saved), bag_of_words(row["instruction"]), atol=1e-6)
    # Each accepted instruction is below the threshold with every instruction before it.
    pool = list(seeds)
    for row in pending:
        assert max(cosine(row["instruction"], earlier) for earlier in pool) < THRESHOLD
        pool.append(row["instruction"])
    # Each rejection names a pool instruction at or above it, with the cosine; and it passed
    # ROUGE-L against that instruction.
    rejected = [r for r in rows(out / "rejected.jsonl") if r["reason"] == "semantic_duplicate"]
    for row in rejected:
        [match] = row["most_similar"]
        assert match["instruction"] in pool
        assert match["score"] == cosine(row["instruction"], match["instruction"]) >= THRESHOLD
        assert rouge_l(row["instruction"], match["instruction"]) < 0.7
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["rejected_by_reason"]["semantic_duplicate"] == len(rejected) > 0
    semantic = manifest["semantic"]
    assert semantic["threshold"] == THRESHOLD and semantic["dim"] == 24
    assert semantic["pool"] == len(seeds) + len(pending)
    assert manifest["config"]["embed_model"] == "bag-of-words"
    return pending


def test_a_run_rejects_semantic_duplicates_and_resumes_from_its_vectors(sigen, server,  # noqa: F811
                                                                        tmp_path):
    out = tmp_path / "run"
    sent_before = len(server.bodies)
    result = sigen(*run_args(server, out, 6))
    assert result.returncode == 0, result.stderr[-2000:]
    first = check_screen(out)
    # A completion's candidates are embedded together (one request), not one by one.
    seeds = {t.instruction for t in load_seed_tasks(default_seed_path("en"))}
    batches = [len(body["input"]) for path, body in server.bodies[sent_before:]
               if path.endswith("/embeddings") and not set(body["input"]) <= seeds]
    assert batches and max(batches) > 1

    # A kill -9 can leave the last pending rows without their vectors (never the other way
    # round) and the last line torn: the resume embeds those again and carries on.
    lines = (out / "embeddings.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (out / "embeddings.jsonl").write_text("".join(lines[:-2]) + lines[-2][:40],
                                          encoding="utf-8")
    result = sigen(*run_args(server, out, 10))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "torn last line" in result.stderr
    pending = check_screen(out)
    assert pending[:len(first)] == first and len(rows(out / "machine_instructions.jsonl")) == 10


def test_the_options_are_checked_before_anything_is_written(sigen, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    for args, message in [
        (["--semantic-threshold", "0.9"], "--semantic-threshold needs --embed-model"),
        (["--embed-model", "smollm2-135m"], "only with --semantic-threshold"),
        (["--embed-base-url", "http://127.0.0.1:9/v1"], "--embed-base-url names the server"),
        (["--embed-model", "m", "--semantic-threshold", "1.5"], "not a cosine in (0, 1]"),
        (["--embed-model", "nonesuch", "--semantic-threshold", "0.9"], "unknown model 'nonesuch'"),
        (["--embed-model", "m", "--semantic-threshold", "0.9", "--embed-base-url",
          "http://h:99999/v1"], "--embed-base-url"),
    ]:
        result = sigen("run", "-n", "2", "-o", str(out), *args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert not out.exists()


def test_dedup_by_meaning_matches_brute_force(sigen, server, tmp_path):  # noqa: F811
    texts = ["List three uses of baking soda.", "Baking soda: list three uses.",
             "Write a poem about the sea.", "Write a poem about the sea!",
             "Name three uses of baking soda", "Translate the sentence into French.",
             "Into French, translate the sentence.", "Explain how a bicycle works."]
    source = tmp_path / "tasks.jsonl"
    source.write_text("".join(json.dumps({"instruction": t}) + "\n" for t in texts),
                      encoding="utf-8")
    out = tmp_path / "kept.jsonl"
    result = sigen("dedup", str(source), "-o", str(out), "--semantic-threshold",
                   str(THRESHOLD), "--embed-model", "bag-of-words", "--embed-base-url",
                   server.url)
    assert result.returncode == 0, result.stderr
    kept_rows = [r["instruction"] for r in rows(out)]
    expected = []  # the rule, by brute force: ROUGE-L first, then the cosine, against kept rows
    for text in texts:
        if all(rouge_l(text, k) < 0.7 and cosine(text, k) < THRESHOLD for k in expected):
            expected.append(text)
    assert kept_rows == expected and len(expected) < len(texts)
    semantic_only = [t for t in texts if t not in expected
                     and all(rouge_l(t, k) < 0.7 for k in expected)]
    assert f"semantic_duplicate {len(semantic_only)}" in result.stdout and semantic_only


@pytest.mark.engine
def test_the_packaged_model_as_embedder_in_a_run(tmp_path, vllm_server):
    """The done-when of issue 21: a run with the packaged model as its embedder (transformers in
    sigen's process) on the shared vllm serve, the screen's rejections counted."""
    out = tmp_path / "run"
    result = sigen_process("run", "--engine", "openai", "--base-url", vllm_server.base_url,
                           "-n", "2", "--batch-size", "4", "-o", str(out), "--seed", "3",
                           "--embed-model", "smollm2-135m", "--semantic-threshold", "0.95")
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["semantic"]["backend"] == "transformers"
    assert manifest["semantic"]["dim"] == 576
    pending = rows(out / "pending.jsonl")
    assert [r["id"] for r in rows(out / "embeddings.jsonl")] == [r["id"] for r in pending]
    rejected = [r for r in rows(out / "rejected.jsonl") if r["reason"] == "semantic_duplicate"]
    assert manifest["rejected_by_reason"].get("semantic_duplicate", 0) == len(rejected)
    for row in rejected:
        assert row["most_similar"][0]["score"] >= 0.95
