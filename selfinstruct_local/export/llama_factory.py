"""`dataset_info.json` entries, so that LLaMA-Factory trains on an export as written.

LLaMA-Factory finds a dataset by name in the `dataset_info.json` of its `dataset_dir`; the entry
names the file (relative to that folder), its formatting (alpaca, the default, or sharegpt) and
which columns and message keys hold what. The entry is written beside the export, so
`dataset_dir` is the export's folder and `file_name` is the file's own name. An existing
dataset_info.json keeps its other entries; an entry of the same name is replaced.
"""

from __future__ import annotations

import json
from pathlib import Path

from selfinstruct_local.errors import SigenError

DATASET_INFO = "dataset_info.json"

_SHAREGPT_TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human",
                  "assistant_tag": "gpt"}
_MESSAGES_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                  "assistant_tag": "assistant", "system_tag": "system"}


def dataset_entry(fmt: str, file_name: str, system: bool) -> dict:
    """The entry for one export file; `system`: whether its rows carry a system prompt."""
    if fmt == "messages":  # the system prompt is a first message with role "system"
        return {"file_name": file_name, "formatting": "sharegpt",
                "columns": {"messages": "messages"}, "tags": dict(_MESSAGES_TAGS)}
    extra = {"system": "system"} if system else {}
    if fmt == "sharegpt":
        return {"file_name": file_name, "formatting": "sharegpt",
                "columns": {"messages": "conversations", **extra}, "tags": dict(_SHAREGPT_TAGS)}
    # alpaca, jsonl and parquet hold the same columns (jsonl and parquet add instruction_id,
    # which LLaMA-Factory leaves out); it reads json, jsonl and parquet files alike.
    return {"file_name": file_name,
            "columns": {"prompt": "instruction", "query": "input", "response": "output",
                        **extra}}


def read_dataset_info(path: Path) -> dict:
    """The entries already in `path` ({} if there is none); SigenError if it is not usable."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SigenError(f"cannot read {path} ({exc.strerror}); export into another "
                         "folder") from None
    except (ValueError, RecursionError) as exc:
        raise SigenError(f"{path} is not valid JSON ({exc}); fix or remove it, or export "
                         "into another folder") from None
    if not isinstance(data, dict):
        raise SigenError(f"{path} is not a JSON object of dataset entries; fix or remove it, "
                         "or export into another folder")
    return data


def merged_dataset_info(existing: dict, name: str, entry: dict) -> bytes:
    return (json.dumps({**existing, name: entry}, ensure_ascii=False, indent=2) + "\n"
            ).encode("utf-8")
