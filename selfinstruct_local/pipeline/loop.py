"""The generation loop: any method's stages, streamed so that the engine never waits for sigen.

The loop keeps the engine's capacity submitted: follow-up requests first (the next step of a
task accepted a moment ago), then new source requests while more tasks are needed. Every
completion is handled as it comes back: candidates are screened and the accepted ones written to
pending.jsonl, a step's result moves its task on, and a task past its last step is finalized
(its instances and machine_instructions row written, or its rejection). Writes are group-
committed (runstore.py): a crash loses at most the requests in flight and the last half second
of decisions, and a resume (state.py) completes the pending tasks first.

With a judge (`sigen run --judge`), every instance written is also scored as the run goes: one
more request per instance, its row appended to scores.jsonl after the instance's own rows.

How many source requests are worth sending is estimated from what is in flight: the tasks not
yet finished times the share that get instances, and the source requests out times the tasks
one has yielded so far. A "round" is `batch_size` source requests: rows record the round of the
request they came from, and --max-rounds and the stall stop count rounds.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from selfinstruct_local.engines import Completion
from selfinstruct_local.engines.stream import RequestStream
from selfinstruct_local.interrupt import RunInterrupted, StopRequest
from selfinstruct_local.pipeline.screen import embed_ahead, screen
from selfinstruct_local.pipeline.stages import REJECT, Context, Method
from selfinstruct_local.progress import Reporter, Snapshot
from selfinstruct_local.quality.gate import SCORES
from selfinstruct_local.quality.judge import TaskJudge
from selfinstruct_local.runstore import EMBEDDINGS, INSTANCES, INSTRUCTIONS, PENDING, REJECTED

STALL_ROUNDS = 8  # stop asking for new tasks after this many rounds' worth add nothing
CHECKPOINT_SECONDS = 10.0  # the manifest is saved at least this often, and after each round
PRIOR_YIELD = 1.0  # accepted tasks per source request, assumed before any evidence
JUDGE = "judge"  # the judge's stage
TARGET_REACHED = "target_reached"  # a task finished, or cut short, after the target was reached


@dataclass
class Job:
    """A request in flight: a source request, a task's step, or the judging of one instance
    (`judged`: its id in scores.jsonl; `task` is then its instance row)."""

    stage: str
    round: int
    source: bool = False
    number: int = 0  # the source request's number in the run
    task: dict | None = None
    step: int = 0
    attempt: int = 0
    judged: str | None = None


class Loop:
    def __init__(self, ctx: Context, method: Method, stream: RequestStream, batch_size: int,
                 progress: Reporter | None = None,
                 checkpoint: Callable[[], None] = lambda: None,
                 stop: StopRequest | None = None, judge: TaskJudge | None = None,
                 unjudged: list[tuple[str, dict]] | None = None) -> None:
        """`judge`: score every instance as it is written; `unjudged`: the (id, instance row)
        of earlier instances without a score yet (a resumed run), judged first."""
        self.ctx, self.method, self.stream = ctx, method, stream
        self.state, self.store, self.stats = ctx.state, ctx.store, ctx.state.stats
        self.batch_size = max(1, batch_size)
        self.progress = progress if progress is not None else Reporter()
        self.checkpoint = checkpoint
        self.stop = stop if stop is not None else StopRequest()
        self.target = ctx.config.num_instructions
        self.jobs: dict[int, Job] = {}
        self.ready: deque[Job] = deque()  # follow-up requests waiting for room
        self.keys = 0
        self.sources_out = 0  # source requests in flight
        self.tasks_open = 0  # accepted tasks not finalized yet
        self.idle_sources = 0  # source answers in a row that added no task
        self.last_checkpoint = time.monotonic()
        self.no_more_sources: str | None = None  # why new tasks are no longer asked for
        self.source_empty: str | None = None  # why the source had no request at the last ask
        self.rejected_at_steps = 0  # tasks a step rejected (REJECT), in this process
        self.reported_accepted = -1  # accepted count in the last round line
        self.first_sent: float | None = None  # when this process sent its first request
        self.finished_at: float | None = None
        self.judge = judge
        for ident, row in unjudged or ():  # an instance row records no round
            self._judge_later(ident, row, 0)

    # -- the loop -------------------------------------------------------------------------
    def run(self) -> None:
        if self.state.in_flight:
            self.progress.log(f"Completing {len(self.state.in_flight)} tasks left in flight ...")
            for task in self.state.in_flight:
                self.tasks_open += 1
                self._advance(task, 0)
        while True:
            if self.stop.requested:
                raise RunInterrupted
            self._fill()
            if not self.stream.in_flight:
                break
            self._report()
            if self.stream.blocking:
                self.store.flush()  # a batch can take minutes: commit what is decided first
            else:
                self.store.flush_if_due()
            with self.stop.abortable():
                finished = self.stream.collect()
            for key, completion in finished:
                self._handle(self.jobs.pop(key), completion)
        self.finished_at = time.perf_counter()
        self.store.flush()
        self.no_more_sources = self.no_more_sources or self.source_empty
        if self.no_more_sources and self.state.accepted < self.target:
            self.progress.log(self.no_more_sources)
        self.checkpoint()
        if self.state.accepted != self.reported_accepted:  # the last line shows the end
            self.progress.round_finished(self.snapshot())

    def _fill(self) -> None:
        while self.stream.in_flight < self.stream.capacity:
            if self.ready:
                job = self.ready.popleft()
                if job.task is not None and job.judged is None and \
                        self.state.accepted >= self.target:
                    # The target is met: the task's next step (a Magpie answer of up to a
                    # thousand tokens) would be thrown away; it ends here.
                    job.task[REJECT] = TARGET_REACHED
                    self._advance(job.task, job.step)
                    continue
                self._submit(job)
            elif self._want_source():
                n = self.stats.source_requests
                self.stats.source_requests += 1
                self.state.round = max(self.state.round, n // self.batch_size + 1)
                self.sources_out += 1
                self._submit(Job(self.method.source.stage, n // self.batch_size + 1,
                                 source=True, number=n))
            else:
                return

    def _want_source(self) -> bool:
        """Whether one more source request is needed to reach the target, counting on what is
        in flight; at most a round's worth out at once."""
        n = self.stats.source_requests
        limit = self.ctx.config.max_rounds
        if limit and n >= limit * self.batch_size:
            self.no_more_sources = f"Stopping after --max-rounds {limit}."
        elif self.idle_sources >= STALL_ROUNDS * self.batch_size:
            self.no_more_sources = (f"Stopping: {STALL_ROUNDS} rounds' worth of requests in a "
                                    "row added no instruction.")
        if self.no_more_sources or self.sources_out >= self.batch_size:
            return False
        self.source_empty = self.method.source.exhausted(self.ctx)
        if self.source_empty is not None:
            return False
        expected = (self.tasks_open + self.sources_out * self._yield()) * self._success()
        return self.state.accepted + expected < self.target

    def _success(self) -> float:
        """The share of accepted tasks that end with instances (assume half before evidence)."""
        done = self.state.accepted + self.state.reject_reasons["no_valid_instances"] + \
            self.rejected_at_steps
        return max(self.state.accepted / done, 0.25) if done >= 10 else 0.5

    def _yield(self) -> float:
        answered = self.stats.source_answers
        return self.stats.source_tasks / answered if answered >= 8 else PRIOR_YIELD

    def _submit(self, job: Job) -> None:
        if job.source:
            request, carried = self.method.source.build(self.ctx, job.number)
            job.task = carried
        elif job.judged is not None:
            request = self.judge.request(job.judged, job.task, job.attempt)  # type: ignore
        else:
            request = self.method.steps[job.step].build(self.ctx, job.task, job.attempt)
        self.keys += 1
        if self.first_sent is None:
            self.first_sent = time.perf_counter()
        self.jobs[self.keys] = job
        self.stats.stage(job.stage).requests += 1
        self.stream.submit(self.keys, request)

    # -- completions ----------------------------------------------------------------------
    def _handle(self, job: Job, completion: Completion) -> None:
        self.stats.stage(job.stage).tokens += completion.completion_tokens
        if job.source:
            self._candidates(job, completion)
            return
        if job.judged is not None:
            self._scored(job, completion)
            return
        task = job.task
        step = self.method.steps[job.step]
        if step.apply(self.ctx, task, completion) or job.attempt + 1 >= step.attempts:
            self._advance(task, job.step + 1)  # type: ignore[arg-type]
        else:
            self.ready.append(Job(step.stage, job.round, task=task, step=job.step,
                                  attempt=job.attempt + 1))

    def _candidates(self, job: Job, completion: Completion) -> None:
        """Screen a source answer's candidates, as many as the target still needs."""
        self.sources_out -= 1
        candidates = self.method.source.parse(self.ctx, job.task, completion)  # type: ignore
        missing = self.target - self.state.accepted - self.tasks_open * self._success()
        needed = max(0, math.ceil(missing / self._success()))
        accepted, rejected = [], []
        embed_ahead(self.ctx, candidates[:needed])
        for candidate in candidates:
            self.stats.candidates += 1
            if len(accepted) >= needed:
                self.stats.surplus_unused += 1
                self.method.dropped(self.ctx, candidate)
                continue
            row = screen(self.ctx, self.method, candidate, job.round)
            (rejected if "reason" in row else accepted).append(row)
        self.store.append(REJECTED, rejected)
        self.store.append(PENDING, accepted)
        if self.ctx.semantic is not None:  # each vector after its pending row (semantic_rows)
            self.store.append(EMBEDDINGS, self.ctx.semantic.take_rows())
        self.stats.source_answers += 1
        self.stats.source_tasks += len(accepted)
        self.idle_sources = 0 if accepted else self.idle_sources + 1
        self._round_done()
        for task in accepted:
            self.tasks_open += 1
            self._advance(task, 0)

    def _advance(self, task: dict, step: int) -> None:
        """Send the task to its next step, or finalize it after the last."""
        if step < len(self.method.steps) and REJECT not in task:
            self.ready.append(Job(self.method.steps[step].stage, task["round"], task=task,
                                  step=step))
            return
        self.tasks_open -= 1
        if REJECT in task and task[REJECT] != TARGET_REACHED:
            self.rejected_at_steps += 1
        self._finalize(task, [] if REJECT in task else self.method.finish(self.ctx, task))

    def _finalize(self, task: dict, kept: list) -> None:
        """Write a task's outcome: its instances and final row, or why it was dropped (the
        reason a step gave, or none usable). Tasks that finish after the target is reached are
        recorded as `target_reached`."""
        reason = task.get(REJECT) or ("no_valid_instances" if not kept else
                                      TARGET_REACHED if self.state.accepted >= self.target
                                      else None)
        if reason:
            self.state.reject(reason)
            self.method.dropped(self.ctx, task)
            self.store.append(REJECTED, [{"stage": "instruction", "round": task["round"],
                                          "id": task["id"], "instruction": task["instruction"],
                                          **self._lineage(task), "reason": reason}])
            self.state.finalized.add(task["id"])
            return
        self.idle_sources = 0
        instance_rows = [{"instruction_id": task["id"], "instruction": task["instruction"],
                          "input": inst.input, "output": inst.output,
                          **{k: task[k] for k in self.method.instance_keys if k in task}}
                         for inst in kept]
        self.store.append(INSTANCES, instance_rows)
        final = {
            "id": task["id"], "instruction": task["instruction"],
            "is_classification": task.get("is_classification"), "round": task["round"],
            "num_instances": len(kept),
            **{k: task.get(k, d) for k, d in (("most_similar", []), ("avg_similarity", 0.0),
                                               ("max_similarity", 0.0))},
            **{k: task[k] for k in self.method.final_keys if k in task},
        }
        self.store.append(INSTRUCTIONS, [final])
        self.state.add_final(final, len(kept))
        if self.judge is not None:
            for number, row in enumerate(instance_rows, 1):
                self._judge_later(f"{task['id']}-{number}", row, task["round"])

    def _lineage(self, task: dict) -> dict:
        return {k: task[k] for k in self.method.lineage if k in task}

    # -- judging --------------------------------------------------------------------------
    def _judge_later(self, ident: str, row: dict, round_: int) -> None:
        self.ready.append(Job(JUDGE, round_, task=row, judged=ident, attempt=1))

    def _scored(self, job: Job, completion: Completion) -> None:
        row = self.judge.row(job.judged, job.task, completion.text, job.attempt)  # type: ignore
        if row is None:  # unreadable: asked once more, sampled
            self.ready.append(Job(JUDGE, job.round, task=job.task, judged=job.judged,
                                  attempt=job.attempt + 1))
            return
        self.store.append(SCORES, [row])
        self.stats.judged += 1
        if row["score"] is None:
            self.stats.judge_unparsed += 1

    @property
    def generation_seconds(self) -> float:
        """From this process's first request to the end of its work (or now)."""
        if self.first_sent is None:
            return 0.0
        return (self.finished_at or time.perf_counter()) - self.first_sent

    # -- checkpoints and progress ---------------------------------------------------------
    @property
    def stages(self) -> tuple[str, ...]:
        return (*self.method.stages, JUDGE) if self.judge is not None else self.method.stages

    def _round_done(self) -> None:
        """After each round's last source answer (and every CHECKPOINT_SECONDS): flush the
        rows, save the manifest, print the round's line."""
        answered = self.stats.source_answers
        now = time.monotonic()
        if answered % self.batch_size and now - self.last_checkpoint < CHECKPOINT_SECONDS:
            return
        self.store.flush()
        self.checkpoint()
        self.last_checkpoint = now
        if answered % self.batch_size == 0:  # round (answered // batch_size) is answered
            self.reported_accepted = self.state.accepted
            self.progress.round_finished(self.snapshot(answered // self.batch_size))

    def _report(self) -> None:
        self.progress.update(self.snapshot())

    def snapshot(self, round_: int | None = None) -> Snapshot:
        running: dict[str, int] = {}
        for job in self.jobs.values():
            running[job.stage] = running.get(job.stage, 0) + 1
        return Snapshot(
            round=round_ or self.state.round,
            accepted=self.state.accepted,
            rejected=tuple(self.state.reject_reasons.most_common()),
            dropped=tuple(self.state.instance_rejects.most_common()),
            stages=tuple((s, self.stats.stage(s).requests, self.stats.stage(s).tokens,
                          running.get(s, 0)) for s in self.stages),
        )
