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
  reach: scripts/bench_semantic.py measures its recall against brute force. `exact` says which
  regime the next decision is in, `describe()` how the graph searches.

Item ids are positions in the order of adding, as in NearDupIndex: a run adds the same texts in
the same order to both, so one id names one pool instruction in each.
"""

from __future__ import annotations

import os

import numpy as np

from selfinstruct_local.dedup import DedupDecision
from selfinstruct_local.errors import SigenError

REASON = "semantic_duplicate"
# A full scan reads the whole pool per candidate: exact while that is at most this many float32
# values (8 MB; 3,472 items of 576 dimensions, 1,953 of 1,024): a scan of 3,000 such vectors
# takes 0.36 ms of CPU time on the 2-core machine, about what the graph takes per candidate.
EXACT_FLOATS = 2_000_000
# faiss's HNSW, settings chosen with scripts/bench_semantic.py on the ../shared/bench pools.
CONNECTIVITY = 32  # links per node
EXPANSION_ADD = 64  # candidate list while inserting
EXPANSION_SEARCH = 96  # candidate list while searching
ANN_CANDIDATES = 32  # nearest items the graph returns, then scored exactly
REDUCE_FROM = 256  # vectors of this many dimensions or more: the graph may search a projection
VARIANCE_KEPT = 0.95  # ... that keeps this share of the variance (see _Graph)
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
        self._store: _Store | None = None  # every vector, as added: what scores are made of
        self._graph: _Graph | None = None

    def __len__(self) -> int:
        return len(self._store) if self._store is not None else 0

    @property
    def exact(self) -> bool:
        """Whether the next decision is exact (a full scan) rather than through the graph."""
        return self._graph is None

    def describe(self) -> str:
        """How the next decision is made, in words (for a manifest or a benchmark)."""
        if self._graph is None:
            return f"exact: a full scan of {len(self):,} vectors"
        if self._graph.projection is None:
            return f"faiss HNSW on the {self.dim} dimensions"
        return (f"faiss HNSW on a PCA projection to {self._graph.projection[1].shape[1]} of the "
                f"{self.dim} dimensions")

    def _as_vector(self, vector: np.ndarray) -> np.ndarray:
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        if not self.dim:
            self.dim = len(vector)
            if self.exact_limit is None:
                self.exact_limit = EXACT_FLOATS // self.dim
            self._store = _Store(self.dim)
        if len(vector) != self.dim:
            raise ValueError(f"a vector of {len(vector)} dimensions in an index of {self.dim}")
        return vector

    def vector(self, item: int) -> np.ndarray:
        """The vector of item `item` as it was added."""
        if not 0 <= item < len(self):
            raise IndexError(item)
        return self._store.get(np.array([item]))[0]  # type: ignore[union-attr]

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
            return range(len(self), len(self))
        self._as_vector(vectors[0])
        if vectors.shape[1] != self.dim:
            raise ValueError(f"vectors of {vectors.shape[1]} dimensions in an index of {self.dim}")
        store = self._store
        assert store is not None
        start = len(store)
        store.append(vectors)
        if self._graph is None and len(store) > (self.exact_limit or 0):
            # Past the limit: a graph of the whole pool. Its projection is fitted on the first
            # exact_limit items, the same whether the pool grew one by one or is rebuilt.
            sample = store.get(np.arange(min(len(store), max(self.exact_limit or 0, 1))))
            self._graph = _Graph(self.dim, sample, **self._graph_settings)
            self._graph.add(store.get(np.arange(len(store))))
        elif self._graph is not None:
            self._graph.add(vectors)
        return range(start, len(store))

    # -- looking up -------------------------------------------------------------------------
    def nearest(self, vector: np.ndarray, k: int = 10) -> list[tuple[int, float]]:
        """Up to `k` (id, cosine) of the nearest items, best first (ties: lower id first):
        exact while `exact`, else among the graph's ANN_CANDIDATES (or k, if more) nearest."""
        vector = self._as_vector(vector)
        size = len(self)
        if not size or k <= 0:
            return []
        store = self._store
        assert store is not None
        if self._graph is None:
            scan = store.scan(vector)  # float32: only to pick the items scored exactly
            k = min(k, size)
            kth = np.partition(scan, size - k)[size - k]
            ids = np.flatnonzero(scan >= kth - float32_margin(self.dim))
        else:
            ids = self._graph.search(vector, max(k, self.candidates))
        scores = exact_scores(store.get(ids), vector)
        order = np.lexsort((ids, -scores))[:k]
        return [(int(ids[i]), float(scores[i])) for i in order]

    def find_duplicate(self, vector: np.ndarray) -> tuple[int, float] | None:
        """The best item with cosine >= threshold and that cosine; or None. Adds nothing."""
        vector = self._as_vector(vector)
        store = self._store
        if self._graph is None and len(self):
            scan = store.scan(vector)  # type: ignore[union-attr]
            # The best item is within the float32 margin of the best scan, and if any item
            # reaches the threshold, so does the best (see float32_margin).
            bar = max(float(scan.max()), self.threshold) - float32_margin(self.dim)
            ids = np.flatnonzero(scan >= bar)
            if not len(ids):
                return None
            scores = exact_scores(store.get(ids), vector)  # type: ignore[union-attr]
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


def one_thread_dot(matrix: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """matrix @ vector without BLAS: numpy's OpenBLAS runs a matrix-vector product on every
    core, and on a busy machine its threads wait on each other (measured on the 2-core machine
    under load, 3,000 x 576: 8 ms of CPU time through BLAS, 0.36 ms here)."""
    return np.einsum("ij,j->i", matrix, vector)


def exact_scores(vectors: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """Cosines of unit vectors as the screen decides them: each a float64 sum over its own row
    (so it depends on neither the library nor the other rows), rounded to SCORE_DECIMALS."""
    products = np.asarray(vectors, dtype=np.float64) * np.asarray(vector, dtype=np.float64)
    return np.round(products.sum(axis=-1), SCORE_DECIMALS)


class _Store:
    """Every vector of the pool, in blocks (a growing pool is never copied whole)."""

    ROWS = 1 << 16  # per full block

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._blocks: list[np.ndarray] = []
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def append(self, vectors: np.ndarray) -> None:
        while len(vectors):
            number, at = divmod(self._size, self.ROWS)
            if number == len(self._blocks):  # the first block starts small, the others full
                rows = self.ROWS if self._blocks else min(self.ROWS, max(64, len(vectors)))
                self._blocks.append(np.zeros((rows, self.dim), dtype=np.float32))
            block = self._blocks[number]
            if len(block) < min(self.ROWS, at + len(vectors)):  # the first block, grown
                grown = np.zeros((min(self.ROWS, max(2 * len(block), at + len(vectors))),
                                  self.dim), dtype=np.float32)
                grown[:at] = block[:at]
                block = self._blocks[number] = grown
            taken = min(len(vectors), len(block) - at)
            block[at:at + taken] = vectors[:taken]
            vectors = vectors[taken:]
            self._size += taken

    def get(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        if len(self._blocks) == 1:
            return self._blocks[0][ids]
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        for number, block in enumerate(self._blocks):
            mine = ids // self.ROWS == number
            out[mine] = block[ids[mine] % self.ROWS]
        return out

    def scan(self, vector: np.ndarray) -> np.ndarray:
        """float32 dot products of `vector` with every item."""
        parts = []
        for number, block in enumerate(self._blocks):
            rows = min(len(block), self._size - number * self.ROWS)
            parts.append(one_thread_dot(block[:rows], vector))
        return np.concatenate(parts)


class _Graph:
    """faiss's HNSW index past the exact limit (faiss labels items by position, as we do).

    Embeddings are anisotropic: a few directions carry most of their spread. Where a PCA
    projection fitted on `sample` keeps VARIANCE_KEPT of it in at most half the dimensions, the
    graph works in that projection, where a distance costs a fraction (SmolLM2's 576
    dimensions, measured on the bench pools: 192 for English sentences, 256 for Chinese, whose
    spread is more even); the candidates it returns are scored exactly on the full vectors
    anyway. At 0.97 Chinese needed 320 dimensions, over half, and the graph on all 576 took
    1.5 ms per candidate at a 1M pool; at 0.95 0.84 ms, and its recall rose (0.9956 -> 0.9985):
    a cheaper distance, the same candidate list.
    """

    def __init__(self, dim: int, sample: np.ndarray, *, connectivity: int, expansion_add: int,
                 expansion_search: int, threads: int) -> None:
        import faiss

        self._faiss = faiss
        self.threads = threads or len(os.sched_getaffinity(0))
        self.projection = _projection(sample) if dim >= REDUCE_FROM else None
        if self.projection is not None:
            # On unit vectors, L2 distance ranks as cosine does; a projection keeps L2 best.
            self._index = faiss.IndexHNSWFlat(self.projection[1].shape[1], connectivity,
                                              faiss.METRIC_L2)
        else:
            self._index = faiss.IndexHNSWFlat(dim, connectivity, faiss.METRIC_INNER_PRODUCT)
        self._index.hnsw.efConstruction = expansion_add
        self._index.hnsw.efSearch = expansion_search

    def _projected(self, vectors: np.ndarray) -> np.ndarray:
        if self.projection is not None:
            mean, components = self.projection
            centred = vectors - mean
            vectors = centred @ components if len(vectors) > 1 else \
                one_thread_dot(components.T, centred[0])[None]
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def add(self, vectors: np.ndarray) -> None:
        # A bulk insert (the pool on resume) runs on every core; a single one on one, so that
        # faiss's OpenMP threads do not spin beside the engine's.
        self._faiss.omp_set_num_threads(self.threads if len(vectors) > 1 else 1)
        try:
            self._index.add(self._projected(vectors))
        finally:
            self._faiss.omp_set_num_threads(1)

    def search(self, vector: np.ndarray, k: int) -> np.ndarray:
        _, labels = self._index.search(self._projected(vector[None]), k)
        return labels[0][labels[0] >= 0].astype(np.int64)


def _projection(sample: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The mean and the principal components (as columns) that keep VARIANCE_KEPT of the
    sample's variance, a multiple of 16 of them; None if that takes over half the dimensions
    or the sample is smaller than the dimensions."""
    count, dim = sample.shape
    if count < dim:
        return None
    mean = sample.astype(np.float64).mean(axis=0)
    centred = sample.astype(np.float64) - mean
    variances, components = np.linalg.eigh(centred.T @ centred)  # ascending
    share = np.cumsum(variances[::-1]) / max(float(variances.sum()), 1e-300)
    kept = -(-(int(np.searchsorted(share, VARIANCE_KEPT)) + 1) // 16) * 16
    if kept > dim // 2:
        return None
    return mean.astype(np.float32), components[:, ::-1][:, :kept].astype(np.float32)


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
