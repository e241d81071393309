"""Record (or replay) a run of each method with the scripted engine through `execute_run`.

`python -m tests.replay_record DIR` writes the run directories under DIR; test_replay.py runs
the same configurations with the current code and compares the rows with the recorded ones in
tests/fixtures/replay/ (recorded before the run-plan refactor, so that it changed nothing).
"""

from __future__ import annotations

import sys
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"
# name -> `sigen run` options as RunConfig fields (paths relative to tests/fixtures)
RUNS = {
    "self-instruct": dict(num_instructions=12, seed=1, batch_size=8, judge=True),
    "alpaca": dict(method="alpaca", num_instructions=10, seed=2, batch_size=4),
    "grounded": dict(corpus="corpus_en", passage_chars=400, num_instructions=6, seed=3,
                     batch_size=4),
    "grounded-chapters": dict(corpus="corpus_en", passage_chars=400, num_instructions=4,
                              seed=4, batch_size=4, chapters="2-3", kinds="plot,summary"),
    "alpaca-grounded": dict(method="alpaca", corpus="corpus_en", passage_chars=400,
                            num_instructions=6, seed=5, batch_size=2),
}
# The files compared, each a list of rows (data.json is derived from instances.jsonl).
FILES = ("pending.jsonl", "rejected.jsonl", "instances.jsonl", "machine_instructions.jsonl",
         "scores.jsonl", "data.json")


def options(name: str) -> dict:
    found = dict(RUNS[name])
    if "corpus" in found:
        found["corpus"] = FIXTURES / found["corpus"]
    return found


if __name__ == "__main__":
    from tests.replay_engine import run_scripted  # the code under test's way to run it

    out = Path(sys.argv[1])
    for name in RUNS:
        run_scripted(out / name, **options(name))
        print(name, "recorded")
