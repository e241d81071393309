"""Generation grounded in a user's corpus: tasks about one passage, answered from that passage.

Each bootstrap prompt carries one passage and asks for a numbered list of tasks about it (plot,
characters and relations, summary, poems and allusions, modern rewriting, continuation). The
passage becomes every such task's instance input, and the answer is generated from it. A task is
checked for near-duplicates only against the tasks about the same passage, so the same question
about different passages is kept while a question repeated about the same passage is not.
"""

from __future__ import annotations

import re

from selfinstruct_local.corpus import Passage
from selfinstruct_local.dedup import NearDupIndex
from selfinstruct_local.engines import Request
from selfinstruct_local.prompts import PromptSet

MAX_TASKS_PER_PASSAGE = 8


class PassageIndexes(dict):
    """One near-duplicate index per passage id, created on first use.

    A grounded task is compared only with the tasks about the same passage: a key made of
    instruction plus passage would be dominated by the long passage (any two tasks about one
    passage score about 0.9), while comparing instructions alone would drop the same good
    question asked about another passage.
    """

    def __missing__(self, passage_id: str) -> NearDupIndex:
        index = self[passage_id] = NearDupIndex()
        return index


def passage_record(passage: Passage) -> dict:
    return {"id": passage.id, "source": passage.source, "chapter": passage.chapter,
            "chapter_index": passage.chapter_index}


def build_grounded_request(
    prompts: PromptSet,
    passage: Passage,
    *,
    max_tokens: int = 384,
    temperature: float = 0.7,
    top_p: float = 0.9,
    seed: int | None = None,
) -> Request:
    L = prompts.labels
    return Request(
        prompt=prompts.fill("grounded", passage=passage.text) + "\n\n",
        assistant_prefix=f"{L.task} 1{L.colon.rstrip()}",
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        stop=(f"{L.task} {MAX_TASKS_PER_PASSAGE + 1}",),
        seed=seed,
    )


def build_answer_request(
    prompts: PromptSet, instruction: str, passage_text: str, *, max_tokens: int = 320,
    temperature: float = 0.0, seed: int | None = None,
) -> Request:
    L = prompts.labels
    return Request(
        prompt=prompts.fill("grounded_answer", passage=passage_text, instruction=instruction)
        + "\n",
        assistant_prefix=f"{L.output}{L.colon.rstrip()}",
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=0.9 if temperature else 1.0,
        stop=(f"\n{L.task}{L.colon.strip()}", f"\n{L.task}:"),
        seed=seed,
    )


def parse_answer(prompts: PromptSet, text: str, finish_reason: str) -> str:
    """The answer text; empty when cut off by the token limit (an answer missing its end)."""
    if finish_reason == "length":
        return ""
    L = prompts.labels
    # A model that starts a second field ("Passage:", "Task:") has finished its answer.
    names = "|".join(re.escape(n) for n in (L.passage, L.task, L.instruction))
    answer = re.split(rf"\n\s*(?:{names})\s*[:：]", text, maxsplit=1)[0]
    return answer.strip()
