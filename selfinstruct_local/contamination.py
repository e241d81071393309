"""`sigen decontaminate`: which generated tasks share an n-gram with an evaluation benchmark.

As in GPT-3's contamination study (Brown et al. 2020, appendix C), text is lowercased and
stripped of punctuation (here: `text.tokenize`, which also NFKC-normalizes), and a task is
contaminated when one of its fields (instruction, input, output) shares an n-gram with a
benchmark item. One text gives two kinds of n-gram:

- words (the tokens that are not CJK characters): n = 13 by default, the paper's choice (it
  used 8 to 13 words per benchmark, the 5th percentile of the benchmark's item length);
- CJK characters (Han, kana; written without spaces): n = 10 by default. A Chinese word is
  about 1.5 characters, so 13 words would be ~20 characters, longer than the median sentence of
  ../shared/bench/pool_zh.jsonl (18): most short items could then never match. Measured on that
  pool, 10 characters make 1.25% of its sentences share an n-gram with another sentence, about
  what 13 words do on the English pool (1.17%); 8 characters give 3.95%, with stock phrases
  such as 自己倒不好意思的.

A field or an item shorter than n has no n-gram and cannot match.

Near-linear: each n-gram is hashed to 64 bits (a polynomial over its tokens' hashes, computed for
every window at once with numpy). The benchmark's hashes are sorted once, each kept with the
first item of each file that holds it; every n-gram of the tasks is then found by binary search.
A hit is confirmed on the text (the item is read again), so a hash collision flags nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from itertools import chain, compress, islice
from operator import itemgetter, not_
from pathlib import Path

import numpy as np

from selfinstruct_local.errors import SigenError
from selfinstruct_local.quality import CONTAMINATION, CONTAMINATION_META, claim_run, task_ids
from selfinstruct_local.report import load_run
from selfinstruct_local.runstore import RunStore, write_atomic
from selfinstruct_local.text import is_cjk_char, tokenize

N_WORDS = 13
N_CHARS = 10
TASK_FIELDS = ("instruction", "input", "output")
BENCHMARK_SUFFIXES = (".jsonl", ".json", ".txt")
ITEM_CHARS = 300  # of an item's text in contamination.jsonl
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # odd: every step of the polynomial is a bijection
_SALT = {"words": np.uint64(0x5157), "chars": np.uint64(0xC11A)}  # the two kinds never meet
_CHUNK = 50_000  # items hashed together: bounds the temporary lists
_FIRST_CHAR = itemgetter(0)  # a CJK token is one character (and maybe combining marks)


@dataclass(frozen=True)
class Item:
    where: str  # "line 12, question": where in its file, for people
    text: str


@dataclass(frozen=True)
class Overlap:
    task: int  # index in the task list
    field: str
    file: int  # index in the benchmark file list
    item: int  # index of the item in its file (the order `read_items` gives)
    ngram: str
    found_in: Item


# -- n-grams -------------------------------------------------------------------------------


@cache
def _is_cjk(ch: str) -> bool:
    return is_cjk_char(ch)


def split_tokens(text: str) -> tuple[list[str], list[str]]:
    """The text's word tokens and its CJK characters, each in order."""
    tokens = tokenize(text)
    if text.isascii():
        return tokens, []
    # map/compress with a cached test run in C: a third of the time of two comprehensions.
    cjk = list(map(_is_cjk, map(_FIRST_CHAR, tokens)))
    return list(compress(tokens, map(not_, cjk))), list(compress(tokens, cjk))


def ngrams(text: str, n_words: int = N_WORDS, n_chars: int = N_CHARS) -> list[str]:
    """Every n-gram of the text as a string, word n-grams first, each kind in text order."""
    words, chars = split_tokens(text)
    return ([" ".join(words[i:i + n_words]) for i in range(len(words) - n_words + 1)]
            + ["".join(chars[i:i + n_chars]) for i in range(len(chars) - n_chars + 1)])


def _window_hashes(streams: list[list[str]], n: int, salt: np.uint64
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hash, stream, position) of every window of n tokens that lies inside one stream."""
    lengths = np.fromiter(map(len, streams), np.int64, len(streams))
    total = int(lengths.sum())
    if total < n:
        return np.empty(0, np.uint64), np.empty(0, np.int64), np.empty(0, np.int64)
    # Python's string hash is per process, which is all the index needs: it is never stored.
    tokens = np.fromiter(map(hash, chain.from_iterable(streams)), np.int64, total)
    tokens = tokens.view(np.uint64)
    m = total - n + 1
    acc = np.full(m, salt, np.uint64)
    for k in range(n):  # n vector passes instead of a Python loop over every window
        acc *= _MULTIPLIER
        acc += tokens[k:k + m]
    owner = np.repeat(np.arange(len(streams)), lengths)
    inside = owner[:m] == owner[n - 1:]
    starts = np.cumsum(lengths) - lengths
    position = np.arange(m) - starts[owner[:m]]
    return acc[inside], owner[:m][inside], position[inside]


def _hashes(texts: list[str], n_words: int, n_chars: int) -> dict[str, tuple]:
    split = [split_tokens(t) for t in texts]
    return {"words": _window_hashes([w for w, _ in split], n_words, _SALT["words"]),
            "chars": _window_hashes([c for _, c in split], n_chars, _SALT["chars"])}


# -- benchmark files -----------------------------------------------------------------------


def benchmark_files(paths: Iterable[Path]) -> list[Path]:
    """The files to read: each file given, and the .jsonl/.json/.txt files under each folder."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.rglob("*")
                           if p.is_file() and p.suffix.lower() in BENCHMARK_SUFFIXES)
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
    """The items of a benchmark file, in order. JSONL: per line, the strings under `fields`
    (all strings when none are given; strings in nested lists and objects count); .json: a
    list of strings or objects, or one object, the same way; any other file: one item per
    non-blank line."""
    suffix = path.suffix.lower()
    try:
        with path.open(encoding="utf-8-sig") as handle:
            if suffix == ".json":
                try:
                    data = json.load(handle)
                except ValueError as exc:
                    raise SigenError(f"{path}: not valid JSON ({exc})") from None
                records = enumerate(data) if isinstance(data, list) else [(None, data)]
                for k, record in records:
                    yield from _record_items(record, "" if k is None else f"item {k}", fields)
                return
            for lineno, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                if suffix != ".jsonl":
                    yield Item(f"line {lineno}", line.strip())
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    raise SigenError(f"{path}:{lineno}: not valid JSON; fix the line or give "
                                     "the file another name to read it as plain text") from None
                yield from _record_items(record, f"line {lineno}", fields)
    except UnicodeDecodeError as exc:
        raise SigenError(f"{path}: not UTF-8 text (byte {exc.start}); convert it to UTF-8")\
            from None


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


# -- the index -----------------------------------------------------------------------------


class BenchmarkIndex:
    """Every distinct n-gram hash of the benchmark files, sorted, with the files that hold it
    and, per file, the first item that does."""

    def __init__(self, files: list[Path], fields: tuple[str, ...] = (), n_words: int = N_WORDS,
                 n_chars: int = N_CHARS) -> None:
        self.paths, self.fields = files, fields
        self.n_words, self.n_chars = n_words, n_chars
        self.item_counts: list[int] = []
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        file_type = np.min_scalar_type(max(len(files) - 1, 0))
        for number, path in enumerate(files):
            count = 0
            items = read_items(path, fields)
            while batch := list(islice(items, _CHUNK)):
                for hashes, owner, _ in _hashes([i.text for i in batch], n_words,
                                                n_chars).values():
                    parts.append((hashes, np.full(len(hashes), number, file_type),
                                  (owner + count).astype(np.uint32)))
                count += len(batch)
            self.item_counts.append(count)
        hashes = np.concatenate([p[0] for p in parts] or [np.empty(0, np.uint64)])
        file_of = np.concatenate([p[1] for p in parts] or [np.empty(0, file_type)])
        item_of = np.concatenate([p[2] for p in parts] or [np.empty(0, np.uint32)])
        del parts
        # Stable: equal hashes stay in file order, then item order, so the first entry of each
        # (hash, file) run names the file's first item with that n-gram.
        order = np.argsort(hashes, kind="stable")
        hashes = hashes[order]  # one array at a time: each old one is freed at once
        file_of = file_of[order]
        item_of = item_of[order]
        del order
        first = np.ones(len(hashes), bool)
        first[1:] = (hashes[1:] != hashes[:-1]) | (file_of[1:] != file_of[:-1])
        self.hashes, self.file_of, self.item_of = hashes[first], file_of[first], item_of[first]

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
            _hashes(texts, index.n_words, index.n_chars).values()):
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
            grams = _grams_by_place(task.get(field) or "", index)
            for place, entries in hits:
                gram = grams[place]
                for file, item in entries:
                    if file not in files_seen and gram in item_grams[(file, item)]:
                        files_seen.add(file)
                        overlaps.append(Overlap(t, field, file, item, gram,
                                                items[(file, item)]))
    return overlaps


def _grams_by_place(text: str, index: BenchmarkIndex) -> dict[tuple[int, int], str]:
    words, chars = split_tokens(text)
    places = {(0, i): " ".join(words[i:i + index.n_words])
              for i in range(len(words) - index.n_words + 1)}
    places.update({(1, i): "".join(chars[i:i + index.n_chars])
                   for i in range(len(chars) - index.n_chars + 1)})
    return places


def fetch_items(index: BenchmarkIndex, wanted: set[tuple[int, int]]
                ) -> dict[tuple[int, int], Item]:
    """The items named by (file, item index), read again from their files."""
    got: dict[tuple[int, int], Item] = {}
    for file in sorted({f for f, _ in wanted}):
        indices = {i for f, i in wanted if f == file}
        last = max(indices)
        for i, item in enumerate(read_items(index.paths[file], index.fields)):
            if i in indices:
                got[(file, i)] = item
            if i == last:
                break
    return got


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
    """Check every task of a run against the benchmark files; replace contamination.jsonl and
    contamination.json (atomically); return what contamination.json says."""
    if n_words < 1 or n_chars < 1:
        raise SigenError("--n and --n-chars must be at least 1")
    run = load_run(run_dir, warn)
    claim_run(run.root, "decontaminate")
    files = benchmark_files(against)
    index = BenchmarkIndex(files, tuple(fields), n_words, n_chars)
    if not any(index.item_counts):
        hint = f" (no item has the field {', '.join(fields)})" if fields else ""
        raise SigenError(f"the --against files hold no text to compare with{hint}")
    ids = task_ids(run.instances)
    rows = overlap_rows(index, find_overlaps(index, run.instances), ids, run.instances)
    write_atomic(run.root / CONTAMINATION, "".join(
        json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8"))
    meta = {
        "against": [str(p) for p in against], "fields": list(fields),
        "n_words": n_words, "n_chars": n_chars, "tasks_checked": len(ids),
        "contaminated": len({row["id"] for row in rows}),
        "by_file": count_by_file(index, rows),
        "items": {str(p): n for p, n in zip(index.paths, index.item_counts, strict=True)},
    }
    RunStore(run.root).write_json(CONTAMINATION_META, meta)
    return meta
