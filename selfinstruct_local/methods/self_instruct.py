"""Self-Instruct (Wang et al. 2023): propose, classify, then write instances.

1. bootstrap: continue a numbered list of 8 tasks from the pool as it is when the request is
   sent (6 human-written, 2 generated), and take the new instructions the model adds;
2. classify: ask whether the instruction is a classification task;
3. instances: write input/output instances, output-first for classification (so the labels
   are not all the same), input-first otherwise; greedy first, and one sampled retry for a task
   that got no usable instance.
"""

from __future__ import annotations

from selfinstruct_local.engines import Completion, Request
from selfinstruct_local.pipeline.bootstrap import (
    build_bootstrap_request,
    parse_instructions,
    sample_prompt_tasks,
)
from selfinstruct_local.pipeline.classify import build_classify_request, parse_is_classification
from selfinstruct_local.pipeline.instances import build_instances_request, parse_instances
from selfinstruct_local.pipeline.stages import Context, Method, Source, Step


def bootstrap(ctx: Context, n: int) -> tuple[Request, dict]:
    listed = sample_prompt_tasks(ctx.rng("sample", n), ctx.human,
                                 ctx.state.machine_instructions)
    return build_bootstrap_request(
        ctx.prompts, listed, max_tokens=ctx.config.max_new_tokens or 512,
        temperature=ctx.temperature, top_p=ctx.top_p, seed=ctx.seed_for("bootstrap", n)), {}


def proposed(ctx: Context, carried: dict, c: Completion) -> list[dict]:
    return [{"instruction": text}
            for text in parse_instructions(ctx.prompts, c.text, c.finish_reason)]


def classify(ctx: Context, task: dict, attempt: int) -> Request:
    return build_classify_request(ctx.prompts, task["instruction"],
                                  seed=ctx.seed_for("classify", task["id"]))


def classified(ctx: Context, task: dict, c: Completion) -> bool:
    label = parse_is_classification(ctx.prompts, c.text)
    ctx.state.stats.classified(label)
    task["is_classification"] = bool(label)
    return True


def instances(ctx: Context, task: dict, attempt: int) -> Request:
    return build_instances_request(
        ctx.prompts, task["instruction"], task["is_classification"],
        temperature=ctx.attempt_temperature(attempt),
        seed=ctx.seed_for("instances", task["id"], attempt))


def written(ctx: Context, task: dict, c: Completion) -> bool:
    found = parse_instances(ctx.prompts, c.text, task["is_classification"], c.finish_reason)
    task["instances"] = ctx.keep_instances(task, found)
    return bool(task["instances"])


def method(ctx: Context) -> Method:
    return Method(
        name="self-instruct",
        source=Source("bootstrap", bootstrap, proposed),
        steps=(Step("classify", classify, classified),
               Step("instances", instances, written, attempts=2)),
    )
