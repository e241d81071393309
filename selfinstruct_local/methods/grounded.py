"""Tasks grounded in a corpus: one task per request about one passage, answered from it.

1. bootstrap: a passage (drawn so that every passage comes before any repeats) and one kind of
   reading task (plot, characters and relations, summary, words and allusions, modern
   rewriting, continuation: prompts/<lang>/grounded_kinds.yaml), KINDS_PER_PASSAGE requests per
   passage with different kinds. One short task per request, rather than a list, keeps small
   models on track, spreads the tasks evenly over the kinds, and costs little on GPUs: the
   passage opens the prompt, so the requests about one passage share their prefix;
2. instances: the answer, from the passage, which is the task's input; greedy first, one
   sampled retry when the answer is unusable.

A task is compared for near-duplicates with the tasks about the same passage only (`Grounding`),
so the same question about different passages is kept while a question repeated about the same
passage is not; a generic instruction is kept at most --max-repeats times in the run; a task that
restates its kind's description, or copies a sentence of its passage, is rejected.
"""

from __future__ import annotations

import random
import re

from selfinstruct_local.corpus import Passage, PassageSampler
from selfinstruct_local.dedup import NearDupIndex
from selfinstruct_local.engines import Completion, Request
from selfinstruct_local.errors import SigenError
from selfinstruct_local.methods.self_instruct import ANSWER_TOKENS
from selfinstruct_local.pipeline.filters import copies_passage, copies_prompt
from selfinstruct_local.pipeline.parsing import clean_item, complete_sentences
from selfinstruct_local.pipeline.repeats import RepeatCap
from selfinstruct_local.pipeline.stages import Context, Method, Source, Step
from selfinstruct_local.prompts import PromptSet
from selfinstruct_local.seeds import Instance

KINDS_PER_PASSAGE = 2  # requests per drawn passage, each for a different kind of task
TASK_TOKENS = 128


def method(ctx: Context) -> Method:
    grounding = Grounding(ctx)
    drawn: dict[int, tuple[Passage, list[str]]] = {}  # passage number -> passage, its kinds

    def request(ctx: Context, n: int) -> tuple[Request, dict]:
        number, slot = divmod(n, KINDS_PER_PASSAGE)
        if number not in drawn:
            drawn.clear()  # requests are built in order: earlier passages are done with
            kinds = assign_kinds(grounding.kinds, 1, ctx.rng("kinds", number))
            drawn[number] = (grounding.draw(ctx), kinds[0])
        passage, kinds = drawn[number]
        kind = kinds[slot % len(kinds)]
        built = build_grounded_request(
            ctx.prompts, passage, kind, max_tokens=ctx.config.max_new_tokens or TASK_TOKENS,
            temperature=ctx.temperature, top_p=ctx.top_p, seed=ctx.seed_for("grounded", n))
        return built, {"input": passage.text, "passage": passage_record(passage), "kind": kind}

    def check(ctx: Context, candidate: dict) -> str | None:
        text = candidate["instruction"]
        return (restates_kind(ctx, candidate) or copies_passage(text, candidate["input"])
                or grounding.repeats.check(text))

    return Method(
        name="grounded",
        source=Source("bootstrap", request, proposed),
        steps=(Step("instances", answer, answered, attempts=2),),
        check=check,
        index_for=grounding.index_for,
        accepted=grounding.accepted,
        final_keys=("passage", "kind"),
    )


class Grounding:
    """What a run grounded in a corpus keeps besides the shared pool (both grounded methods).

    - Passages are drawn without replacement until all are used; the count of passages drawn is
      in the manifest, so a resumed run continues the draw where it stopped.
    - One near-duplicate index per passage: a key made of instruction plus passage would be
      dominated by the long passage (any two tasks about one passage score about 0.9), while
      comparing instructions alone would drop the same good question asked about another one.
    - The cap on generic instructions (RepeatCap), counted over the run, resumed part included.
    """

    def __init__(self, ctx: Context) -> None:
        corpus = ctx.corpus
        if corpus is None:
            raise SigenError("a grounded method needs --corpus PATH")
        self.kinds = list(corpus.kinds)
        self.sampler = PassageSampler(list(corpus.passages), ctx.config.seed,
                                      used=ctx.state.stats.passages_drawn)
        self.indexes: dict[str, NearDupIndex] = {}
        self.repeats = RepeatCap(corpus.max_repeats)

    def draw(self, ctx: Context) -> Passage:
        ctx.state.stats.passages_drawn += 1
        return self.sampler.draw(1)[0]

    def index_for(self, ctx: Context, candidate: dict) -> NearDupIndex:
        passage_id = candidate["passage"]["id"]
        if passage_id not in self.indexes:
            self.indexes[passage_id] = NearDupIndex()
        return self.indexes[passage_id]

    def accepted(self, ctx: Context, row: dict) -> None:
        self.repeats.record(row["instruction"])


def proposed(ctx: Context, carried: dict, c: Completion) -> list[dict]:
    task = parse_grounded_task(ctx.prompts, c.text, c.finish_reason)
    return [{"instruction": task, **carried}] if task else []


def restates_kind(ctx: Context, candidate: dict) -> str | None:
    return copies_kind(ctx.prompts, candidate["instruction"], candidate["kind"])


def answer(ctx: Context, task: dict, attempt: int) -> Request:
    return build_answer_request(
        ctx.prompts, task["instruction"], task["input"],
        max_tokens=ctx.config.max_answer_tokens or ANSWER_TOKENS,
        temperature=ctx.attempt_temperature(attempt),
        seed=ctx.seed_for("answer", task["id"], attempt))


def answered(ctx: Context, task: dict, c: Completion) -> bool:
    # An empty answer is kept here so that the filters count it (empty_output).
    found = [Instance(task["input"], parse_answer(ctx.prompts, c.text, c.finish_reason))]
    checks = answer_copy_checks(ctx.prompts, task["instruction"])
    task["instances"] = ctx.keep_instances(task, found, **checks)
    task["is_classification"] = False  # reading tasks, answered in prose
    return bool(task["instances"])


def passage_record(passage: Passage) -> dict:
    return {"id": passage.id, "source": passage.source, "chapter": passage.chapter,
            "chapter_index": passage.chapter_index}


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
    return complete_sentences(answer) if finish_reason == "length" else answer
