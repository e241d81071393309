"""Reading evaluation benchmarks for `sigen decontaminate`: files, records and items.

A record is a line of a JSONL or plain-text file, or an element of a JSON list (a JSON object
alone is one record). Its items are the texts compared with the generated tasks: the strings
under the chosen fields of a JSON object (every string value when no field is chosen; strings
in nested lists and objects count), a JSON string itself, or a line of plain text. Items are
numbered in file order; `where` says where each is, for people ("line 12, question").
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from selfinstruct_local.errors import SigenError

SUFFIXES = (".jsonl", ".json", ".txt")  # what a folder is searched for; a file given is read


@dataclass(frozen=True)
class Item:
    where: str
    text: str


def benchmark_files(paths: Iterable[Path]) -> list[Path]:
    """The files to read: each file given, and the .jsonl/.json/.txt files under each folder,
    sorted; each once."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.rglob("*")
                           if p.is_file() and p.suffix.lower() in SUFFIXES)
            if not found:
                raise SigenError(f"--against {path}: the folder holds no .jsonl, .json or .txt "
                                 "file")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise SigenError(f"--against {path}: no such file or folder")
    return list(dict.fromkeys(files))


def read_items(path: Path, fields: tuple[str, ...] = ()) -> Iterator[Item]:
    """Every item of a benchmark file, in order."""
    for _, items in read_records(path, fields):
        yield from items


def read_records(path: Path, fields: tuple[str, ...] = (), only: set[int] | None = None
                 ) -> Iterator[tuple[int, list[Item]]]:
    """(record number, its items) for every record with items; with `only`, just those
    records (the other lines are not parsed)."""
    try:
        with path.open(encoding="utf-8-sig") as handle:
            if path.suffix.lower() == ".json":
                yield from _json_records(path, handle.read(), fields, only)
                return
            jsonl = path.suffix.lower() == ".jsonl"
            for number, line in enumerate(handle):
                if (only is not None and number not in only) or not line.strip():
                    continue
                if not jsonl:
                    yield number, [Item(f"line {number + 1}", line.strip())]
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    raise SigenError(f"{path}:{number + 1}: not valid JSON; fix the line, or "
                                     "give the file another suffix to read it as plain text"
                                     ) from None
                items = list(_record_items(record, f"line {number + 1}", fields))
                if items:
                    yield number, items
    except UnicodeDecodeError as exc:
        raise SigenError(f"{path}: not UTF-8 text (byte {exc.start}); convert it to UTF-8"
                         ) from None


def _json_records(path: Path, text: str, fields: tuple[str, ...], only: set[int] | None
                  ) -> Iterator[tuple[int, list[Item]]]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise SigenError(f"{path}: not valid JSON ({exc})") from None
    records = enumerate(data) if isinstance(data, list) else [(None, data)]
    for number, record in records:
        if only is None or (number or 0) in only:
            items = list(_record_items(record, "" if number is None else f"item {number}",
                                       fields))
            if items:
                yield number or 0, items


def _record_items(record: object, where: str, fields: tuple[str, ...]) -> Iterator[Item]:
    if isinstance(record, dict):
        for key in fields or tuple(record):
            if key in record:
                yield from _strings(record[key], f"{where}, {key}" if where else str(key))
    else:
        yield from _strings(record, where)


def _strings(value: object, where: str) -> Iterator[Item]:
    if isinstance(value, str):
        if value.strip():
            yield Item(where, value)
    elif isinstance(value, list):
        for k, element in enumerate(value):
            yield from _strings(element, f"{where}[{k}]")
    elif isinstance(value, dict):
        for key, element in value.items():
            yield from _strings(element, f"{where}.{key}")
