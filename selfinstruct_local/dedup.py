"""ROUGE-L near-duplicate filtering: exact, near-linear, CJK-aware.

Self-Instruct keeps a new instruction only if its ROUGE-L F against every instruction already
kept is below a threshold (0.7). Tokens come from ``text.tokenize`` (one token per CJK
character); F = 2*LCS / (m + n), computed with rapidfuzz's Indel distance on strings that code
each token as one character. The threshold t is taken as the exact fraction of its decimal form
(0.7 -> 7/10) and every comparison is done in integers, so F == t is rejected, as the rule says.

``NearDupIndex`` answers "does some item have F >= t" exactly: ``prefix_index`` produces every
pair that can reach t (prefix, position, count and length filters; no false negatives) and each
candidate is verified with the exact LCS. An optional datasketch MinHash LSH screen
(``use_lsh``) only chooses which candidates are verified first; it never decides on its own.
``brute_force_dedup`` is the obviously-correct all-pairs reference for tests and benchmarks.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import Indel

from selfinstruct_local.errors import SigenError
from selfinstruct_local.prefix_index import PrefixIndex, TokenCoder, elements
from selfinstruct_local.runstore import refuse_run_file, write_atomic
from selfinstruct_local.text import tokenize

DEFAULT_THRESHOLD = 0.7
# `neighbours` scores a query against at most this many items that share its rare tokens, plus
# a fixed-size uniform sample of the pool: its cost does not grow with the pool. The screen asks
# only for instructions the exact check has just accepted, which have no item at or above the
# threshold: the candidates only decide which lower scores are reported as most similar, and 128
# of the rarest-token sharers hold them (256 cost 0.12 ms more per instruction at a 1M pool).
NEIGHBOUR_CANDIDATES = 128
POOL_SAMPLE = 256


@dataclass(frozen=True)
class DedupDecision:
    """Outcome for one text: kept, or rejected as 'empty' / 'near_duplicate' of ``match_id``."""

    kept: bool
    reason: str | None = None
    match_id: int | None = None
    match_score: float | None = None


def threshold_fraction(threshold: float | Fraction) -> Fraction:
    """The threshold as the exact fraction of its decimal form (0.7 -> 7/10), in (0, 1]."""
    try:
        frac = Fraction(str(threshold))
    except (ValueError, ZeroDivisionError):
        frac = Fraction(-1)
    if not 0 < frac <= 1:
        raise SigenError(
            f"similarity threshold {threshold!r} is not a number in (0, 1]; "
            "pass a value such as 0.7 (Self-Instruct's default)."
        )
    return frac


def rouge_l(a: str, b: str) -> float:
    """ROUGE-L F between two texts over ``text.tokenize`` tokens (0.0 if either has none)."""
    coder = TokenCoder()
    return _score(coder.encode(tokenize(a)), coder.encode(tokenize(b)))


def _score(a: str, b: str) -> float:
    """F of two coded strings as one correctly rounded division of integers (so equal
    fractions give equal floats), 0.0 if either is empty."""
    total = len(a) + len(b)
    if not a or not b:
        return 0.0
    return (total - Indel.distance(a, b)) / total


class MinHashScreen:
    """Optional first pass: datasketch MinHash LSH over the same (token, occurrence) elements.

    F >= t implies Jaccard >= t / (2 - t) on those elements (LCS <= overlap), so the LSH is
    tuned a little below that. Its hits are only verified first; misses change nothing.
    """

    def __init__(self, frac: Fraction, num_perm: int = 64) -> None:
        from datasketch import MinHash, MinHashLSH  # only paid for when asked for

        self._minhash = MinHash
        self._num_perm = num_perm
        jaccard = float(frac / (2 - frac))
        self._lsh = MinHashLSH(threshold=max(0.05, jaccard - 0.1), num_perm=num_perm)

    def _sketch(self, elems: list[int]):  # -> datasketch.MinHash
        sketch = self._minhash(num_perm=self._num_perm, seed=1, hashfunc=_hash32)
        sketch.update_batch(elems)
        return sketch

    def add(self, item: int, elems: list[int]) -> None:
        if elems:
            self._lsh.insert(item, self._sketch(elems), check_duplication=False)

    def query(self, elems: list[int]) -> list[int]:
        return self._lsh.query(self._sketch(elems)) if elems else []


def _hash32(element: int) -> int:
    return ((element * 0x9E3779B97F4A7C15) >> 32) & 0xFFFFFFFF


class NearDupIndex:
    """A growing pool of texts with exact ROUGE-L near-duplicate lookup."""

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, *, use_lsh: bool = False) -> None:
        self.threshold = threshold
        self._frac = threshold_fraction(threshold)
        self._coder = TokenCoder()
        self._index = PrefixIndex(self._frac.numerator, self._frac.denominator)
        self._texts: list[str] = []
        self._lengths = np.zeros(1024, dtype=np.int64)  # token counts, for most_similar
        self._lsh = MinHashScreen(self._frac) if use_lsh else None
        # A uniform sample of the pool (reservoir sampling, fixed seed): the whole pool while
        # it is small, so small runs get exact figures.
        self._sample = np.zeros(0, dtype=np.int64)
        self._sample_strings: list[str] = []  # their coded strings, at hand for one C call
        self._sample_set: set[int] = set()
        self._sample_rng = random.Random(0)
        self._last_encoded: tuple[str | None, tuple[str, list[int]]] = (None, ("", []))

    def __len__(self) -> int:
        return len(self._texts)

    def text(self, i: int) -> str:
        """The text of item ``i`` as it was added."""
        return self._texts[i]

    def _encode(self, text: str) -> tuple[str, list[int]]:
        # A text is encoded twice in a row when it is checked, then its neighbours found.
        if self._last_encoded[0] != text:
            coded = self._coder.encode(tokenize(text))
            self._last_encoded = (text, (coded, elements(coded)))
        return self._last_encoded[1]

    def prime_order(self, texts: Sequence[str]) -> None:
        """Optional speed-up: fix the token order from the frequencies in ``texts`` (say, the
        whole batch to come) instead of re-deriving it as the index grows."""
        self._prime([self._encode(t)[1] for t in texts])

    def _prime(self, elem_lists: Sequence[list[int]]) -> None:
        df: Counter[int] = Counter()
        for elems in elem_lists:
            df.update(elems)
        self._index.freeze_order(df, len(elem_lists))

    def _find(self, coded: str, elems: list[int], keys: list[int]) -> tuple[int, float] | None:
        skip: frozenset[int] = frozenset()
        if self._lsh is not None:
            hits = self._lsh.query(elems)
            hit = self._index.verify(coded, hits) if hits else None
            if hit is None:
                skip = frozenset(hits)
        else:
            hit = None
        if hit is None:
            hit = self._index.find(coded, keys, skip)
        if hit is None:
            return None
        return hit, _score(coded, self._index.strings[hit])

    def _add(self, text: str, coded: str, elems: list[int], keys: list[int]) -> int:
        self._texts.append(text)
        item = self._index.add(coded, elems, keys)
        if item >= len(self._lengths):
            self._lengths = np.concatenate([self._lengths, np.zeros_like(self._lengths)])
        self._lengths[item] = len(coded)
        if self._lsh is not None:
            self._lsh.add(item, elems)
        if len(self._sample) < POOL_SAMPLE:
            self._sample = np.append(self._sample, item)
            self._sample_strings.append(coded)
            self._sample_set.add(item)
        elif (slot := self._sample_rng.randrange(item + 1)) < POOL_SAMPLE:
            self._sample_set.discard(int(self._sample[slot]))
            self._sample[slot] = item
            self._sample_strings[slot] = coded
            self._sample_set.add(item)
        return item

    def add(self, text: str) -> int:
        """Add ``text`` unconditionally; returns its item id."""
        coded, elems = self._encode(text)
        return self._add(text, coded, elems, self._index.keys(elems))

    def find_duplicate(self, text: str) -> tuple[int, float] | None:
        """Some item whose ROUGE-L F with ``text`` is >= threshold, with that score; or None."""
        coded, elems = self._encode(text)
        return self._find(coded, elems, self._index.keys(elems))

    def check(self, text: str) -> DedupDecision:
        """What check_and_add would decide, adding nothing (the text is added later, or not,
        as the checks after this one decide)."""
        coded, elems = self._encode(text)
        return self._check(coded, elems, self._index.keys(elems))

    def _check(self, coded: str, elems: list[int], keys: list[int]) -> DedupDecision:
        if not coded:
            return DedupDecision(kept=False, reason="empty")
        hit = self._find(coded, elems, keys)
        if hit is not None:
            return DedupDecision(False, "near_duplicate", hit[0], hit[1])
        return DedupDecision(kept=True)

    def check_and_add(self, text: str) -> DedupDecision:
        """Add ``text`` unless it is empty or a near-duplicate of an item; says which."""
        return self._check_and_add(text, *self._encode(text))

    def _check_and_add(self, text: str, coded: str, elems: list[int], semantic=None,
                       vector=None) -> DedupDecision:
        """check_and_add; with `semantic` (a SemanticIndex holding the same items in the same
        order) a text that passes ROUGE-L is also checked by its `vector`, and joins both only
        if it passes both."""
        keys = self._index.keys(elems)
        decision = self._check(coded, elems, keys)
        if decision.kept and semantic is not None:
            decision = semantic.check_and_add(vector)
        if decision.kept:
            self._add(text, coded, elems, keys)
        return decision

    def most_similar(self, text: str, k: int = 10) -> tuple[list[tuple[int, float]], float]:
        """Exact top-k (id, score) over the whole pool, best first (ties: lower id first),
        and the mean score over the whole pool. A full scan in C; for reporting only."""
        coded = self._coder.encode(tokenize(text))
        strings = self._index.strings
        if not strings or k <= 0:
            return [], 0.0
        if coded:
            dist = process.cdist([coded], strings, scorer=Indel.distance, workers=1)[0]
            totals = len(coded) + self._lengths[: len(strings)]
            scores = (totals - dist) / totals  # as _score: equal fractions, equal floats
            # Two empty strings would score 1.0; ROUGE says 0 when either side is empty.
            scores[totals == len(coded)] = 0.0
        else:
            scores = np.zeros(len(strings))
        k = min(k, len(scores))
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]  # k-th best score
        tied = np.flatnonzero(scores >= kth)  # all of them, so ties go to the lower id
        top = tied[np.lexsort((tied, -scores[tied]))[:k]]
        return [(int(i), float(scores[i])) for i in top], float(scores.mean())


    def neighbours(
        self, text: str, k: int = 10, exclude: int | None = None
    ) -> tuple[list[tuple[int, float]], float]:
        """The most similar items and the mean similarity, at a cost that stays flat as the pool
        grows: top-k (id, score), best first, over the items sharing one of the text's rare
        prefix tokens (every item at or above the threshold among them) plus a uniform sample of
        POOL_SAMPLE items; the mean over that sample. Both are exact (equal to `most_similar`)
        while the pool holds at most POOL_SAMPLE items. `exclude`: an item left out (the text's
        own, once added)."""
        coded, elems = self._encode(text)
        if not self._texts or k <= 0:
            return [], 0.0
        sample, sampled = self._sample, self._sample_set
        shared = self._index.sharing(len(coded), self._index.keys(elems),
                                     NEIGHBOUR_CANDIDATES) if coded else []
        extra = [i for i in shared if i not in sampled]
        ids = np.concatenate([sample, np.array(extra, dtype=np.int64)])
        strings = self._index.strings
        choices = self._sample_strings + [strings[i] for i in extra]
        scores = self._scores(coded, ids, choices)
        in_sample = np.ones(len(ids), dtype=bool)
        in_sample[len(sample):] = False
        if exclude is not None:
            left_out = ids == exclude
            in_sample &= ~left_out
            scores[left_out] = -1.0  # never among the top
        k = min(k, int((scores >= 0).sum()))
        if k <= 0:
            return [], 0.0
        best = np.argpartition(-scores, k - 1)[:k] if k < len(ids) else np.arange(len(ids))
        kth = scores[best].min()
        tied = np.flatnonzero(scores >= kth)  # all of them, so ties go to the lower id
        top = tied[np.lexsort((ids[tied], -scores[tied]))[:k]]
        mean = float(scores[in_sample].mean()) if in_sample.any() else 0.0
        return [(int(ids[j]), float(scores[j])) for j in top], mean

    def _scores(self, coded: str, ids: np.ndarray, choices: list[str]) -> np.ndarray:
        """Exact F of ``coded`` against the items ``ids`` (coded strings ``choices``)."""
        if not coded:
            return np.zeros(len(ids))
        dist = process.cdist([coded], choices, scorer=Indel.distance, workers=1)[0]
        totals = len(coded) + self._lengths[ids]
        scores = (totals - dist) / totals  # as _score: equal fractions, equal floats
        scores[totals == len(coded)] = 0.0  # an empty item: ROUGE says 0
        return scores


def greedy_dedup(
    texts: Sequence[str],
    threshold: float = DEFAULT_THRESHOLD,
    against: Sequence[str] = (),
    *,
    use_lsh: bool = False,
    semantic=None,
    vectors=None,
) -> list[DedupDecision]:
    """Keep each text, in input order, unless it is empty or has F >= threshold with a text
    kept before it or with any text of ``against``. Same result as ``brute_force_dedup``.

    With ``semantic`` (an empty semantic.SemanticIndex) and ``vectors`` (the embeddings of
    ``[*against, *texts]``), a text that passes ROUGE-L is also rejected as a
    semantic_duplicate when its cosine with a kept text's or a pool text's is at least the
    index's threshold: the rule of a run's screen.

    ``match_id`` is a position in ``[*against, *texts]`` (the pool first).
    """
    index = NearDupIndex(threshold, use_lsh=use_lsh)
    if semantic is not None and len(against):
        semantic.add_many(vectors[:len(against)])
    pool = [index._encode(t) for t in against]
    batch = [index._encode(t) for t in texts]
    # The whole input is known: freeze its exact element frequencies as the prefix order.
    index._prime([elems for _, elems in pool] + [elems for _, elems in batch])
    origin = []  # item id -> position in [*against, *texts]
    for pos, (text, (coded, elems)) in enumerate(zip(against, pool, strict=True)):
        index._add(text, coded, elems, index._index.keys(elems))
        origin.append(pos)
    decisions = []
    for pos, (text, (coded, elems)) in enumerate(zip(texts, batch, strict=True), len(against)):
        d = index._check_and_add(text, coded, elems, semantic,
                                 None if semantic is None else vectors[pos])
        if d.kept:
            origin.append(pos)
        elif d.match_id is not None:
            d = DedupDecision(d.kept, d.reason, origin[d.match_id], d.match_score)
        decisions.append(d)
    return decisions


def brute_force_dedup(
    texts: Sequence[str], threshold: float = DEFAULT_THRESHOLD, against: Sequence[str] = ()
) -> list[bool]:
    """Reference: the same greedy rule, each text compared with every kept one (all pairs)."""
    frac = threshold_fraction(threshold)
    num, den = frac.numerator, frac.denominator
    coder = TokenCoder()
    pool = [s for s in (coder.encode(tokenize(t)) for t in against) if s]
    kept = []
    for text in texts:
        coded = coder.encode(tokenize(text))
        keep = bool(coded)
        if keep and pool:
            dist = process.cdist([coded], pool, scorer=Indel.distance, dtype=np.int64, workers=1)
            total = len(coded) + np.fromiter(map(len, pool), dtype=np.int64, count=len(pool))
            # 2*LCS = total - distance, and F >= t  <=>  2*LCS*den >= num*total.
            keep = not bool(((total - dist[0]) * den >= num * total).any())
        if keep:
            pool.append(coded)
        kept.append(keep)
    return kept


def default_output_path(input_path: str | os.PathLike[str]) -> Path:
    """Where ``sigen dedup`` writes by default: data.jsonl -> data.dedup.jsonl."""
    path = Path(input_path)
    if path.suffix:
        return path.with_name(f"{path.stem}.dedup{path.suffix}")
    return path.with_name(f"{path.name}.dedup.jsonl")


def read_jsonl_field(path: str | os.PathLike[str], field: str) -> tuple[list[bytes], list[str]]:
    """The raw lines (with their line ends) and the ``field`` string of each non-blank line.

    Raises SigenError naming the file and line for anything that is not a JSON object with
    a string ``field``.
    """
    try:
        handle = open(path, "rb")  # noqa: SIM115  # closed below; binary keeps bytes exact
    except FileNotFoundError:
        raise SigenError(f"{path}: no such file; check the path.") from None
    except OSError as e:
        raise SigenError(f"{path}: cannot read it ({e.strerror}); check the path.") from None
    rows: list[bytes] = []
    values: list[str] = []
    with handle:
        for lineno, raw in enumerate(handle, 1):  # binary iteration splits on b"\n" only
            if not raw.strip():
                continue
            where = f"{path}, line {lineno}"
            try:
                row = json.loads(raw)
            except UnicodeDecodeError:
                raise SigenError(f"{where}: not UTF-8 text; re-save the file as UTF-8.") from None
            except json.JSONDecodeError as e:
                raise SigenError(
                    f"{where}: not valid JSON ({e.msg}, column {e.colno}); each line must be "
                    f'one JSON object such as {{"{field}": "..."}}; fix or delete the line.'
                ) from None
            if not isinstance(row, dict):
                raise SigenError(
                    f"{where}: a JSON {_json_type(row)}, not an object; each line must be "
                    f'one JSON object such as {{"{field}": "..."}}.'
                )
            value = row.get(field)
            if value is None and field not in row:
                present = ", ".join(map(repr, list(row)[:8])) or "none"
                raise SigenError(
                    f'{where}: no "{field}" field (fields: {present}); add it, or choose the '
                    "field to compare with --field."
                )
            if not isinstance(value, str):
                raise SigenError(
                    f'{where}: field "{field}" is {_json_type(value)}, not a string; '
                    "make it a string or choose another field with --field."
                )
            rows.append(raw)
            values.append(value)
    return rows, values


def _json_type(value: object) -> str:
    names = {dict: "object", list: "array", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def check_output(out: Path, input_path: str | os.PathLike[str],
                 against_path: str | os.PathLike[str] | None) -> None:
    """The output may be neither a file dedup reads nor a file of a sigen run (links and
    `..` resolved), whatever the -o given."""
    refuse_run_file(out, "-o path")
    if out.is_dir():
        raise SigenError(f"{out} is a folder; pass a file name with -o.")
    for what, path in (("the input", input_path), ("the --against pool", against_path)):
        if path is not None and out.resolve() == Path(path).resolve():
            raise SigenError(f"{out}: output would overwrite {what}; pass another -o path.")


def dedup_jsonl(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str] | None = None,
    field: str = "instruction",
    threshold: float = DEFAULT_THRESHOLD,
    against_path: str | os.PathLike[str] | None = None,
    against_field: str | None = None,
    semantic_threshold: float | None = None,
    embed=None,
) -> dict[str, float | int]:
    """Greedy-dedup a JSONL file on ``field``; writes the kept lines byte-for-byte, in order.

    ``against_path`` is a pool (JSONL, ``against_field`` defaulting to ``field``) that every
    row is also compared with. With ``semantic_threshold`` and ``embed`` (texts in, unit
    vectors out: an embed.Embedder's embed), rows are also screened by meaning, as in a run
    (see greedy_dedup). Returns the counts and the seconds taken.
    """
    start = time.perf_counter()
    threshold_fraction(threshold)  # fail on a bad threshold before reading anything
    out = Path(output_path) if output_path is not None else default_output_path(input_path)
    check_output(out, input_path, against_path)
    rows, texts = read_jsonl_field(input_path, field)
    pool: list[str] = []
    if against_path is not None:
        pool = read_jsonl_field(against_path, against_field or field)[1]
    semantic = vectors = None
    if semantic_threshold is not None:
        from selfinstruct_local.semantic import SemanticIndex

        semantic = SemanticIndex(semantic_threshold)
        vectors = embed([*pool, *texts])
    decisions = greedy_dedup(texts, threshold, pool, semantic=semantic, vectors=vectors)
    # Replaced atomically (a temporary sibling of its own, then a rename): a crash never leaves
    # a half-written output, and no other file is touched.
    write_atomic(out, b"".join(row for row, d in zip(rows, decisions, strict=True) if d.kept))
    reasons = Counter(d.reason for d in decisions)
    return {
        "read": len(rows),
        "kept": reasons[None],
        "rejected_near_duplicate": reasons["near_duplicate"],
        "rejected_empty": reasons["empty"],
        **({"rejected_semantic_duplicate": reasons["semantic_duplicate"]}
           if semantic_threshold is not None else {}),
        "seconds": round(time.perf_counter() - start, 3),
    }
