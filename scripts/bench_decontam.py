#!/usr/bin/env python3
"""Benchmark `sigen decontaminate`: 1,000,000 benchmark lines against 60,000 generated tasks.

Both sides are built from the ../shared/bench pools (60k English and 60k Chinese sentences),
from disjoint parts of each pool (two thirds, one third) so that overlaps are rare:
- the benchmark: two JSONL files of 500,000 lines each, {"question": two or three sentences,
  "answer": one sentence}, drawn at random from 40k sentences of each pool;
- the run: 60,000 tasks (half English, half Chinese), instruction, input (every other task)
  and output from the other 20k sentences, and `--planted` of them with a benchmark question
  pasted into their input or output.

The files are written first; then the real command line (`python -m selfinstruct_local
decontaminate`) runs in a child process, whose wall time, CPU time and peak memory
(resource.getrusage of the children, so the data building does not count) are printed. The
planted tasks must all be flagged. Last line: `seconds=X peak_mb=Y`.

    python scripts/bench_decontam.py [--lines 1000000] [--tasks 60000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
POOLS = REPO.parent / "shared" / "bench"
sys.path.insert(0, str(REPO))

from selfinstruct_local.quality.contamination import ngrams  # noqa: E402


def load_pool(name: str) -> list[str]:
    with (POOLS / name).open(encoding="utf-8") as handle:
        return [json.loads(line)["instruction"] for line in handle if line.strip()]


def write_benchmark(path: Path, sentences: list[str], lines: int, sep: str,
                    rng: random.Random) -> list[str]:
    """JSONL lines of {"question", "answer"}; returns the questions (for planting)."""
    questions = []
    with path.open("w", encoding="utf-8") as handle:
        for _ in range(lines):
            question = sep.join(rng.choices(sentences, k=rng.randint(2, 3)))
            questions.append(question)
            handle.write(json.dumps({"question": question, "answer": rng.choice(sentences)},
                                    ensure_ascii=False) + "\n")
    return questions


def write_run(root: Path, tasks: list[tuple[str, str, str]]) -> None:
    """A finished run directory as `sigen run` writes it, one instance per instruction."""
    root.mkdir(parents=True)
    with (root / "machine_instructions.jsonl").open("w", encoding="utf-8") as mi, \
            (root / "instances.jsonl").open("w", encoding="utf-8") as inst:
        for k, (instruction, input_text, output) in enumerate(tasks, start=1):
            ident = f"mi-{k:06d}"
            mi.write(json.dumps({"id": ident, "instruction": instruction, "round": 1,
                                 "is_classification": False, "num_instances": 1},
                                ensure_ascii=False) + "\n")
            inst.write(json.dumps({"instruction_id": ident, "instruction": instruction,
                                   "input": input_text, "output": output},
                                  ensure_ascii=False) + "\n")
    (root / "manifest.json").write_text(json.dumps(
        {"status": "finished", "config": {"lang": "en"},
         "counts": {"accepted": len(tasks), "instances": len(tasks)}}), encoding="utf-8")


def build(folder: Path, lines: int, n_tasks: int, planted: int, seed: int) -> set[str]:
    """Write the benchmark and the run under `folder`; return the planted tasks' ids."""
    rng = random.Random(seed)
    tasks: list[tuple[str, str, str]] = []
    questions: list[str] = []
    (folder / "bench").mkdir()
    for name, sep in (("pool_en.jsonl", " "), ("pool_zh.jsonl", "")):
        pool = load_pool(name)
        rng.shuffle(pool)
        cut = len(pool) * 2 // 3
        questions += write_benchmark(folder / "bench" / f"bench_{name[5:7]}.jsonl", pool[:cut],
                                     lines // 2, sep, rng)
        rest = pool[cut:]
        for k in range(n_tasks // 2):
            tasks.append((rest[k % len(rest)], rng.choice(rest) if k % 2 else "",
                          sep.join(rng.choices(rest, k=2))))
    rng.shuffle(tasks)
    ids = set()
    for k in rng.sample(range(len(tasks)), planted):
        instruction, input_text, output = tasks[k]
        question = rng.choice(questions)
        while not ngrams(question):  # shorter than n: no overlap could be found
            question = rng.choice(questions)
        tasks[k] = ((instruction, question, output) if k % 2 else
                    (instruction, input_text, output + " " + question))
        ids.add(f"mi-{k + 1:06d}-1")
    write_run(folder / "run", tasks)
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--tasks", type=int, default=60_000)
    parser.add_argument("--planted", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="build the data here and keep it")
    args = parser.parse_args()

    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench-decontam-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        started = time.perf_counter()
        planted = build(folder, args.lines, args.tasks, args.planted, args.seed)
        print(f"built {args.lines:,} benchmark lines and {args.tasks:,} tasks "
              f"({len(planted)} planted) in {time.perf_counter() - started:.1f} s", flush=True)
        # One thread: the figure is for one core.
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
               "PYTHONPATH": str(REPO)}
        command = [sys.executable, "-m", "selfinstruct_local", "decontaminate",
                   str(folder / "run"), "--against", str(folder / "bench")]
        started = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
        seconds = time.perf_counter() - started
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        print(result.stdout + result.stderr, end="")
        if result.returncode:
            raise SystemExit(f"decontaminate failed with status {result.returncode}")
        with (folder / "run" / "contamination.jsonl").open(encoding="utf-8") as handle:
            flagged = {json.loads(line)["id"] for line in handle}
        print(f"flagged {len(flagged)} tasks: {len(planted & flagged)} of {len(planted)} planted "
              f"ones, {len(flagged - planted)} others (sentences the pools repeat)")
        if not planted <= flagged:
            raise SystemExit("planted tasks were missed")
        peak_mb = usage.ru_maxrss / 1024  # KiB on Linux
        print(f"cpu_seconds={usage.ru_utime + usage.ru_stime:.1f}")
        print(f"seconds={seconds:.1f} peak_mb={peak_mb:.0f}")
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
