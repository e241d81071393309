"""The quality gate's common ground: task ids, the judge's and the decontamination's files, and
which tasks an export keeps.

A task is one instance (instruction, input, output) of an accepted instruction. Its id is the
instruction's id and the instance's number in it, `mi-000012-2`, as in ShareGPT exports: stable
across resumes, since all instances of an instruction are written at once, before it is accepted.

- scores.jsonl (`sigen judge`): append-only, one row per judged task, `score` 1-5 or null when
  the judge's reply could not be read; a later row for the same id replaces an earlier one.
- contamination.jsonl and contamination.json (`sigen decontaminate`): the tasks each benchmark
  file flags, and how each was checked (flags.py).
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

from selfinstruct_local.errors import SigenError
from selfinstruct_local.quality.flags import read_flags
from selfinstruct_local.runlock import describe, hold_run_lock, run_writer
from selfinstruct_local.runstore import (  # noqa: F401  (the quality files' names, from here too)
    CONTAMINATION,
    CONTAMINATION_META,
    INSTANCES,
    SCORES,
    RunStore,
)

SCORES_RANGE = range(1, 6)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def claim_run(root: Path, command: str) -> None:
    """Take the run's lock (one writer per run directory) for `sigen <command>`."""
    writer = run_writer(root)
    if writer is not None:
        raise SigenError(f"{root} is being written by another sigen process ({describe(writer)})"
                         f". Run `sigen {command}` again once it has finished.")
    hold_run_lock(root)


def task_ids(instances: Iterable[dict]) -> list[str]:
    """Each instance's id, in order: `<instruction_id>-<number of the instance in it>`."""
    seen: Counter[str] = Counter()
    ids = []
    for row in instances:
        seen[row["instruction_id"]] += 1
        ids.append(f"{row['instruction_id']}-{seen[row['instruction_id']]}")
    return ids


def read_scores(root: Path, warn: Callable[[str], None] = _stderr) -> dict[str, dict]:
    """The latest score row of each judged task; the file is not changed (its writers repair
    it before they append: `sigen judge`, and a resumed run in `load_state`)."""
    return {row["id"]: row for row in RunStore(root).read(SCORES, warn, repair=False)}


def check_one_judge(root: Path, scores: dict[str, dict], judge: str) -> None:
    """One judge per scores.jsonl: the histogram and --min-score would mean nothing if two
    judges' scales were mixed."""
    others = {str(r.get("judge")) for r in scores.values()} - {judge}
    if others:
        raise SigenError(
            f"{root / SCORES} holds scores by {', '.join(sorted(others))}; one judge per "
            f"run. Judge with --model {sorted(others)[0]}, or move that file away to start "
            f"over with {judge}.")


def tasks_to_judge(instances: list[dict], scores: dict[str, dict],
                   retry_unparsed: bool = False) -> list[tuple[str, dict]]:
    """(id, instance row) of the tasks without a score row yet (`retry_unparsed`: or with an
    unreadable one)."""
    return [(ident, row) for ident, row in zip(task_ids(instances), instances, strict=True)
            if ident not in scores
            or (retry_unparsed and scores[ident].get("score") is None)]


def unjudged_tasks(root: Path, judge: str, warn: Callable[[str], None] = _stderr,
                   instances: list[dict] | None = None, retry_unparsed: bool = False
                   ) -> list[tuple[str, dict]]:
    """The tasks of the run in `root` without a score yet (`retry_unparsed`: or with an
    unreadable one); scores by another judge are refused. Nothing is changed.
    `instances`: the run's instance rows, when already read."""
    scores = read_scores(root, warn)
    check_one_judge(root, scores, judge)
    if instances is None:
        instances = RunStore(root).read(INSTANCES, warn, repair=False)
    return tasks_to_judge(instances, scores, retry_unparsed)


def select_instances(run, min_score: int | None = None, keep_contaminated: bool = False,
                     warn: Callable[[str], None] = _stderr) -> tuple[list[dict], dict[str, int]]:
    """The instances of `run` (runstore.Run) an export keeps, each with its task `id` added, and
    how many were left out why:
    `contaminated` (unless `keep_contaminated`), and with `min_score` `below_min_score`,
    `unparsed` (the judge's reply had no readable score) and `unscored` (not judged yet).
    A task left out for two reasons counts once, under the first of these."""
    ids = task_ids(run.instances)
    left_out: Counter[str] = Counter()
    flags = read_flags(run.root, warn)
    dirty: set[str] = set()
    if flags is not None and not keep_contaminated:
        dirty = flags.flagged
        least = flags.least_checked()
        unchecked = len(ids) - least[1] if least else 0
        if unchecked > 0:
            warn(f"note: {_tasks(unchecked)} added after `sigen decontaminate` against "
                 f"{least[0]} {'was' if unchecked == 1 else 'were'} not checked against it; "
                 f"run it again on {run.root} to check them.")
    scores: dict[str, dict] = {}
    if min_score is not None:
        scores = read_scores(run.root, warn)
        if not any(row.get("score") is not None for row in scores.values()):
            raise SigenError(f"{run.root} has no judge scores, so --min-score cannot select "
                             f"anything: run `sigen judge {run.root}` first, or leave out "
                             "--min-score.")
    kept = []
    for ident, row in zip(ids, run.instances, strict=True):
        reason = _left_out_reason(ident, dirty, scores, min_score)
        if reason:
            left_out[reason] += 1
        else:
            kept.append({**row, "id": ident})
    if left_out["unscored"]:
        n = left_out["unscored"]
        warn(f"note: {_tasks(n)} {'has' if n == 1 else 'have'} not been judged yet and "
             f"{'is' if n == 1 else 'are'} left out; `sigen judge {run.root}` scores them.")
    return kept, {k: v for k, v in left_out.items() if v}


def _tasks(n: int) -> str:
    return f"{n} task{'s' * (n != 1)}"


def _left_out_reason(ident: str, dirty: set[str], scores: dict[str, dict],
                     min_score: int | None) -> str | None:
    if ident in dirty:
        return "contaminated"
    if min_score is None:
        return None
    if ident not in scores:
        return "unscored"
    score = scores[ident].get("score")
    if score is None:
        return "unparsed"
    return "below_min_score" if score < min_score else None


def judge_summary(root: Path, ids: list[str], warn: Callable[[str], None] = _stderr
                  ) -> dict | None:
    """Score histogram and the tasks kept at each threshold (shares of all the run's tasks);
    None when the run was never judged."""
    if not (root / SCORES).exists():
        return None
    rows = read_scores(root, warn)
    latest = [rows[i] for i in ids if i in rows]
    scores = Counter(row.get("score") for row in latest)
    total = len(ids)
    return {
        "judges": sorted({str(row.get("judge")) for row in latest}),
        "tasks": total,
        "judged": len(latest),
        "unparsed": scores[None],
        "histogram": [{"score": s, "count": scores[s]} for s in SCORES_RANGE],
        "at_least": [{"score": s, "count": (n := sum(scores[t] for t in SCORES_RANGE if t >= s)),
                      "share": round(n / total, 4) if total else None}
                     for s in SCORES_RANGE[1:]],
    }


def contamination_summary(root: Path, warn: Callable[[str], None] = _stderr) -> dict | None:
    """The benchmark files the run is checked against, what each flags, and how many tasks
    exports leave out; None when `sigen decontaminate` never ran on the run."""
    flags = read_flags(root, warn)
    if flags is None:
        return None
    least = flags.least_checked()
    return {
        "benchmarks": [{"file": name, "tasks": tasks,
                        **{key: flags.checks.get(name, {}).get(key)
                           for key in ("items", "tasks_checked", "n_words", "n_chars")}}
                       for name, tasks in flags.tasks_by_benchmark().items()],
        "contaminated": len(flags.flagged),
        "tasks_checked": least[1] if least else None,
    }
