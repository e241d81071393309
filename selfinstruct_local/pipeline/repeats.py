"""A cap on generic instructions: one text asked about passage after passage.

Near-duplicates are judged per passage in grounded runs (see grounded.PassageIndexes), so
用几句话概括这段原文的内容 is new for every passage, and a model with a favourite template
would fill a large run with it. `RepeatCap` keeps each instruction text at most `max_repeats`
times in a run and names the rest "repeated_generic". Texts count as one when they differ only
in spacing, punctuation, letter case or full-width forms; a reworded instruction is a new text
(the near-duplicate filter is the tool for wording).
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable

from selfinstruct_local.errors import SigenError

# A few copies of a generic task, each with another passage as its input, teach a model that
# kind of task; every further copy adds data but no new instruction. Three keeps a summary or a
# continuation request for a few passages while a 2,000-task run stays 2,000 different tasks
# but for a handful, where a 135M or 7B model left alone repeats its favourites hundreds of
# times.
DEFAULT_MAX_REPEATS = 3
REASON = "repeated_generic"


def repeat_key(instruction: str) -> str:
    """The instruction folded for counting: NFKC (full-width forms), case, and every space,
    punctuation mark and invisible character removed. Symbols stay: 1+2 is not 12."""
    text = unicodedata.normalize("NFKC", instruction).casefold()
    return "".join(ch for ch in text if unicodedata.category(ch)[0] not in "PZC")


class RepeatCap:
    """Counts instructions kept in a run; `check` says when one has been kept often enough.

    Call `check` before an instruction is accepted and `record` once it is. On resume,
    `rebuild` from the instructions the run already accepted continues the count.
    """

    def __init__(self, max_repeats: int = DEFAULT_MAX_REPEATS) -> None:
        if max_repeats < 1:
            raise SigenError(f"--max-repeats must be at least 1, not {max_repeats}: it is how "
                             "many times one instruction text may be kept in a run")
        self.max_repeats = max_repeats
        self.counts: Counter[str] = Counter()

    @classmethod
    def rebuild(cls, instructions: Iterable[str], max_repeats: int = DEFAULT_MAX_REPEATS
                ) -> RepeatCap:
        cap = cls(max_repeats)
        for instruction in instructions:
            cap.record(instruction)
        return cap

    def check(self, instruction: str) -> str | None:
        """"repeated_generic" when this text was kept `max_repeats` times already, else None."""
        return REASON if self.counts[repeat_key(instruction)] >= self.max_repeats else None

    def record(self, instruction: str) -> None:
        self.counts[repeat_key(instruction)] += 1
