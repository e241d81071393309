"""Setting an engine up for a command (`sigen run`, `sigen judge`): its options from the
command line, resolved and checked before anything slow happens into an EnginePlan; the
checkpoint on this machine; loading it with its own output sent to the run's engine.log."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from selfinstruct_local.engines import EngineEntry, engine_entry
from selfinstruct_local.engines.base import (
    DEFAULT_CONCURRENCY,
    DEFAULT_SERVER_TIMEOUT,
    EngineOptions,
)
from selfinstruct_local.engines.enginelog import ENGINE_LOG
from selfinstruct_local.engines.gpus import check_gpus, plan_parallelism
from selfinstruct_local.engines.openai import parse_base_urls, public_url
from selfinstruct_local.errors import SigenError
from selfinstruct_local.interrupt import ServerUnavailable
from selfinstruct_local.models import ModelSpec, ensure_weights, load_registry
from selfinstruct_local.progress import Reporter


@dataclass(frozen=True)
class EngineRequest:
    """The engine options a command was given (None: the default, worked out here)."""

    model: str | None = None
    models_file: Path | None = None
    engine: str = "vllm"
    gpus: int | None = None
    tensor_parallel: int | None = None
    base_url: str | None = None
    concurrency: int | None = None
    server_timeout: float | None = None
    batch_size: int | None = None
    seed: int = 42


@dataclass(frozen=True)
class EnginePlan:
    """An engine resolved: which one, the model, its options, the checkpoint here."""

    entry: EngineEntry
    spec: ModelSpec
    options: EngineOptions
    weights: Path | None  # the checkpoint on this machine (None: a model only a server has)
    batch_size: int  # source requests per round (run), tasks per call (judge)

    @property
    def gpus(self) -> int:
        return self.options.gpus


def resolve_model(request: EngineRequest) -> tuple[EngineEntry, ModelSpec]:
    """The engine's entry and the model's spec: fast checks, nothing loaded."""
    entry = engine_entry(request.engine)
    spec = load_registry(request.models_file).resolve(request.model,
                                                      served=not entry.local_weights)
    return entry, spec


def resolve_engine(request: EngineRequest, entry: EngineEntry, spec: ModelSpec,
                   reporter: Reporter, api_key: str | None, target: int) -> EnginePlan:
    """Options checked (GPUs, servers), the batch size for `target` prompts, the checkpoint
    here (prepared from its package when it is the packaged model)."""
    options = engine_options(request, entry, spec, reporter, api_key)
    entry.check(options)
    batch_size = request.batch_size or default_batch_size(options, target)
    weights = local_weights(spec, entry, reporter.log)
    return EnginePlan(entry, spec, options, weights, batch_size)


def engine_options(request: EngineRequest, entry: EngineEntry, spec: ModelSpec,
                   reporter: Reporter, api_key: str | None) -> EngineOptions:
    """The engine's settings from the command line, checked before anything slow happens."""
    if entry.local_gpus:
        if request.base_url:
            raise SigenError("--base-url is for --engine openai; the "
                             f"{entry.name} engine runs the model on this machine")
        gpus = check_gpus(request.gpus)
        if entry.replicas:
            tensor_parallel, _ = plan_parallelism(gpus, request.tensor_parallel,
                                                  spec.tensor_parallel)
        else:  # one copy of the model spread over every GPU
            tensor_parallel = max(1, gpus)
        urls: tuple[str, ...] = ()
    else:
        if request.gpus or request.tensor_parallel:
            raise SigenError(f"--gpus and --tensor-parallel are for engines that run the model "
                             f"here; with --engine {entry.name} the server decides its GPUs")
        gpus, tensor_parallel = 0, 1
        urls = parse_base_urls(request.base_url)
    return EngineOptions(
        seed=request.seed, gpus=gpus, tensor_parallel=tensor_parallel, base_urls=urls,
        api_key=api_key, concurrency=request.concurrency or DEFAULT_CONCURRENCY,
        batch_size=request.batch_size or 16,  # the transformers engine's forward batch
        server_timeout=request.server_timeout or DEFAULT_SERVER_TIMEOUT, log=reporter.notice)


def default_batch_size(options: EngineOptions, target: int) -> int:
    """Prompts per round. On a server: enough to keep every server's slots full, but not more
    than a small target needs (one Self-Instruct prompt yields several candidates)."""
    if options.base_urls:
        capacity = options.concurrency * len(options.base_urls)
        return min(capacity, max(16, target))
    return 256 * options.replicas if options.gpus else 16


def local_weights(spec: ModelSpec, entry: EngineEntry, log) -> Path | None:
    """The checkpoint on this machine: required by local engines; for a server, used when
    present (its tokenizer renders prompts and measures passages), and prepared when it comes
    from an installed package."""
    try:
        return ensure_weights(spec, log=log)
    except SigenError:
        if entry.local_weights:
            raise
        return None


def where_it_runs(options: EngineOptions) -> str:
    if options.base_urls:
        return f"on {', '.join(public_url(u) for u in options.base_urls)}"
    if not options.gpus:
        return "on the CPU"
    return (f"on {options.gpus} GPU(s): {options.replicas} replica(s) of "
            f"{options.tensor_parallel} GPU(s)")


def stream_capacity(options: EngineOptions, batch_size: int) -> int:
    """Requests kept submitted: every slot of every server for the openai engine (its
    --concurrency each); one batch for the engines that run batches."""
    if options.base_urls:
        return options.concurrency * len(options.base_urls)
    return batch_size


def load_engine(plan: EnginePlan, reporter: Reporter, root: Path):
    """The loaded engine; its own output (vLLM's warnings, a server's log) goes to
    ROOT/engine.log."""
    entry, spec, options = plan.entry, plan.spec, plan.options
    reporter.log(f"Loading {spec.name} with the {entry.name} engine {where_it_runs(options)}"
                 " ...")
    try:
        return entry.load(spec, replace(options, engine_log=root / ENGINE_LOG))
    except ServerUnavailable as exc:
        raise SigenError(f"{exc}. Check that the server is up and --base-url is right "
                         "(it ends in /v1), then run the same command again.") from None
