"""What a row of each run file must hold: its keys and their JSON types.

Taken from what the writers write (pipeline/screen.py and loop.py, pipeline/stages.py, the
methods, quality/judge.py, quality/contamination.py) and limited to what the readers rely on,
so that a damaged row is one error naming its key instead of a KeyError or TypeError deep in
`sigen stats`, `sigen export` or a resume. Keys a file does not list are allowed: rows of other
versions and methods carry extra keys.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

# The kinds of value a key may hold, each with the words an error message uses.
TEXT = "a string"
WHOLE = "a whole number"
NUMBER = "a number"
LIST = "a list"
OBJECT = "a JSON object"
FLAG_OR_NULL = "true, false or null"
NUMBER_OR_NULL = "a number or null"
TEXT_OR_NULL = "a string or null"
SCORE = "a whole number from 1 to 5, or null"
PASSAGE = "a JSON object with a string 'id'"
MESSAGES = "a list of JSON objects with a string 'role' and 'content'"
STAGE = "'instruction' or 'instance'"


def _number(value: object) -> bool:
    # NaN and infinities are valid JSON to Python's parser but break every sum and histogram.
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


_CHECKS: dict[str, Callable[[object], bool]] = {
    TEXT: lambda v: isinstance(v, str),
    WHOLE: lambda v: isinstance(v, int) and not isinstance(v, bool),
    NUMBER: _number,
    LIST: lambda v: isinstance(v, list),
    OBJECT: lambda v: isinstance(v, dict),
    FLAG_OR_NULL: lambda v: v is None or isinstance(v, bool),
    NUMBER_OR_NULL: lambda v: v is None or _number(v),
    TEXT_OR_NULL: lambda v: v is None or isinstance(v, str),
    SCORE: lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)
                                   and 1 <= v <= 5),
    PASSAGE: lambda v: isinstance(v, dict) and isinstance(v.get("id"), str),
    MESSAGES: lambda v: isinstance(v, list) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str)
        and isinstance(m.get("content"), str) for m in v),
    STAGE: lambda v: v in ("instruction", "instance"),
}


def describe(value: object) -> str:
    """A JSON value in a few words: 'a string', 'null', '7', 'a list'."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)[:20]
    if isinstance(value, str):
        return f"the string {value[:30]!r}" if len(value) <= 30 else "a string"
    return {list: "a list", dict: "a JSON object"}.get(type(value), "a value")


def value_problem(key: str, value: object, kind: str) -> str | None:
    """What is wrong with `value` as `kind`, in words; None when nothing is."""
    if _CHECKS[kind](value):
        return None
    shown = "a string" if isinstance(value, str) and kind != STAGE else describe(value)
    return f"'{key}' is {shown}, not {kind}"


@dataclass(frozen=True)
class RowSchema:
    """Required and optional keys with their kinds; `extra` adds checks that depend on the
    row (a rejected row's stage)."""

    required: dict[str, str]
    optional: dict[str, str] = field(default_factory=dict)
    extra: Callable[[dict], str | None] | None = None

    def problem(self, row: dict) -> str | None:
        for key, kind in self.required.items():
            if key not in row:
                return f"missing '{key}'"
            if problem := value_problem(key, row[key], kind):
                return problem
        for key, kind in self.optional.items():
            if key in row and (problem := value_problem(key, row[key], kind)):
                return problem
        return self.extra(row) if self.extra is not None else None


_SIMILARITY = {"most_similar": LIST, "avg_similarity": NUMBER_OR_NULL,
               "max_similarity": NUMBER_OR_NULL}

# pending.jsonl (screen.py): an instruction that passed the filters, with what its method's
# later steps read back on resume (an Alpaca task's input and output, a grounded task's passage).
PENDING_ROW = RowSchema(
    required={"id": TEXT, "round": WHOLE, "instruction": TEXT},
    optional={"stage": TEXT, "input": TEXT, "output": TEXT, "kind": TEXT, "passage": PASSAGE,
              **_SIMILARITY})

# machine_instructions.jsonl (loop.py `_finalize`): an instruction finished with instances.
INSTRUCTION_ROW = RowSchema(
    required={"id": TEXT, "instruction": TEXT, "round": WHOLE, "num_instances": WHOLE},
    optional={"is_classification": FLAG_OR_NULL, **_SIMILARITY})

# instances.jsonl (loop.py `_finalize`): one instance of an instruction; a multi-turn one
# (Magpie) holds every turn as `conversation`, which ShareGPT and messages exports write.
INSTANCE_ROW = RowSchema(
    required={"instruction_id": TEXT, "instruction": TEXT, "input": TEXT, "output": TEXT},
    optional={"conversation": MESSAGES})

# Rejections whose row names the pending instruction they end (loop.py `_finalize`).
FINAL_REJECTIONS = ("no_valid_instances", "target_reached")


def _rejected_extra(row: dict) -> str | None:
    if row["stage"] == "instance":
        return RowSchema({}, {"instruction_id": TEXT, "round": WHOLE, "input": TEXT,
                              "output": TEXT}).problem(row)
    # An instruction rejected by the filters (screen.py) has no id; one that ended without
    # instances, or after the target was reached, has the id of its pending row.
    ends_pending = row["reason"] in FINAL_REJECTIONS
    return RowSchema({"round": WHOLE, **({"id": TEXT} if ends_pending else {})},
                     {"id": TEXT, "instruction": TEXT}).problem(row)


# rejected.jsonl: a dropped instruction (screen.py, loop.py) or instance (stages.py).
REJECTED_ROW = RowSchema(required={"stage": STAGE, "reason": TEXT}, extra=_rejected_extra)

# scores.jsonl (quality/judge.py): the judge's score of one task; a later row for the same id
# replaces an earlier one.
SCORE_ROW = RowSchema(
    required={"id": TEXT, "score": SCORE},
    optional={"instruction_id": TEXT, "judge": TEXT, "reason": TEXT_OR_NULL, "attempts": WHOLE,
              "reply": TEXT})

# embeddings.jsonl (semantic_rows.py): a pool instruction's vector, base64 of float32 values.
EMBEDDING_ROW = RowSchema(required={"id": TEXT, "vector": TEXT})

# contamination.jsonl (quality/contamination.py): a task that shares an n-gram with an item of
# one benchmark file.
CONTAMINATION_ROW = RowSchema(
    required={"id": TEXT, "benchmark": TEXT},
    optional={"instruction_id": TEXT_OR_NULL, "field": TEXT, "item": WHOLE, "where": TEXT,
              "item_text": TEXT, "ngram": TEXT})
