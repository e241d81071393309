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

With `--run N` it then times a real `sigen run -n N` through the same server(s): sigen's
generated tokens per second over the run (from its first request to the end, the manifest's
`generation_seconds`), divided by the ceiling for the same work: the plain client sending as
many requests of each stage as the run sent, each forced (min_tokens, ignore_eos) to the
stage's mean completion length, at the same concurrency. Last line `run_ratio=R` (goal: 0.9).

    python scripts/bench_engine.py --base-url http://127.0.0.1:8000/v1 --requests 64
    python scripts/bench_engine.py --start-server   # a vllm serve of the packaged model here
    python scripts/bench_engine.py --start-server --run 40
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from selfinstruct_local.engines.base import EngineOptions, Request  # noqa: E402
from selfinstruct_local.engines.gpus import count_gpus  # noqa: E402
from selfinstruct_local.engines.openai import OpenAIEngine, parse_base_urls  # noqa: E402
from selfinstruct_local.engines.server import ManagedServer  # noqa: E402
from selfinstruct_local.methods.self_instruct import (  # noqa: E402
    build_bootstrap_request,
    build_classify_request,  # noqa: E402
    build_instances_request,  # noqa: E402
    sample_prompt_tasks,
)
from selfinstruct_local.models import ensure_weights, load_registry  # noqa: E402
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
    parser.add_argument("--run", type=int, metavar="N", default=0,
                        help="also time a real `sigen run -n N` through the server(s)")
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
    if args.run:
        whole_run(args, spec, urls, engine)


def whole_run(args: argparse.Namespace, spec, urls: tuple[str, ...], engine) -> None:
    """A real `sigen run -n N`, then the ceiling for the same mix of requests."""
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "selfinstruct_local", "run", "-n", str(args.run),
                   "--engine", "openai", "--base-url", ",".join(urls), "--model", spec.name,
                   "--concurrency", str(args.concurrency), "--seed", "0", "-o", out, "--quiet"]
        env = {**os.environ, **({"OPENAI_API_KEY": args.api_key} if args.api_key else {})}
        print(f"sigen run -n {args.run} through {', '.join(urls)} ...", flush=True)
        subprocess.run(command, check=True, env=env)
        manifest = json.loads((Path(out) / "manifest.json").read_text())
    counts, generated = manifest["counts"], manifest["tokens"]["generated"]
    seconds = manifest["generation_seconds"]
    ours = generated / seconds
    bodies = []
    for stage in ("bootstrap", "classify", "instances"):
        n, tokens = counts.get(f"{stage}_requests", 0), counts.get(f"{stage}_tokens", 0)
        if n:
            bodies += same_stage_requests(engine, stage, n, max(1, round(tokens / n)))
    random.Random(0).shuffle(bodies)  # stages interleave in a run too
    tokens, plain_seconds = asyncio.run(ceiling(urls, bodies, args.concurrency, args.api_key))
    plain = tokens / plain_seconds
    print(f"run: {counts.get('accepted', 0)} instructions, {generated} tokens in {seconds:.1f} s "
          f"({ours:.1f} tok/s); the same requests from the plain client: {tokens} tokens in "
          f"{plain_seconds:.1f} s ({plain:.1f} tok/s)")
    print(f"run_ratio={ours / plain:.3f}")


def same_stage_requests(engine, stage: str, n: int, length: int) -> list[tuple[str, dict]]:
    """`n` requests shaped like the run's `stage` requests, each generating `length` tokens."""
    prompts = load_prompts("en")
    seeds = [t.instruction for t in load_seed_tasks(default_seed_path("en"))]
    if stage == "bootstrap":
        requests = bootstrap_requests(n, length)
    elif stage == "classify":
        requests = [build_classify_request(prompts, seeds[i % len(seeds)], seed=i)
                    for i in range(n)]
    else:
        requests = [build_instances_request(prompts, seeds[i % len(seeds)], False, seed=i)
                    for i in range(n)]
    bodies = []
    for request in requests:
        path, body = engine.request_body(request)
        body.pop("stop", None)
        bodies.append((path, {**body, "max_tokens": length, "min_tokens": length,
                              "ignore_eos": True}))
    return bodies


if __name__ == "__main__":
    main()
