"""Engines: a batch of requests in, completions out, chosen by name from one table.

Each entry says what it needs (local weights, GPUs, a library) and checks it before anything
slow happens; its module is imported only when the engine is loaded, so `sigen --help` and an
openai run never import vLLM or torch.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

from selfinstruct_local.engines.base import (
    VLLM_MISSING,
    Completion,
    Engine,
    EngineOptions,
    Request,
)
from selfinstruct_local.errors import SigenError
from selfinstruct_local.models import ModelSpec


def _needs_module(module: str, message: str) -> Callable[[EngineOptions], None]:
    def check(options: EngineOptions) -> None:
        if importlib.util.find_spec(module) is None:
            raise SigenError(message)
    return check


def _needs_servers(options: EngineOptions) -> None:
    if not options.base_urls:
        raise SigenError("--engine openai needs --base-url URL (e.g. http://gpu01:8000/v1)")


@dataclass(frozen=True)
class EngineEntry:
    name: str
    target: str  # "module:attribute" of a callable (spec, options) -> Engine
    local_weights: bool  # whether it loads the checkpoint on this machine
    local_gpus: bool  # whether --gpus applies to it
    replicas: bool  # whether it runs --gpus / --tensor-parallel replicas (data parallelism)
    check: Callable[[EngineOptions], None]
    summary: str

    def load(self, spec: ModelSpec, options: EngineOptions) -> Engine:
        module, attribute = self.target.split(":")
        return getattr(importlib.import_module(module), attribute)(spec, options)


ENGINES: dict[str, EngineEntry] = {entry.name: entry for entry in (
    EngineEntry("vllm", "selfinstruct_local.engines.vllm:load_vllm", True, True, True,
                _needs_module("vllm", VLLM_MISSING),
                "vLLM in this process (GPU or CPU build); several replicas through a vllm "
                "serve that sigen starts"),
    EngineEntry("transformers", "selfinstruct_local.engines.transformers:TransformersEngine",
                True, True, False,
                _needs_module("transformers", "the transformers engine needs transformers and "
                              "torch: pip install transformers torch"),
                "Hugging Face transformers, the slow fallback"),
    EngineEntry("openai", "selfinstruct_local.engines.openai:OpenAIEngine", False, False, False,
                _needs_servers,
                "a client of OpenAI-compatible servers (vllm serve, SGLang, llama.cpp, TGI)"),
)}
ENGINE_NAMES = tuple(ENGINES)


def engine_entry(name: str) -> EngineEntry:
    if name not in ENGINES:
        raise SigenError(f"unknown engine {name!r}; choose one of {', '.join(ENGINE_NAMES)}")
    return ENGINES[name]


def load_engine(name: str, spec: ModelSpec, options: EngineOptions) -> Engine:
    entry = engine_entry(name)
    entry.check(options)
    return entry.load(spec, options)


__all__ = ["ENGINES", "ENGINE_NAMES", "Completion", "Engine", "EngineEntry", "EngineOptions",
           "Request", "engine_entry", "load_engine"]
