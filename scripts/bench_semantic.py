#!/usr/bin/env python3
"""The semantic screen against brute-force cosine, and its cost per candidate as the pool grows.

1. Embeddings: the first --real rows of each POOL.jsonl, embedded with the packaged model pooled
   as an embedder (--model, --backend), cached under --cache in chunks of 2,000 rows (nothing in
   the repository); chunks already there are read, the others computed and their speed printed.
2. Recall, per pool and threshold: the pool's vectors go through SemanticIndex.check_and_add in
   order, as a run's candidates do; brute force scores each candidate against every vector kept
   before it. A pair is a candidate and a kept vector at or above T; the screen finds the pair's
   candidate when it rejects it. Printed: such candidates, those the screen let through (misses),
   rejections brute force does not confirm (must be 0: every deciding score is exact), recall.
3. Cost, per pool: for each --sizes N, a pool of N vectors (the pool's real ones, then
   synthetic ones: a mix of two of its real vectors plus noise, normalized) is built in bulk (as
   on resume: its time is printed), then --candidates held-out real vectors of the pool go
   through check_and_add; printed: how the index searches, ms per candidate (wall, and this
   process's CPU time: median of 3 groups) and their recall against brute force over that pool.
   The embedding itself is not in this cost: that is the model's time.

    python scripts/bench_semantic.py ../shared/bench/pool_en.jsonl ../shared/bench/pool_zh.jsonl

Last line: recall=R ms_at_1m=X (R the lowest recall measured; X the CPU ms per candidate at the
largest size, the higher of the pools: on a shared machine wall time also counts the time other
processes held the cores). Goal: R >= 0.99, X <= 1.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from selfinstruct_local.semantic import (  # noqa: E402
    SemanticIndex,
    exact_scores,
    float32_margin,
)

CHUNK = 2000
BLOCK = 1024  # candidates scored against the pool in one matrix product


# -- embeddings ---------------------------------------------------------------------------------
def load_texts(path: Path, field: str) -> list[str]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line)[field] for line in handle if line.strip()]


class CachedVectors:
    """The vectors of a pool's first rows, computed once per chunk and kept under `root`."""

    def __init__(self, root: Path, model: str, backend: str) -> None:
        self.root, self.model, self.backend = root, model, backend
        self._embedder = None

    def vectors(self, pool: Path, texts: list[str], count: int) -> np.ndarray:
        folder = self.root / f"{pool.stem}.{self.model}"
        folder.mkdir(parents=True, exist_ok=True)
        parts, computed, seconds = [], 0, 0.0
        for start in range(0, count, CHUNK):
            path = folder / f"{start:06d}.npy"
            if not path.exists():
                begun = time.perf_counter()
                vectors = self.embedder().embed(texts[start:start + CHUNK])
                seconds += time.perf_counter() - begun
                computed += len(vectors)
                np.save(path.with_suffix(".tmp.npy"), vectors)
                path.with_suffix(".tmp.npy").replace(path)
                print(f"  embedded {pool.name} rows {start}-{start + len(vectors)}: "
                      f"{len(vectors) / (time.perf_counter() - begun):.1f} texts/s", flush=True)
            parts.append(np.load(path))
        done = f"{computed} embedded now ({computed / seconds:.1f} texts/s)" if computed else \
            "all from the cache"
        vectors = np.concatenate(parts)[:count]
        print(f"{pool.name}: {len(vectors)} vectors of {vectors.shape[1]} dimensions, {done}")
        return vectors

    def embedder(self):
        if self._embedder is None:
            from selfinstruct_local.embed import load_embedder

            self._embedder = load_embedder(self.model, backend=self.backend)
        return self._embedder


# -- brute force --------------------------------------------------------------------------------
def exact_pairs(left: np.ndarray, right: np.ndarray, rows: np.ndarray,
                cols: np.ndarray) -> np.ndarray:
    """exact_scores of left[rows[k]] and right[cols[k]] for every k, in slices that fit."""
    out = np.empty(len(rows))
    for at in range(0, len(rows), 50_000):
        part = slice(at, at + 50_000)
        out[part] = exact_scores(left[rows[part]], right[cols[part]])
    return out


def best_scores(candidates: np.ndarray, pool: np.ndarray, threshold: float,
                allowed: np.ndarray | None = None) -> np.ndarray:
    """For each candidate, its best exact score against `pool` if that is >= threshold, else
    -1. `allowed`: which (candidate, pool item) pairs count (None: all). Only the items within
    the float32 margin of a candidate's best scan are scored exactly: the best is among them,
    and reaches the threshold if any item does (semantic.float32_margin)."""
    best = np.full(len(candidates), -1.0)
    if not len(pool):
        return best
    for start in range(0, len(candidates), BLOCK):
        block = candidates[start:start + BLOCK]
        scan = block @ pool.T
        if allowed is not None:
            scan[~allowed[start:start + BLOCK]] = -2.0
        bar = np.maximum(scan.max(axis=1), threshold) - float32_margin(pool.shape[1])
        rows, cols = np.nonzero(scan >= bar[:, None])
        scores = exact_pairs(block, pool, rows, cols)
        hit = scores >= threshold
        np.maximum.at(best, start + rows[hit], scores[hit])
    return best


def streaming_recall(vectors: np.ndarray, threshold: float, **settings) -> dict:
    """The screen over `vectors` in order, each candidate checked by brute force against what
    the screen had kept before it."""
    index = SemanticIndex(threshold, **settings)
    kept = np.zeros(len(vectors), dtype=bool)
    pairs = misses = unconfirmed = 0
    for start in range(0, len(vectors), BLOCK):
        block = vectors[start:start + BLOCK]
        decisions = [index.check_and_add(v) for v in block]
        block_kept = np.array([d.kept for d in decisions])
        best = best_scores(block, vectors[:start][kept[:start]], threshold)
        # ... and against the block's own kept vectors that came before each candidate
        earlier = np.tril(np.ones((len(block), len(block)), dtype=bool), -1) & block_kept
        best = np.maximum(best, best_scores(block, block, threshold, earlier))
        has_pair = best >= threshold
        pairs += int(has_pair.sum())
        misses += int((has_pair & block_kept).sum())
        unconfirmed += int((~has_pair & ~block_kept).sum())
        kept[start:start + len(block)] = block_kept
    found = pairs - misses
    return {"candidates": len(vectors), "kept": int(kept.sum()), "pairs": pairs,
            "misses": misses, "unconfirmed": unconfirmed,
            "recall": 1.0 if not pairs else found / pairs}


# -- pools of any size ----------------------------------------------------------------------------
def synthetic(real: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Vectors shaped like the real ones: a mix of two real vectors plus a little noise."""
    rng = np.random.default_rng(seed)
    first, second = rng.integers(len(real), size=(2, count))
    weight = rng.uniform(0.5, 1.0, size=(count, 1)).astype(np.float32)
    mixed = weight * real[first] + (1 - weight) * real[second]
    mixed += rng.normal(0, 0.1 / np.sqrt(real.shape[1]), size=mixed.shape).astype(np.float32)
    return (mixed / np.linalg.norm(mixed, axis=1, keepdims=True)).astype(np.float32)


def pool_chunks(real: np.ndarray, size: int):
    """The pool of `size` vectors in chunks: the real ones, then synthetic ones (the same for
    every size: chunk k always comes from seed k)."""
    yield real[:size]
    for k, start in enumerate(range(len(real), size, 100_000)):
        yield synthetic(real, min(100_000, size - start), seed=k)


def cost_at(real: np.ndarray, held_out: np.ndarray, size: int, threshold: float,
            settings: dict) -> dict:
    index = SemanticIndex(threshold, **settings)
    begun = time.perf_counter()
    for chunk in pool_chunks(real, size):
        index.add_many(chunk)
    build = time.perf_counter() - begun
    best = np.full(len(held_out), -1.0)
    for chunk in pool_chunks(real, size):
        best = np.maximum(best, best_scores(held_out, chunk, threshold))
    walls, cpus, decisions = [], [], []
    for group in np.array_split(np.arange(len(held_out)), 3):
        wall, cpu = time.perf_counter(), time.process_time()
        decisions += [index.check_and_add(held_out[i]) for i in group]
        walls.append((time.perf_counter() - wall) / len(group) * 1000)
        cpus.append((time.process_time() - cpu) / len(group) * 1000)
    # Brute force for the held-out candidates: the pool, plus those kept before each one.
    kept = np.array([d.kept for d in decisions])
    earlier = np.tril(np.ones((len(kept), len(kept)), dtype=bool), -1) & kept
    best = np.maximum(best, best_scores(held_out, held_out, threshold, earlier))
    pairs, misses = int((best >= threshold).sum()), int(((best >= threshold) & kept).sum())
    return {"size": len(index) - int(kept.sum()), "build_s": build, "how": index.describe(),
            "ms": statistics.median(walls),
            "cpu_ms": statistics.median(cpus), "pairs": pairs, "misses": misses,
            "recall": 1.0 if not pairs else (pairs - misses) / pairs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pools", type=Path, nargs="+", help="JSONL files, one row per line")
    parser.add_argument("--field", default="instruction")
    parser.add_argument("--real", type=int, default=60_000, help="rows embedded per pool")
    parser.add_argument("--thresholds", default="0.99,0.97",
                        help="cosines to measure recall at; the first is also the cost's")
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--candidates", type=int, default=1500, help="held out, for the cost")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--backend", default="vllm", choices=["vllm", "transformers"])
    parser.add_argument("--cache", type=Path, default=Path("/tmp/sigen-semantic-cache"))
    parser.add_argument("--skip-recall", action="store_true", help="only the cost")
    args = parser.parse_args()
    thresholds = [float(t) for t in args.thresholds.split(",")]
    sizes = [int(s) for s in args.sizes.split(",")]
    settings: dict = {}

    cache = CachedVectors(args.cache, args.model, args.backend)
    pools = {}
    for path in args.pools:
        texts = load_texts(path, args.field)
        pools[path.name] = cache.vectors(path, texts, min(args.real, len(texts)))
    recalls = []
    if not args.skip_recall:
        print("\n| pool | T | candidates | kept | with a pair >= T | missed | unconfirmed | "
              "recall | s |\n|---|---|---|---|---|---|---|---|---|")
        for name, vectors in pools.items():
            for threshold in thresholds:
                begun = time.perf_counter()
                r = streaming_recall(vectors, threshold, **settings)
                recalls.append(r["recall"])
                print(f"| {name} | {threshold} | {r['candidates']} | {r['kept']} | {r['pairs']} "
                      f"| {r['misses']} | {r['unconfirmed']} | {r['recall']:.4f} | "
                      f"{time.perf_counter() - begun:.0f} |", flush=True)

    # A run is in one language: each pool's own vectors, then synthetic ones made from them.
    print(f"\ncost: {args.candidates} held-out real candidates per pool (a fixed shuffle), "
          f"T = {thresholds[0]}; CPU: this process's CPU time (the machine is shared: wall "
          "time counts the time other processes held the cores)\n")
    print("| pool | N | search | build s | ms/candidate | CPU ms | with a pair | missed | "
          "recall |\n|---|---|---|---|---|---|---|---|---|")
    at_largest = []
    for name, vectors in pools.items():
        shuffled = vectors[np.random.default_rng(0).permutation(len(vectors))]
        held_out, real = shuffled[-args.candidates:], shuffled[:-args.candidates]
        for size in sizes:
            r = cost_at(real, held_out, size, thresholds[0], settings)
            recalls.append(r["recall"])
            print(f"| {name} | {r['size']:,} | {r['how']} | {r['build_s']:.1f} | {r['ms']:.3f} "
                  f"| {r['cpu_ms']:.3f} | {r['pairs']} | {r['misses']} | {r['recall']:.4f} |",
                  flush=True)
        at_largest.append(r["cpu_ms"])
    print(f"recall={min(recalls):.4f} ms_at_1m={max(at_largest):.3f}")


if __name__ == "__main__":
    main()
