"""The one engine interface the pipeline talks to.

`Engine.generate(requests)` takes a whole batch (a round's prompts) and returns one Completion per
request, in order. Batching is the caller's job; an engine never hides a loop over rounds.
Prompts arrive as `Request.messages` plus an optional assistant prefix; `Engine.render` turns them
into the model's text, through the chat template for chat models or as plain text for base models.
"""

from __future__ import annotations

import os
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from selfinstruct_local.models import ModelSpec


@dataclass(frozen=True)
class Request:
    prompt: str  # the user's message (chat models) or the text to continue (base models)
    assistant_prefix: str = ""  # start of the reply, so a chat model continues a list
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    # The prompt is the model's own text already (Magpie renders its chat template up to the
    # user's turn): sent verbatim, through no template.
    raw: bool = False
    # Token ids that end the completion besides EOS (special tokens, which are skipped from the
    # text a stop string is matched against).
    stop_token_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str  # "stop" (EOS or a stop string) or "length" (hit max_tokens)
    prompt_tokens: int
    completion_tokens: int


@dataclass
class EngineStats:
    calls: int = 0
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    load_seconds: float = 0.0
    extra: dict[str, object] = field(default_factory=dict)

    def add(self, completions: list[Completion], seconds: float) -> None:
        self.calls += 1
        self.requests += len(completions)
        self.prompt_tokens += sum(c.prompt_tokens for c in completions)
        self.completion_tokens += sum(c.completion_tokens for c in completions)
        self.seconds += seconds


DEFAULT_CONCURRENCY = 512  # requests in flight per server: vLLM's max_num_seqs on a large GPU
DEFAULT_SERVER_TIMEOUT = 600.0  # seconds without any server answering before a run stops


@dataclass(frozen=True)
class EngineOptions:
    """Everything an engine may need besides the model; each engine reads its own part."""

    seed: int = 42
    gpus: int = 0  # GPUs to use on this machine (0: CPU)
    tensor_parallel: int = 1  # GPUs per replica; gpus // tensor_parallel replicas
    base_urls: tuple[str, ...] = ()  # the openai engine's servers, one per replica
    api_key: str | None = field(default=None, repr=False)  # never printed or saved
    concurrency: int = DEFAULT_CONCURRENCY  # requests in flight per server
    server_timeout: float = DEFAULT_SERVER_TIMEOUT
    batch_size: int = 16  # the transformers engine's own forward batch
    log: Callable[[str], None] = print  # notices (a replica dropped, a server waited for)
    # The engine's own output (vLLM's logs and warnings, a vllm serve's output): the run's
    # engine.log; None: the terminal.
    engine_log: Path | None = None

    @property
    def replicas(self) -> int:
        return max(1, self.gpus // max(1, self.tensor_parallel))


class Engine(Protocol):
    name: str
    spec: ModelSpec
    stats: EngineStats

    def render(self, request: Request) -> str: ...

    def generate(self, requests: list[Request]) -> list[Completion]: ...

    def close(self, wait: bool = True) -> None: ...


def render_prompt(tokenizer, prompt_format: str, request: Request) -> str:
    """The exact text the model sees: chat template + reply prefix, or plain continuation (a
    raw request's prompt is that text already)."""
    if prompt_format == "chat" and not request.raw:
        messages = [{"role": "user", "content": request.prompt}]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text + request.assistant_prefix
    return request.prompt + request.assistant_prefix


FEW_CORES = 4  # at most this many usable cores: every one of them computes


def set_cpu_defaults(env: MutableMapping[str, str]) -> None:
    """vLLM's CPU settings that sigen chooses, in the environment of an engine in this process
    or of a `vllm serve` it starts; a user's own settings win (and GPUs ignore them)."""
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB; vLLM would take a share of the RAM
    if len(os.sched_getaffinity(0)) <= FEW_CORES:
        # vLLM's CPU build keeps one core out of its compute threads for the frontend; on 2
        # cores that halves the model's threads. Measured on 2 cores: in-process, 30-37 tok/s
        # reserved and 45-52 tok/s with both cores (the same 3,066 tokens of a `sigen run
        # -n 5`); through `vllm serve`, test_evol_engine's Chinese run took 120 s reserved and
        # 51 s with both.
        env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")


def cpu_dtype(dtype: str) -> str:
    """The dtype to run on this CPU: half precision only where the CPU computes it natively.

    Without AVX-512 BF16 or AMX, bf16 is emulated; measured here on an AVX2 machine, SmolLM2-135M
    on vLLM's CPU build made 23 tokens/s in bf16 and 71 tokens/s in float32.
    """
    if dtype not in ("bfloat16", "float16", "half", "auto"):
        return dtype
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = handle.read()
    except OSError:
        return dtype
    return dtype if ("avx512_bf16" in flags or "amx_bf16" in flags) else "float32"


VLLM_MISSING = (
    "vLLM is not installed. For GPUs: pip install 'selfinstruct-local[gpu]'; "
    "without a GPU: pip install 'selfinstruct-local[cpu]' (vLLM's CPU build); "
    "or run with --engine transformers, or --engine openai against a running server."
)
