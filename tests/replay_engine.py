"""Run `sigen run`'s own code path (`execute_run`) with the scripted engine in place of a model."""

from __future__ import annotations

from pathlib import Path

import pytest

from selfinstruct_local import run as run_module
from selfinstruct_local.config import RunConfig
from selfinstruct_local.progress import Reporter
from tests.scripted import ScriptedEngine


def run_scripted(root: Path, **options) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run_module, "load_engine", lambda *a, **k: ScriptedEngine(fail=0.3))
        run_module.execute_run(RunConfig(output=root, **options), Reporter())
