"""What a run knows about itself, and rebuilding it from the run directory on resume.

Everything needed to continue is in the files: pending.jsonl lists every instruction that passed
the filters (in order), machine_instructions.jsonl the ones finished with instances, rejected.jsonl
the ones dropped. So the pool is the seeds plus every pending instruction (the method puts each
back where it belongs, see screen.admit), and the in-flight work is the pending rows with no
final outcome yet.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from selfinstruct_local.errors import SigenError
from selfinstruct_local.pipeline.filters import reason_key
from selfinstruct_local.pipeline.stats import RunStats
from selfinstruct_local.rowschema import FINAL_REJECTIONS
from selfinstruct_local.runstore import (
    INSTANCES,
    INSTRUCTIONS,
    MANIFEST,
    PENDING,
    REJECTED,
    SCORES,
    RunStore,
    counts_problem,
)

# Manifest counts recomputed from the files rather than carried over.
DERIVED_COUNTS = ("seed_tasks", "rounds", "accepted", "instances", "instructions_rejected")


@dataclass
class RunState:
    round: int = 0
    accepted: int = 0
    instances_kept: int = 0
    stats: RunStats = field(default_factory=RunStats)
    reject_reasons: Counter = field(default_factory=Counter)
    instance_rejects: Counter = field(default_factory=Counter)
    machine_instructions: list[str] = field(default_factory=list)
    finalized: set[str] = field(default_factory=set)
    in_flight: list[dict] = field(default_factory=list)
    issued: int = 0  # ids handed out so far

    def next_id(self) -> str:
        self.issued += 1
        return f"mi-{self.issued:06d}"

    def reject(self, reason: str) -> None:
        self.reject_reasons[reason_key(reason)] += 1

    def add_final(self, row: dict, num_instances: int) -> None:
        self.accepted += 1
        self.instances_kept += num_instances
        self.machine_instructions.append(row["instruction"])
        self.finalized.add(row["id"])


def load_state(store: RunStore, previous: dict | None, warn: Callable[[str], None]
               ) -> tuple[RunState, list[dict]]:
    """The state of an interrupted run, and its journal (the pending rows, in order) for the
    pool to be rebuilt from. `previous`: the run's manifest (None for a new run).

    Every file is read and checked before anything is changed (`check_files`,
    `check_journal`): a directory whose files are missing, damaged or disagree with the
    manifest is refused as it is. Only then is it repaired: a torn last line (a write cut
    short) is cut off, and instance rows of instructions still in flight are dropped."""
    counts = None if previous is None else previous.get("counts")
    state = RunState(stats=RunStats.from_json(counts or {}, skip=DERIVED_COUNTS))
    check_files(store, counts)
    pending = store.read(PENDING, warn, repair=False)
    finals = store.read(INSTRUCTIONS, warn, repair=False)
    rejected = store.read(REJECTED, warn, repair=False)
    instances = store.read(INSTANCES, warn, repair=False)
    store.read(SCORES, warn, repair=False)  # appended to with --judge: checked, then repaired
    check_journal(store.root, previous or {}, pending, finals, rejected, instances)
    for row in pending:
        state.round = max(state.round, row["round"])
    state.issued = len(pending)
    for row in finals:
        state.add_final(row, 0)
        state.round = max(state.round, row["round"])
    for row in rejected:
        if row["stage"] == "instance":
            state.instance_rejects[row["reason"]] += 1
            continue
        state.reject(row["reason"])
        state.round = max(state.round, row["round"])
        # A step's REJECT (stages.py) also ends its pending task, with a reason of its own.
        if row["reason"] in FINAL_REJECTIONS or "id" in row:
            state.finalized.add(row["id"])
    final_ids = {row["id"] for row in finals}
    kept = [row for row in instances if row["instruction_id"] in final_ids]
    for name in (*JOURNAL_FILES, SCORES):
        store.repair(name)
    if len(kept) < len(instances):
        # Instance rows are written before their instruction row; a crash in between leaves
        # rows for an instruction that is still in flight. Drop them: it is redone.
        warn(f"dropping {len(instances) - len(kept)} instance rows of unfinished instructions")
        store.replace_rows(INSTANCES, kept)
    state.instances_kept = len(kept)
    state.in_flight = [row for row in pending if row["id"] not in state.finalized]
    return state, pending


# The files a run continues from.
JOURNAL_FILES = (PENDING, INSTRUCTIONS, REJECTED, INSTANCES)
REFUSED = ("Nothing was changed. Restore the files from a backup, or start a new run with "
           "another --output.")


def check_files(store: RunStore, counts: dict | None) -> None:
    """Every journal file is there, unless the manifest says the run has generated nothing yet
    (then the run creates them). A run without a manifest is new: its folder holds no run file
    (runstore.check_output_dir), so one that has files but no counts lost its manifest's."""
    present = [name for name in JOURNAL_FILES if store.path(name).exists()]
    if counts is None:
        if present:
            raise SigenError(f"{store.path(MANIFEST)} has no counts, but the run has files "
                             f"({', '.join(present)}); the run directory is damaged. {REFUSED}")
        return
    if counts.get("rounds") == 0 and counts.get("accepted") == 0:
        return  # nothing asked for yet: missing files are simply created
    missing = [name for name in JOURNAL_FILES if name not in present]
    if missing:
        raise SigenError(
            f"cannot resume {store.root}: {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} missing, but the manifest says the run has "
            f"generated data (rounds: {counts.get('rounds', '?')}, instructions accepted: "
            f"{counts.get('accepted', '?')}). {REFUSED}")


def check_journal(root: Path, manifest: dict, pending: list[dict], finals: list[dict],
                  rejected: list[dict], instances: list[dict]) -> None:
    """The files and the manifest agree: every instruction finished, rejected after screening,
    or with instance rows was first written to pending.jsonl (rows reach the disk in that
    order), and the files hold at least what the manifest counts (runstore.counts_problem)."""
    journal = {row["id"] for row in pending}
    unknown = [(INSTRUCTIONS, row["id"]) for row in finals if row["id"] not in journal]
    unknown += [(REJECTED, row["id"]) for row in rejected
                if row["stage"] == "instruction" and "id" in row and row["id"] not in journal]
    unknown += [(INSTANCES, row["instruction_id"]) for row in instances
                if row["instruction_id"] not in journal]
    if unknown:
        name, ident = unknown[0]
        raise SigenError(
            f"cannot resume {root}: {name} names {ident}, which {PENDING} does not hold "
            f"({len(unknown)} such row{'s' * (len(unknown) != 1)}); the files do not belong "
            f"together. {REFUSED}")
    final_ids = {row["id"] for row in finals}
    kept = sum(row["instruction_id"] in final_ids for row in instances)
    if problem := counts_problem(manifest, len(finals), kept):
        raise SigenError(f"cannot resume {root}: {problem}. {REFUSED}")
