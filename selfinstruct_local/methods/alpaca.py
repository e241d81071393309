"""Alpaca (Taori et al. 2023): one request asks for a list of complete tasks.

Each request shows three seed tasks and asks for up to 20 new ones, each with its instruction,
input and output; a list cut off by the token limit keeps its complete tasks. A task needs no
further request: its one instance is filtered like any other.
"""

from __future__ import annotations

from selfinstruct_local.engines import Completion, Request
from selfinstruct_local.pipeline.alpaca import (
    NUM_EXAMPLES,
    build_alpaca_request,
    parse_alpaca_tasks,
)
from selfinstruct_local.pipeline.stages import Context, Method, Source
from selfinstruct_local.seeds import Instance


def request(ctx: Context, n: int) -> tuple[Request, dict]:
    shown = ctx.rng("sample", n).sample(ctx.seed_tasks, min(NUM_EXAMPLES, len(ctx.seed_tasks)))
    return build_alpaca_request(
        ctx.prompts, shown, max_tokens=ctx.config.max_new_tokens or 1536,
        temperature=ctx.temperature, top_p=ctx.top_p, seed=ctx.seed_for("alpaca", n)), {}


def tasks(ctx: Context, carried: dict, c: Completion) -> list[dict]:
    return [{"instruction": text, "input": inst.input, "output": inst.output}
            for text, inst in parse_alpaca_tasks(ctx.prompts, c.text, c.finish_reason)]


def own_instance(ctx: Context, task: dict) -> list[Instance]:
    return ctx.keep_instances(task, [Instance(task["input"], task["output"])])


def method(ctx: Context) -> Method:
    return Method(name="alpaca", source=Source("alpaca", request, tasks), finish=own_instance)
