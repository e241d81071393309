"""A run's embeddings on disk, so a resume rebuilds the semantic index without running the
embedding model over the whole pool again.

`embeddings.jsonl` holds one row per pool item: {"id": ITEM_ID, "vector": base64 of its float32
values, little-endian}. The vectors are kept as computed, so the resumed index holds the very
vectors the run decided with (about 4/3 x 4 x dim bytes a row: 3 KB for 576 dimensions, 5.5 KB
for 1,024).

Rows go through RunStore.append in group commit, after pending.jsonl in a flush (COMMIT_ORDER,
or after every file it lists): a vector row reaches the disk with or after the pending row of its
instruction. After a kill -9, then, some pending rows of the last half second may lack their
vector (never the other way round) and the last line may be torn (RunStore.read cuts it off);
`restore_vectors` gives the vectors found and the items left to embed again.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence

import numpy as np

from selfinstruct_local.errors import SigenError
from selfinstruct_local.runstore import EMBEDDINGS

_FLOAT32 = np.dtype("<f4")


def embedding_row(item_id: str, vector: np.ndarray) -> dict:
    """The row that stores `vector` for the pool item `item_id`."""
    data = np.ascontiguousarray(vector, dtype=_FLOAT32).tobytes()
    return {"id": item_id, "vector": base64.b64encode(data).decode("ascii")}


def decode_vector(row: dict) -> np.ndarray:
    """The vector of a row; ValueError saying what is wrong with it."""
    text = row.get("vector")
    if not isinstance(text, str):
        raise ValueError("no \"vector\" string")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("\"vector\" is not base64") from None
    if not data or len(data) % 4:
        raise ValueError(f"{len(data)} bytes, not whole float32 values")
    vector = np.frombuffer(data, dtype=_FLOAT32).astype(np.float32)
    norm = float(np.linalg.norm(vector.astype(np.float64)))
    if not np.isfinite(norm) or abs(norm - 1) > 1e-3:
        raise ValueError(f"not a unit vector (norm {norm:.4g})")
    return vector


def restore_vectors(item_ids: Sequence[str], rows: Iterable[dict], dim: int = 0,
                    source: str = EMBEDDINGS) -> tuple[np.ndarray, list[int]]:
    """The stored vector of each item of `item_ids` (the pool, in order) and the positions of
    the items that have none (to embed again): a (len(item_ids), dim) float32 array whose rows
    for those positions are zero. `dim`: the embedding model's vector size, when known, to
    refuse vectors of another model. Rows of other items are ignored."""
    wanted = {item: position for position, item in enumerate(item_ids)}
    found: dict[int, np.ndarray] = {}
    for row in rows:
        position = wanted.get(row.get("id"))  # type: ignore[arg-type]
        if position is None:
            continue
        try:
            vector = decode_vector(row)
        except ValueError as exc:
            raise SigenError(
                f"{source}: the vector of {row['id']!r} is damaged ({exc}). Delete {EMBEDDINGS} "
                "and resume: the vectors are computed again from the texts.") from None
        dim = dim or len(vector)
        if len(vector) != dim:
            raise SigenError(
                f"{source} holds vectors of {len(vector)} dimensions where {dim} are expected: "
                "the run was embedded with another model. Resume with the run's own "
                f"--embed-model, or delete {EMBEDDINGS} to embed the pool again.")
        found[position] = vector
    vectors = np.zeros((len(item_ids), dim), dtype=np.float32)
    for position, vector in found.items():
        vectors[position] = vector
    missing = [p for p in range(len(item_ids)) if p not in found]
    return vectors, missing


def rebuild_vectors(item_ids: Sequence[str], texts: Sequence[str], rows: Iterable[dict],
                    embedder, source: str = EMBEDDINGS) -> tuple[np.ndarray, list[dict]]:
    """Every pool item's vector on resume: the stored ones, and those of the items without one
    embedded again (`embedder`: embed.Embedder). Also returns the rows to append for those."""
    vectors, missing = restore_vectors(item_ids, rows, embedder.dim, source)
    if missing:
        fresh = embedder.embed([texts[p] for p in missing])
        if len(missing) == len(item_ids):
            vectors = np.zeros((len(item_ids), fresh.shape[1]), dtype=np.float32)
        elif fresh.shape[1] != vectors.shape[1]:
            raise SigenError(
                f"{source} holds vectors of {vectors.shape[1]} dimensions, the embedding model "
                f"gives {fresh.shape[1]}: the run was embedded with another model. Resume with "
                f"the run's own --embed-model, or delete {EMBEDDINGS} to embed the pool again.")
        vectors[missing] = fresh
    return vectors, [embedding_row(item_ids[p], vectors[p]) for p in missing]
