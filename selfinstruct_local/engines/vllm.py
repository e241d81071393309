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
import signal
import threading
import time
from collections.abc import Iterator

from selfinstruct_local.engines.base import (
    VLLM_MISSING,
    Completion,
    EngineOptions,
    EngineStats,
    Request,
    cpu_dtype,
    render_prompt,
    set_cpu_defaults,
)
from selfinstruct_local.engines.enginelog import log_size, logger_to, output_to, start_failure
from selfinstruct_local.engines.reaper import Watchdog
from selfinstruct_local.engines.sockets import use_own_socket_folder
from selfinstruct_local.errors import SigenError
from selfinstruct_local.models import ModelSpec


def load_vllm(spec: ModelSpec, options: EngineOptions):
    """One replica in this process; several through a vllm serve with data parallelism."""
    if options.replicas > 1:
        from selfinstruct_local.engines.server import ServedVLLMEngine

        return ServedVLLMEngine(spec, options)
    return VLLMEngine(spec, options)


@contextlib.contextmanager
def noting_ctrl_c() -> Iterator[list[bool]]:
    """Notes a Ctrl-C that arrives while the engine loads (and handles it as before). A
    terminal's Ctrl-C reaches vLLM's worker processes too, which then fail, often before this
    process sees its KeyboardInterrupt: that failure is the interrupt, not a failed start."""
    seen: list[bool] = []
    if threading.current_thread() is not threading.main_thread():
        yield seen
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame) -> None:
        seen.append(True)
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGINT, handler if previous != signal.SIG_IGN else previous)
    try:
        yield seen
    finally:
        signal.signal(signal.SIGINT, previous)


class VLLMEngine:
    name = "vllm"

    def __init__(self, spec: ModelSpec, options: EngineOptions,
                 pooling: str | None = None) -> None:
        """`pooling` ("MEAN", "CLS" or "LAST"): vLLM's pooling runner, for embeddings
        (`self.llm.embed`), instead of a generating engine."""
        self.log_path = options.engine_log
        # Defaults that keep the CPU build small and quiet; a user's own settings win. With a
        # run's engine.log, vLLM's start-up lines are worth keeping there.
        set_cpu_defaults(os.environ)
        if self.log_path is None:
            os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        use_own_socket_folder()  # vLLM's socket files, removed when sigen exits
        start = time.perf_counter()
        log_start = log_size(self.log_path)
        # Before vLLM spawns anything: if sigen is killed while the engine loads, the processes
        # it has started so far end too (reaper.py). A Ctrl-C leaves it to sigen's exit.
        self._watchdog = Watchdog()
        try:
            # vLLM prints at import, and its engine-core process inherits the descriptors
            # that are current when it starts: both happen inside this window (enginelog.py).
            with output_to(self.log_path), noting_ctrl_c() as interrupted:
                self._start(spec, options, pooling)
        except SigenError:
            self._watchdog.close()  # ends what the failed start left running
            raise
        except Exception as exc:
            self._watchdog.close()
            if interrupted:  # vLLM's workers got the terminal's Ctrl-C too, and failed first
                raise KeyboardInterrupt from None
            raise SigenError(start_failure("vLLM", self.log_path, log_start,
                                           f"{type(exc).__name__}: {exc}".rstrip(": "))) from exc
        logger_to("vllm", self.log_path)  # what it logs from this process from now on
        self.stats.load_seconds = time.perf_counter() - start

    def _start(self, spec: ModelSpec, options: EngineOptions, pooling: str | None) -> None:
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
        if pooling is not None:
            from vllm.config import PoolerConfig

            kwargs.update(runner="pooling", pooler_config=PoolerConfig(
                seq_pooling_type=pooling, use_activation=True))  # normalized vectors
        # vLLM's CPU build fails ("CPU Generator does not use offset") when a seeded request's
        # prefill is split over steps, as long prompts are; on CPU only the engine is seeded.
        # Either way runs are alike, not byte-identical: batches form by timing (see README).
        self.per_request_seeds = gpus > 0
        self.stats.extra["per_request_seeds"] = self.per_request_seeds
        before = set(multiprocessing.active_children())
        self.llm = vllm.LLM(**kwargs)
        # The engine's own processes (engine core), to end them when shutting down is cut short.
        self._processes = [p for p in multiprocessing.active_children() if p not in before]
        # From now on the watchdog guards these (and their workers) only.
        self._watchdog.hand_over(p.pid for p in self._processes if p.pid)
        self.stats.extra["vllm_version"] = vllm.__version__
        self.tokenizer = self.llm.get_tokenizer()

    def render(self, request: Request) -> str:
        return render_prompt(self.tokenizer, self.spec.prompt_format, request)

    def params(self, r: Request):  # -> vllm.SamplingParams
        return self._vllm.SamplingParams(
            max_tokens=r.max_tokens, temperature=r.temperature, top_p=r.top_p,
            stop=list(r.stop) or None, stop_token_ids=list(r.stop_token_ids) or None,
            seed=r.seed if self.per_request_seeds else None)

    def generate(self, requests: list[Request]) -> list[Completion]:
        if not requests:
            return []
        prompts = [self.render(r) for r in requests]
        start = time.perf_counter()
        outputs = self.llm.generate(prompts, [self.params(r) for r in requests], use_tqdm=False)
        completions = [_completion(out) for out in outputs]
        self.stats.add(completions, time.perf_counter() - start)
        return completions

    def stream(self, capacity: int):  # -> VLLMStream | BatchStream
        """Requests added to vLLM's engine as they are submitted, collected as each finishes
        (vLLM's own scheduler keeps its batch full); batches where this vLLM lacks `enqueue`."""
        if not hasattr(self.llm, "enqueue") or os.environ.get("SIGEN_VLLM_BATCHES"):
            from selfinstruct_local.engines.stream import BatchStream

            return BatchStream(self, capacity)
        return VLLMStream(self, capacity)

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
        watchdog = getattr(self, "_watchdog", None)
        if watchdog is not None:
            watchdog.close()  # it ends what the shutdown left running, if anything, and exits


def _completion(out) -> Completion:  # out: vllm.RequestOutput
    first = out.outputs[0]
    return Completion(text=first.text,
                      finish_reason="length" if first.finish_reason == "length" else "stop",
                      prompt_tokens=len(out.prompt_token_ids or []),
                      completion_tokens=len(first.token_ids))


class VLLMStream:
    """Submitted requests go into vLLM's engine at once (`LLM.enqueue`); `collect` runs engine
    steps until some finish. Which requests share a step then depends on timing, so the order
    completions come back in is not fixed by the run (the manifest says so)."""

    ordered = False
    blocking = False

    def __init__(self, engine: VLLMEngine, capacity: int) -> None:
        self.engine = engine
        self.capacity = max(1, capacity)
        self._keys: dict[str, int] = {}

    @property
    def in_flight(self) -> int:
        return len(self._keys)

    def submit(self, key: int, request: Request) -> None:
        engine = self.engine
        [request_id] = engine.llm.enqueue([engine.render(request)], [engine.params(request)],
                                          use_tqdm=False)
        self._keys[_external(request_id)] = key

    def collect(self) -> list[tuple[int, Completion]]:
        if not self._keys:
            return []
        start = time.perf_counter()
        finished: list[tuple[int, Completion]] = []
        llm_engine = self.engine.llm.llm_engine
        while not finished:
            if not llm_engine.has_unfinished_requests():
                raise RuntimeError(f"vLLM has no request left but {len(self._keys)} of sigen's "
                                   "never came back")
            for out in llm_engine.step():
                key = self._keys.pop(_external(out.request_id), None) if out.finished else None
                if key is not None:
                    finished.append((key, _completion(out)))
        self.engine.stats.add([c for _, c in finished], time.perf_counter() - start)
        return finished


def _external(request_id: str) -> str:
    """The id `LLM.enqueue` gave a request, as its outputs carry it: vLLM may return the
    internal form, the counter's value plus "-" and 8 random characters."""
    return request_id.split("-", 1)[0]
