"""Instruction bootstrapping: show 8 numbered tasks from the pool, let the model continue the list.

The prompt numbers the in-context tasks 1..8 and the reply is started with "Task 9:" so a chat
model continues the list rather than chatting about it. At most `max_new` items are asked for; a
completion cut off by the token limit loses its last item, which may be half-written.
"""

from __future__ import annotations

import random
import re

from selfinstruct_local.engines import Request
from selfinstruct_local.pipeline.parsing import clean_item, item_marker
from selfinstruct_local.prompts import PromptSet

NUM_PROMPT_TASKS = 8
NUM_MACHINE_TASKS = 2


def sample_prompt_tasks(
    rng: random.Random,
    human: list[str],
    machine: list[str],
    total: int = NUM_PROMPT_TASKS,
    from_machine: int = NUM_MACHINE_TASKS,
) -> list[str]:
    """6 human and 2 machine instructions (fewer machine ones while there are fewer), shuffled."""
    k_machine = min(from_machine, len(machine))
    chosen = rng.sample(machine, k_machine) + rng.sample(human, min(total - k_machine, len(human)))
    rng.shuffle(chosen)
    return chosen


def build_bootstrap_request(
    prompts: PromptSet,
    tasks: list[str],
    *,
    max_new: int = 8,
    max_tokens: int = 512,
    temperature: float = 0.7,
    top_p: float = 0.9,
    seed: int | None = None,
) -> Request:
    L = prompts.labels
    lines = "\n".join(f"{L.task} {n}{L.colon}{text}" for n, text in enumerate(tasks, start=1))
    first_new = len(tasks) + 1
    return Request(
        prompt=prompts.fill("bootstrap", tasks=lines) + "\n",
        assistant_prefix=f"{L.task} {first_new}{L.colon.rstrip()}",
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        stop=(f"{L.task} {first_new + max_new}",),
        seed=seed,
    )


def _item_start(prompts: PromptSet) -> re.Pattern[str]:
    return re.compile(rf"^\s*{item_marker(prompts.labels.task)}\s*(?P<text>.*)$", re.IGNORECASE)


def parse_instructions(prompts: PromptSet, text: str, finish_reason: str) -> list[str]:
    """New instructions from a completion that starts right after the "Task 9:" prefix.

    The first line is task 9 itself; each later numbered line is another task. Blank lines are
    skipped; the first line that is neither numbered nor blank ends the list (the model has moved
    on to chatting).
    """
    item_start = _item_start(prompts)
    lines = text.split("\n")
    items = [lines[0]]
    for line in lines[1:]:
        if not line.strip():
            continue
        match = item_start.match(line)
        if not match:
            break
        items.append(match.group("text"))
    if finish_reason == "length":
        items = items[:-1]
    return [cleaned for cleaned in (clean_item(i) for i in items) if cleaned]
