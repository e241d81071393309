"""The Alpaca variant: one prompt asks for a batch of complete tasks (instruction, input, output).

Three seed tasks are shown as "Task N / Instruction / Input / Output" blocks; the reply is started
with the next block's header so the model writes new tasks in the same shape.
"""

from __future__ import annotations

import re

from selfinstruct_local.engines import Request
from selfinstruct_local.pipeline.parsing import clean_item, is_no_input, split_fields
from selfinstruct_local.prompts import PromptSet
from selfinstruct_local.seeds import Instance, Task

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


def parse_alpaca_tasks(
    prompts: PromptSet, text: str, finish_reason: str
) -> list[tuple[str, Instance]]:
    """(instruction, instance) pairs from a completion that starts after "Task 4\\nInstruction:"."""
    L = prompts.labels
    header = re.compile(rf"^\s*\**{re.escape(L.task)}\s*\d+\**\s*[:：]?\s*$",
                        re.IGNORECASE | re.MULTILINE)
    blocks = header.split(f"{L.instruction}:" + text)
    if finish_reason == "length":
        blocks = blocks[:-1]
    tasks = []
    plural = L.instruction + "s"  # small models drift to "Instructions:"
    for block in blocks:
        fields = split_fields(block, [L.instruction, plural, L.input, L.output])
        named = fields.get(L.instruction, fields.get(plural, ""))
        instruction = clean_item(named.split("\n")[0])
        output = fields.get(L.output, "").strip()
        if not instruction or L.output not in fields:
            continue
        raw_input = fields.get(L.input, "")
        inp = "" if is_no_input(raw_input, L.no_input) else raw_input
        tasks.append((instruction, Instance(input=inp, output=output)))
    return tasks
