"""N-grams for overlap checks: word n-grams and CJK character n-grams, as strings and as hashes.

Text is taken as `text.tokenize` takes it (NFKC, lowercased, punctuation dropped). Its words are
the tokens of what is not CJK; its characters are its Han and kana characters, in order, for
Chinese and Japanese are written without spaces. An n-gram is n words or n characters in a row,
never a mix, so a Chinese sentence quoted in English text still matches.

`ngrams` gives the n-grams as strings: exact, and the reference. `hash_windows` gives a 64-bit
hash of every n-gram of a batch of texts at once, for millions of benchmark lines: characters
come straight from the text's code points through a lookup table, words are hashed by Python
(its string hash changes between processes, which an index held in memory does not mind), and
each window's hash is a polynomial over its tokens' hashes, computed with n vector passes.
"""

from __future__ import annotations

import re
from functools import cache
from itertools import chain

import numpy as np

from selfinstruct_local.text import is_cjk_char, normalize, tokenize

N_WORDS = 13
N_CHARS = 10
_FIRST_CJK, _LAST_CJK = 0x2E80, 0x3FFFF  # is_cjk_char accepts nothing outside (radicals on)
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # odd: each step of the polynomial is a bijection
_SALT = {"words": np.uint64(0x5157), "chars": np.uint64(0xC11A)}
_ALNUM = re.compile(r"[^\W_]")

Windows = tuple[np.ndarray, np.ndarray, np.ndarray]  # hash, text index, position in its stream


@cache
def _cjk_table() -> np.ndarray:
    """True at each code point `text.is_cjk_char` accepts; one more entry (False) for all above."""
    table = np.zeros(_LAST_CJK + 2, bool)
    for cp in range(_FIRST_CJK, _LAST_CJK + 1):
        table[cp] = is_cjk_char(chr(cp))
    return table


@cache
def _alnum_table() -> np.ndarray:
    """True at each code point that `str.isalnum` accepts (what starts a word token)."""
    every = "".join(map(chr, range(0x110000)))
    table = np.zeros(0x110000, bool)
    table[[m.start() for m in _ALNUM.finditer(every)]] = True
    return table


@cache
def _cjk_pattern(bmp_only: bool) -> re.Pattern[str]:
    """One CJK character. As in text.py, a class of BMP characters only is much faster, so
    text without astral characters gets that one."""
    table = _cjk_table()[:0x10000] if bmp_only else _cjk_table()
    edges = np.flatnonzero(np.diff(table.astype(np.int8)))  # a run starts after +1, ends at -1
    starts, ends = edges[::2] + 1, edges[1::2]
    return re.compile("[" + "".join(f"{chr(a)}-{chr(b)}" for a, b in zip(starts, ends,
                                                                          strict=True)) + "]")


def _words(normal: str, pattern: re.Pattern[str]) -> list[str]:
    """The word tokens of normalized non-ASCII text: what is left with its CJK removed."""
    rest = pattern.sub(" ", normal)
    # Chinese text rarely has a letter or digit besides its characters: no tokenizing then.
    return tokenize(rest) if _ALNUM.search(rest) else []


def split_tokens(text: str) -> tuple[list[str], list[str]]:
    """The text's words and its CJK characters, each in order."""
    if text.isascii():
        return tokenize(text), []
    normal = normalize(text)
    pattern = _cjk_pattern(max(normal) <= "\uffff")
    return _words(normal, pattern), pattern.findall(normal)


def ngrams_by_kind(text: str, n_words: int = N_WORDS, n_chars: int = N_CHARS
                   ) -> tuple[list[str], list[str]]:
    """The text's word n-grams and its character n-grams, as strings, each in text order."""
    words, chars = split_tokens(text)
    return ([" ".join(words[i:i + n_words]) for i in range(len(words) - n_words + 1)],
            ["".join(chars[i:i + n_chars]) for i in range(len(chars) - n_chars + 1)])


def ngrams(text: str, n_words: int = N_WORDS, n_chars: int = N_CHARS) -> list[str]:
    """Every n-gram of the text as a string, word n-grams first."""
    by_words, by_chars = ngrams_by_kind(text, n_words, n_chars)
    return by_words + by_chars


def hash_windows(texts: list[str], n_words: int = N_WORDS, n_chars: int = N_CHARS
                 ) -> dict[str, Windows]:
    """For "words" and "chars": the hash of every n-gram of the texts, the index of its text,
    and its position among that text's words or characters (as in `split_tokens`)."""
    words = [tokenize(t) if t.isascii() else [] for t in texts]
    # Text with other characters: its code points (UTF-32 holds one a unit; "surrogatepass"
    # lets a lone surrogate through) pick out the CJK ones and tell whether words remain.
    wide = [k for k, t in enumerate(texts) if not t.isascii()]
    normal = [normalize(texts[k]) for k in wide]
    points = np.frombuffer("".join(normal).encode("utf-32-le", "surrogatepass"), np.uint32)
    owner = np.repeat(np.array(wide, np.int64), np.fromiter(map(len, normal), np.int64,
                                                             len(normal)))
    cjk = _cjk_table()[np.minimum(points, _LAST_CJK + 1)]
    normal_of = dict(zip(wide, normal, strict=True))
    for k in np.unique(owner[_alnum_table()[points] & ~cjk]).tolist():
        words[k] = _words(normal_of[k], _cjk_pattern(max(normal_of[k]) <= "\uffff"))
    counts = np.fromiter(map(len, words), np.int64, len(words))
    word_tokens = np.fromiter(map(hash, chain.from_iterable(words)), np.int64,
                              int(counts.sum())).view(np.uint64)
    return {"words": _windows(word_tokens, np.repeat(np.arange(len(texts)), counts), n_words,
                              len(texts), _SALT["words"]),
            "chars": _windows(_scramble(points[cjk]), owner[cjk], n_chars, len(texts),
                              _SALT["chars"])}


def _scramble(points: np.ndarray) -> np.ndarray:
    """Code points spread over 64 bits (a multiply-xorshift), like the words' string hashes."""
    x = (points.astype(np.uint64) + np.uint64(0x632BE59BD9B4E019)) * np.uint64(
        0xBF58476D1CE4E5B9)
    return x ^ (x >> np.uint64(31))


def _windows(tokens: np.ndarray, owner: np.ndarray, n: int, n_texts: int,
             salt: np.uint64) -> Windows:
    """The windows of n tokens that lie inside one text (`owner` is sorted)."""
    m = len(tokens) - n + 1
    if m <= 0:
        return np.empty(0, np.uint64), np.empty(0, np.int64), np.empty(0, np.int64)
    acc = np.full(m, salt, np.uint64)
    for k in range(n):
        acc *= _MULTIPLIER
        acc += tokens[k:k + m]
    inside = owner[:m] == owner[n - 1:]
    counts = np.bincount(owner, minlength=n_texts)
    position = np.arange(m) - (np.cumsum(counts) - counts)[owner[:m]]
    return acc[inside], owner[:m][inside], position[inside]
