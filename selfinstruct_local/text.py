"""The project's one tokenizer: ROUGE-compatible on ASCII, CJK-aware everywhere else.

Algorithm:
1. NFKC-normalize (full-width letters, half-width kana, ligatures, Kangxi radicals and
   compatibility ideographs fold to their plain forms), then lowercase.
2. Every Han ideograph, Hiragana or Katakana character is one token on its own: Chinese and
   Japanese are written without spaces, so one character is the only segmentation that needs no
   dictionary and that makes ROUGE-L over characters meaningful.
3. Any other token is a maximal run of letters and digits (exactly what ``str.isalnum``
   accepts). Combining marks (Unicode categories Mn, Mc, Me) continue the token before them,
   CJK or not: in Devanagari, Thai and many other scripts vowel signs are marks, and splitting
   words at each of them would shred them; a variation selector belongs to its ideograph. A mark
   with no token right before it (after a space or punctuation) is a separator. Everything else
   separates tokens.

On ASCII input this is exactly rouge_score's default tokenizer without stemming (lowercase,
every character outside ``[a-z0-9]`` separates), which the tests check.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from functools import cache

# Characters that are a token each. Ranges are carved so that the punctuation living in these
# blocks (U+30A0 double hyphen, U+30FB middle dot, U+309B/C spacing sound marks) stays a
# separator; ``is_cjk_char`` additionally requires ``isalnum`` so that unassigned code points
# inside the Han blocks are not tokens either.
_CJK_RANGES: tuple[tuple[int, int], ...] = (
    (0x3005, 0x3007),  # iteration mark, closing mark, ideographic zero
    (0x3021, 0x3029),  # Hangzhou numerals
    (0x3031, 0x3035),  # vertical kana repeat marks
    (0x3038, 0x303C),  # more Han numerals and marks
    (0x3041, 0x3096),  # Hiragana letters
    (0x309D, 0x309F),  # Hiragana iteration marks, digraph yori
    (0x30A1, 0x30FA),  # Katakana letters
    (0x30FC, 0x30FF),  # prolonged sound mark, iteration marks, digraph koto
    (0x31F0, 0x31FF),  # Katakana phonetic extensions
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xF900, 0xFAFF),  # compatibility ideographs that NFKC leaves alone
    (0x16FE3, 0x16FE3),  # old Chinese iteration mark
    (0x1AFF0, 0x1B16F),  # Kana extensions and supplements
    (0x20000, 0x3FFFF),  # planes 2 and 3 hold nothing but CJK ideographs
)

_ASCII_TOKEN_RE = re.compile(r"[a-z0-9]+")


def _class_body(ranges: list[tuple[int, int]]) -> str:
    """Character-class body (no brackets) matching the inclusive code point ranges."""
    return "".join(f"{re.escape(chr(lo))}-{re.escape(chr(hi))}" for lo, hi in ranges)


def _ranges_where(
    pred: Callable[[str], bool], spans: Iterable[tuple[int, int]]
) -> list[tuple[int, int]]:
    """Maximal ranges of the code points in ``spans`` that satisfy ``pred``."""
    ranges: list[tuple[int, int]] = []
    for lo, hi in spans:
        for cp in range(lo, hi + 1):
            if pred(chr(cp)):
                if ranges and ranges[-1][1] == cp - 1:
                    ranges[-1] = (ranges[-1][0], cp)
                else:
                    ranges.append((cp, cp))
    return ranges


def _is_mark(ch: str) -> bool:
    return unicodedata.category(ch)[0] == "M"


@cache
def _token_re(bmp_only: bool) -> re.Pattern[str]:
    """The Unicode token pattern, built on first use (scanning the Unicode tables takes ~50 ms).

    Two variants: re matches a class of Basic Multilingual Plane characters with a bitmap, but a
    class that also holds astral characters with a linear list of ranges, ~30x slower. Nearly all
    text is BMP-only, so it gets the fast pattern; the full one is for text with astral chars.
    """
    top = 0xFFFF if bmp_only else 0x10FFFF
    cjk_spans = [(lo, min(hi, top)) for lo, hi in _CJK_RANGES if lo <= top]
    # Marks live only in planes 0, 1 and 14 (variation selectors).
    mark_spans = [(0, min(0x1FFFF, top))] + ([] if bmp_only else [(0xE0000, 0xE0FFF)])
    cjk = _class_body(_ranges_where(str.isalnum, cjk_spans))
    marks = _class_body(_ranges_where(_is_mark, mark_spans))
    # In Python's re, \w is exactly str.isalnum() plus "_", so [^\W_...] is "alnum but not ...".
    # Its CJK exclusion may use the raw spans: non-alnum code points there are \W anyway.
    word = rf"[^\W_{_class_body(cjk_spans)}]"
    return re.compile(rf"[{cjk}][{marks}]*|{word}(?:{word}|[{marks}])*")


def normalize(text: str) -> str:
    """NFKC then lowercase: the form in which tokens are taken."""
    return unicodedata.normalize("NFKC", text).lower()


def tokenize(text: str) -> list[str]:
    """Tokens of ``text`` (see the module docstring for the exact rules)."""
    if text.isascii():
        # Fast path and the ROUGE-compatible case: NFKC is the identity on ASCII.
        return _ASCII_TOKEN_RE.findall(text.lower())
    text = normalize(text)
    return _token_re(max(text, default="") <= "\uffff").findall(text)


def count_words(text: str) -> int:
    """Number of tokens; each CJK character counts as one word."""
    return len(tokenize(text))


_CJK_FIRST = min(lo for lo, _ in _CJK_RANGES)  # below it (ASCII, Latin ...): not CJK, fast


def is_cjk_char(ch: str) -> bool:
    """True if ``ch`` is a Han ideograph, Hiragana or Katakana letter: a token on its own.

    A token (``tokenize`` output) is judged by its first character, since a CJK token is one
    such character, possibly followed by combining marks (say, a variation selector).
    """
    if not ch or not ch[0].isalnum():
        return False
    cp = ord(ch[0])
    return cp >= _CJK_FIRST and any(lo <= cp <= hi for lo, hi in _CJK_RANGES)
