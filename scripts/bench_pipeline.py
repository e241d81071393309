#!/usr/bin/env python3
"""sigen's own cost per accepted instruction as the pool grows (the engine costs nothing here).

For each pool size N the pool (the near-duplicate index and the machine instructions the
bootstrap prompts sample from) is filled with N instructions: the sentences of POOL.jsonl, then
pairs of them joined, to reach N. Then the real Self-Instruct loop (streaming, screening with
the near-duplicate check, most-similar and average similarity, group-committed writes to a
temporary run directory) runs to --accept new instructions against an engine that answers at
once: bootstrap answers list held-out sentences (never in the pool), classification says No,
instance answers are valid. Printed: milliseconds of sigen's time per accepted instruction at
each size (median of --repeats), and the ratio of the largest to the smallest.

    python scripts/bench_pipeline.py /work/shared/bench/pool_en.jsonl --sizes 10000,100000,1000000

Last line: ms_at_1m=X (at the largest size). Goal: X <= 1 and within 2x of the 10k figure.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from selfinstruct_local.config import RunConfig  # noqa: E402
from selfinstruct_local.dedup import NearDupIndex  # noqa: E402
from selfinstruct_local.engines.base import Completion, EngineStats, Request  # noqa: E402
from selfinstruct_local.engines.stream import BatchStream  # noqa: E402
from selfinstruct_local.methods import load_method  # noqa: E402
from selfinstruct_local.methods.self_instruct import few_shot_texts  # noqa: E402
from selfinstruct_local.pipeline.loop import Loop  # noqa: E402
from selfinstruct_local.pipeline.stages import Context  # noqa: E402
from selfinstruct_local.pipeline.state import RunState  # noqa: E402
from selfinstruct_local.prompts import load_prompts  # noqa: E402
from selfinstruct_local.runstore import RunStore  # noqa: E402
from selfinstruct_local.seeds import default_seed_path, load_seed_tasks  # noqa: E402


class InstantEngine:
    """Answers at once: bootstrap requests with the next held-out sentences as a numbered
    list, classification with No, instances with a valid input and output."""

    name = "instant"

    def __init__(self, fresh: list[str]) -> None:
        self.fresh = fresh
        self.next = 0
        self.stats = EngineStats()

    def answer(self, request: Request) -> Completion:
        prefix = request.assistant_prefix
        if prefix.startswith("Task "):
            start = int(prefix.split()[1].rstrip(":"))
            items = [self.fresh[(self.next + k) % len(self.fresh)] for k in range(8)]
            self.next += 8
            lines = [items[0]] + [f"Task {start + k}: {t}" for k, t in enumerate(items[1:], 1)]
            return Completion(" " + "\n".join(lines) + "\n", "length", 400, 120)
        if prefix.startswith("Classification:"):
            return Completion(" No", "stop", 300, 1)
        return Completion("Input: A short paragraph to work on.\nOutput: A plain, correct "
                          "answer written in two sentences.\n", "stop", 300, 20)

    def generate(self, requests: list[Request]) -> list[Completion]:
        return [self.answer(r) for r in requests]

    def render(self, request: Request) -> str:
        return request.prompt

    def close(self, wait: bool = True) -> None:
        pass


def pool_texts(sentences: list[str], n: int, rng: random.Random) -> list[str]:
    texts = sentences[:n]
    while len(texts) < n:
        a, b = rng.sample(sentences, 2)
        texts.append(f"{a} {b}")
    return texts


def filled_index(pool: list[str]) -> NearDupIndex:
    index = NearDupIndex()
    for text in [t.instruction for t in load_seed_tasks(default_seed_path("en"))] + pool:
        index.add(text)
    return index


def measure(index: NearDupIndex, pool: list[str], fresh: list[str], accept: int,
            batch: int) -> float:
    """Milliseconds per accepted instruction for one loop run over the pool in `index` (which
    keeps what it accepts: the next run's pool is that much larger)."""
    config = RunConfig(num_instructions=accept, seed=0)
    prompts = load_prompts("en")
    seeds = load_seed_tasks(default_seed_path("en"))
    state = RunState(machine_instructions=list(pool))
    with tempfile.TemporaryDirectory() as root:
        store = RunStore(Path(root), group_commit=True)
        ctx = Context(config, prompts, seeds, state, store, index,
                      examples=few_shot_texts(prompts))
        engine = InstantEngine(fresh)
        loop = Loop(ctx, load_method(ctx), BatchStream(engine, batch), batch)
        start = time.perf_counter()
        loop.run()
        seconds = time.perf_counter() - start
    if state.accepted != accept:
        raise SystemExit(f"accepted {state.accepted}, expected {accept}")
    return 1000 * seconds / accept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("pool", type=Path, help="JSONL with an 'instruction' field")
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--accept", type=int, default=2000, help="instructions per measurement")
    parser.add_argument("--batch", type=int, default=256, help="requests per engine batch")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with args.pool.open(encoding="utf-8") as handle:
        sentences = list(dict.fromkeys(json.loads(line)["instruction"] for line in handle))
    rng = random.Random(0)
    rng.shuffle(sentences)
    held_out = 3 * args.accept * args.repeats  # distinct new sentences for every measurement
    fresh, sentences = sentences[:held_out], sentences[held_out:]
    sizes = [int(s) for s in args.sizes.split(",")]
    figures = {}
    for n in sizes:
        pool = pool_texts(sentences, n, rng)
        index = filled_index(pool)
        chunk = len(fresh) // args.repeats
        runs = [measure(index, pool, fresh[k * chunk:(k + 1) * chunk], args.accept, args.batch)
                for k in range(args.repeats)]
        figures[n] = statistics.median(runs)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"pool={n:>9,}  ms_per_instruction={figures[n]:.3f}  "
              f"(runs: {', '.join(f'{r:.3f}' for r in runs)}; peak memory {peak:,.0f} MB)",
              flush=True)
    small, large = figures[sizes[0]], figures[sizes[-1]]
    print(f"ratio_largest_to_smallest={large / small:.2f}")
    print(f"ms_at_1m={large:.3f}")


if __name__ == "__main__":
    main()
