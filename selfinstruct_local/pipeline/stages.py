"""What a generation method is made of, and what its stages see.

A method (`selfinstruct_local/methods/`) is a `Source`, the request that proposes candidate
tasks, and the `Step`s each accepted task goes through, in order. The loop (`loop.py`) runs any
method: it sends source requests while more tasks are needed, screens every candidate
(`screen.py`), and moves each accepted task through the steps, one request per step, as soon as
the previous one comes back. After the last step `finish` says what the task's instances are.

A task is a dict: its pending row as written to pending.jsonl (id, round, instruction and
whatever the source attached, such as a passage), to which steps add their results in memory.
A step that finds the task itself unusable (evol: the rewrite adds nothing) sets
`task[REJECT]` to the reason: its remaining steps are skipped and it is recorded as rejected.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from selfinstruct_local.dedup import NearDupIndex
from selfinstruct_local.engines import Completion, Request
from selfinstruct_local.pipeline.filters import filter_instances
from selfinstruct_local.pipeline.state import RunState
from selfinstruct_local.prompts import PromptSet
from selfinstruct_local.runstore import REJECTED, RunStore
from selfinstruct_local.seeds import Instance, Task

if TYPE_CHECKING:
    from selfinstruct_local.config import RunConfig
    from selfinstruct_local.pipeline.semantic_screen import SemanticScreen
    from selfinstruct_local.plan import CorpusPlan


@dataclass
class Context:
    """The run as the stages see it: the plan's parts (read only) and the run's state."""

    config: RunConfig  # resolved (plan.config): nothing changes it during the run
    prompts: PromptSet
    seed_tasks: tuple[Task, ...]
    state: RunState
    store: RunStore
    index: NearDupIndex  # the pool: seed and accepted instructions
    temperature: float = 0.7
    top_p: float = 0.9
    examples: frozenset[str] = frozenset()  # few-shot texts an instance must not copy
    context_len: int = 2048  # the model's context, in tokens
    corpus: CorpusPlan | None = None  # the passages and kinds, for a run grounded in a corpus
    weights: Path | None = None  # the model's checkpoint here: its tokenizer and chat template
    starting: tuple[Task, ...] = ()  # the instructions a method starts from (evol)
    semantic: SemanticScreen | None = None  # --semantic-threshold: the pool's embeddings

    @property
    def human(self) -> list[str]:
        return [t.instruction for t in self.seed_tasks]

    def seed_for(self, stage: str, *key: object) -> int:
        """A request's own sampling seed, fixed by what the request is (not by when it is sent),
        so that a resumed or repeated run asks the same thing with the same seed."""
        return random.Random(f"{self.config.seed}-{stage}-{key}").randrange(2**31 - 1)

    def attempt_temperature(self, attempt: int) -> float:
        """A step's answer is greedy first (the model's most likely answer), and sampled on a
        retry (greedy decoding would only repeat the failed answer)."""
        return 0.0 if attempt == 0 else self.temperature

    def rng(self, purpose: str, *key: object) -> random.Random:
        return random.Random(f"{self.config.seed}-{purpose}-{key}")

    def keep_instances(self, task: dict, found: list[Instance],
                       dropped_before: tuple[tuple[Instance, str], ...] = (),
                       **checks: str) -> list[Instance]:
        """The instances that pass the filters; the others are logged to rejected.jsonl, with
        those the method dropped itself (`dropped_before`: instance and reason)."""
        kept, dropped = filter_instances(found, self.examples, **checks)
        dropped = [*dropped_before, *dropped]
        self.state.stats.instances_generated += len(found) + len(dropped_before)
        self.state.instance_rejects.update(why for _, why in dropped)
        self.store.append(REJECTED, [
            {"stage": "instance", "round": task["round"], "instruction_id": task["id"],
             "reason": why, "input": inst.input, "output": inst.output}
            for inst, why in dropped
        ])
        return kept


@dataclass(frozen=True)
class Source:
    """The first stage: the n-th source request of a run, and the candidates in its answer.

    `build(ctx, n)` returns the request and what each candidate from it carries (a passage, a
    kind); `parse(ctx, carried, completion)` the candidates: {"instruction", **carried, ...}.
    """

    stage: str
    build: Callable[[Context, int], tuple[Request, dict]]
    parse: Callable[[Context, dict, Completion], list[dict]]
    # Why there is no request to build now (evol: every parent so far is evolved), or None.
    # While tasks are in flight more may come; when none are, the run stops with this reason.
    exhausted: Callable[[Context], str | None] = lambda ctx: None


@dataclass(frozen=True)
class Step:
    """A stage every accepted task goes through: `build(ctx, task, attempt)` its request,
    `apply(ctx, task, completion)` stores the result on the task and says whether the step is
    done (False: try again, up to `attempts`; after the last attempt the task moves on)."""

    stage: str
    build: Callable[[Context, dict, int], Request]
    apply: Callable[[Context, dict, Completion], bool]
    attempts: int = 1


REJECT = "reason"  # set by a step on a task it rejects (see the module's docstring)


def no_check(ctx: Context, candidate: dict) -> str | None:
    return None


def pool_index(ctx: Context, candidate: dict) -> NearDupIndex:
    return ctx.index


def stored_instances(ctx: Context, task: dict) -> list[Instance]:
    return task.get("instances", [])


def nothing_to_record(ctx: Context, row: dict) -> None:
    return None


@dataclass(frozen=True)
class Method:
    name: str
    source: Source
    steps: tuple[Step, ...] = ()
    # Screening beyond the shared filters: a reason to reject, or None.
    check: Callable[[Context, dict], str | None] = no_check
    # The near-duplicate index a candidate is compared with and added to.
    index_for: Callable[[Context, dict], NearDupIndex] = pool_index
    # What the method keeps of a task that passed screening (it is in the index already), also
    # for each pending row a resumed run reads back.
    accepted: Callable[[Context, dict], None] = nothing_to_record
    # What the method does about a candidate or task that will not be a row of the data:
    # rejected at screening or later, or left unscreened (evol offers its parent again).
    dropped: Callable[[Context, dict], None] = nothing_to_record
    # The task's instances once its steps are done.
    finish: Callable[[Context, dict], list[Instance]] = stored_instances
    # Keys of the task copied into its machine_instructions row.
    final_keys: tuple[str, ...] = field(default=())
    # Keys of the task copied into each of its instances.jsonl rows (a whole conversation).
    instance_keys: tuple[str, ...] = field(default=())
    # Keys of a candidate copied into every row about it, rejected ones included (evol: its
    # parent, operation and generation, which a resume and `sigen stats` read back).
    lineage: tuple[str, ...] = field(default=())

    @property
    def stages(self) -> tuple[str, ...]:
        return (self.source.stage, *(s.stage for s in self.steps))
