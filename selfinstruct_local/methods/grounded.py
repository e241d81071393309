"""Tasks grounded in a corpus: one task per request about one passage, answered from it.

1. bootstrap: a passage (drawn so that every passage comes before any repeats) and one kind of
   reading task (prompts/<lang>/grounded_kinds.yaml), KINDS_PER_PASSAGE requests per passage
   with different kinds; the passage opens the prompt so these requests share a prefix;
2. instances: the answer, from the passage, which is the task's input; greedy first, one
   sampled retry when the answer is unusable.
A task is compared for near-duplicates with the tasks about the same passage only (see
pipeline/grounded.py, PassageIndexes), and is rejected when it restates its kind's description.
"""

from __future__ import annotations

from selfinstruct_local.corpus import Passage
from selfinstruct_local.dedup import NearDupIndex
from selfinstruct_local.engines import Completion, Request
from selfinstruct_local.pipeline.grounded import (
    KINDS_PER_PASSAGE,
    TASK_TOKENS,
    answer_copy_checks,
    assign_kinds,
    build_answer_request,
    build_grounded_request,
    copies_kind,
    parse_answer,
    parse_grounded_task,
    passage_record,
)
from selfinstruct_local.pipeline.stages import Context, Method, Source, Step
from selfinstruct_local.seeds import Instance


def method(ctx: Context) -> Method:
    drawn: dict[int, tuple[Passage, list[str]]] = {}  # passage number -> passage, its kinds

    def request(ctx: Context, n: int) -> tuple[Request, dict]:
        number, slot = divmod(n, KINDS_PER_PASSAGE)
        if number not in drawn:
            drawn.clear()  # requests are built in order: earlier passages are done with
            # Counted so that a resume continues the draw where it stopped (see run.py).
            ctx.state.stats.passages_drawn += 1
            kinds = assign_kinds(ctx.kinds, 1, ctx.rng("kinds", number))
            drawn[number] = (ctx.sampler.draw(1)[0], kinds[0])  # type: ignore[union-attr]
        passage, kinds = drawn[number]
        kind = kinds[slot % len(kinds)]
        built = build_grounded_request(
            ctx.prompts, passage, kind, max_tokens=ctx.config.max_new_tokens or TASK_TOKENS,
            temperature=ctx.temperature, top_p=ctx.top_p, seed=ctx.seed_for("grounded", n))
        return built, {"input": passage.text, "passage": passage_record(passage), "kind": kind}

    return Method(
        name="grounded",
        source=Source("bootstrap", request, proposed),
        steps=(Step("instances", answer, answered, attempts=2),),
        check=restates_kind,
        index_for=same_passage,
        final_keys=("passage", "kind"),
    )


def proposed(ctx: Context, carried: dict, c: Completion) -> list[dict]:
    task = parse_grounded_task(ctx.prompts, c.text, c.finish_reason)
    return [{"instruction": task, **carried}] if task else []


def restates_kind(ctx: Context, candidate: dict) -> str | None:
    return copies_kind(ctx.prompts, candidate["instruction"], candidate["kind"])


def same_passage(ctx: Context, candidate: dict) -> NearDupIndex:
    return ctx.state.passage_indexes[candidate["passage"]["id"]]


def answer(ctx: Context, task: dict, attempt: int) -> Request:
    return build_answer_request(
        ctx.prompts, task["instruction"], task["input"],
        temperature=ctx.attempt_temperature(attempt),
        seed=ctx.seed_for("answer", task["id"], attempt))


def answered(ctx: Context, task: dict, c: Completion) -> bool:
    # An empty answer is kept here so that the filters count it (empty_output).
    found = [Instance(task["input"], parse_answer(ctx.prompts, c.text, c.finish_reason))]
    checks = answer_copy_checks(ctx.prompts, task["instruction"])
    task["instances"] = ctx.keep_instances(task, found, **checks)
    task["is_classification"] = False  # reading tasks, answered in prose
    return bool(task["instances"])
