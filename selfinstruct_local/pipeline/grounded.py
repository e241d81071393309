"""Generation grounded in a user's corpus: one task per request about one passage, answered from it.

Each request carries a passage and one kind of reading task (plot, characters and relations,
summary, words and allusions, modern rewriting, continuation; `prompts/<lang>/grounded_kinds.yaml`)
and asks for a single task of that kind. One short task per request, rather than a list, keeps
small models on track, spreads the tasks evenly over the kinds, and costs little on GPUs: the
passage opens the prompt, so the requests about one passage share their prefix.

The passage becomes the task's instance input and the answer is generated from it. A task is
checked for near-duplicates only against the tasks about the same passage, so the same question
about different passages is kept while a question repeated about the same passage is not.
"""

from __future__ import annotations

import random
import re
import unicodedata

from selfinstruct_local.corpus import Passage
from selfinstruct_local.dedup import NearDupIndex
from selfinstruct_local.engines import Request
from selfinstruct_local.errors import SigenError
from selfinstruct_local.pipeline.filters import copies_prompt
from selfinstruct_local.pipeline.parsing import clean_item
from selfinstruct_local.prompts import PromptSet

KINDS_PER_PASSAGE = 2  # requests per drawn passage, each for a different kind of task
# A passage is at most this fraction of the model's context (1/6), in tokens: it appears in a
# task prompt and again in the answer prompt, with the answer (run.py sizes passages with it).
PASSAGE_SHARE = 6
TASK_TOKENS = 128
ANSWER_TOKENS = 320
# Where a sentence ends: a stop mark and any closing quotes or brackets after it.
_SENTENCE_END = re.compile(r"(?:[。！？!?…]+|\.(?=\s|$))[\"'”’」』）)]*")


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


def parse_kinds(prompts: PromptSet, spec: str) -> list[str]:
    """A `--kinds` value ("continuation,plot") as kind names of `grounded_kinds.yaml`, in the
    file's order whatever the order asked, each once. Case, spaces, "-" for "_" and full-width
    commas (，、) are forgiven; an unknown name is an error that lists the known ones."""
    known = list(prompts.grounded_kinds)
    text = unicodedata.normalize("NFKC", spec).replace("、", ",")
    asked = [name.strip().lower().replace("-", "_") for name in text.split(",")]
    asked = [name for name in asked if name]
    unknown = [name for name in asked if name not in known]
    if unknown or not asked:
        plural = "s" if len(unknown) > 1 else ""
        what = f"unknown kind{plural} {', '.join(map(repr, unknown))}" if unknown else \
            "no kind given"
        raise SigenError(f"--kinds {spec!r}: {what}; the kinds for --lang {prompts.lang} are "
                         f"{', '.join(known)} (see prompts/{prompts.lang}/grounded_kinds.yaml)")
    return [name for name in known if name in asked]


def assign_kinds(kinds: list[str], n_passages: int, rng: random.Random) -> list[list[str]]:
    """KINDS_PER_PASSAGE different kinds for each passage, cycling through a shuffled list so
    that every kind is asked for about as often as every other."""
    order = list(kinds)
    rng.shuffle(order)
    per = min(KINDS_PER_PASSAGE, len(order))
    return [[order[(j * per + t) % len(order)] for t in range(per)] for j in range(n_passages)]


def build_grounded_request(
    prompts: PromptSet,
    passage: Passage,
    kind: str,
    *,
    max_tokens: int = TASK_TOKENS,
    temperature: float = 0.7,
    top_p: float = 0.9,
    seed: int | None = None,
) -> Request:
    L = prompts.labels
    return Request(
        prompt=prompts.fill("grounded", passage=passage.text, kind=prompts.grounded_kinds[kind]),
        assistant_prefix=f"{L.question}{L.colon.rstrip()}",
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        stop=("\n",),  # one task, on one line
        seed=seed,
    )


def parse_grounded_task(prompts: PromptSet, text: str, finish_reason: str) -> str | None:
    """The task written after the prefix; None when cut off by the token limit."""
    if finish_reason == "length":
        return None
    L = prompts.labels
    first = text.strip().split("\n", 1)[0]
    # A model may write the label again: "题目：题目：..." or "Task: ...".
    label = re.compile(rf"^\s*(?:{re.escape(L.question)}|{re.escape(L.task)})\s*[:：]\s*",
                       re.IGNORECASE)
    task = clean_item(label.sub("", first, count=1))
    return task or None


def copies_kind(prompts: PromptSet, task: str, kind: str) -> str | None:
    """'copied_prompt' when the task writes back its own prompt instead of asking something
    about the passage: the instructions around the kind, or the kind's description where that
    is a request ("a question about what happens ...") rather than a usable task
    ("summarize the passage ...", see `generic_ok` in grounded_kinds.yaml)."""
    description = "" if kind in prompts.generic_ok else prompts.grounded_kinds[kind]
    wording = prompts.fill("grounded", passage="", kind=description)
    return "copied_prompt" if copies_prompt(task, wording) else None


def answer_wording(prompts: PromptSet, instruction: str) -> str:
    """The answer prompt without its passage: what an answer must not write back."""
    return prompts.fill("grounded_answer", passage="", instruction=instruction)


def answer_copy_checks(prompts: PromptSet, instruction: str) -> dict[str, str]:
    """`filter_instances` arguments for an answer to `instruction` about a passage."""
    return {"answer_prompt": answer_wording(prompts, instruction),
            "answer_rules": answer_wording(prompts, "")}


def build_answer_request(
    prompts: PromptSet, instruction: str, passage_text: str, *, max_tokens: int = ANSWER_TOKENS,
    temperature: float = 0.0, seed: int | None = None,
) -> Request:
    L = prompts.labels
    return Request(
        prompt=prompts.fill("grounded_answer", passage=passage_text, instruction=instruction),
        assistant_prefix=f"{L.output}{L.colon.rstrip()}",
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=0.9 if temperature else 1.0,
        # A model that opens a new passage or task has finished its answer.
        stop=(f"\n{L.passage}", f"\n{L.task}"),
        seed=seed,
    )


def parse_answer(prompts: PromptSet, text: str, finish_reason: str) -> str:
    """The answer text. One cut off by the token limit keeps its complete sentences (a long
    answer is still an answer); with no complete sentence it is empty."""
    L = prompts.labels
    names = "|".join(re.escape(n) for n in (L.passage, L.task, L.instruction, L.question))
    answer = re.split(rf"\n\s*(?:{names})\s*[:：]", text, maxsplit=1)[0].strip()
    if finish_reason == "length":
        ends = list(_SENTENCE_END.finditer(answer))
        answer = answer[: ends[-1].end()] if ends else ""
    return answer
