"""Alpaca on a corpus: one request per passage asks for a list of complete tasks about it.

1. alpaca: a passage (every passage of the corpus, or of --chapters, before any repeats) opens
   the prompt, which asks Alpaca style for as many tasks as fit the model's context (20 where
   they fit) of the chosen kinds: questions, summaries, allusions, modern rewriting, and writing
   in the original's manner (what happens next, a scene the text only mentions told in full, a
   character's inner voice). The model writes an instruction and an output per task; the input
   is the passage (the prompt and the parser are below).
No further request: a task's one instance is filtered like any other (it must not copy the
passage or the prompt), and its instruction must not copy a sentence of the passage.
Near-duplicates are looked for among the tasks about the same passage, and a generic
instruction is kept at most --max-repeats times in the run (grounded.Grounding).
"""

from __future__ import annotations

import random

from selfinstruct_local.corpus import PASSAGE_SHARE, Passage
from selfinstruct_local.engines import Completion, Request
from selfinstruct_local.errors import SigenError
from selfinstruct_local.methods.alpaca import TASKS_PER_PROMPT, task_blocks
from selfinstruct_local.methods.grounded import Grounding, passage_record
from selfinstruct_local.pipeline.filters import copies_passage, copies_prompt
from selfinstruct_local.pipeline.stages import Context, Method, Source
from selfinstruct_local.prompts import PromptSet
from selfinstruct_local.seeds import Instance
from selfinstruct_local.text import is_cjk_char


def method(ctx: Context) -> Method:
    grounding = Grounding(ctx)
    kinds = grounding.kinds
    n_tasks = tasks_per_request(ctx.prompts, kinds, ctx.context_len // PASSAGE_SHARE,
                                ctx.context_len)

    def request(ctx: Context, n: int) -> tuple[Request, dict]:
        passage = grounding.draw(ctx)
        built = build_alpaca_grounded_request(
            ctx.prompts, passage, kinds, n_tasks,
            max_tokens=ctx.config.max_new_tokens and ctx.config.max_new_tokens * n_tasks,
            temperature=ctx.temperature, top_p=ctx.top_p, seed=ctx.seed_for("alpaca", n))
        return built, {"request": built, "passage": passage}

    def check(ctx: Context, candidate: dict) -> str | None:
        text = candidate["instruction"]
        return (copies_request(ctx.prompts, text, kinds) or copies_passage(text, candidate["input"])
                or grounding.repeats.check(text))

    def own_instance(ctx: Context, task: dict) -> list[Instance]:
        task["is_classification"] = False  # reading and writing tasks, answered in prose
        checks = output_copy_checks(ctx.prompts, kinds, task["instruction"])
        return ctx.keep_instances(task, [Instance(task["input"], task["output"])], **checks)

    return Method(
        name="alpaca-grounded",
        source=Source("alpaca", request, tasks),
        check=check,
        index_for=grounding.index_for,
        accepted=grounding.accepted,
        finish=own_instance,
        final_keys=("passage",),
    )


def tasks(ctx: Context, carried: dict, c: Completion) -> list[dict]:
    passage = carried["passage"]
    return [{"instruction": text, "input": inst.input, "output": inst.output,
             "passage": passage_record(passage)}
            for text, inst in parse_alpaca_grounded_tasks(ctx.prompts, carried["request"], c,
                                                           passage)]


# -- alpaca_grounded -------------------------------------------------------------------------------
# The Alpaca method on a corpus: one request per passage asks for a list of complete tasks.
#
# The prompt opens with the passage (requests about one passage share that prefix in the
# engine's cache), then asks, Alpaca style, for `n_tasks` different tasks of the chosen kinds
# (`prompts/<lang>/grounded_kinds.yaml`: questions, summaries, allusions, modern rewriting, and
# writing in the original's manner: continuation, a scene told in full, a character's inner
# voice). Every task's input is the passage itself, so the model writes only an instruction and
# an output per task and the parser sets the input.
#
# The reply is started with a whole first task but its output ("Task 1 / Instruction: Summarize
# the passage in a few sentences. / Output:"), its instruction one of the chosen kinds that is a
# usable task as written (`generic_ok`). Plain Alpaca shows three complete tasks to copy the
# shape from; a passage has no ready-made tasks, and without one SmolLM2-135M never wrote an
# "Output:" line (recorded: 0 tasks from 4 requests; with the lead task, 13 from 6, 9 of them
# through the filters). A large model loses little: the lead task is real data, kept up to
# --max-repeats times per text (RepeatCap).

# Reply tokens budgeted per task. The prompt asks for an instruction of one or two sentences
# and an output of at most 200 Chinese characters or 200 English words (writing tasks; other
# answers are shorter). A 7B Chinese model's tokenizer spends about 0.7 tokens per character,
# so 30 + 200 characters are about 160 tokens; in English 20 + 120 words (a typical mix) are
# about 190. Alpaca itself allowed 3072 tokens for 20 tasks, about 150 each.
TASK_TOKENS = 200
# Tokens of chat markup around the prompt (a system prompt, role markers) and of the reply
# prefix: SmolLM2's template, the longest here, adds about 40.
CHAT_MARKUP_TOKENS = 64


def kind_lines(prompts: PromptSet, kinds: list[str]) -> str:
    """The chosen kinds as the prompt lists them, one "- description" a line."""
    return "\n".join(f"- {prompts.grounded_kinds[kind]}" for kind in kinds)


def cautious_tokens(text: str) -> int:
    """An upper estimate of the tokens `text` costs any tokenizer here: 2 per CJK character
    (SmolLM2's spends 1.8, Qwen's 0.7) and 1 per 3 other characters (English BPE: about 4)."""
    cjk = sum(1 for ch in text if is_cjk_char(ch))
    return 2 * cjk + -(-(len(text) - cjk) // 3)


def tasks_per_request(
    prompts: PromptSet,
    kinds: list[str],
    passage_tokens: int,
    context_len: int,
    *,
    task_tokens: int = TASK_TOKENS,
    most: int = TASKS_PER_PROMPT,
) -> int:
    """How many tasks one request asks for: Alpaca's 20 where they fit, fewer for long
    passages or short contexts, at least 1; the request's max_tokens is then this times
    `task_tokens`, which always fits.

        room  = context_len - passage_tokens - prompt (its words, estimated with
                `cautious_tokens`, plus CHAT_MARKUP_TOKENS)
        tasks = min(most, room // task_tokens)

    E.g. zh, all 8 kinds: the prompt is 901 tokens by this estimate (843 measured with SmolLM2's
    tokenizer, chat markup included). A 2,048-token model with 341-token passages gets 4
    tasks, an 8k one with 1,365-token passages 20. A passage that leaves no room for one task
    is an error: lower the passage length.
    """
    prompt = prompts.fill("alpaca_grounded", passage="", count=most,
                          kinds=kind_lines(prompts, kinds))
    room = context_len - passage_tokens - cautious_tokens(prompt) - CHAT_MARKUP_TOKENS
    if room < task_tokens:
        raise SigenError(
            f"a passage of {passage_tokens} tokens leaves {max(room, 0)} of the model's "
            f"{context_len}-token context for the reply, less than one task needs "
            f"({task_tokens}); pass a smaller --passage-chars or a model with a longer context")
    return min(most, room // task_tokens)


def lead_instruction(prompts: PromptSet, kinds: list[str], key: str) -> str | None:
    """The instruction of the task that opens the reply: the description of one of `kinds`
    that is a usable task as written (chosen by `key`, so requests vary), as a sentence;
    None when no chosen kind is one (--kinds plot,character)."""
    usable = [kind for kind in kinds if kind in prompts.generic_ok]
    if not usable:
        return None
    text = prompts.grounded_kinds[random.Random(key).choice(usable)]
    if prompts.lang == "zh":
        return text + "。"
    return text[:1].upper() + text[1:] + "."


def build_alpaca_grounded_request(
    prompts: PromptSet,
    passage: Passage,
    kinds: list[str],
    n_tasks: int,
    *,
    max_tokens: int | None = None,
    temperature: float = 0.7,
    top_p: float = 0.9,
    seed: int | None = None,
) -> Request:
    """A request for `n_tasks` tasks about `passage`, of the kinds named (listed in that order).
    With 2 tasks or more the first is the lead task (see the module docstring). `max_tokens`
    defaults to n_tasks * TASK_TOKENS."""
    L = prompts.labels
    lead = lead_instruction(prompts, kinds, f"{passage.id}:{seed}") if n_tasks > 1 else None
    prefix = (f"{L.task} 1\n{L.instruction}{L.colon}{lead}\n{L.output}{L.colon.rstrip()}"
              if lead else f"{L.task} 1\n{L.instruction}{L.colon.rstrip()}")
    return Request(
        prompt=prompts.fill("alpaca_grounded", passage=passage.text, count=n_tasks,
                            kinds=kind_lines(prompts, kinds)),
        assistant_prefix=prefix,
        max_tokens=max_tokens if max_tokens is not None else n_tasks * TASK_TOKENS,
        temperature=temperature,
        top_p=top_p,
        # The task after the last one asked for, or a new passage: the list is done.
        stop=(f"{L.task} {n_tasks + 1}", f"\n{L.passage}{L.colon.strip()}"),
        seed=seed,
    )


def parse_alpaca_grounded_tasks(
    prompts: PromptSet, request: Request, completion: Completion, passage: Passage
) -> list[tuple[str, Instance]]:
    """(instruction, instance) pairs from the reply to `request` (its prefix, the lead task
    included, and the completion); each instance's input is the passage. An "Input:" the
    model writes anyway is ignored; a task without an instruction or an output is skipped; a
    list cut off by the token limit keeps its complete tasks."""
    L = prompts.labels
    reply = request.assistant_prefix + completion.text
    tasks = []
    for fields in task_blocks(prompts, reply, completion.finish_reason):
        instruction = fields.get(L.instruction, "")
        output = fields.get(L.output, "").strip()
        if instruction and output:
            tasks.append((instruction, Instance(input=passage.text, output=output)))
    return tasks


def prompt_wording(prompts: PromptSet, kinds: list[str]) -> str:
    """The request's words without its passage: what a task must not simply write back."""
    return prompts.fill("alpaca_grounded", passage="", count="", kinds=kind_lines(prompts, kinds))


def copies_request(prompts: PromptSet, instruction: str, kinds: list[str]) -> str | None:
    """'copied_prompt' when an instruction writes back the request (its rules, or the
    description of a kind that asks for a question rather than being one) instead of a task.
    Descriptions that are usable tasks as written (`generic_ok`: 用几句话概括这段原文的内容)
    are left out of the comparison; RepeatCap bounds how often those are kept."""
    specific = [kind for kind in kinds if kind not in prompts.generic_ok]
    return "copied_prompt" if copies_prompt(instruction, prompt_wording(prompts, specific)) \
        else None


def output_copy_checks(prompts: PromptSet, kinds: list[str], instruction: str
                       ) -> dict[str, str]:
    """`filter_instances` arguments for a task's output: it must not be mostly a stretch of
    the passage (its input), mostly the request's words and its own instruction, or write back
    a sentence of the request's rules."""
    wording = prompt_wording(prompts, kinds)
    return {"answer_prompt": f"{wording}\n{instruction}", "answer_rules": wording}
