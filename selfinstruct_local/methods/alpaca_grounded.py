"""Alpaca on a corpus: one request per passage asks for a list of complete tasks about it.

1. alpaca: a passage (every passage of the corpus, or of --chapters, before any repeats) opens
   the prompt, which asks Alpaca style for as many tasks as fit the model's context (20 where
   they fit) of the chosen kinds: questions, summaries, allusions, modern rewriting, and writing
   in the original's manner (what happens next, a scene the text only mentions told in full, a
   character's inner voice). The model writes an instruction and an output per task; the input
   is the passage. See pipeline/alpaca_grounded.py for the prompt and the parser.
No further request: a task's one instance is filtered like any other (it must not copy the
passage or the prompt). Near-duplicates are looked for among the tasks about the same passage,
and a generic instruction is kept at most --max-repeats times in the run (screen.py).
"""

from __future__ import annotations

from selfinstruct_local.engines import Completion, Request
from selfinstruct_local.methods.grounded import same_passage
from selfinstruct_local.pipeline.alpaca_grounded import (
    build_alpaca_grounded_request,
    copies_request,
    output_copy_checks,
    parse_alpaca_grounded_tasks,
    tasks_per_request,
)
from selfinstruct_local.pipeline.grounded import PASSAGE_SHARE, passage_record
from selfinstruct_local.pipeline.stages import Context, Method, Source
from selfinstruct_local.seeds import Instance


def method(ctx: Context) -> Method:
    n_tasks = tasks_per_request(ctx.prompts, ctx.kinds, ctx.context_len // PASSAGE_SHARE,
                                ctx.context_len)

    def request(ctx: Context, n: int) -> tuple[Request, dict]:
        ctx.state.stats.passages_drawn += 1  # a resume continues the draw (run.py)
        passage = ctx.sampler.draw(1)[0]  # type: ignore[union-attr]
        built = build_alpaca_grounded_request(
            ctx.prompts, passage, ctx.kinds, n_tasks,
            max_tokens=ctx.config.max_new_tokens and ctx.config.max_new_tokens * n_tasks,
            temperature=ctx.temperature, top_p=ctx.top_p, seed=ctx.seed_for("alpaca", n))
        return built, {"request": built, "passage": passage}

    return Method(
        name="alpaca-grounded",
        source=Source("alpaca", request, tasks),
        check=restates_request,
        index_for=same_passage,
        finish=own_instance,
        final_keys=("passage",),
    )


def tasks(ctx: Context, carried: dict, c: Completion) -> list[dict]:
    passage = carried["passage"]
    return [{"instruction": text, "input": inst.input, "output": inst.output,
             "passage": passage_record(passage)}
            for text, inst in parse_alpaca_grounded_tasks(ctx.prompts, carried["request"], c,
                                                           passage)]


def restates_request(ctx: Context, candidate: dict) -> str | None:
    return copies_request(ctx.prompts, candidate["instruction"], ctx.kinds)


def own_instance(ctx: Context, task: dict) -> list[Instance]:
    task["is_classification"] = False  # reading and writing tasks, answered in prose
    checks = output_copy_checks(ctx.prompts, ctx.kinds, task["instruction"])
    return ctx.keep_instances(task, [Instance(task["input"], task["output"])], **checks)
