"""What `sigen decontaminate` recorded in a run directory, benchmark file by benchmark file.

- contamination.jsonl: one row per (task, benchmark file) overlap (contamination.py writes it);
- contamination.json: per benchmark file, how it was checked: its items, the n-gram sizes, the
  fields, how many of the run's tasks there were then, and how many it flagged.

Checks accumulate: checking against a benchmark file again replaces that file's rows and record,
another file adds its own. A task is left out of exports when any row flags it, whatever the
record says (the rows are written first, so a crash between the two writes never un-flags a
task). contamination.json of the first version (one check: `by_file`, `items`, `n_words`, ...)
is read as the record of each of its files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from selfinstruct_local.errors import SigenError
from selfinstruct_local.rowschema import LIST, WHOLE, describe, value_problem
from selfinstruct_local.runstore import CONTAMINATION, CONTAMINATION_META, RunStore

CHECK_KEYS = {"items": WHOLE, "flagged": WHOLE, "tasks_checked": WHOLE, "n_words": WHOLE,
              "n_chars": WHOLE, "fields": LIST}
MEND = ("Restore it, or delete contamination.jsonl and contamination.json and run "
        "`sigen decontaminate` again against every benchmark.")


@dataclass(frozen=True)
class Flags:
    checks: dict[str, dict]  # benchmark file -> how it was checked (CHECK_KEYS)
    rows: list[dict]  # contamination.jsonl

    @property
    def flagged(self) -> set[str]:
        """The ids of the tasks that some benchmark file flags."""
        return {row["id"] for row in self.rows}

    def tasks_by_benchmark(self) -> dict[str, int]:
        """Tasks flagged per benchmark file: every file checked, and any file a row names."""
        tasks: dict[str, set[str]] = {name: set() for name in self.checks}
        for row in self.rows:
            tasks.setdefault(row["benchmark"], set()).add(row["id"])
        return {name: len(ids) for name, ids in tasks.items()}

    def least_checked(self) -> tuple[str, int] | None:
        """The benchmark file checked when the run had the fewest tasks, and that number."""
        if not self.checks:
            return None
        name = min(self.checks, key=lambda n: self.checks[n]["tasks_checked"])
        return name, self.checks[name]["tasks_checked"]


def read_flags(root: Path, warn: Callable[[str], None]) -> Flags | None:
    """The run's contamination record; None when `sigen decontaminate` never ran on it."""
    store = RunStore(root)
    checks = read_checks(store)
    if not store.path(CONTAMINATION).exists():
        if checks is None:
            return None
        flagged = sum(check["flagged"] for check in checks.values())
        if flagged:
            raise SigenError(f"{store.path(CONTAMINATION)} is missing, but "
                             f"{CONTAMINATION_META} says {flagged} overlaps were found. {MEND}")
    return Flags(checks or {}, store.read(CONTAMINATION, warn, repair=False))


def read_checks(store: RunStore) -> dict[str, dict] | None:
    """contamination.json as {benchmark file: its check}; None when there is none."""
    meta = store.read_json(CONTAMINATION_META)
    if meta is None:
        return None
    if isinstance(meta, dict) and "benchmarks" not in meta and isinstance(meta.get("by_file"),
                                                                          dict):
        meta = {"benchmarks": _first_version(meta)}
    if problem := _checks_problem(meta):
        raise SigenError(f"{store.path(CONTAMINATION_META)}: {problem}. {MEND}")
    return meta["benchmarks"]


def _checks_problem(meta: object) -> str | None:
    if not isinstance(meta, dict):
        return f"not a JSON object but {describe(meta)}"
    if not isinstance(meta.get("benchmarks"), dict):
        return "it has no 'benchmarks' object"
    for name, check in meta["benchmarks"].items():
        if not isinstance(check, dict):
            return f"the check of {name} is {describe(check)}, not a JSON object"
        for key, kind in CHECK_KEYS.items():
            problem = f"missing '{key}'" if key not in check else \
                value_problem(key, check[key], kind)
            if problem:
                return f"the check of {name}: {problem}"
    return None


def _first_version(meta: dict) -> dict:
    """The checks of a contamination.json written by the first version (one check of all its
    files at once)."""
    items = meta.get("items") if isinstance(meta.get("items"), dict) else {}
    return {name: {"items": items.get(name), "flagged": flagged,
                   **{key: meta.get(key) for key in ("tasks_checked", "n_words", "n_chars")},
                   "fields": meta.get("fields", [])}
            for name, flagged in meta["by_file"].items()}
