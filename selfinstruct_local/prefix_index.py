"""Exact ROUGE-L near-duplicate search by prefix filtering (AllPairs / PPJoin style).

Texts arrive coded: one character per token (``TokenCoder``), so rapidfuzz's ``Indel`` distance
of two coded strings is ``m + n - 2*LCS`` and ROUGE-L F = 2*LCS / (m + n). For a threshold
t = num/den a pair of lengths m, n matches iff ``2*LCS*den >= num*(m + n)``.

Candidate generation loses no match, because each test below is a necessary condition:

* Overlap. LCS <= o, the multiset overlap of the token bags, so a match has
  o >= alpha(m, n) = ceil(num*(m + n) / (2*den)). LCS <= min(m, n) bounds a partner's length
  (the length filter), so any partner of an n-token text has o >= alpha(n) =
  ceil(num*n / (2*den - num)).
* Prefixes. Repeated tokens become distinct (token, occurrence) elements, so bags become sets
  with the same overlap. Sort every set by one global order. If |x & y| = o, the k smallest
  common elements lie in the first |x| - o + k elements of x and of y (each has only common
  elements after it). So (the "l-prefix" scheme, L = 2 or 3) index each item under its first
  n - alpha(n) + L elements, probe with the query's first m - alpha(m) + L: a match is found in
  at least min(L, alpha(m, n)) of the probed posting lists.
* Positions (PPJoin). The k-th smallest common element, at position j of the item and i of
  the query, has o - k + 1 common elements from there on, so for k <= L both
  2*den*(n - j + L - 1) >= num*(m + n) and 2*den*(m - i + L - 1) >= num*(m + n). The first
  gives each posting M, the longest query it can serve; the second gives each probe position
  the longest item it can serve. Postings are kept sorted by item length, so a probe reads
  only the slice of lengths it can serve; M is tested per posting. The length filter is implied.

Survivors are verified with the exact LCS in integers. The order ranks elements rare first
(document frequency, ties by a fixed 64-bit mix) to keep posting lists short. It must be the
same for both sides of a pair, so it is frozen per *epoch*: a growing index re-derives it and
re-indexes every item each time it doubles (amortised O(1) per item); a caller that knows the
whole corpus (batch dedup) freezes exact frequencies once with ``freeze_order``.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections import Counter

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import Indel

_SURROGATES = 0x800  # U+D800..U+DFFF cannot be put in a str that rapidfuzz will accept
_MAX_CODES = 0x110000 - _SURROGATES
_ELEM_STRIDE = 0x110000  # element = code point + occurrence index * stride: unique per pair
_MIX = 0x9E3779B97F4A7C15  # odd, so multiplying mod 2**64 is a bijection (distinct keys)
_MASK64 = (1 << 64) - 1
_FIRST_EPOCH = 64  # a growing index first re-orders once it holds this many items
# L = 3 cuts candidates ~6x over L = 2 but puts a more frequent element in every prefix: it
# pays for long texts (Chinese sentences, ~21 tokens) and not short ones (~10 English words).
_LONG_TEXT = 14  # mean tokens per item from which L = 3 is used
_SMALL = 48  # up to this many postings, a Python loop beats a dozen numpy calls
_FEW = 3  # up to this many candidates, verify each with its own call
# A posting is one int64, (M + 1) << 28 | item, M clamped to [-1, 2**21 - 2] and the parallel
# sort-by-length array clamped to 65535: clamping M or a length down only ever lets more
# postings through, so the filters stay exact. An index holds at most 2**28 items.
_ID_BITS, _M_MAX, _N_MAX = 28, (1 << 21) - 1, 0xFFFF
_ID_MASK = (1 << _ID_BITS) - 1

Postings = dict[int, tuple[array, array]]  # key -> (item lengths, sorted; postings)


class TokenCoder:
    """Maps each distinct token to one character, so token sequences become str for rapidfuzz."""

    def __init__(self) -> None:
        self._codes: dict[str, str] = {}

    def encode(self, tokens: list[str]) -> str:
        """The coded string: one character per token, equal tokens get equal characters."""
        codes = self._codes
        chars = list(map(codes.get, tokens))
        if None in chars:
            for pos, tok in enumerate(tokens):
                if chars[pos] is None:
                    ch = codes.get(tok)
                    if ch is None:
                        n = len(codes)
                        if n >= _MAX_CODES:
                            raise OverflowError("more than 1,112,064 distinct tokens")
                        ch = codes[tok] = chr(n if n < 0xD800 else n + _SURROGATES)
                    chars[pos] = ch
        return "".join(chars)  # type: ignore[arg-type]  # every None was replaced


def elements(coded: str) -> list[int]:
    """The occurrence-indexed elements of a coded string (the k-th copy of a token differs),
    in no particular order."""
    counts = Counter(coded)
    out = list(map(ord, counts))
    if len(out) != len(coded):
        for ch, k in counts.items():
            if k > 1:
                out.extend(range(ord(ch) + _ELEM_STRIDE, ord(ch) + k * _ELEM_STRIDE, _ELEM_STRIDE))
    return out


class PrefixIndex:
    """Exact "is there an item with ROUGE-L F >= num/den with this one", over coded strings."""

    def __init__(self, num: int, den: int) -> None:
        if not 0 < num <= den:
            raise ValueError(f"threshold {num}/{den} must be in (0, 1]")
        self.num, self.den = num, den
        self.strings: list[str] = []
        self._elems: list[list[int]] = []
        # Postings with M >= n ("head": they serve queries as long as their item) apart from the
        # others ("tail": only shorter queries), so probe positions that serve only items
        # shorter than the query skip the tail lists.
        self._head: Postings = {}
        self._tail: Postings = {}
        self._df: Counter[int] = Counter()  # live document frequencies (growing index only)
        self._rank: dict[int, int] = {}  # the epoch's order; unseen elements go first
        self._next_epoch: float = _FIRST_EPOCH
        self.need = 2  # L, re-chosen at each epoch and fixed within one
        self._slot = np.zeros(1024, dtype=np.int64)  # scratch for _repeated, one per item

    def __len__(self) -> int:
        return len(self.strings)

    def _min_partner(self, n: int) -> int:
        """alpha(n): the shortest partner length the length filter allows an n-token text."""
        c = 2 * self.den - self.num
        return (self.num * n + c - 1) // c

    def prefix_len(self, n: int) -> int:
        """How many of an n-element sorted set are indexed (and probed)."""
        return min(n, n - self._min_partner(n) + self.need)

    def _reach(self, length: int, pos: int) -> int:
        """Longest partner a common element at ``pos`` of a ``length``-set can still serve as
        one of the L smallest: 2*den*(length - pos + L - 1) >= num*(length + partner)."""
        return (2 * self.den * (length - pos + self.need - 1) - self.num * length) // self.num

    def keys(self, elems: list[int]) -> list[int]:
        """The elements' sort keys in the current epoch's order, sorted (rare first)."""
        get = self._rank.get
        keys = [r if (r := get(e)) is not None else ~((e * _MIX) & _MASK64) for e in elems]
        keys.sort()
        return keys

    def freeze_order(self, doc_freq: Counter[int], docs: int) -> None:
        """Order elements by these frequencies (counted over ``docs`` texts) from now on."""
        self._df = Counter(doc_freq)
        self._next_epoch = float("inf")
        self._reindex(sum(doc_freq.values()) / max(docs, 1))

    def find(self, coded: str, keys: list[int], skip: frozenset[int] = frozenset()) -> int | None:
        """An item with F >= threshold against ``coded`` (``keys`` from ``keys()``), or None."""
        if not coded:
            return None
        cands = self.candidates(len(coded), keys)
        if skip:
            cands = [c for c in cands if c not in skip]
        return self.verify(coded, cands) if cands else None

    def candidates(self, m: int, keys: list[int]) -> list[int]:
        """Distinct items passing the prefix, position and count filters for a length-m query."""
        head, tail = self._head, self._tail
        num, twoden = self.num, 2 * self.den
        buf = array("q")
        shortest = min(self._min_partner(m), _N_MAX)
        longer = min(m, _N_MAX - 1)  # tail lengths above this (clamped like the stored ones)
        slack = twoden * (m + self.need - 1) - num * m
        for i, key in enumerate(keys[: self.prefix_len(m)]):
            reach = (slack - twoden * i) // num  # self._reach(m, i), inlined: hot loop
            if reach < shortest:
                break  # reach only shrinks with i
            top = min(reach, _N_MAX)
            found = head.get(key)
            if found is not None:
                lengths, posts = found
                start, end = bisect_left(lengths, shortest), bisect_right(lengths, top)
                if start < end:
                    buf.extend(posts[start:end])
            if reach > m:  # tail postings serve only queries shorter than their item
                found = tail.get(key)
                if found is not None:
                    lengths, posts = found
                    start, end = bisect_right(lengths, longer), bisect_right(lengths, top)
                    if start < end:
                        buf.extend(posts[start:end])
        if not buf:
            return []
        floor = (m + 1) << _ID_BITS if m + 1 <= _M_MAX else 0  # the posting's M >= m
        if len(buf) > _SMALL and not self._tiny(m):
            post = np.frombuffer(buf, dtype=np.int64)
            ids = post[post >= floor] & _ID_MASK
            # Each pass drops one entry of every item: after L - 1, items listed >= L times.
            for _ in range(self.need - 1):
                ids = self._repeated(ids)
            return list(dict.fromkeys(ids.tolist()))
        passed = [post & _ID_MASK for post in buf if post >= floor]
        if self._tiny(m):
            # Some partners of a tiny query need fewer than L common elements: alpha(m, n).
            strings, twoden = self.strings, 2 * self.den
            return [
                c
                for c, k in Counter(passed).items()
                if k >= self.need or num * (m + len(strings[c])) <= twoden * k
            ]
        passed.sort()
        lag = self.need - 1  # sorted, an item listed >= L times equals the entry L - 1 back
        return list(dict.fromkeys(p for k, p in enumerate(passed[lag:]) if passed[k] == p))

    def sharing(self, m: int, keys: list[int], limit: int) -> list[int]:
        """Up to ``limit`` distinct items that share an element of a length-m query's probed
        prefix, with no position or count filter: every item that can reach the threshold is
        among them (while under the limit), and so are most of the query's close neighbours,
        since the prefix holds its rarest elements. For reporting, not for decisions."""
        found: dict[int, None] = {}
        for key in keys[: self.prefix_len(m)]:
            for lists in (self._head, self._tail):
                entry = lists.get(key)
                if entry is None:
                    continue
                for post in entry[1]:
                    found[post & _ID_MASK] = None
                    if len(found) >= limit:
                        return list(found)
        return list(found)

    def _tiny(self, m: int) -> bool:
        """True if some partner of a length-m query needs fewer than L common elements."""
        return self.num * (m + 1) <= 2 * self.den * (self.need - 1)

    def _repeated(self, ids: np.ndarray) -> np.ndarray:
        """All entries of ``ids`` but one per distinct value, without sorting: scatter each
        entry's position into a scratch slot per item; whichever write lands, every other
        entry of that item reads back a position that is not its own."""
        if len(self.strings) > len(self._slot):
            self._slot = np.zeros(2 * len(self.strings), dtype=np.int64)
        where = np.arange(len(ids))
        self._slot[ids] = where
        return ids[self._slot[ids] != where]

    def verify(self, coded: str, cands: list[int]) -> int | None:
        """The first of ``cands`` whose exact F with ``coded`` is >= threshold, or None."""
        strings = self.strings
        if len(cands) <= _FEW:
            return next((c for c in cands if self._exact(coded, strings[c])), None)
        # One C call for all distances (a Python-level call per candidate costs ~0.5 us), in
        # integers: rapidfuzz's float scores with a score_cutoff just under t were seen to
        # drop pairs at exactly t. Distances above the largest cutoff come back as cutoff + 1.
        choices = [strings[c] for c in cands]
        totals = len(coded) + np.fromiter(map(len, choices), dtype=np.int64, count=len(choices))
        slack, den = self.den - self.num, self.den
        dist = process.cdist(
            [coded],
            choices,
            scorer=Indel.distance,
            score_cutoff=int(totals.max()) * slack // den,
            dtype=np.int64,
            workers=1,
        )[0]
        hits = np.flatnonzero(dist * den <= totals * slack)  # distance <= (m + n)*(1 - t)
        return cands[int(hits[0])] if len(hits) else None

    def _exact(self, coded: str, other: str) -> bool:
        """F >= num/den exactly: Indel distance = m + n - 2*LCS <= (m + n)*(1 - t)."""
        cutoff = (len(coded) + len(other)) * (self.den - self.num) // self.den
        return Indel.distance(coded, other, score_cutoff=cutoff) <= cutoff

    def add(self, coded: str, elems: list[int], keys: list[int]) -> int:
        """Append an item (``keys`` from ``keys(elems)`` in the current epoch); returns its id."""
        item = len(self.strings)
        if item > _ID_MASK:
            raise OverflowError(f"a PrefixIndex holds at most {_ID_MASK + 1} items")
        self.strings.append(coded)
        self._elems.append(elems)
        if self._next_epoch != float("inf"):
            self._df.update(elems)
        self._post(item, keys, self._head, self._tail)
        if item + 1 >= self._next_epoch:
            self._next_epoch = 2 * (item + 1)
            self._reindex()
        return item

    def _post(self, item: int, keys: list[int], head: Postings, tail: Postings) -> None:
        n = len(keys)
        num, twoden = self.num, 2 * self.den
        length = min(n, _N_MAX)
        slack = twoden * (n + self.need - 1) - num * n
        for j, key in enumerate(keys[: self.prefix_len(n)]):
            reach = (slack - twoden * j) // num  # M = self._reach(n, j), inlined: hot loop
            post = min(max(reach + 1, 0), _M_MAX) << _ID_BITS | item
            lists = head if reach >= n else tail
            found = lists.get(key)
            if found is None:
                lists[key] = (array("H", (length,)), array("q", (post,)))
            else:
                lengths, posts = found
                at = bisect_right(lengths, length)
                lengths.insert(at, length)
                posts.insert(at, post)

    def _reindex(self, mean_len: float | None = None) -> None:
        """Start an epoch: freeze the order from the frequencies, choose L, rebuild postings."""
        if mean_len is None:
            mean_len = sum(map(len, self._elems)) / max(len(self._elems), 1)
        self.need = 3 if mean_len >= _LONG_TEXT else 2
        df = self._df
        ranked = sorted(df, key=lambda e: (df[e], (e * _MIX) & _MASK64))
        self._rank = {e: r for r, e in enumerate(ranked)}
        self._head, self._tail = {}, {}
        for item, elems in enumerate(self._elems):
            self._post(item, self.keys(elems), self._head, self._tail)
