"""Self-Instruct (Wang et al. 2023): propose, classify, then write instances.

1. bootstrap: continue a numbered list of 8 tasks from the pool as it is when the request is
   sent (6 human-written, 2 generated), and take the new instructions the model adds;
2. classify: ask whether the instruction is a classification task;
3. instances: write input/output instances, output-first for classification (so the labels
   are not all the same), input-first otherwise; greedy first, and one sampled retry for a task
   that got no usable instance.
"""

from __future__ import annotations

import random
import re
from functools import cache

from selfinstruct_local.engines import Completion, Request
from selfinstruct_local.pipeline.filters import copy_key
from selfinstruct_local.pipeline.parsing import (
    clean_item,
    field_regex,
    is_no_input,
    item_marker,
    split_fields,
)
from selfinstruct_local.pipeline.stages import Context, Method, Source, Step
from selfinstruct_local.prompts import PromptSet
from selfinstruct_local.seeds import Instance

# Token limit of one source request: room for about 8 new tasks (Self-Instruct)
SOURCE_TOKENS = 512
ANSWER_TOKENS = 320  # one task's instances (--max-answer-tokens)

def bootstrap(ctx: Context, n: int) -> tuple[Request, dict]:
    listed = sample_prompt_tasks(ctx.rng("sample", n), ctx.human,
                                 ctx.state.machine_instructions)
    return build_bootstrap_request(
        ctx.prompts, listed, max_tokens=ctx.config.max_new_tokens or SOURCE_TOKENS,
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
        max_tokens=ctx.config.max_answer_tokens or ANSWER_TOKENS,
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


# -- bootstrap -------------------------------------------------------------------------------------
# Instruction bootstrapping: show 8 numbered tasks from the pool, let the model continue the list.
#
# The prompt numbers the in-context tasks 1..8 and the reply is started with "Task 9:" so a chat
# model continues the list rather than chatting about it. At most `max_new` items are asked for; a
# completion cut off by the token limit loses its last item, which may be half-written.

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


# -- classify --------------------------------------------------------------------------------------
# Classification identification: a few-shot Yes/No question per new instruction.

def build_classify_request(
    prompts: PromptSet, instruction: str, seed: int | None = None
) -> Request:
    L = prompts.labels
    return Request(
        prompt=prompts.fill("classify", instruction=instruction) + "\n",
        assistant_prefix=f"{L.classification}{L.colon.rstrip()}",
        max_tokens=4,
        temperature=0.0,
        stop=("\n",),
        seed=seed,
    )


def parse_is_classification(prompts: PromptSet, text: str) -> bool | None:
    """True for a Yes, False for a No, None when the model said neither."""
    answer = re.sub(r"^[\s*:：\"'“]+", "", text).lower()
    if answer.startswith(prompts.labels.yes.lower()):
        return True
    if answer.startswith(prompts.labels.no.lower()):
        return False
    return None


# -- instances -------------------------------------------------------------------------------------
# Instance generation: input-first for ordinary tasks, output-first for classification tasks.
#
# Input-first asks for "Example N / Input / Output" blocks. Output-first asks for "Class label /
# Input" pairs, so the labels come first and the model writes an input that fits each one; that
# keeps classification data from collapsing onto one label.

def build_instances_request(
    prompts: PromptSet,
    instruction: str,
    is_classification: bool,
    *,
    max_tokens: int = ANSWER_TOKENS,
    temperature: float = 0.0,
    seed: int | None = None,
) -> Request:
    L = prompts.labels
    if is_classification:
        template, prefix = "instances_output_first", f"{L.class_label}{L.colon.rstrip()}"
    else:
        template, prefix = "instances_input_first", f"{L.example} 1\n"
    return Request(
        prompt=prompts.fill(template, instruction=instruction) + "\n",
        assistant_prefix=prefix,
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=0.9 if temperature else 1.0,
        stop=tuple(dict.fromkeys(
            (f"\n{L.task}{L.colon.strip()}", f"\n{L.task}:", f"{L.example} 4")
        )),
        seed=seed,
    )


def parse_instances(
    prompts: PromptSet, text: str, is_classification: bool, finish_reason: str = "stop"
) -> list[Instance]:
    L = prompts.labels
    if is_classification:
        found = _parse_output_first(prompts, f"{L.class_label}:" + text)
    else:
        found = _parse_input_first(prompts, text)
    if finish_reason == "length" and found:
        found = found[:-1]  # the last example may be cut mid-sentence
    return found


@cache
def few_shot_texts(prompts: PromptSet) -> frozenset[str]:
    """Every input and output shown as an example in the instance prompts, normalized.

    Small models often copy an example verbatim ("26.2 miles" for a task about sports); an
    instance equal to one of these is dropped by the filters as a copy.
    """
    L = prompts.labels
    found = set()
    for inst in _parse_input_first(prompts, prompts.templates["instances_input_first"]):
        found.update((inst.input, inst.output))
    # Class labels ("Positive") are legitimately reused; only the example inputs are copies.
    for inst in _parse_output_first(prompts, prompts.templates["instances_output_first"]):
        found.add(inst.input)
    return frozenset(copy_key(t) for t in found if t and t != L.no_input)


def _parse_input_first(prompts: PromptSet, text: str) -> list[Instance]:
    L = prompts.labels
    example_line = re.compile(rf"^\s*\**{re.escape(L.example)}\s*\d+\**\s*[:：]?\s*$",
                              re.IGNORECASE | re.MULTILINE)
    instances = []
    for block in example_line.split(text):
        fields = split_fields(block, [L.input, L.output, L.task])
        if L.output not in fields:
            continue
        raw_input = fields.get(L.input, "")
        inp = "" if is_no_input(raw_input, L.no_input) else raw_input
        instances.append(Instance(input=inp, output=fields[L.output]))
    return instances


def _parse_output_first(prompts: PromptSet, text: str) -> list[Instance]:
    L = prompts.labels
    label_line = field_regex(L.class_label)
    starts = list(label_line.finditer(text))
    instances = []
    for k, match in enumerate(starts):
        end = starts[k + 1].start() if k + 1 < len(starts) else len(text)
        block = text[match.start() : end]
        fields = split_fields(block, [L.class_label, L.input, L.task])
        label = fields.get(L.class_label, "").split("\n")[0].strip()
        raw_input = fields.get(L.input, "")
        inp = "" if is_no_input(raw_input, L.no_input) else raw_input
        if label:
            instances.append(Instance(input=inp, output=label))
    return instances
