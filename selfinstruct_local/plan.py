"""Everything `sigen run` works out before it generates, resolved once into an immutable Plan.

`resolve_plan` checks and resolves in the order that fails fastest: the method and its options,
the model's name, prompts and --kinds/--chapters, the seed file, the run directory (a new one,
or the run it continues and whether that fits), the engine (GPUs, servers, the checkpoint here),
the seeds' length against the model's context, then the corpus (the slowest: it is read and cut
into passages). Nothing is written: a command refused by any of these leaves no folder behind.

The Plan's `config` is the RunConfig with every default filled in; the manifest saves it and a
resume compares it with the run's (config.RESUME_KEYS).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

from selfinstruct_local.config import (
    DEFAULT_NUM_INSTRUCTIONS,
    RunConfig,
    config_differences,
    default_output_dir,
    derived_from,
    latest_run_like,
)
from selfinstruct_local.corpus import (
    PASSAGE_SHARE,
    Passage,
    corpus_changes,
    corpus_record,
    format_chapters,
    load_corpus,
    parse_chapters,
    passage_chars_for,
    select_chapters,
)
from selfinstruct_local.engines.setup import (
    EnginePlan,
    EngineRequest,
    resolve_engine,
    resolve_model,
)
from selfinstruct_local.errors import SigenError
from selfinstruct_local.methods import MethodInfo, check_method_options, method_info
from selfinstruct_local.pipeline.repeats import DEFAULT_MAX_REPEATS
from selfinstruct_local.pipeline.semantic_screen import SemanticPlan, resolve_semantic
from selfinstruct_local.progress import Reporter
from selfinstruct_local.prompts import PromptSet, load_prompts, parse_kinds
from selfinstruct_local.redact import redact_urls
from selfinstruct_local.runstore import check_output_dir, read_previous_manifest
from selfinstruct_local.seeds import Task, check_seed_lengths, default_seed_path, load_seed_tasks


@dataclass(frozen=True)
class CorpusPlan:
    """The corpus a grounded run draws on: its passages (of the chosen chapters), the kinds of
    task asked for, and what the manifest records to tell on resume whether it changed."""

    path: Path
    passages: tuple[Passage, ...]
    kinds: tuple[str, ...]
    max_repeats: int
    passage_chars: int
    record: dict  # the manifest's "corpus" section


@dataclass(frozen=True)
class Plan:
    config: RunConfig  # resolved: every default filled in; what manifest.json saves
    method: MethodInfo
    engine: EnginePlan
    prompts: PromptSet
    seed_tasks: tuple[Task, ...]
    temperature: float  # for the source requests (the model's default unless given)
    top_p: float
    corpus: CorpusPlan | None
    previous: dict | None  # the manifest of the run being continued
    starting: tuple[Task, ...] = ()  # the instructions the method starts from (evol)
    semantic: SemanticPlan | None = None  # --embed-model with --semantic-threshold

    @property
    def output(self) -> Path:
        return self.config.output  # type: ignore[return-value]

    @property
    def target(self) -> int:
        return self.config.num_instructions  # type: ignore[return-value]

    @property
    def finished(self) -> bool:
        """Whether the run being continued already reached the target."""
        previous = self.previous or {}
        return previous.get("status") == "finished" and \
            (previous.get("counts") or {}).get("accepted", 0) >= self.target


GROUNDING_OPTIONS = ("chapters", "kinds", "max_repeats")


def resolve_plan(request: RunConfig, reporter: Reporter, api_key: str | None = None,
                 force: bool = False) -> Plan:
    log = reporter.log
    method = method_info(request.method)
    check_method_options(method, request)
    if request.corpus is None:
        for name in GROUNDING_OPTIONS:
            if getattr(request, name) is not None:
                raise SigenError(f"--{name.replace('_', '-')} chooses what grounded generation "
                                 "draws on: it needs --corpus PATH")
    else:
        method.factory(corpus=True)  # a method without a grounded variant says so
    engine_request = EngineRequest(
        model=request.model, models_file=request.models_file, engine=request.engine,
        gpus=request.gpus, tensor_parallel=request.tensor_parallel, base_url=request.base_url,
        concurrency=request.concurrency, server_timeout=request.server_timeout,
        batch_size=request.batch_size, seed=request.seed)
    entry, spec = resolve_model(engine_request)
    if method.chat_model and spec.prompt_format != "chat":
        raise SigenError(
            f"--method {method.name} needs an aligned chat model: {method.chat_model}. "
            f"{spec.name} is a base model (prompt_format: completion). Choose a chat model, "
            "such as the default smollm2-135m, or a checkpoint whose tokenizer has a chat "
            "template.")
    semantic = resolve_semantic(request.embed_model, request.semantic_threshold,
                                request.embed_base_url, api_key, request.models_file)
    prompts = load_prompts(request.lang)
    kinds = parse_kinds(prompts, request.kinds) if request.kinds is not None else None
    ranges = parse_chapters(request.chapters) if request.chapters is not None else None
    seeds, seed_tasks, seeds_sha256 = resolve_seeds(request, method)
    config = replace(
        request,
        model=spec.name if request.model in (None, spec.name) else request.model,
        seeds=seeds, seeds_sha256=seeds_sha256,
        chapters=format_chapters(ranges) if ranges else None,
        kinds=",".join(kinds) if kinds else None,
        # credentials stay in the engine's (and the embedder's) options
        base_url=redact_urls(request.base_url), embed_base_url=redact_urls(request.embed_base_url),
        semantic_threshold=semantic.threshold if semantic else None)

    output = request.output
    if output is None and (same := latest_run_like(config)):
        log(f"{same} holds a run with the same settings: continuing it (for a new run, pass "
            "--output DIR or another --seed).")
        output = same
    output = Path(output) if output else default_output_dir()
    check_output_dir(output)
    previous = read_previous_manifest(output)
    if previous is not None:
        config = replace(config, **derived_from(config, previous))
        check_resume(previous, config, force, output)
    target = request.num_instructions or ((previous or {}).get("config") or {}).get(
        "num_instructions") or DEFAULT_NUM_INSTRUCTIONS
    config = replace(config, output=output, num_instructions=target)
    starting: tuple[Task, ...] = ()
    if method.resolve is not None:  # the method's own options, and what it starts from
        config, starting = method.resolve(config, seed_tasks)

    engine = resolve_engine(engine_request, entry, spec, reporter, api_key, target)
    config = replace(config, gpus=engine.gpus if entry.local_gpus else None)
    if seeds is not None:
        check_seed_lengths(seed_tasks, seeds, engine.weights, spec.max_model_len // 2)
    if method.check_model is not None:  # what the method needs of the model (Magpie)
        method.check_model(config, spec, engine.weights)
    corpus = None
    if request.corpus is not None:
        corpus = resolve_corpus(config, engine, kinds or tuple(prompts.grounded_kinds), ranges,
                                previous, force, log)
        config = replace(config, passage_chars=corpus.passage_chars)
    sampling = spec.sampling
    return Plan(
        config=config, method=method, engine=engine, prompts=prompts, seed_tasks=seed_tasks,
        temperature=request.temperature if request.temperature is not None else
        sampling.get("temperature", 0.7),
        top_p=request.top_p if request.top_p is not None else sampling.get("top_p", 0.9),
        corpus=corpus, previous=previous, starting=starting, semantic=semantic)


def resolve_seeds(request: RunConfig, method: MethodInfo
                  ) -> tuple[Path | None, tuple[Task, ...], str]:
    """The seed file, its tasks and its SHA-256; none for a method that reads no seeds."""
    if not method.seeds:
        if request.seeds is not None:
            raise SigenError(f"--method {method.name} needs no seed tasks: leave out --seeds")
        return None, (), ""
    seeds = Path(request.seeds) if request.seeds else default_seed_path(request.lang)
    return seeds, tuple(load_seed_tasks(seeds)), hashlib.sha256(seeds.read_bytes()).hexdigest()


def check_resume(previous: dict, config: RunConfig, force: bool, root: Path) -> None:
    old, new = previous.get("config") or {}, config.to_json()
    differences = [f"{key}: {old[key]!r} in the run, {new.get(key)!r} now"
                   for key in config_differences(old, config)]
    if differences and not force:
        raise SigenError(
            f"{root} holds a run with a different configuration ({'; '.join(differences)}). "
            "Use another --output, or --force to continue it anyway.")


def resolve_corpus(config: RunConfig, engine: EnginePlan, kinds: tuple[str, ...],
                   ranges: list[tuple[int, int]] | None, previous: dict | None, force: bool,
                   log) -> CorpusPlan:
    """The passages a grounded run draws on, cut at the length that fits the model."""
    path = Path(config.corpus)  # type: ignore[arg-type]
    passage_chars = config.passage_chars or passage_chars_for(
        path, engine.weights, engine.spec.max_model_len // PASSAGE_SHARE)
    whole = load_corpus(path, max_chars=passage_chars)
    passages = select_chapters(whole, ranges) if ranges else whole
    record = corpus_record(path, whole, ranges)
    saved = (previous or {}).get("corpus")
    changes = corpus_changes(saved, record) if isinstance(saved, dict) else []
    if changes and not force:
        raise SigenError(
            f"the corpus {path} is not the one {config.output} was started on "
            f"({'; '.join(changes)}): its passages differ, so the run cannot continue "
            "where it stopped. Restore the corpus, write to another --output, or pass "
            "--force to continue with the corpus as it is now.")
    chapters = len({(p.source, p.chapter_index) for p in passages})
    log(f"Corpus {path}: {_count(len(passages), 'passage')} of at most {passage_chars} "
        f"characters from {_count(chapters, 'chapter')}"
        + (f" ({config.chapters})." if ranges else "."))
    return CorpusPlan(path, tuple(passages), kinds, config.max_repeats or DEFAULT_MAX_REPEATS,
                      passage_chars, record)


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'s' * (n != 1)}"
