"""Instance generation: input-first for ordinary tasks, output-first for classification tasks.

Input-first asks for "Example N / Input / Output" blocks. Output-first asks for "Class label /
Input" pairs, so the labels come first and the model writes an input that fits each one; that
keeps classification data from collapsing onto one label.
"""

from __future__ import annotations

import re
from functools import cache

from selfinstruct_local.engines import Request
from selfinstruct_local.pipeline.filters import copy_key
from selfinstruct_local.pipeline.parsing import field_regex, is_no_input, split_fields
from selfinstruct_local.prompts import PromptSet
from selfinstruct_local.seeds import Instance


def build_instances_request(
    prompts: PromptSet,
    instruction: str,
    is_classification: bool,
    *,
    max_tokens: int = 320,
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
