"""The round loop: bootstrap -> filters -> near-duplicate index -> classify -> instances -> disk.

Every stage of a round is one batched engine call. Each decision is appended to the run directory
as soon as it is made: an instruction that passes the filters goes to pending.jsonl, and once it
has instances its instance rows and then its machine_instructions row are written. On resume
(see `state.py`) pending instructions without a final row are completed first.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable

from selfinstruct_local.config import RunConfig
from selfinstruct_local.corpus import PassageSampler
from selfinstruct_local.dedup import NearDupIndex
from selfinstruct_local.engines import Completion, Engine, Request
from selfinstruct_local.interrupt import RunInterrupted, StopRequest
from selfinstruct_local.pipeline.alpaca import (
    NUM_EXAMPLES,
    build_alpaca_request,
    parse_alpaca_tasks,
)
from selfinstruct_local.pipeline.bootstrap import (
    build_bootstrap_request,
    parse_instructions,
    sample_prompt_tasks,
)
from selfinstruct_local.pipeline.classify import build_classify_request, parse_is_classification
from selfinstruct_local.pipeline.filters import check_instruction, filter_instances
from selfinstruct_local.pipeline.grounded import (
    KINDS_PER_PASSAGE,
    TASK_TOKENS,
    answer_copy_checks,
    assign_kinds,
    build_answer_request,
    build_grounded_request,
    copies_kind,
    parse_answer,
    parse_grounded_task,
    passage_record,
)
from selfinstruct_local.pipeline.instances import (
    build_instances_request,
    few_shot_texts,
    parse_instances,
)
from selfinstruct_local.pipeline.state import RunState
from selfinstruct_local.progress import Reporter
from selfinstruct_local.prompts import PromptSet
from selfinstruct_local.runstore import INSTANCES, INSTRUCTIONS, PENDING, REJECTED, RunStore
from selfinstruct_local.seeds import Instance, Task

STALL_ROUNDS = 8  # stop when this many rounds in a row add nothing
TOP_SIMILAR = 10
INSTANCE_ATTEMPTS = 2


class Generator:
    def __init__(
        self,
        config: RunConfig,
        engine: Engine,
        prompts: PromptSet,
        seed_tasks: list[Task],
        store: RunStore,
        state: RunState,
        index: NearDupIndex,
        batch_size: int,
        sampling: dict[str, float],
        progress: Reporter | None = None,
        sampler: PassageSampler | None = None,
    ) -> None:
        self.config = config
        self.engine = engine
        self.prompts = prompts
        self.seed_tasks = seed_tasks
        self.store = store
        self.state = state
        self.index = index
        self.batch_size = batch_size
        self.temperature = sampling.get("temperature", 0.7)
        self.top_p = sampling.get("top_p", 0.9)
        self.progress = progress if progress is not None else Reporter()
        self.sampler = sampler  # set when generation is grounded in a corpus
        self.human = [t.instruction for t in seed_tasks]
        self.stop = StopRequest()  # never requested unless `run` is given the run's own

    # -- the loop -------------------------------------------------------------------------
    def run(
        self,
        on_round: Callable[[], None] = lambda: None,
        stop: StopRequest | None = None,
    ) -> None:
        """Rounds until the target. `stop` (Ctrl-C) is checked at safe points between stages,
        and may cut an engine call short (see interrupt.py): RunInterrupted.

        `on_round` runs after each round (the caller saves the manifest), then the reporter's
        `round_finished`, so that a progress line never reports a round the manifest lacks.
        """
        self.stop = stop if stop is not None else self.stop
        if self.state.in_flight:
            self.progress.log(
                f"Completing {len(self.state.in_flight)} instructions left in flight ...")
            self._complete(self.state.in_flight)
            on_round()
            self.progress.round_finished()
        stalled = 0
        while self.state.accepted < self.config.num_instructions:
            self._check_stop()
            if self.config.max_rounds and self.state.round >= self.config.max_rounds:
                self.progress.log(f"Stopping after --max-rounds {self.config.max_rounds}.")
                break
            if stalled >= STALL_ROUNDS:
                self.progress.log(
                    f"Stopping: {STALL_ROUNDS} rounds in a row added no instruction.")
                break
            before = self.state.accepted
            self.state.round += 1
            if self.sampler is not None:
                self._grounded_round()
            elif self.config.method == "alpaca":
                self._alpaca_round()
            else:
                self._self_instruct_round()
            stalled = stalled + 1 if self.state.accepted == before else 0
            on_round()
            self.progress.round_finished()

    def _check_stop(self) -> None:
        if self.stop.requested:
            raise RunInterrupted

    def _seed(self, stage: str, i: int) -> int:
        key = f"{self.config.seed}-{self.state.round}-{stage}-{i}"
        return random.Random(key).randrange(2**31 - 1)

    def _generate(self, stage: str, requests: list[Request]) -> list[Completion]:
        """Every engine call goes through here: counted per stage and shown as it runs."""
        self.progress.stage_started(stage, len(requests))
        started = time.perf_counter()
        with self.stop.abortable():
            completions = self.engine.generate(requests)
        tokens = sum(c.completion_tokens for c in completions)
        self.state.counts[f"{stage}_requests"] += len(requests)
        self.state.counts[f"{stage}_tokens"] += tokens
        self.progress.stage_finished(stage, tokens, time.perf_counter() - started)
        return completions

    # -- Self-Instruct --------------------------------------------------------------------
    def _self_instruct_round(self) -> None:
        rng = random.Random(f"{self.config.seed}-{self.state.round}-sample")
        machine = self.state.machine_instructions
        requests = [
            build_bootstrap_request(
                self.prompts,
                sample_prompt_tasks(rng, self.human, machine),
                max_tokens=self.config.max_new_tokens or 512,
                temperature=self.temperature,
                top_p=self.top_p,
                seed=self._seed("bootstrap", i),
            )
            for i in range(self.batch_size)
        ]
        candidates = [
            text
            for c in self._generate("bootstrap", requests)
            for text in parse_instructions(self.prompts, c.text, c.finish_reason)
        ]
        accepted = self._accept_instructions(candidates)
        self._check_stop()  # the accepted ones are in pending.jsonl; a resume completes them
        self._complete(accepted)

    def _accept_instructions(
        self, candidates: list[str], payloads: list[dict] | None = None
    ) -> list[dict]:
        """Filter candidates in order; those kept are appended to pending.jsonl and returned.

        A payload (Alpaca's input and output) travels with its candidate into the pending row.
        """
        needed = self._candidates_needed()
        accepted: list[dict] = []
        rejected: list[dict] = []
        for k, text in enumerate(candidates):
            self.state.counts["candidates"] += 1
            if len(accepted) >= needed:
                self.state.counts["surplus_unused"] += 1
                continue
            row = self._screen(text, payloads[k] if payloads else {})
            if "reason" in row:
                rejected.append(row)
            else:
                accepted.append(row)
        self.store.append(REJECTED, rejected)
        self.store.append(PENDING, accepted)
        return accepted

    def _candidates_needed(self) -> int:
        """How many candidates to take this round to reach the target, allowing for the share
        that will find no valid instance (observed so far; assume half before any evidence)."""
        missing = self.config.num_instructions - self.state.accepted
        done = self.state.accepted + self.state.reject_reasons["no_valid_instances"]
        success = self.state.accepted / done if done >= 10 else 0.5
        return math.ceil(missing / max(success, 0.25))

    def _screen(self, text: str, payload: dict) -> dict:
        """A rejected row (with "reason") or a pending row for one candidate instruction."""
        reason = check_instruction(text, self.config.lang)
        if reason is None and "kind" in payload:
            reason = copies_kind(self.prompts, text, payload["kind"])
        row: dict = {"stage": "instruction", "round": self.state.round, "instruction": text}
        index = self.state.passage_indexes[payload["passage"]["id"]] if "passage" in payload \
            else self.index
        if reason is None:
            decision = index.check_and_add(text)
            if not decision.kept:
                reason = decision.reason or "near_duplicate"
                if decision.match_id is not None:
                    row["most_similar"] = [{
                        "instruction": index.text(decision.match_id),
                        "score": round(decision.match_score, 4),
                    }]
        if reason is not None:
            self.state.reject(reason)
            row["reason"] = reason
            return row
        row.update(payload)
        similar, average = index.most_similar(text, k=TOP_SIMILAR + 1)
        own_id = len(index) - 1
        others = [(i, s) for i, s in similar if i != own_id][:TOP_SIMILAR]
        pool_size = len(index) - 1
        row.update(
            id=self.state.next_id(),
            most_similar=[
                {"instruction": index.text(i), "score": round(s, 4)} for i, s in others
            ],
            # The index average includes the instruction itself (score 1); leave it out.
            avg_similarity=round((average * (pool_size + 1) - 1.0) / pool_size, 4)
            if pool_size
            else 0.0,
            max_similarity=round(others[0][1], 4) if others else 0.0,
        )
        return row

    def _complete(self, pending: list[dict]) -> None:
        """Classify (Self-Instruct only), generate instances, and write the final rows."""
        if not pending:
            return
        if self.config.method == "alpaca":
            # Alpaca tasks arrive with their instance; a resumed one only needs its final rows.
            for row in pending:
                found = [Instance(row["input"], row["output"])]
                kept, dropped = filter_instances(found)
                self._log_dropped(row, found, dropped)
                self._finalize(row, None, kept)
            return
        grounded = "passage" in pending[0]
        if grounded:
            # Reading tasks about a passage: answered from it, no classification step.
            is_cls = [False] * len(pending)

            def make(i: int, attempt: int) -> Request:
                return build_answer_request(
                    self.prompts, pending[i]["instruction"], pending[i]["input"],
                    temperature=0.0 if attempt == 0 else self.temperature,
                    seed=self._seed(f"answer{attempt}", i))

            def parse(i: int, c: Completion) -> list[Instance]:
                # An empty answer is kept here so that the filters count it (empty_output).
                return [Instance(pending[i]["input"],
                                 parse_answer(self.prompts, c.text, c.finish_reason))]
        else:
            is_cls = self._classify(pending)

            def make(i: int, attempt: int) -> Request:
                return build_instances_request(
                    self.prompts, pending[i]["instruction"], is_cls[i],
                    temperature=0.0 if attempt == 0 else self.temperature,
                    seed=self._seed(f"instances{attempt}", i))

            def parse(i: int, c: Completion) -> list[Instance]:
                return parse_instances(self.prompts, c.text, is_cls[i], c.finish_reason)

        examples = few_shot_texts(self.prompts)
        todo = list(range(len(pending)))
        for attempt in range(INSTANCE_ATTEMPTS):
            # Greedy first, as in the paper; a task left with no usable instance gets a sampled
            # second try rather than being thrown away.
            completions = self._generate("instances", [make(i, attempt) for i in todo])
            retry = []
            for i, c in zip(todo, completions, strict=True):
                found = parse(i, c)
                checks = (answer_copy_checks(self.prompts, pending[i]["instruction"])
                          if grounded else {})
                kept, dropped = filter_instances(found, examples, **checks)
                self._log_dropped(pending[i], found, dropped)
                if kept or attempt + 1 == INSTANCE_ATTEMPTS:
                    self._finalize(pending[i], is_cls[i], kept)
                else:
                    retry.append(i)
            todo = retry
            if not todo:
                break

    def _classify(self, pending: list[dict]) -> list[bool]:
        classified = self._generate(
            "classify",
            [build_classify_request(self.prompts, r["instruction"], seed=self._seed("classify", i))
             for i, r in enumerate(pending)],
        )
        labels = [parse_is_classification(self.prompts, c.text) for c in classified]
        self.state.counts.update(
            "classification_" + {True: "yes", False: "no", None: "unclear"}[lab] for lab in labels
        )
        return [bool(lab) for lab in labels]

    def _log_dropped(self, row: dict, found: list[Instance],
                     dropped: list[tuple[Instance, str]]) -> None:
        self.state.counts["instances_generated"] += len(found)
        self.state.instance_rejects.update(why for _, why in dropped)
        self.store.append(REJECTED, [
            {"stage": "instance", "round": row["round"], "instruction_id": row["id"],
             "reason": why, "input": inst.input, "output": inst.output}
            for inst, why in dropped
        ])

    def _finalize(self, row: dict, is_cls: bool | None, kept: list[Instance]) -> None:
        """Write the final outcome of one instruction: its instances and row, or a rejection.

        More candidates are taken than needed (some find no instance), so the ones that finish
        after the target is reached are recorded as `target_reached` rather than accepted.
        """
        reason = None
        if not kept:
            reason = "no_valid_instances"
        elif self.state.accepted >= self.config.num_instructions:
            reason = "target_reached"
        if reason:
            self.state.reject(reason)
            self.store.append(REJECTED, [{
                "stage": "instruction", "round": row["round"], "id": row["id"],
                "instruction": row["instruction"], "reason": reason,
            }])
            self.state.finalized.add(row["id"])
            return
        self.store.append(INSTANCES, [
            {"instruction_id": row["id"], "instruction": row["instruction"],
             "input": inst.input, "output": inst.output}
            for inst in kept
        ])
        final = {
            "id": row["id"],
            "instruction": row["instruction"],
            "is_classification": is_cls,
            "round": row["round"],
            "num_instances": len(kept),
            "most_similar": row.get("most_similar", []),
            "avg_similarity": row.get("avg_similarity", 0.0),
            "max_similarity": row.get("max_similarity", 0.0),
            **{key: row[key] for key in ("passage", "kind") if key in row},
        }
        self.store.append(INSTRUCTIONS, [final])
        self.state.add_final(final, len(kept))

    # -- grounded in a corpus -------------------------------------------------------------
    def _grounded_round(self) -> None:
        """One task per request: KINDS_PER_PASSAGE requests (kinds) for each drawn passage."""
        n_passages = math.ceil(self.batch_size / KINDS_PER_PASSAGE)
        passages = self.sampler.draw(n_passages)  # type: ignore[union-attr]
        # Counted so that a resume continues the draw where it stopped (see run.py).
        self.state.counts["passages_drawn"] += n_passages
        rng = random.Random(f"{self.config.seed}-{self.state.round}-kinds")
        kinds = assign_kinds(list(self.prompts.grounded_kinds), n_passages, rng)
        jobs = [(p, kind) for p, ks in zip(passages, kinds, strict=True) for kind in ks]
        requests = [
            build_grounded_request(
                self.prompts, passage, kind,
                max_tokens=self.config.max_new_tokens or TASK_TOKENS,
                temperature=self.temperature,
                top_p=self.top_p,
                seed=self._seed("grounded", i),
            )
            for i, (passage, kind) in enumerate(jobs)
        ]
        candidates, payloads = [], []
        for (passage, kind), c in zip(jobs, self._generate("bootstrap", requests), strict=True):
            task = parse_grounded_task(self.prompts, c.text, c.finish_reason)
            if task:
                candidates.append(task)
                payloads.append({"input": passage.text, "passage": passage_record(passage),
                                 "kind": kind})
        accepted = self._accept_instructions(candidates, payloads)
        self._check_stop()
        self._complete(accepted)

    # -- Alpaca ---------------------------------------------------------------------------
    def _alpaca_round(self) -> None:
        rng = random.Random(f"{self.config.seed}-{self.state.round}-sample")
        requests = [
            build_alpaca_request(
                self.prompts,
                rng.sample(self.seed_tasks, min(NUM_EXAMPLES, len(self.seed_tasks))),
                max_tokens=self.config.max_new_tokens or 1536,
                temperature=self.temperature,
                top_p=self.top_p,
                seed=self._seed("alpaca", i),
            )
            for i in range(self.batch_size)
        ]
        pairs = [
            pair
            for c in self._generate("alpaca", requests)
            for pair in parse_alpaca_tasks(self.prompts, c.text, c.finish_reason)
        ]
        accepted = self._accept_instructions(
            [text for text, _ in pairs],
            [{"input": inst.input, "output": inst.output} for _, inst in pairs],
        )
        self._complete(accepted)

