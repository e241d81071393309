"""What a set of L2-normalized embeddings says about a pool's spread, with numpy alone: each
item's nearest-neighbour cosine, a 2-D PCA map and k-means clusters (`sigen stats`).

Everything is seeded, so the same vectors give the same figures and plots.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Nearest neighbours are exact (every pair) up to this many vectors: 20,000 x 20,000 dot
# products of 1,024 values is a few seconds of BLAS. Beyond it, a seeded sample of NN_SAMPLE
# items is each compared with the whole pool (still exact for those items).
NN_EXACT_LIMIT = 20_000
NN_SAMPLE = 5_000
BLOCK = 2_048  # rows of the similarity matrix held at once (BLOCK x n float32)
MAX_CLUSTERS = 20  # distinct colours on the map (tab20)
MIN_CLUSTERED = 6  # fewer vectors than this are not clustered
KMEANS_FIT_LIMIT = 5_000  # k-means is fitted on a sample this large, then every item assigned
SEED = 0


@dataclass
class NearestNeighbours:
    similarities: np.ndarray  # the cosine of each (sampled) item with its nearest other item
    exact: bool  # every item, against every other; else a sample of items against all


def nearest_neighbour_similarities(vectors: np.ndarray) -> NearestNeighbours:
    """For each vector (or a seeded sample past NN_EXACT_LIMIT), the cosine with its nearest
    other vector (dot products: the vectors are L2-normalized)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    n = len(vectors)
    if n < 2:
        return NearestNeighbours(np.zeros(0, dtype=np.float64), True)
    exact = n <= NN_EXACT_LIMIT
    queries = np.arange(n) if exact else np.sort(
        np.random.default_rng(SEED).choice(n, NN_SAMPLE, replace=False))
    best = np.empty(len(queries), dtype=np.float64)
    for start in range(0, len(queries), BLOCK):
        rows = queries[start:start + BLOCK]
        scores = vectors[rows] @ vectors.T
        scores[np.arange(len(rows)), rows] = -np.inf  # not itself
        best[start:start + len(rows)] = scores.max(axis=1)
    return NearestNeighbours(np.clip(best, -1.0, 1.0), exact)


@dataclass
class Projection:
    points: np.ndarray  # (n, 2)
    explained: tuple[float, float]  # share of the variance along each axis


def pca_2d(vectors: np.ndarray) -> Projection:
    """The vectors projected on their two principal axes (eigenvectors of the covariance,
    signs fixed so the same data always draws the same way round)."""
    x = np.asarray(vectors, dtype=np.float64)
    if len(x) < 2:
        return Projection(np.zeros((len(x), 2)), (0.0, 0.0))
    centered = x - x.mean(axis=0)
    eigenvalues, eigenvectors = np.linalg.eigh(centered.T @ centered)
    order = np.argsort(eigenvalues)[::-1][:2]
    axes = eigenvectors[:, order]
    axes *= np.sign(axes[np.abs(axes).argmax(axis=0), [0, 1]])  # largest loading positive
    total = float(eigenvalues.clip(min=0).sum()) or 1.0
    explained = tuple(float(max(eigenvalues[i], 0.0) / total) for i in order)
    points = centered @ axes
    if points.shape[1] < 2:  # one-dimensional vectors
        points = np.hstack([points, np.zeros((len(points), 2 - points.shape[1]))])
        explained = (*explained, 0.0)[:2]
    return Projection(points, explained)  # type: ignore[arg-type]


def cluster_count(n: int) -> int:
    """k for n vectors: about sqrt(n / 2) (a common rule of thumb), 2 to MAX_CLUSTERS; 0 when
    there are too few to cluster."""
    if n < MIN_CLUSTERED:
        return 0
    return int(min(MAX_CLUSTERS, max(2, round(math.sqrt(n / 2)))))


@dataclass
class Clusters:
    labels: np.ndarray  # cluster of each vector, 0 = the largest cluster
    sizes: list[int]  # largest first
    centres: list[int]  # per cluster, the index of the vector nearest its centroid


def kmeans(vectors: np.ndarray, k: int, iterations: int = 50, restarts: int = 3) -> Clusters:
    """Seeded k-means (k-means++ starts, the best of `restarts` by inertia), clusters numbered
    from the largest."""
    x = np.asarray(vectors, dtype=np.float64)
    rng = np.random.default_rng(SEED)
    fit = x if len(x) <= KMEANS_FIT_LIMIT else x[rng.choice(len(x), KMEANS_FIT_LIMIT,
                                                            replace=False)]
    best_centroids, best_inertia = None, math.inf
    for _ in range(restarts):
        centroids = _kmeans_plus_plus(fit, k, rng)
        for _ in range(iterations):
            labels = _nearest(fit, centroids)
            moved = np.array([fit[labels == c].mean(axis=0) if np.any(labels == c)
                              else centroids[c] for c in range(k)])
            if np.allclose(moved, centroids):
                break
            centroids = moved
        inertia = float(((fit - centroids[_nearest(fit, centroids)]) ** 2).sum())
        if inertia < best_inertia:
            best_centroids, best_inertia = centroids, inertia
    labels = _nearest(x, best_centroids)
    counts = np.bincount(labels, minlength=k)
    order = sorted(range(k), key=lambda c: (-counts[c], c))  # renumber: 0 is the largest
    renumber = np.empty(k, dtype=np.int64)
    renumber[order] = np.arange(k)
    labels = renumber[labels]
    sizes = [int(counts[c]) for c in order]
    centres = []
    for new, old in enumerate(order):
        members = np.flatnonzero(labels == new)
        if len(members) == 0:
            centres.append(-1)
            continue
        distances = ((x[members] - best_centroids[old]) ** 2).sum(axis=1)
        centres.append(int(members[distances.argmin()]))
    return Clusters(labels, sizes, centres)


def _nearest(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    distances = (x ** 2).sum(axis=1)[:, None] - 2 * x @ centroids.T + (centroids ** 2).sum(axis=1)
    return distances.argmin(axis=1)


def _kmeans_plus_plus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    centroids = [x[rng.integers(len(x))]]
    nearest = ((x - centroids[0]) ** 2).sum(axis=1)  # squared distance to the closest start
    for _ in range(1, k):
        total = nearest.sum()
        index = rng.choice(len(x), p=nearest / total) if total > 0 else rng.integers(len(x))
        centroids.append(x[index])
        nearest = np.minimum(nearest, ((x - x[index]) ** 2).sum(axis=1))
    return np.array(centroids)
