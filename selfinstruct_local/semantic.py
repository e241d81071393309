"""The semantic screen: a candidate whose embedding has cosine >= T with a pool item's is a
`semantic_duplicate` of it.

Vectors are L2-normalized (embed/), so the cosine is a dot product. Every score that decides is
computed here the same way (`exact_scores`: float64 from the stored float32 vectors, rounded to
6 decimals): a decision never depends on a library's SIMD rounding, a vector scores 1.0 with
itself, and cosine == T is a duplicate, as for ROUGE-L.

`SemanticIndex` answers "does some item have cosine >= T":
- exactly while the pool holds at most `exact_limit` items (by default as many as make 8 MB of
  float32 values): a full scan;
- past that, through faiss's HNSW graph, which finds the nearest ANN_CANDIDATES items,
  which are then scored exactly. It can miss an item at or above T that the graph does not
  reach: measured recall against brute force is in scripts/bench_semantic.py and the README.
  `exact` says which regime the next decision is in.

Item ids are positions in the order of adding, as in NearDupIndex: a run adds the same texts in
the same order to both, so one id names one pool instruction in each.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from selfinstruct_local.dedup import DedupDecision
from selfinstruct_local.errors import SigenError

REASON = "semantic_duplicate"
# A full scan reads the whole pool per candidate: exact while that is at most this many float32
# values (8 MB; 3,472 items of 576 dimensions, 1,953 of 1,024). Measured on the 2-core machine
# with 576 dimensions, per candidate: the scan 0.51 ms at 2,000 items and 1.22 ms at 4,000; the
# graph 0.27 and 0.64 ms.
EXACT_FLOATS = 2_000_000
# faiss's HNSW, settings chosen with scripts/bench_semantic.py (figures in the README).
CONNECTIVITY = 32  # links per node
EXPANSION_ADD = 64  # candidate list while inserting
EXPANSION_SEARCH = 128  # candidate list while searching
ANN_CANDIDATES = 16  # nearest items the graph returns, then scored exactly
# Scores are rounded to this many decimals: float32 vectors carry about 7 significant digits, so
# the digits past it are noise; rounded, a vector scores exactly 1.0 with itself (its float32
# norm is 1 only to within 1e-7) and a cosine written in the threshold's decimals ties with it.
SCORE_DECIMALS = 6


def float32_margin(dim: int) -> float:
    """How far apart a float32 dot product of two unit vectors (any order of summation) and the
    exact score can be, with room to spare: twice the rounding bound dim * 2**-24 (the sum of
    |a_i * b_i| is at most 1) plus the score's rounding. A float32 scan keeps every item within
    this of its bar, and those are scored exactly: an item the scan puts further below the best
    scan scores below the best item, and below the threshold if any item reaches it."""
    return 2 * dim * 2.0**-24 + 10.0**-SCORE_DECIMALS


def semantic_threshold(value: float) -> float:
    """The cosine threshold, a number in (0, 1]."""
    try:
        threshold = float(value)
    except (TypeError, ValueError):
        threshold = -1.0
    if not 0 < threshold <= 1:
        raise SigenError(f"semantic threshold {value!r} is not a cosine in (0, 1]; pass a value "
                         "such as 0.9 (the README suggests one per embedding model).")
    return threshold


class SemanticIndex:
    """A growing pool of unit vectors with cosine-threshold duplicate lookup."""

    def __init__(self, threshold: float, *, exact_limit: int | None = None,
                 connectivity: int = CONNECTIVITY, expansion_add: int = EXPANSION_ADD,
                 expansion_search: int = EXPANSION_SEARCH, candidates: int = ANN_CANDIDATES,
                 threads: int = 0) -> None:
        """`exact_limit`: items up to which decisions are exact (default: EXACT_FLOATS / dim);
        `threads`: cores for a bulk insert (0: all)."""
        self.threshold = semantic_threshold(threshold)
        self.exact_limit = exact_limit
        self._graph_settings = dict(connectivity=connectivity, expansion_add=expansion_add,
                                    expansion_search=expansion_search, threads=threads)
        self.candidates = candidates
        self.dim = 0  # set by the first vector
        self._vectors = np.zeros((0, 0), dtype=np.float32)  # the pool while it is exact
        self._size = 0
        self._graph: _Graph | None = None

    def __len__(self) -> int:
        return self._size

    @property
    def exact(self) -> bool:
        """Whether the next decision is exact (a full scan) rather than through the graph."""
        return self._graph is None

    def _as_vector(self, vector: np.ndarray) -> np.ndarray:
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        if not self.dim:
            self.dim = len(vector)
            if self.exact_limit is None:
                self.exact_limit = EXACT_FLOATS // self.dim
            self._vectors = np.zeros((64, self.dim), dtype=np.float32)
        if len(vector) != self.dim:
            raise ValueError(f"a vector of {len(vector)} dimensions in an index of {self.dim}")
        return vector

    def vector(self, item: int) -> np.ndarray:
        """The vector of item `item` as it was added."""
        if not 0 <= item < self._size:
            raise IndexError(item)
        return self._vectors[item] if self._graph is None else self._graph.get([item])[0]

    # -- adding -----------------------------------------------------------------------------
    def add(self, vector: np.ndarray) -> int:
        """Add `vector` unconditionally; returns its item id."""
        return self.add_many(self._as_vector(vector)[None])[0]

    def add_many(self, vectors: np.ndarray) -> range:
        """Add rows of `vectors` in order (the pool on resume: one bulk insert, on every core
        for the graph); returns their item ids."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2:
            raise ValueError("add_many takes a 2-d array, one vector per row")
        if not len(vectors):
            return range(self._size, self._size)
        self._as_vector(vectors[0])
        if vectors.shape[1] != self.dim:
            raise ValueError(f"vectors of {vectors.shape[1]} dimensions in an index of {self.dim}")
        start, end = self._size, self._size + len(vectors)
        if self._graph is None and end > (self.exact_limit or 0):
            # Past the limit: the pool moves into a graph, built from the scanned array.
            self._graph = _Graph(self.dim, **self._graph_settings)
            if start:
                self._graph.add(self._vectors[:start])
            self._vectors = np.zeros((0, self.dim), dtype=np.float32)
        if self._graph is not None:
            self._graph.add(vectors)
        else:
            if end > len(self._vectors):
                grown = np.zeros((max(end, 2 * len(self._vectors)), self.dim), dtype=np.float32)
                grown[:start] = self._vectors[:start]
                self._vectors = grown
            self._vectors[start:end] = vectors
        self._size = end
        return range(start, end)

    # -- looking up -------------------------------------------------------------------------
    def nearest(self, vector: np.ndarray, k: int = 10) -> list[tuple[int, float]]:
        """Up to `k` (id, cosine) of the nearest items, best first (ties: lower id first):
        exact while `exact`, else among the graph's ANN_CANDIDATES (or k, if more) nearest."""
        vector = self._as_vector(vector)
        if not self._size or k <= 0:
            return []
        if self._graph is None:
            scan = self._vectors[:self._size] @ vector  # float32: only to pick candidates
            k = min(k, self._size)
            kth = np.partition(scan, self._size - k)[self._size - k]
            ids = np.flatnonzero(scan >= kth - float32_margin(self.dim))
            vectors = self._vectors[ids]
        else:
            ids = self._graph.search(vector, max(k, self.candidates))
            vectors = self._graph.get(ids)
        scores = exact_scores(vectors, vector)
        order = np.lexsort((ids, -scores))[:k]
        return [(int(ids[i]), float(scores[i])) for i in order]

    def find_duplicate(self, vector: np.ndarray) -> tuple[int, float] | None:
        """The best item with cosine >= threshold and that cosine; or None. Adds nothing."""
        vector = self._as_vector(vector)
        if self._graph is None and self._size:
            scan = self._vectors[:self._size] @ vector
            # The best item is within the float32 margin of the best scan, and if any item
            # reaches the threshold, so does the best (see float32_margin).
            bar = max(float(scan.max()), self.threshold) - float32_margin(self.dim)
            ids = np.flatnonzero(scan >= bar)
            if not len(ids):
                return None
            scores = exact_scores(self._vectors[ids], vector)
            best = np.lexsort((ids, -scores))[0]
            pair = (int(ids[best]), float(scores[best]))
        else:
            found = self.nearest(vector, 1)
            pair = found[0] if found else None
        return pair if pair is not None and pair[1] >= self.threshold else None

    def check_and_add(self, vector: np.ndarray) -> DedupDecision:
        """Add `vector` unless it is a semantic duplicate of an item; says of which."""
        hit = self.find_duplicate(vector)
        if hit is not None:
            return DedupDecision(False, REASON, hit[0], hit[1])
        self.add(vector)
        return DedupDecision(kept=True)


def exact_scores(vectors: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """Cosines of unit vectors as the screen decides them: each a float64 sum over its own row
    (so it depends on neither the library nor the other rows), rounded to SCORE_DECIMALS."""
    products = np.asarray(vectors, dtype=np.float64) * np.asarray(vector, dtype=np.float64)
    return np.round(products.sum(axis=-1), SCORE_DECIMALS)


class _Graph:
    """faiss's HNSW index past the exact limit; faiss labels items by position, as we do."""

    def __init__(self, dim: int, *, connectivity: int, expansion_add: int,
                 expansion_search: int, threads: int) -> None:
        import faiss

        self._faiss = faiss
        self._index = faiss.IndexHNSWFlat(dim, connectivity, faiss.METRIC_INNER_PRODUCT)
        self._index.hnsw.efConstruction = expansion_add
        self._index.hnsw.efSearch = expansion_search
        self.threads = threads or len(os.sched_getaffinity(0))

    def add(self, vectors: np.ndarray) -> None:
        # A bulk insert (the pool on resume) runs on every core; a single one on one, so that
        # faiss's OpenMP threads do not spin beside the engine's.
        self._faiss.omp_set_num_threads(self.threads if len(vectors) > 1 else 1)
        try:
            self._index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        finally:
            self._faiss.omp_set_num_threads(1)

    def search(self, vector: np.ndarray, k: int) -> np.ndarray:
        _, labels = self._index.search(np.ascontiguousarray(vector[None], dtype=np.float32), k)
        return labels[0][labels[0] >= 0].astype(np.int64)

    def get(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        return self._index.reconstruct_batch(np.asarray(ids, dtype=np.int64))


def semantic_dedup(vectors: np.ndarray, threshold: float,
                   against: np.ndarray | None = None, **settings) -> list[DedupDecision]:
    """Keep each row, in order, unless its cosine with a row kept before it or with a row of
    `against` is >= threshold. `match_id` is a position in [*against, *vectors]."""
    index = SemanticIndex(threshold, **settings)
    origin: list[int] = []  # item id -> position in [*against, *vectors]
    if against is not None and len(against):
        origin.extend(index.add_many(against))
    decisions = []
    for position, vector in enumerate(vectors, len(origin)):
        decision = index.check_and_add(vector)
        if decision.kept:
            origin.append(position)
        else:
            decision = DedupDecision(False, REASON, origin[decision.match_id],
                                     decision.match_score)
        decisions.append(decision)
    return decisions


def brute_force_semantic(vectors: np.ndarray, threshold: float,
                         against: np.ndarray | None = None) -> list[bool]:
    """Reference: the same greedy rule, each row scored against every kept row."""
    threshold = semantic_threshold(threshold)
    pool = list(against if against is not None else [])
    kept = []
    for vector in vectors:
        keep = not pool or not bool((exact_scores(np.array(pool), vector) >= threshold).any())
        if keep:
            pool.append(vector)
        kept.append(keep)
    return kept
