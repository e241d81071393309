"""Classification identification: a few-shot Yes/No question per new instruction."""

from __future__ import annotations

import re

from selfinstruct_local.engines import Request
from selfinstruct_local.prompts import PromptSet


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
