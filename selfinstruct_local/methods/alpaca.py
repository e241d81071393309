"""Alpaca (Taori et al. 2023): one request asks for a list of complete tasks.

Each request shows three seed tasks and asks for up to 20 new ones, each with its instruction,
input and output; a list cut off by the token limit keeps its complete tasks. A task needs no
further request: its one instance is filtered like any other.
"""

from __future__ import annotations

import re

from selfinstruct_local.engines import Completion, Request
from selfinstruct_local.pipeline.parsing import clean_item, is_no_input, item_marker, split_fields
from selfinstruct_local.pipeline.stages import Context, Method, Source
from selfinstruct_local.prompts import PromptSet
from selfinstruct_local.seeds import Instance, Task

# Token limit of one source request: room for about 20 complete tasks
SOURCE_TOKENS = 1536

def request(ctx: Context, n: int) -> tuple[Request, dict]:
    shown = ctx.rng("sample", n).sample(ctx.seed_tasks, min(NUM_EXAMPLES, len(ctx.seed_tasks)))
    return build_alpaca_request(
        ctx.prompts, shown, max_tokens=ctx.config.max_new_tokens or SOURCE_TOKENS,
        temperature=ctx.temperature, top_p=ctx.top_p, seed=ctx.seed_for("alpaca", n)), {}


def tasks(ctx: Context, carried: dict, c: Completion) -> list[dict]:
    return [{"instruction": text, "input": inst.input, "output": inst.output}
            for text, inst in parse_alpaca_tasks(ctx.prompts, c.text, c.finish_reason)]


def own_instance(ctx: Context, task: dict) -> list[Instance]:
    return ctx.keep_instances(task, [Instance(task["input"], task["output"])])


def method(ctx: Context) -> Method:
    return Method(name="alpaca", source=Source("alpaca", request, tasks), finish=own_instance)


# -- alpaca ----------------------------------------------------------------------------------------
# The Alpaca variant: one prompt asks for a batch of complete tasks (instruction, input, output).
#
# Three seed tasks are shown as "Task N / Instruction / Input / Output" blocks; the reply is started
# with the next block's header so the model writes new tasks in the same shape.

NUM_EXAMPLES = 3
TASKS_PER_PROMPT = 20


def format_task_block(prompts: PromptSet, number: int, task: Task) -> str:
    L = prompts.labels
    inst = task.instances[0] if task.instances else Instance("", "")
    inp = inst.input.strip() or L.no_input
    return (
        f"{L.task} {number}\n{L.instruction}{L.colon}{task.instruction}\n"
        f"{L.input}{L.colon}{inp}\n{L.output}{L.colon}{inst.output.strip()}"
    )


def build_alpaca_request(
    prompts: PromptSet,
    examples: list[Task],
    *,
    count: int = TASKS_PER_PROMPT,
    max_tokens: int = 1536,
    temperature: float = 0.7,
    top_p: float = 0.9,
    seed: int | None = None,
) -> Request:
    L = prompts.labels
    blocks = "\n\n".join(format_task_block(prompts, n, t) for n, t in enumerate(examples, 1))
    first_new = len(examples) + 1
    return Request(
        prompt=prompts.fill("alpaca", count=count, tasks=blocks) + "\n\n",
        assistant_prefix=f"{L.task} {first_new}\n{L.instruction}{L.colon.rstrip()}",
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        stop=(f"{L.task} {first_new + count}",),
        seed=seed,
    )


def task_blocks(prompts: PromptSet, reply: str, finish_reason: str) -> list[dict[str, str]]:
    """The fields of each complete task in a reply, its prefix ("Task N\\nInstruction:")
    included, keyed by the labels' instruction, input and output words. The instruction is
    its first line, cleaned, with a label the model wrote again ("Instruction: Task: ...")
    removed.

    A task starts at a header line ("Task 5", "**任务 ５**：", "5.", "（5）", "输出 5") or at an
    instruction line, numbered or not ("Instruction: ...", "5. 指令：..."), so a model that
    drops the headers still yields one block per task. When the completion was cut off by the
    token limit, the last block is kept only if a header after it shows that it was finished.
    """
    L = prompts.labels
    plural = L.instruction + "s"  # small models drift to "Instructions:"
    marker = item_marker(L.task)
    # A line holding only a number, or a label and a number ("Task 5", and "输出 2", which
    # SmolLM2 writes for 任务 2), is a header, never content.
    labels = "|".join(re.escape(n) for n in (L.task, L.instruction, L.input, L.output))
    header = re.compile(rf"^\s*(?:{marker}|\**(?:{labels})\s*\d+\**\s*[:：]?)\s*$",
                        re.IGNORECASE)
    opener = re.compile(rf"^\s*(?:{marker})?\s*(?=\**(?:{re.escape(plural)}|"
                        rf"{re.escape(L.instruction)})\**\s*[:：])", re.IGNORECASE)
    echo = re.compile(rf"^\s*(?:{re.escape(L.instruction)}|{re.escape(L.task)})\s*[:：]\s*",
                      re.IGNORECASE)
    blocks: list[list[str]] = [[]]
    closed = False  # whether a header followed the last block
    for line in reply.split("\n"):
        started = any(part.strip() for part in blocks[-1])
        if header.match(line):
            closed = started
            if started:
                blocks.append([])
            continue
        if (match := opener.match(line)) is not None:
            if started:
                blocks.append([])
            line = line[match.end():]
        closed = closed and not line.strip()
        blocks[-1].append(line)
    if finish_reason == "length" and not closed:
        blocks = blocks[:-1]
    found = []
    for block in blocks:
        fields = split_fields("\n".join(block), [L.instruction, plural, L.input, L.output])
        if plural in fields:
            fields.setdefault(L.instruction, fields.pop(plural))
        if L.instruction in fields:
            first = fields[L.instruction].split("\n")[0]
            fields[L.instruction] = clean_item(echo.sub("", first, count=1))
        if fields:
            found.append(fields)
    return found


def parse_alpaca_tasks(
    prompts: PromptSet, text: str, finish_reason: str
) -> list[tuple[str, Instance]]:
    """(instruction, instance) pairs from a completion that starts after "Task 4\\nInstruction:".
    A task without an instruction or an output is skipped."""
    L = prompts.labels
    tasks = []
    for fields in task_blocks(prompts, f"{L.instruction}:{text}", finish_reason):
        instruction = fields.get(L.instruction, "")
        if not instruction or L.output not in fields:
            continue
        raw_input = fields.get(L.input, "")
        inp = "" if is_no_input(raw_input, L.no_input) else raw_input
        tasks.append((instruction, Instance(input=inp, output=fields[L.output].strip())))
    return tasks
