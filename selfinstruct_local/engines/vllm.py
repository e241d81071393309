"""vLLM engine: one LLM, one `generate` call per batch. Serves both the GPU and the CPU build.

Several replicas on one node (`--gpus 4 --tensor-parallel 2`) run as a `vllm serve` with vLLM's
own data parallelism, which sigen starts and talks to through the openai engine (server.py).

vLLM starts its engine core in a spawned process, so it must be built inside a function run from
`if __name__ == "__main__"` or a console-script entry point, never at import time.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import time

from selfinstruct_local.engines.base import (
    VLLM_MISSING,
    Completion,
    EngineOptions,
    EngineStats,
    Request,
    cpu_dtype,
    render_prompt,
)
from selfinstruct_local.engines.enginelog import log_size, logger_to, output_to, start_failure
from selfinstruct_local.engines.reaper import guard
from selfinstruct_local.errors import SigenError
from selfinstruct_local.models import ModelSpec


def load_vllm(spec: ModelSpec, options: EngineOptions):
    """One replica in this process; several through a vllm serve with data parallelism."""
    if options.replicas > 1:
        from selfinstruct_local.engines.server import ServedVLLMEngine

        return ServedVLLMEngine(spec, options)
    return VLLMEngine(spec, options)


class VLLMEngine:
    name = "vllm"

    def __init__(self, spec: ModelSpec, options: EngineOptions) -> None:
        self.log_path = options.engine_log_path
        # Defaults that keep the CPU build small and quiet; a user's own settings win. With a
        # run's engine.log, vLLM's start-up lines are worth keeping there.
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        if self.log_path is None:
            os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        start = time.perf_counter()
        log_start = log_size(self.log_path)
        try:
            # vLLM prints at import, and its engine-core process inherits the descriptors
            # that are current when it starts: both happen inside this window (enginelog.py).
            with output_to(self.log_path):
                self._start(spec, options)
        except SigenError:
            raise
        except Exception as exc:
            raise SigenError(start_failure("vLLM", self.log_path, log_start,
                                           f"{type(exc).__name__}: {exc}".rstrip(": "))) from exc
        logger_to("vllm", self.log_path)  # what it logs from this process from now on
        self.stats.load_seconds = time.perf_counter() - start

    def _start(self, spec: ModelSpec, options: EngineOptions) -> None:
        try:
            import vllm
        except ImportError:
            raise SigenError(VLLM_MISSING) from None

        gpus, seed = options.gpus, options.seed
        self.spec = spec
        self.stats = EngineStats()
        self._vllm = vllm
        dtype = spec.dtype if gpus > 0 else cpu_dtype(spec.dtype)
        self.stats.extra["dtype"] = dtype
        kwargs: dict[str, object] = {
            "model": str(spec.path),
            "dtype": dtype,
            "max_model_len": spec.max_model_len,
            "seed": seed,
        }
        if gpus > 0:
            kwargs["tensor_parallel_size"] = options.tensor_parallel
        else:
            kwargs["enforce_eager"] = True  # compiling graphs on CPU costs minutes for no gain
        # vLLM's CPU build fails ("CPU Generator does not use offset") when a seeded request's
        # prefill is split over steps, as long prompts are; on CPU only the engine is seeded.
        # Either way runs are alike, not byte-identical: batches form by timing (see README).
        self.per_request_seeds = gpus > 0
        self.stats.extra["per_request_seeds"] = self.per_request_seeds
        before = set(multiprocessing.active_children())
        self.llm = vllm.LLM(**kwargs)
        # The engine's own processes (engine core), to end them when shutting down is cut short.
        self._processes = [p for p in multiprocessing.active_children() if p not in before]
        # If sigen itself is killed, a watchdog ends them (see reaper.py).
        self._reaper = guard([p.pid for p in self._processes if p.pid])
        self.stats.extra["vllm_version"] = vllm.__version__
        self.tokenizer = self.llm.get_tokenizer()

    def render(self, request: Request) -> str:
        return render_prompt(self.tokenizer, self.spec.prompt_format, request)

    def generate(self, requests: list[Request]) -> list[Completion]:
        if not requests:
            return []
        params = [
            self._vllm.SamplingParams(
                max_tokens=r.max_tokens,
                temperature=r.temperature,
                top_p=r.top_p,
                stop=list(r.stop) or None,
                seed=r.seed if self.per_request_seeds else None,
            )
            for r in requests
        ]
        prompts = [self.render(r) for r in requests]
        start = time.perf_counter()
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        completions = [
            Completion(
                text=out.outputs[0].text,
                finish_reason="length" if out.outputs[0].finish_reason == "length" else "stop",
                prompt_tokens=len(out.prompt_token_ids or []),
                completion_tokens=len(out.outputs[0].token_ids),
            )
            for out in outputs
        ]
        self.stats.add(completions, time.perf_counter() - start)
        return completions

    def close(self, wait: bool = True) -> None:
        """Shut the engine core process down now rather than at interpreter exit (which waits
        for it). Without `wait` (a second Ctrl-C), or if the shutdown was cut short, it is
        killed instead: after a Ctrl-C vLLM's processes can take a minute to exit by themselves.
        """
        llm, self.llm = getattr(self, "llm", None), None
        engine = getattr(llm, "llm_engine", None)
        shutdown = getattr(engine, "shutdown", None) or getattr(
            getattr(engine, "engine_core", None), "shutdown", None
        )
        if wait and callable(shutdown):
            # Best effort: the process is exiting anyway; what it prints goes to engine.log.
            with output_to(getattr(self, "log_path", None)), contextlib.suppress(Exception):
                shutdown()
        for process in getattr(self, "_processes", []):
            if process.is_alive():
                process.kill()
                process.join(timeout=5)
        reaper, self._reaper = getattr(self, "_reaper", None), None
        if reaper is not None:
            os.close(reaper)  # the watchdog wakes up, finds nothing left, and exits
