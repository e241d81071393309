#!/usr/bin/env python3
"""How close sigen's openai engine comes to what the server can give.

The same Self-Instruct bootstrap requests (built from the project's seed tasks, seeded) are sent
two ways against a running OpenAI-compatible server:
- the ceiling: a plain loop of `--concurrency` async workers posting the request bodies with
  httpx, nothing else;
- sigen: `OpenAIEngine.generate(requests)`, with its replica choice, retries and bookkeeping.
The two alternate `--repeats` times (so that a noisy machine hurts both alike); each pass prints
its generated tokens per second, and the last line is the ratio of the medians, `ratio=R`
(goal: R >= 0.95). An untimed pass warms the server's prefix cache first. Seeded sampling
makes both generate the same tokens where the server is deterministic; tokens/s counts what
each actually got.

    python scripts/bench_engine.py --base-url http://127.0.0.1:8000/v1 --requests 64
    python scripts/bench_engine.py --start-server   # a vllm serve of the packaged model here
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from selfinstruct_local.engines.base import EngineOptions, Request  # noqa: E402
from selfinstruct_local.engines.gpus import count_gpus  # noqa: E402
from selfinstruct_local.engines.openai import OpenAIEngine, parse_base_urls  # noqa: E402
from selfinstruct_local.engines.server import ManagedServer  # noqa: E402
from selfinstruct_local.models import ensure_weights, load_registry  # noqa: E402
from selfinstruct_local.pipeline.bootstrap import (  # noqa: E402
    build_bootstrap_request,
    sample_prompt_tasks,
)
from selfinstruct_local.prompts import load_prompts  # noqa: E402
from selfinstruct_local.seeds import default_seed_path, load_seed_tasks  # noqa: E402


def bootstrap_requests(n: int, max_tokens: int, lang: str = "en") -> list[Request]:
    prompts = load_prompts(lang)
    human = [t.instruction for t in load_seed_tasks(default_seed_path(lang))]
    rng = random.Random(0)
    return [build_bootstrap_request(prompts, sample_prompt_tasks(rng, human, []),
                                    max_tokens=max_tokens, seed=i) for i in range(n)]


async def ceiling(urls: tuple[str, ...], bodies: list[tuple[str, dict]], concurrency: int,
                  api_key: str | None) -> tuple[int, float]:
    """`concurrency` workers per server, each posting the next body: tokens and seconds."""
    queue: asyncio.Queue = asyncio.Queue()
    for item in bodies:
        queue.put_nowait(item)
    tokens = 0
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(timeout=None, limits=limits, headers=headers) as client:
        async def worker(url: str) -> None:
            nonlocal tokens
            while not queue.empty():
                path, body = queue.get_nowait()
                response = await client.post(url + path, json=body)
                response.raise_for_status()
                tokens += response.json()["usage"]["completion_tokens"]

        start = time.perf_counter()
        await asyncio.gather(*(worker(u) for u in urls for _ in range(concurrency)))
        return tokens, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--base-url", help="one URL or a comma-separated list")
    where.add_argument("--start-server", action="store_true",
                       help="start a vllm serve of --model (default: the packaged model) on "
                       "127.0.0.1 for the benchmark, and stop it after")
    parser.add_argument("--model", default=None, help="registry name (default: the default)")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--concurrency", type=int, default=512, help="in flight per server")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    spec = load_registry().resolve(args.model, served=not args.start_server)
    server = None
    if args.start_server:
        server = ManagedServer(spec, ensure_weights(spec), gpus=count_gpus())
        print(f"starting vllm serve on {server.base_url} ...")
        server.start()
    try:
        run(args, spec, parse_base_urls(server.base_url if server else args.base_url))
    finally:
        if server is not None:
            server.stop()


def run(args: argparse.Namespace, spec, urls: tuple[str, ...]) -> None:
    options = EngineOptions(base_urls=urls, api_key=args.api_key, concurrency=args.concurrency,
                            log=lambda m: print(f"  [engine] {m}"))
    engine = OpenAIEngine(spec, options)
    requests = bootstrap_requests(args.requests, args.max_tokens)
    bodies = [engine.request_body(r) for r in requests]
    print(f"{len(requests)} bootstrap requests, max {args.max_tokens} new tokens, "
          f"concurrency {args.concurrency} per server, {len(urls)} server(s), "
          f"model {engine.served_model}")
    # One untimed pass first: the server's prefix cache then helps every timed pass alike.
    asyncio.run(ceiling(urls, bodies, args.concurrency, args.api_key))
    plain, ours = [], []
    for repeat in range(1, args.repeats + 1):
        tokens, seconds = asyncio.run(ceiling(urls, bodies, args.concurrency, args.api_key))
        plain.append(tokens / seconds)
        start = time.perf_counter()
        completions = engine.generate(requests)
        elapsed = time.perf_counter() - start
        ours.append(sum(c.completion_tokens for c in completions) / elapsed)
        print(f"pass {repeat}: ceiling {plain[-1]:.1f} tok/s ({tokens} tokens in {seconds:.1f} s)"
              f", sigen {ours[-1]:.1f} tok/s "
              f"({sum(c.completion_tokens for c in completions)} tokens in {elapsed:.1f} s)")
    engine.close()
    ratio = statistics.median(ours) / statistics.median(plain)
    print(f"median: ceiling {statistics.median(plain):.1f} tok/s, "
          f"sigen {statistics.median(ours):.1f} tok/s")
    print(f"ratio={ratio:.3f}")


if __name__ == "__main__":
    main()
