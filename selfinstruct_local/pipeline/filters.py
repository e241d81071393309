"""Filters for new instructions and their instances. Each returns None (keep) or a reason.

A reason is a short name, optionally followed by ":detail" (e.g. "blacklist:image"); counters use
the part before the colon. The near-duplicate check is not here: it needs the pool, so it lives in
`selfinstruct_local.dedup` and runs after these cheap checks.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Callable

from selfinstruct_local.seeds import Instance
from selfinstruct_local.text import count_words

MIN_WORDS = 3  # an instruction of at most this many words is dropped
MAX_WORDS = 150

BLACKLIST = {
    "en": (
        "image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map",
        "maps", "draw", "plot", "go to", "video", "audio", "music", "flowchart", "diagram",
    ),
}


def too_short(instruction: str, lang: str = "en") -> str | None:
    return "too_short" if count_words(instruction) <= MIN_WORDS else None


def too_long(instruction: str, lang: str = "en") -> str | None:
    return "too_long" if count_words(instruction) > MAX_WORDS else None


def _blacklist_regex(words: tuple[str, ...]) -> re.Pattern[str]:
    # Whole words only, any case: "plot" is dropped, "plotter" and "snapshot" are not.
    alternatives = "|".join(re.escape(w).replace(r"\ ", r"\s+") for w in words)
    return re.compile(rf"(?<!\w)({alternatives})(?!\w)", re.IGNORECASE)


_BLACKLIST_RE = {lang: _blacklist_regex(words) for lang, words in BLACKLIST.items()}


def blacklisted_word(instruction: str, lang: str = "en") -> str | None:
    pattern = _BLACKLIST_RE.get(lang)
    match = pattern.search(instruction) if pattern else None
    return f"blacklist:{' '.join(match.group(1).lower().split())}" if match else None


def starts_with_punctuation(instruction: str, lang: str = "en") -> str | None:
    first = instruction.lstrip()[:1]
    if first and unicodedata.category(first)[0] in "PS":
        return "starts_with_punctuation"
    return None


def starts_with_write_a_program(instruction: str, lang: str = "en") -> str | None:
    if instruction.lstrip().lower().startswith("write a program"):
        return "write_a_program"
    return None


INSTRUCTION_FILTERS: tuple[Callable[[str, str], str | None], ...] = (
    too_short,
    too_long,
    blacklisted_word,
    starts_with_punctuation,
    starts_with_write_a_program,
)


def check_instruction(instruction: str, lang: str = "en") -> str | None:
    """The first reason to drop the instruction, or None to keep it."""
    for check in INSTRUCTION_FILTERS:
        reason = check(instruction, lang)
        if reason:
            return reason
    return None


def copy_key(text: str) -> str:
    """Text folded for the copied-example check: case, spacing and wrapping quotes ignored."""
    return " ".join(text.casefold().split()).strip("\"'“”‘’「」 ")


def reason_key(reason: str) -> str:
    return reason.split(":", 1)[0]


def filter_instances(
    instances: list[Instance], examples: frozenset[str] = frozenset()
) -> tuple[list[Instance], list[tuple[Instance, str]]]:
    """Kept instances (first occurrence order) and the dropped ones with their reasons.

    `examples` are the normalized inputs and outputs of the prompt's few-shot examples; an
    instance that repeats one of them was copied, not generated for its task.

    Drops empty outputs, an input equal to its output, exact duplicates, and every instance whose
    input also appears with a different output (the task is then ambiguous for that input). The
    one exception is the empty input of an open-ended task ("Give three tips ..."), where several
    answers are all right: the first is kept and the others are dropped, so the task keeps data.
    """
    kept: list[Instance] = []
    dropped: list[tuple[Instance, str]] = []
    seen: set[tuple[str, str]] = set()
    for inst in instances:
        inp, out = inst.input.strip(), inst.output.strip()
        if not out:
            dropped.append((inst, "empty_output"))
        elif inp and inp == out:
            dropped.append((inst, "input_equals_output"))
        elif examples and (copy_key(inp) in examples or copy_key(out) in examples):
            dropped.append((inst, "copied_example"))
        elif (inp, out) in seen:
            dropped.append((inst, "duplicate_instance"))
        else:
            seen.add((inp, out))
            kept.append(Instance(input=inp, output=out))
    outputs_per_input = Counter(inst.input for inst in kept)
    conflicting = {inp for inp, n in outputs_per_input.items() if n > 1}
    result: list[Instance] = []
    for inst in kept:
        first_open_ended = inst.input == "" and not any(r.input == "" for r in result)
        if inst.input not in conflicting or first_open_ended:
            result.append(inst)
        else:
            dropped.append((inst, "conflicting_outputs"))
    return result, dropped
