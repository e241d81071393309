"""Behaviour kept through refactoring: a run of each method with the scripted engine, through
`sigen run`'s own code (execute_run), writes the same rows as the run recorded before the
run-plan refactor (tests/fixtures/replay, written by `python -m tests.replay_record DIR`).

The one deliberate difference since the recording: a grounded row names its corpus file
relative to the corpus (it used to be the absolute path), compared here by file name.
"""

from __future__ import annotations

import json

import pytest

from tests.replay_engine import run_scripted
from tests.replay_record import FILES, FIXTURES, RUNS, options

RECORDED = FIXTURES / "replay"


def rows(path):
    if not path.exists():
        return None
    if path.suffix == ".json":
        found = json.loads(path.read_text(encoding="utf-8"))
    else:
        found = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    for row in found:
        if isinstance(row.get("passage"), dict):
            row["passage"]["source"] = row["passage"]["source"].rsplit("/", 1)[-1]
    return found


@pytest.mark.parametrize("name", list(RUNS))
def test_the_same_run_writes_the_same_rows(tmp_path, smollm2, name):
    run_scripted(tmp_path / name, **options(name))
    for file in FILES:
        recorded, now = rows(RECORDED / name / file), rows(tmp_path / name / file)
        if recorded is None:
            assert not now, f"{file} was not written before"
            continue
        assert now == recorded, file
