"""What a run knows about itself, and rebuilding it from the run directory on resume.

Everything needed to continue is in the files: pending.jsonl lists every instruction that passed
the filters (in order), machine_instructions.jsonl the ones finished with instances, rejected.jsonl
the ones dropped. So the near-duplicate index is the seeds plus every pending instruction, and the
in-flight work is the pending rows with no final outcome yet.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from selfinstruct_local.dedup import NearDupIndex
from selfinstruct_local.pipeline.filters import reason_key
from selfinstruct_local.pipeline.grounded import PassageIndexes
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
    # Grounded tasks are compared with the tasks about the same passage only.
    passage_indexes: PassageIndexes = field(default_factory=PassageIndexes)

    def next_id(self) -> str:
        self.issued += 1
        return f"mi-{self.issued:06d}"

    def reject(self, reason: str) -> None:
        self.reject_reasons[reason_key(reason)] += 1

    def grounded_instructions(self) -> Iterator[str]:
        """Every instruction accepted about a passage so far (pending or finished)."""
        for index in self.passage_indexes.values():
            yield from (index.text(i) for i in range(len(index)))

    def add_final(self, row: dict, num_instances: int) -> None:
        self.accepted += 1
        self.instances_kept += num_instances
        self.machine_instructions.append(row["instruction"])
        self.finalized.add(row["id"])


def load_state(
    store: RunStore, index: NearDupIndex, counts: dict | None, warn: Callable[[str], None]
) -> RunState:
    """Rebuild the state of an interrupted run; `index` must already hold the seed tasks."""
    state = RunState(stats=RunStats.from_json(counts or {}, skip=DERIVED_COUNTS))
    pending = store.read(PENDING, warn)
    finals = store.read(INSTRUCTIONS, warn)
    rejected = store.read(REJECTED, warn)
    instances = store.read(INSTANCES, warn)
    for row in pending:
        if "passage" in row:
            state.passage_indexes[row["passage"]["id"]].add(row["instruction"])
        else:
            index.add(row["instruction"])
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
    if len(kept) < len(instances):
        # Instance rows are written before their instruction row; a crash in between leaves
        # rows for an instruction that is still in flight. Drop them: it is redone below.
        warn(f"dropping {len(instances) - len(kept)} instance rows of unfinished instructions")
        store.replace_rows(INSTANCES, kept)
    state.instances_kept = len(kept)
    state.in_flight = [row for row in pending if row["id"] not in state.finalized]
    return state
