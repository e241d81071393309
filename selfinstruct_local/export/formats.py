"""The shapes of an export file: pure functions from a run's rows to bytes.

A row is one instance of an accepted instruction: {"instruction_id", "instruction", "input",
"output"}. Every format is one that Hugging Face `datasets` loads as written (`json` for the
first four, `parquet` for the last) and that LLaMA-Factory reads through `dataset_info.json`.

- alpaca: a JSON list of {"instruction", "input", "output"}.
- sharegpt: a JSON list of {"id", "conversations": [human, gpt]}; the input, if any, follows the
  instruction after a blank line. A row of several turns (Magpie's `conversation`) is written
  whole, in this format and in messages; the other formats hold its first turn.
- jsonl: one {"instruction", "input", "output", "instruction_id"} object per line.
- messages: one {"messages": [user, assistant]} object per line (OpenAI's chat format).
- parquet: the jsonl columns as a Parquet table of strings.

A system prompt (`--system`) becomes a "system" column in alpaca, jsonl and parquet (the column
LLaMA-Factory's alpaca format reads), a top-level "system" key in sharegpt (LLaMA-Factory's
sharegpt format), and a first {"role": "system"} message in messages.
"""

from __future__ import annotations

import io
import json
from collections import Counter

FORMATS = ("alpaca", "sharegpt", "jsonl", "messages", "parquet")
# Default file names, in the run directory: export.<suffix>.
SUFFIXES = {"alpaca": "alpaca.json", "sharegpt": "sharegpt.json", "jsonl": "jsonl",
            "messages": "messages.jsonl", "parquet": "parquet"}
FLAT_COLUMNS = ("instruction", "input", "output", "instruction_id")


def user_turn(row: dict) -> str:
    """What the user says in a conversation: the instruction, then the input if there is one."""
    return row["instruction"] + (f"\n\n{row['input']}" if row["input"] else "")


def conversation(row: dict) -> list[dict]:
    """The row's messages ({"role", "content"}): every turn of a conversation, or the user's
    turn and the output."""
    return row.get("conversation") or [{"role": "user", "content": user_turn(row)},
                                       {"role": "assistant", "content": row["output"]}]


SHAREGPT_ROLES = {"user": "human", "assistant": "gpt"}


def _with_system(record: dict, system: str | None) -> dict:
    return {**record, "system": system} if system is not None else record


def alpaca_records(rows: list[dict], system: str | None = None) -> list[dict]:
    return [_with_system({k: r[k] for k in ("instruction", "input", "output")}, system)
            for r in rows]


def flat_records(rows: list[dict], system: str | None = None) -> list[dict]:
    return [_with_system({k: r[k] for k in FLAT_COLUMNS}, system) for r in rows]


def sharegpt_records(rows: list[dict], system: str | None = None) -> list[dict]:
    seen: Counter[str] = Counter()
    records = []
    for row in rows:
        # Ids stay stable across exports: the instruction's id and the instance's number in it
        # (the task id that `quality.select_instances` gives, even when tasks are left out).
        seen[row["instruction_id"]] += 1
        records.append(_with_system({
            "id": row.get("id") or f"{row['instruction_id']}-{seen[row['instruction_id']]}",
            "conversations": [{"from": SHAREGPT_ROLES[m["role"]], "value": m["content"]}
                              for m in conversation(row)],
        }, system))
    return records


def messages_records(rows: list[dict], system: str | None = None) -> list[dict]:
    head = [{"role": "system", "content": system}] if system is not None else []
    return [{"messages": [*head, *conversation(r)]} for r in rows]


def _json_lines(records: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def _json_list(records: list[dict]) -> bytes:
    return (json.dumps(records, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def _parquet(records: list[dict], system: str | None) -> bytes:
    import pyarrow as pa  # only here: a heavy import that the other formats do not need
    import pyarrow.parquet as pq

    names = [*FLAT_COLUMNS, *(["system"] if system is not None else [])]
    # An explicit schema: an empty export still has its columns, typed as strings.
    schema = pa.schema([(name, pa.string()) for name in names])
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(records, schema=schema), buffer)
    return buffer.getvalue()


def render(fmt: str, rows: list[dict], system: str | None = None) -> bytes:
    """The export file's bytes for `fmt` (one of FORMATS, already checked)."""
    if fmt == "alpaca":
        return _json_list(alpaca_records(rows, system))
    if fmt == "sharegpt":
        return _json_list(sharegpt_records(rows, system))
    if fmt == "messages":
        return _json_lines(messages_records(rows, system))
    if fmt == "jsonl":
        return _json_lines(flat_records(rows, system))
    return _parquet(flat_records(rows, system), system)
