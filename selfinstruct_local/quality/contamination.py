"""`sigen decontaminate`: which generated tasks share an n-gram with an evaluation benchmark.

As in GPT-3's contamination study (Brown et al. 2020, appendix C), text is lowercased and
stripped of punctuation, and a task is contaminated when one of its fields (instruction, input,
output) shares an n-gram with a benchmark item (see ngrams.py for how text is cut):

- words: n = 13 by default, the paper's choice (it used 8 to 13 words per benchmark, the 5th
  percentile of the benchmark's item length);
- CJK characters: n = 10 by default. A Chinese word is about 1.5 characters, so 13 words would
  be ~20 characters, longer than the median sentence of ../shared/bench/pool_zh.jsonl (18):
  most short items could then never match. Measured on that pool, 10 characters make 1.25% of
  its sentences share an n-gram with another sentence, about what 13 words do on the English
  pool (1.17%); 8 characters give 3.95%, with stock phrases such as 自己倒不好意思的.

A field or an item shorter than n has no n-gram and cannot match.

Near-linear: the benchmark's n-grams are hashed to 64 bits and sorted once, each hash kept with
the first item of each file that holds it; every n-gram of the tasks is then found by binary
search. A hit is confirmed on the item's text (its record is read again), so a hash collision
flags nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from selfinstruct_local.errors import SigenError
from selfinstruct_local.quality.benchmarks import Item, benchmark_files, read_records
from selfinstruct_local.quality.flags import read_flags
from selfinstruct_local.quality.gate import claim_run, task_ids
from selfinstruct_local.quality.ngrams import N_CHARS, N_WORDS, hash_windows, ngrams, ngrams_by_kind
from selfinstruct_local.runstore import (
    CONTAMINATION,
    CONTAMINATION_META,
    RunStore,
    load_run,
    write_atomic,
)

TASK_FIELDS = ("instruction", "input", "output")
ITEM_CHARS = 300  # of an item's text in contamination.jsonl
_CHUNK = 50_000  # items hashed together: bounds the temporary lists


@dataclass(frozen=True)
class Overlap:
    task: int  # index in the task list
    field: str
    file: int  # index in the benchmark file list
    item: int  # index of the item in its file (the order `benchmarks.read_items` gives)
    ngram: str
    found_in: Item


# -- the index -----------------------------------------------------------------------------


class BenchmarkIndex:
    """Every distinct n-gram hash of the benchmark files, sorted, with the files that hold it
    and, per file, the first item that does."""

    def __init__(self, files: list[Path], fields: tuple[str, ...] = (), n_words: int = N_WORDS,
                 n_chars: int = N_CHARS) -> None:
        self.paths, self.fields = files, fields
        self.n_words, self.n_chars = n_words, n_chars
        self.item_counts: list[int] = []
        self.record_of: list[np.ndarray] = []  # per file: each item's record (to read it again)
        hashes: list[np.ndarray] = []
        file_of: list[np.ndarray] = []
        item_of: list[np.ndarray] = []
        file_type = np.min_scalar_type(max(len(files) - 1, 0))
        for number, path in enumerate(files):
            count, records = 0, []
            for texts, batch_records in _batches(path, fields):
                windows = hash_windows(texts, n_words, n_chars).values()
                # Each batch's first item per n-gram only (np.unique's index is the first
                # occurrence; each kind's windows come in item order): benchmarks repeat.
                unique, first = np.unique(np.concatenate([w[0] for w in windows]),
                                          return_index=True)
                hashes.append(unique)
                file_of.append(np.full(len(unique), number, file_type))
                owner = np.concatenate([w[1] for w in windows])
                item_of.append((owner[first] + count).astype(np.uint32))
                records.append(np.array(batch_records, np.uint32))
                count += len(texts)
            self.item_counts.append(count)
            self.record_of.append(np.concatenate(records or [np.empty(0, np.uint32)]))
        # Stable: equal hashes keep file order, then item order, so the first entry of each
        # (hash, file) run names the file's first item with that n-gram. One array at a time,
        # each list freed as soon as it is joined: the peak is what sets the memory needed.
        joined = _join(hashes, np.uint64)
        order = np.argsort(joined, kind="stable")
        self.hashes = joined[order]
        del joined
        self.file_of = _join(file_of, file_type)[order]
        self.item_of = _join(item_of, np.uint32)[order]
        del order
        first = np.ones(len(self.hashes), bool)
        first[1:] = ((self.hashes[1:] != self.hashes[:-1])
                     | (self.file_of[1:] != self.file_of[:-1]))
        self.hashes, self.file_of = self.hashes[first], self.file_of[first]
        self.item_of = self.item_of[first]

    def lookup(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each hash, the range [start, end) of its entries (empty when absent)."""
        return (np.searchsorted(self.hashes, hashes, "left"),
                np.searchsorted(self.hashes, hashes, "right"))


def find_overlaps(index: BenchmarkIndex, tasks: list[dict]) -> list[Overlap]:
    """For each task and each benchmark file, the first n-gram of the task (instruction, then
    input, then output; words before characters; in text order) that an item of the file holds,
    with the first such item. Confirmed on the text of the items."""
    texts = list(dict.fromkeys(t.get(f) or "" for t in tasks for f in TASK_FIELDS))
    number = {text: k for k, text in enumerate(texts)}
    found: dict[int, list[tuple[tuple[int, int], list[tuple[int, int]]]]] = {}
    for kind_rank, (hashes, owner, position) in enumerate(
            hash_windows(texts, index.n_words, index.n_chars).values()):
        start, end = index.lookup(hashes)
        for w in np.flatnonzero(end > start):
            entries = [(int(index.file_of[e]), int(index.item_of[e]))
                       for e in range(start[w], end[w])]
            found.setdefault(int(owner[w]), []).append(((kind_rank, int(position[w])), entries))
    needed = {entry for hits in found.values() for _, entries in hits for entry in entries}
    items = fetch_items(index, needed)
    item_grams = {key: set(ngrams(item.text, index.n_words, index.n_chars))
                  for key, item in items.items()}
    overlaps = []
    for t, task in enumerate(tasks):
        files_seen: set[int] = set()
        for field in TASK_FIELDS:
            hits = sorted(found.get(number[task.get(field) or ""], []))
            if not hits:
                continue
            grams = ngrams_by_kind(task.get(field) or "", index.n_words, index.n_chars)
            for (kind, position), entries in hits:
                gram = grams[kind][position]
                for file, item in entries:
                    if file not in files_seen and gram in item_grams[(file, item)]:
                        files_seen.add(file)
                        overlaps.append(Overlap(t, field, file, item, gram,
                                                items[(file, item)]))
    return overlaps


def fetch_items(index: BenchmarkIndex, wanted: set[tuple[int, int]]
                ) -> dict[tuple[int, int], Item]:
    """The items named by (file, item index), read again: only their records are parsed."""
    got: dict[tuple[int, int], Item] = {}
    for file in sorted({f for f, _ in wanted}):
        numbers = {i for f, i in wanted if f == file}
        record_of = index.record_of[file]
        records = {int(record_of[i]) for i in numbers}
        for record, items in read_records(index.paths[file], index.fields, only=records):
            first = int(np.searchsorted(record_of, record))  # its first item's number
            for k, item in enumerate(items):
                if first + k in numbers:
                    got[(file, first + k)] = item
    return got


def _batches(path: Path, fields: tuple[str, ...]) -> Iterator[tuple[list[str], list[int]]]:
    """A file's item texts, with each item's record number, about _CHUNK at a time."""
    texts: list[str] = []
    records: list[int] = []
    for record, items in read_records(path, fields):
        texts += (item.text for item in items)
        records += [record] * len(items)
        if len(texts) >= _CHUNK:
            yield texts, records
            texts, records = [], []
    if texts:
        yield texts, records


def _join(parts: list[np.ndarray], dtype) -> np.ndarray:
    """One array from the parts, emptying the list (its arrays are freed with it)."""
    joined = np.concatenate(parts or [np.empty(0, dtype)])
    parts.clear()
    return joined


def overlap_rows(index: BenchmarkIndex, overlaps: list[Overlap], ids: list[str],
                 tasks: list[dict]) -> list[dict]:
    """contamination.jsonl's rows."""
    rows = []
    for o in overlaps:
        item = o.found_in
        text = item.text if len(item.text) <= ITEM_CHARS else item.text[:ITEM_CHARS] + "…"
        rows.append({"id": ids[o.task], "instruction_id": tasks[o.task].get("instruction_id"),
                     "field": o.field, "benchmark": str(index.paths[o.file]), "item": o.item,
                     "where": item.where, "item_text": text, "ngram": o.ngram})
    return rows


def count_by_file(index: BenchmarkIndex, rows: list[dict]) -> dict[str, int]:
    counts = {str(p): 0 for p in index.paths}
    for row in rows:
        counts[row["benchmark"]] += 1
    return counts


# -- the command ---------------------------------------------------------------------------


def decontaminate_run(run_dir: Path | str, against: Iterable[Path], fields: Iterable[str] = (),
                      n_words: int = N_WORDS, n_chars: int = N_CHARS,
                      warn: Callable[[str], None] = print) -> dict:
    """Check every task of a run against the benchmark files, and record what each file flags
    (flags.py): the rows and checks of these files replace theirs from an earlier call, those
    of other files stay. Both files are replaced atomically, the rows first. Returns what this
    call found per file (`by_file`, `items`), and which files the run is now checked against
    (`benchmarks`) with the tasks they flag together (`flagged`)."""
    if n_words < 1 or n_chars < 1:
        raise SigenError("--n and --n-chars must be at least 1")
    run = load_run(run_dir, warn)
    claim_run(run.root, "decontaminate")
    earlier = read_flags(run.root, warn)  # checked before the work: a damaged record stops it
    # Absolute paths: the same file checked again from another folder is the same benchmark.
    files = [path.resolve() for path in benchmark_files(against)]
    index = BenchmarkIndex(files, tuple(fields), n_words, n_chars)
    if not any(index.item_counts):
        hint = f" (no item has the field {', '.join(fields)})" if fields else ""
        raise SigenError(f"the --against files hold no text to compare with{hint}")
    ids = task_ids(run.instances)
    rows = overlap_rows(index, find_overlaps(index, run.instances), ids, run.instances)
    by_file = count_by_file(index, rows)
    checks = {name: {"items": items, "flagged": by_file[name], "tasks_checked": len(ids),
                     "n_words": n_words, "n_chars": n_chars, "fields": list(fields)}
              for name, items in zip(by_file, index.item_counts, strict=True)}
    if earlier is not None:
        rows = [row for row in earlier.rows if row["benchmark"] not in checks] + rows
        checks = {**{k: v for k, v in earlier.checks.items() if k not in checks}, **checks}
    write_atomic(run.root / CONTAMINATION, "".join(
        json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8"))
    RunStore(run.root).write_json(CONTAMINATION_META, {"benchmarks": checks})
    return {
        "tasks_checked": len(ids), "by_file": by_file,
        "items": {name: checks[name]["items"] for name in by_file},
        "contaminated": len({row["id"] for row in rows if row["benchmark"] in by_file}),
        "benchmarks": sorted({*checks, *(row["benchmark"] for row in rows)}),
        "flagged": len({row["id"] for row in rows}),
    }
