"""The one engine interface the pipeline talks to.

`Engine.generate(requests)` takes a whole batch (a round's prompts) and returns one Completion per
request, in order. Batching is the caller's job; an engine never hides a loop over rounds.
Prompts arrive as `Request.messages` plus an optional assistant prefix; `Engine.render` turns them
into the model's text, through the chat template for chat models or as plain text for base models.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Protocol

from selfinstruct_local.errors import SigenError
from selfinstruct_local.models import ModelSpec

ENGINE_NAMES = ("vllm", "transformers")


@dataclass(frozen=True)
class Request:
    prompt: str  # the user's message (chat models) or the text to continue (base models)
    assistant_prefix: str = ""  # start of the reply, so a chat model continues a list
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


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


class Engine(Protocol):
    name: str
    spec: ModelSpec
    stats: EngineStats

    def render(self, request: Request) -> str: ...

    def generate(self, requests: list[Request]) -> list[Completion]: ...

    def close(self, wait: bool = True) -> None: ...


def render_prompt(tokenizer, prompt_format: str, request: Request) -> str:
    """The exact text the model sees: chat template + reply prefix, or plain continuation."""
    if prompt_format == "chat":
        messages = [{"role": "user", "content": request.prompt}]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text + request.assistant_prefix
    return request.prompt + request.assistant_prefix


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


def count_gpus() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_gpus(requested: int | None) -> int:
    """The number of GPUs to use: 1 when one is visible and none was asked for, else 0 (CPU)."""
    available = count_gpus()
    if requested is None:
        return 1 if available else 0
    if requested < 0:
        raise SigenError(f"--gpus must be 0 or more, not {requested}")
    if requested > available:
        raise SigenError(
            f"--gpus {requested} asked for more GPUs than are visible ({available}). "
            "Check CUDA_VISIBLE_DEVICES and nvidia-smi, or pass a smaller --gpus (0 runs on CPU)."
        )
    return requested


VLLM_MISSING = (
    "vLLM is not installed. For GPUs: pip install 'selfinstruct-local[gpu]'; "
    "without a GPU: pip install 'selfinstruct-local[cpu]' (vLLM's CPU build); "
    "or run with --engine transformers."
)


def check_engine_available(name: str) -> None:
    """Fail before any slow step when the engine's library is missing."""
    if name not in ENGINE_NAMES:
        raise SigenError(f"unknown engine {name!r}; choose one of {', '.join(ENGINE_NAMES)}")
    if name == "vllm" and importlib.util.find_spec("vllm") is None:
        raise SigenError(VLLM_MISSING)


def load_engine(name: str, spec: ModelSpec, gpus: int, seed: int) -> Engine:
    if name == "vllm":
        from selfinstruct_local.engines.vllm import VLLMEngine

        return VLLMEngine(spec, gpus=gpus, seed=seed)
    if name == "transformers":
        from selfinstruct_local.engines.transformers import TransformersEngine

        return TransformersEngine(spec, gpus=gpus, seed=seed)
    raise SigenError(f"unknown engine {name!r}; choose one of {', '.join(ENGINE_NAMES)}")
