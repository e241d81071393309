"""The semantic screen: SemanticIndex against brute-force cosine (exact below its limit, and on
small pools through its graph), the threshold's edges, and the pool's vectors rebuilt on resume
from embeddings.jsonl, also after a kill -9 of the process writing them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from selfinstruct_local.errors import SigenError
from selfinstruct_local.runstore import PENDING, RunStore
from selfinstruct_local.semantic import (
    EXACT_FLOATS,
    REASON,
    REDUCE_FROM,
    SemanticIndex,
    _Store,  # its block size, set small to test a pool across blocks
    brute_force_semantic,
    exact_scores,
    semantic_dedup,
    semantic_threshold,
)
from selfinstruct_local.semantic_rows import (
    EMBEDDINGS,
    embedding_row,
    rebuild_vectors,
    restore_vectors,
)


def clustered(n: int, dim: int = 24, seed: int = 0, spread: float = 0.35) -> np.ndarray:
    """Unit vectors around n // 4 centres: many pairs on both sides of a 0.9 threshold."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(1, n // 4), dim))
    vectors = centres[rng.integers(len(centres), size=n)] + spread * rng.normal(size=(n, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def brute_top(pool: np.ndarray, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
    scores = exact_scores(pool, vector)
    order = np.lexsort((np.arange(len(pool)), -scores))[:k]
    return [(int(i), float(scores[i])) for i in order]


@pytest.mark.parametrize("threshold", [0.8, 0.9, 0.97])
@pytest.mark.parametrize("seed", [0, 1])
def test_exact_regime_keeps_what_brute_force_keeps(threshold, seed):
    vectors = clustered(600, seed=seed)
    decisions = semantic_dedup(vectors, threshold)  # 600 items: within the exact limit
    assert [d.kept for d in decisions] == brute_force_semantic(vectors, threshold)
    rejected = [(i, d) for i, d in enumerate(decisions) if not d.kept]
    assert rejected, "the data must have duplicates for the test to mean anything"
    for i, d in rejected:
        assert d.reason == REASON and d.match_id < i and decisions[d.match_id].kept
        assert d.match_score == pytest.approx(float(vectors[i] @ vectors[d.match_id]), abs=1e-6)
        assert d.match_score >= threshold


def test_graph_regime_on_a_small_pool_matches_brute_force():
    """Past exact_limit the graph decides; on 3,000 items it finds every duplicate."""
    vectors = clustered(3000, seed=3)
    decisions = semantic_dedup(vectors, 0.9, exact_limit=200)
    assert [d.kept for d in decisions] == brute_force_semantic(vectors, 0.9)


def anisotropic(n: int, dim: int = REDUCE_FROM, seed: int = 0) -> np.ndarray:
    """Unit vectors spread mostly along 24 directions (as embeddings are), in a random basis."""
    rng = np.random.default_rng(seed)
    vectors = np.zeros((n, dim))
    vectors[:, :24] = rng.normal(size=(n // 4, 24))[rng.integers(n // 4, size=n)]
    vectors += 0.08 * rng.normal(size=(n, dim))
    vectors = vectors @ np.linalg.qr(rng.normal(size=(dim, dim)))[0]
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def test_graph_in_a_projection_matches_brute_force():
    """Anisotropic vectors of REDUCE_FROM dimensions: the graph searches a PCA projection
    fitted on the first exact_limit items; the candidates are scored on the full vectors."""
    vectors = anisotropic(2500, seed=10)
    index = SemanticIndex(0.9, exact_limit=REDUCE_FROM)
    decisions = [index.check_and_add(v) for v in vectors]
    assert index._graph.projection[1].shape == (REDUCE_FROM, 48)  # 95% of the variance
    assert [d.kept for d in decisions] == brute_force_semantic(vectors, 0.9)
    assert sum(not d.kept for d in decisions) > 1000
    rebuilt = SemanticIndex(0.9, exact_limit=REDUCE_FROM)  # as on resume: the same projection
    rebuilt.add_many(np.array([index.vector(i) for i in range(len(index))]))
    assert np.array_equal(rebuilt._graph.projection[1], index._graph.projection[1])


def test_isotropic_vectors_get_no_projection():
    """Spread evenly: no few dimensions keep 95% of it, so the graph works on the vectors."""
    vectors = np.random.default_rng(13).normal(size=(1000, REDUCE_FROM))
    index = SemanticIndex(0.9, exact_limit=800)
    index.add_many(vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    assert not index.exact and index._graph.projection is None


def test_a_pool_in_several_blocks(monkeypatch):
    monkeypatch.setattr(_Store, "ROWS", 100)
    vectors = clustered(1000, seed=11)
    index = SemanticIndex(0.9, exact_limit=10**6)
    for part in np.split(vectors, [1, 6, 66, 76, 276, 277, 600]):
        index.add_many(part)
    assert len(index) == 1000 and index.exact
    assert all(np.array_equal(index.vector(i), vectors[i]) for i in (0, 99, 100, 555, 999))
    for q in clustered(10, seed=12):
        assert index.nearest(q, k=3) == brute_top(vectors, q, 3)


def test_against_pool_and_match_positions():
    pool, batch = clustered(200, seed=4), clustered(300, seed=5)
    batch[7] = pool[11]  # a copy of a pool item
    decisions = semantic_dedup(batch, 0.9, against=pool)
    assert [d.kept for d in decisions] == brute_force_semantic(batch, 0.9, against=pool)
    assert decisions[7].match_id == 11 and decisions[7].match_score == pytest.approx(1.0)


@pytest.mark.parametrize("exact_limit", [10**6, 8])
def test_nearest_is_brute_force_top_k(exact_limit):
    pool, queries = clustered(400, seed=6), clustered(20, seed=7)
    index = SemanticIndex(0.9, exact_limit=exact_limit)
    index.add_many(pool)
    assert index.exact == (exact_limit > 400)
    for q in queries:
        got = index.nearest(q, k=5)
        want = brute_top(pool, q, 5)
        assert [i for i, _ in got] == [i for i, _ in want]
        assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-12)


def unit(*values: float, dim: int = 8) -> np.ndarray:
    vector = np.zeros(dim, dtype=np.float32)
    vector[:len(values)] = values
    return vector


@pytest.mark.parametrize("exact_limit", [10**6, 2])
def test_a_cosine_equal_to_the_threshold_is_a_duplicate(exact_limit):
    """Scores are rounded to 6 decimals (float32 vectors carry no more): 0.75 and 0.7499996
    tie with 0.75; 0.749999, one step of that grid below, stays."""
    index = SemanticIndex(0.75, exact_limit=exact_limit)
    for filler in (unit(0, 0, 1), unit(0, 0, 0, 1), unit(1)):  # e1 last: a graph past the limit
        assert index.check_and_add(filler).kept
    for cosine in (0.75, 0.7499996):
        decision = index.check_and_add(unit(cosine, float(np.sqrt(1 - cosine**2))))
        assert (decision.kept, decision.reason, decision.match_id) == (False, REASON, 2)
        assert decision.match_score == 0.75
    assert index.check_and_add(unit(0.749999, float(np.sqrt(1 - 0.749999**2)))).kept


def test_threshold_one_rejects_only_the_same_vector():
    index = SemanticIndex(1.0)
    vector = clustered(1, seed=8)[0]
    assert index.check_and_add(vector).kept
    nudged = vector.copy()
    nudged[0] += 1e-2  # cosine about 0.99995
    assert index.check_and_add(nudged / np.linalg.norm(nudged)).kept
    assert index.check_and_add(vector.copy()).match_id == 0


@pytest.mark.parametrize("bad", [0, -0.2, 1.5, "high", None, float("nan")])
def test_a_threshold_outside_0_1_is_refused(bad):
    with pytest.raises(SigenError, match="not a cosine in"):
        semantic_threshold(bad)


def test_vectors_of_another_size_are_refused():
    index = SemanticIndex(0.9)
    index.add(unit(1))
    with pytest.raises(ValueError, match="dimensions"):
        index.check_and_add(np.ones(9, dtype=np.float32) / 3)


def test_the_exact_limit_follows_the_vector_size():
    """Exact while a scan reads at most EXACT_FLOATS values (the switch itself: above)."""
    for dim, limit in ((576, 3472), (1024, 1953)):
        index = SemanticIndex(0.9)
        index.add(clustered(1, dim=dim)[0])
        assert index.exact_limit == EXACT_FLOATS // dim == limit and index.exact


def test_an_empty_index_keeps_and_knows_no_neighbour():
    index = SemanticIndex(0.5)
    assert index.nearest(unit(1)) == [] and index.find_duplicate(unit(1)) is None
    assert len(index) == 0 and index.check_and_add(unit(1)).kept and len(index) == 1


# -- the pool's vectors on resume --------------------------------------------------------------

def test_rows_round_trip_the_exact_float32_values():
    vectors = clustered(5, dim=576, seed=9)
    rows = [json.loads(json.dumps(embedding_row(f"mi-{i}", v))) for i, v in enumerate(vectors)]
    restored, missing = restore_vectors([f"mi-{i}" for i in range(5)], rows)
    assert missing == [] and restored.dtype == np.float32
    assert np.array_equal(restored, vectors)


class HashEmbedder:
    """Stands in for the model only where the test is about bookkeeping: a fixed unit vector
    per text (the model's own tests are below and in test_embed.py)."""

    name, backend, dim = "hash", "test", 16

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def embed(self, texts):
        self.calls.append(list(texts))
        rows = [np.random.default_rng(abs(hash(t)) % 2**32).normal(size=self.dim) for t in texts]
        out = np.array(rows, dtype=np.float32).reshape(len(texts), self.dim)
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def close(self) -> None:
        pass


def test_resume_rebuilds_the_same_index_and_embeds_only_what_was_lost(tmp_path):
    embedder = HashEmbedder()
    texts = [f"instruction number {i}" for i in range(300)]
    ids = [f"mi-{i:06d}" for i in range(300)]
    vectors = embedder.embed(texts)
    store = RunStore(tmp_path)
    store.append(EMBEDDINGS, [embedding_row(i, v) for i, v in zip(ids[:280], vectors[:280],
                                                                   strict=True)])
    with open(store.path(EMBEDDINGS), "a", encoding="utf-8") as handle:
        handle.write(json.dumps(embedding_row(ids[280], vectors[280]))[:60])  # torn by a kill
    warnings: list[str] = []
    rows = store.read(EMBEDDINGS, warnings.append)
    assert len(rows) == 280 and "torn last line" in warnings[0]

    embedder.calls.clear()
    rebuilt, new_rows = rebuild_vectors(ids, texts, rows, embedder)
    assert embedder.calls == [texts[280:]]  # the 20 without a stored vector, nothing else
    assert [r["id"] for r in new_rows] == ids[280:]
    assert np.array_equal(rebuilt, vectors)

    before, after = SemanticIndex(0.3, exact_limit=100), SemanticIndex(0.3, exact_limit=100)
    for v in vectors:
        before.add(v)
    after.add_many(rebuilt)
    for candidate in HashEmbedder().embed([f"candidate {i}" for i in range(50)]):
        assert before.find_duplicate(candidate) == after.find_duplicate(candidate)


def test_vectors_of_another_model_or_damaged_are_refused_with_the_file(tmp_path):
    ids = ["mi-1", "mi-2"]
    rows = [embedding_row("mi-1", unit(1)), embedding_row("mi-2", unit(0, 1))]
    with pytest.raises(SigenError, match="8 dimensions where 16 are expected"):
        restore_vectors(ids, rows, dim=16)
    with pytest.raises(SigenError, match="another model"):
        rebuild_vectors(ids + ["mi-3"], ["a", "b", "c"], rows, HashEmbedder())
    for damaged in ({"id": "mi-1", "vector": "not base64!"}, {"id": "mi-1", "vector": "AAAA"},
                    {"id": "mi-1"}, {"id": "mi-1", "vector": "AAA="}):
        with pytest.raises(SigenError, match=f"{EMBEDDINGS}: the vector of 'mi-1' is damaged"):
            restore_vectors(ids, [damaged])


WRITER = """
import sys
import numpy as np
from selfinstruct_local.runstore import PENDING, RunStore
from selfinstruct_local.semantic_rows import EMBEDDINGS, embedding_row
store = RunStore(sys.argv[1], group_commit=True)
rng = np.random.default_rng(0)
i, told = 0, False
while True:
    i += 1
    vector = rng.normal(size=384).astype(np.float32)
    store.append(PENDING, [{"id": f"mi-{i:06d}", "instruction": f"task {i}", "round": 1}])
    store.append(EMBEDDINGS, [embedding_row(f"mi-{i:06d}", vector / np.linalg.norm(vector))])
    written = store.path(PENDING)
    if not told and i >= 1000 and written.exists() and written.stat().st_size > 50_000:
        told = True
        print("written", flush=True)  # the first 1,000 are on disk: kill me when you like
"""


def test_kill_9_while_writing_leaves_every_vector_behind_its_pending_row(tmp_path):
    """Rows written as a run writes them (group commit, pending.jsonl first), the writer killed
    at a random moment: each stored vector belongs to a pending row on disk, the pending rows
    without one are the last few, and the pool's vectors come back whole."""
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "written"
        time.sleep(np.random.default_rng().random())
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    store = RunStore(tmp_path)
    pending = store.read(PENDING, lambda _m: None)
    rows = store.read(EMBEDDINGS, lambda _m: None)
    ids = [row["id"] for row in pending]
    assert len(ids) >= 1000 and {row["id"] for row in rows} <= set(ids)
    vectors, missing = restore_vectors(ids, rows)
    assert missing == list(range(len(ids) - len(missing), len(ids)))  # a suffix, if any
    assert np.allclose(np.linalg.norm(vectors[:len(ids) - len(missing)], axis=1), 1, atol=1e-6)
