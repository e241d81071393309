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

from selfinstruct_local.pipeline.filters import reason_key
from selfinstruct_local.pipeline.stats import RunStats
from selfinstruct_local.runstore import INSTANCES, INSTRUCTIONS, PENDING, REJECTED, RunStore

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


def load_state(store: RunStore, counts: dict | None, warn: Callable[[str], None]
               ) -> tuple[RunState, list[dict]]:
    """The state of an interrupted run, and its journal (the pending rows, in order) for the
    pool to be rebuilt from. Every file is read and checked before anything is repaired: a torn
    last line (a write cut short) is cut off, and instance rows of instructions still in flight
    are dropped, only once the whole directory has been read without an error."""
    state = RunState(stats=RunStats.from_json(counts or {}, skip=DERIVED_COUNTS))
    pending = store.read(PENDING, warn, repair=False)
    finals = store.read(INSTRUCTIONS, warn, repair=False)
    rejected = store.read(REJECTED, warn, repair=False)
    instances = store.read(INSTANCES, warn, repair=False)
    for row in pending:
        state.round = max(state.round, row["round"])
    state.issued = len(pending)
    for row in finals:
        state.add_final(row, 0)
        state.round = max(state.round, row["round"])
    for row in rejected:
        if row.get("stage") == "instance":
            state.instance_rejects[row["reason"]] += 1
            continue
        state.reject(row["reason"])
        state.round = max(state.round, row["round"])
        if row["reason"] in ("no_valid_instances", "target_reached"):
            state.finalized.add(row["id"])
    final_ids = {row["id"] for row in finals}
    kept = [row for row in instances if row["instruction_id"] in final_ids]
    for name in (PENDING, INSTRUCTIONS, REJECTED, INSTANCES):
        store.repair(name)
    if len(kept) < len(instances):
        # Instance rows are written before their instruction row; a crash in between leaves
        # rows for an instruction that is still in flight. Drop them: it is redone.
        warn(f"dropping {len(instances) - len(kept)} instance rows of unfinished instructions")
        store.replace_rows(INSTANCES, kept)
    state.instances_kept = len(kept)
    state.in_flight = [row for row in pending if row["id"] not in state.finalized]
    return state, pending
