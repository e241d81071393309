"""Evol-Instruct (Xu et al. 2023, WizardLM): rewrite instructions into harder or rarer ones,
generation after generation, and answer each one.

The instructions a run starts from (--evolve-from: a run directory, a JSONL file with an
`instruction` field, or by default the seed set) are generation 0. Each of them, and each
evolved instruction that survives below generation --generations, is evolved into one child of
the next generation: a rewrite that is rejected (by screening, the compare question or its
answer) sends its parent back to be rewritten with the next operation, up to ATTEMPTS rewrites.
A row is evolved further as soon as it is finished, the deepest rows first, so the stream stays
full and lines reach their last generation early.

1. evolve (the source): one parent, one operation: five in depth (add a constraint, deepen,
   make concrete, more reasoning steps, complicate the input; their wording is in
   prompts/<lang>/evol.yaml, put into evol_depth.txt) and one in breadth (a new, rarer task of
   the same field, evol_breadth.txt), in an order drawn for the parent. One rewrite a request.
2. compare: a cheap Yes/No question: does the rewrite ask for the same thing as its parent?
   Yes: rejected as no_information_gain.
3. answer: the evolved instruction answered (greedy, one sampled retry). An answer that refuses
   or apologizes (refusal), or holds only punctuation and stop words (trivial_answer), ends the
   evolution at once: the model could not do the task, which is WizardLM's elimination rule.

Screening, besides the shared filters: no_information_gain when the rewrite adds fewer than
MIN_NEW_TOKENS words (characters, in Chinese) to what it shares with its parent (the longest
common subsequence, the near-duplicate filter's measure); copied_prompt when it writes back the
prompt's own wording or its markers ("new instruction"). Near-duplicates are looked for among
the instructions of the same generation only: an evolved instruction is meant to resemble its
parent, and how much it adds is the no-gain check.

Every row records `parent_id` (an evolved row's id, or a starting instruction's id prefixed with
where it came from: "demo/mi-000003", "en_seed_tasks.jsonl/seed_task_7"), `operation` and
`generation`. A resume reads them back: how many rewrites each parent had, which ones have a
child in the data, which ones a rewrite in flight.
"""

from __future__ import annotations

import json
import re
from collections import Counter, deque
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

import yaml
from rapidfuzz.distance import LCSseq

from selfinstruct_local.config import RunConfig
from selfinstruct_local.dedup import NearDupIndex
from selfinstruct_local.engines import Completion, Request
from selfinstruct_local.errors import SigenError
from selfinstruct_local.methods.grounded import parse_answer
from selfinstruct_local.methods.self_instruct import parse_is_classification
from selfinstruct_local.pipeline.filters import copies_prompt
from selfinstruct_local.pipeline.stages import REJECT, Context, Method, Source, Step
from selfinstruct_local.prompts import PROMPT_DIR, PromptSet
from selfinstruct_local.runstore import INSTRUCTIONS, PENDING, REJECTED
from selfinstruct_local.seeds import Instance, Task
from selfinstruct_local.text import normalize, tokenize

DEFAULT_GENERATIONS = 3
SOURCE_TOKENS = 256  # one evolved instruction, with an input written into it
ANSWER_TOKENS = 320
MIN_NEW_TOKENS = 3  # a rewrite that adds fewer words (characters in Chinese) adds nothing
ATTEMPTS = 3  # rewrites of one parent until one survives
REFUSAL_CHARS = 160  # where in an answer a refusal is looked for: its opening sentences
DEPTH = ("constraints", "deepen", "concretize", "reasoning", "complicate_input")
BREADTH = "breadth"
OPERATIONS = (*DEPTH, BREADTH)
LINEAGE = ("parent_id", "operation", "generation")  # in every row about an evolution


def method(ctx: Context) -> Method:
    lines = Lineage(ctx)
    words = evol_words(ctx.config.lang)

    def evolve(ctx: Context, n: int) -> tuple[Request, dict]:
        taken = lines.take()
        if taken is None:  # the loop asks `exhausted` first
            raise RuntimeError("no parent left to evolve")
        parent, attempt = taken
        operation = operation_for(ctx, parent.id, attempt)
        request = build_evolve_request(
            ctx.prompts, parent.text, operation,
            max_tokens=ctx.config.max_new_tokens or SOURCE_TOKENS, temperature=ctx.temperature,
            top_p=ctx.top_p, seed=ctx.seed_for("evolve", parent.id, attempt))
        return request, {"parent_id": parent.id, "operation": operation,
                         "generation": parent.generation + 1, "parent": parent.text}

    def evolved(ctx: Context, carried: dict, c: Completion) -> list[dict]:
        # Always one candidate, an empty one included (too_short): every evolution is recorded.
        return [{"instruction": parse_evolved(ctx.prompts, c.text, c.finish_reason), **carried}]

    def check(ctx: Context, candidate: dict) -> str | None:
        text = candidate["instruction"]
        if adds_nothing(text, candidate["parent"]):
            return "no_information_gain"
        return "copied_prompt" if copies_evolve_prompt(ctx.prompts, text) else None

    def answered(ctx: Context, task: dict, c: Completion) -> bool:
        text = parse_answer(ctx.prompts, c.text, c.finish_reason)
        if why := eliminated(words, text):  # logged as a dropped answer, and ends the task
            ctx.keep_instances(task, [], dropped_before=((Instance("", text), why),))
            task[REJECT] = why
            return True
        task["instances"] = ctx.keep_instances(task, [Instance("", text)],
                                               **answer_copy_checks(ctx.prompts, task))
        return bool(task["instances"])

    return Method(
        name="evol",
        source=Source("evolve", evolve, evolved, exhausted=lines.exhausted),
        steps=(Step("compare", compare, compared),
               Step("answer", answer, answered, attempts=2)),
        check=check,
        index_for=lines.index_for,
        dropped=lines.dropped,
        finish=lines.finish,
        final_keys=LINEAGE,
        lineage=LINEAGE,
    )


def operation_for(ctx: Context, parent_id: str, attempt: int) -> str:
    """The operation of a parent's n-th rewrite: the six in an order drawn for the parent, so
    that a retry changes the operation and a redo after a crash asks the same thing."""
    order = list(OPERATIONS)
    ctx.rng("operation", parent_id).shuffle(order)
    return order[attempt % len(order)]


def compare(ctx: Context, task: dict, attempt: int) -> Request:
    return build_compare_request(ctx.prompts, task["parent"], task["instruction"],
                                 seed=ctx.seed_for("compare", task["id"]))


def compared(ctx: Context, task: dict, c: Completion) -> bool:
    # Yes: the same request in other words. An unclear answer keeps the task (the answer step
    # and the filters still judge it).
    if parse_is_classification(ctx.prompts, c.text) is True:
        task[REJECT] = "no_information_gain"
    return True


def answer(ctx: Context, task: dict, attempt: int) -> Request:
    return build_answer_request(ctx.prompts, task["instruction"],
                                max_tokens=ctx.config.max_answer_tokens or ANSWER_TOKENS,
                                temperature=ctx.attempt_temperature(attempt),
                                seed=ctx.seed_for("answer", task["id"], attempt))


# -- parents ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Parent:
    id: str
    text: str
    generation: int


class Lineage:
    """Which parents are waiting for a rewrite, deepest generation first, and the
    near-duplicate index of each generation.

    A parent is free to be rewritten while it has no child in the data, no rewrite in flight,
    and fewer than ATTEMPTS rewrites. A resume counts them from the files: every row about a
    rewrite names its parent (pending.jsonl for those that passed screening, rejected.jsonl for
    the others), the rows in flight are the pending ones not yet finalized, and a parent of a
    row of machine_instructions.jsonl has its child. Parents that are not free are dropped from
    the queues when met; a rejected rewrite puts its parent back.
    """

    def __init__(self, ctx: Context) -> None:
        self.generations = ctx.config.generations or DEFAULT_GENERATIONS
        self.target = ctx.config.num_instructions or 0
        self.starting = len(ctx.starting)
        self.tries: Counter[str] = Counter()  # rewrites of each parent, recorded or in flight
        self.busy = {row["parent_id"] for row in ctx.state.in_flight if "parent_id" in row}
        self.done: set[str] = set()  # parents with a child in the data
        self.waiting: list[deque[Parent]] = [deque() for _ in range(self.generations)]
        self.indexes: dict[int, NearDupIndex] = {}
        order = list(ctx.starting)
        ctx.rng("parents").shuffle(order)  # a small -n draws from the whole set
        self.waiting[0].extend(Parent(t.id, t.instruction, 0) for t in order)
        rejected = ctx.store.read(REJECTED, _quiet, repair=False)
        for row in ctx.store.read(PENDING, _quiet, repair=False) + [
                r for r in rejected if r.get("stage") == "instruction" and "id" not in r]:
            if "parent_id" in row:
                self.tries[row["parent_id"]] += 1
        for row in ctx.store.read(INSTRUCTIONS, _quiet, repair=False):
            if isinstance(row.get("generation"), int):
                self.done.add(row["parent_id"])
                self.offer(Parent(row["id"], row["instruction"], row["generation"]))

    def offer(self, parent: Parent) -> None:
        if parent.generation < self.generations:
            self.waiting[parent.generation].append(parent)

    def free(self, parent_id: str) -> bool:
        return parent_id not in self.done and parent_id not in self.busy and \
            self.tries[parent_id] < ATTEMPTS

    def _next(self) -> deque[Parent] | None:
        """The queue whose head is the next parent to rewrite (heads not free dropped)."""
        for queue in reversed(self.waiting):
            while queue and not self.free(queue[0].id):
                queue.popleft()
            if queue:
                return queue
        return None

    def take(self) -> tuple[Parent, int] | None:
        """The next parent and the number of its rewrite (0 for the first)."""
        queue = self._next()
        if queue is None:
            return None
        parent = queue.popleft()
        attempt = self.tries[parent.id]
        self.tries[parent.id] += 1
        self.busy.add(parent.id)
        return parent, attempt

    def exhausted(self, ctx: Context) -> str | None:
        if self._next() is not None:
            return None
        return (f"Stopping: nothing left to evolve. Each of the {self.starting} starting "
                f"instructions, and each evolved one below generation {self.generations}, has "
                f"a child or had {ATTEMPTS} rewrites rejected. For more, raise --generations or "
                "start from more instructions (--evolve-from).")

    def dropped(self, ctx: Context, row: dict) -> None:
        """A rewrite rejected (or left unscreened): its parent may be rewritten again."""
        parent_id = row["parent_id"]
        self.busy.discard(parent_id)
        if self.free(parent_id):
            self.offer(Parent(parent_id, row["parent"], row["generation"] - 1))

    def finish(self, ctx: Context, task: dict) -> list[Instance]:
        """A task with instances is its parent's child, and (before the target) a parent in
        its turn."""
        kept = task.get("instances", [])
        if kept:
            self.busy.discard(task["parent_id"])
            self.done.add(task["parent_id"])
            if ctx.state.accepted < self.target:
                self.offer(Parent(task["id"], task["instruction"], task["generation"]))
        return kept

    def index_for(self, ctx: Context, candidate: dict) -> NearDupIndex:
        return self.indexes.setdefault(candidate["generation"], NearDupIndex())


def _quiet(message: str) -> None:
    """Warnings about the run's files were given when they were read for the resume."""


# -- where the starting instructions come from -----------------------------------------------------

def resolve(config: RunConfig, seed_tasks: tuple[Task, ...]) -> tuple[RunConfig,
                                                                       tuple[Task, ...]]:
    """The run's --generations, and the instructions it starts from, each with an id that says
    where it came from. A task's input, when it has one, is part of the text evolved: an
    evolved instruction carries everything it needs."""
    config = replace(config, generations=config.generations or DEFAULT_GENERATIONS)
    source = config.evolve_from
    if source is None:
        name = Path(config.seeds).name if config.seeds else "seeds"
        return config, tuple(
            Task(f"{name}/{t.id}", with_input(t.instruction, _first_input(t.instances)))
            for t in seed_tasks)
    path = Path(source)
    if path.is_dir():
        if config.output is not None and path.resolve() == Path(config.output).resolve():
            raise SigenError(f"--evolve-from {path} is the run's own --output; evolve from "
                             "another run, or write to another directory")
        starting = from_run(path)
    elif path.is_file():
        starting = from_jsonl(path)
    else:
        raise SigenError(f"--evolve-from {path}: no such file or directory; give a run "
                         "directory of `sigen run` or a JSONL file with an `instruction` field")
    if not starting:
        raise SigenError(f"--evolve-from {path}: no instructions to evolve in it")
    return config, starting


def with_input(instruction: str, inp: str) -> str:
    return f"{instruction}\n{inp.strip()}" if inp.strip() else instruction


def _first_input(instances: tuple[Instance, ...] | list[Instance]) -> str:
    return instances[0].input if instances else ""


def from_run(path: Path) -> tuple[Task, ...]:
    """The accepted instructions of a run, ids prefixed with the run directory's name."""
    from selfinstruct_local.runstore import load_run

    run = load_run(path)
    inputs: dict[str, str] = {}
    for row in run.instances:
        inputs.setdefault(row["instruction_id"], row.get("input") or "")
    name = path.resolve().name
    return tuple(Task(f"{name}/{row['id']}", with_input(row["instruction"],
                                                        inputs.get(row["id"], "")))
                 for row in run.instructions)


def from_jsonl(path: Path) -> tuple[Task, ...]:
    """One instruction per line of a JSONL file: its `instruction`, and its `input` (or the
    first instance's, in the Self-Instruct seed format) when it has one. Ids are the file's
    name and the row's `id`, or its line number."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise SigenError(f"--evolve-from {path}: not UTF-8 text; save it as UTF-8") from None
    tasks: list[Task] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SigenError(f"{where}: not valid JSON ({exc.msg}); --evolve-from takes a JSONL "
                             "file, one JSON object a line, or a run directory") from None
        if not isinstance(row, dict) or not isinstance(row.get("instruction"), str) \
                or not row["instruction"].strip():
            raise SigenError(f"{where}: a line must be a JSON object with a non-empty string "
                             "`instruction`")
        ident = row.get("id")
        ident = str(ident) if isinstance(ident, str | int) and not isinstance(ident, bool) \
            and str(ident) else f"line-{lineno}"
        if ident in seen:
            raise SigenError(f"{where}: id {ident!r} already used on line {seen[ident]}; give "
                             "every row a unique id")
        seen[ident] = lineno
        inp = row.get("input")
        if not isinstance(inp, str):
            instances = row.get("instances")
            first = instances[0] if isinstance(instances, list) and instances else {}
            inp = first.get("input") if isinstance(first, dict) else ""
        tasks.append(Task(f"{path.name}/{ident}", with_input(row["instruction"].strip(),
                                                             inp if isinstance(inp, str) else "")))
    return tuple(tasks)


# -- the prompts' words ----------------------------------------------------------------------------

@dataclass(frozen=True)
class EvolWords:
    """prompts/<lang>/evol.yaml: reply labels, the in-depth changes, and the words of the
    elimination rules."""

    new_instruction: str
    same: str
    response: str
    operations: dict[str, str]
    markers: tuple[str, ...]
    refusals: tuple[str, ...]
    stop_words: frozenset[str]


@cache
def evol_words(lang: str) -> EvolWords:
    path = PROMPT_DIR / lang / "evol.yaml"
    if not path.is_file():
        raise SigenError(f"--method evol has no prompts for language {lang!r}")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return EvolWords(
        new_instruction=data["new_instruction"], same=data["same"], response=data["response"],
        operations=dict(data["operations"]),
        markers=tuple(normalize(m) for m in data["markers"]),
        refusals=tuple(normalize(r) for r in data["refusals"]),
        stop_words=frozenset(normalize(str(w)) for w in data["stop_words"]))


def _label(prompts: PromptSet, word: str) -> str:
    return f"{word}{prompts.labels.colon.rstrip()}"


# -- evolve ----------------------------------------------------------------------------------------
# The reply starts after "New instruction:". A model that goes on after the instruction writes a
# label (an answer, an explanation, another instruction): the instruction ends there.

def build_evolve_request(
    prompts: PromptSet, instruction: str, operation: str, *, max_tokens: int = SOURCE_TOKENS,
    temperature: float = 0.7, top_p: float = 0.9, seed: int | None = None,
) -> Request:
    words = evol_words(prompts.lang)
    if operation == BREADTH:
        prompt = prompts.fill("evol_breadth", instruction=instruction)
    else:
        prompt = prompts.fill("evol_depth", instruction=instruction,
                              change=words.operations[operation])
    L = prompts.labels
    return Request(
        prompt=prompt, assistant_prefix=_label(prompts, words.new_instruction),
        max_tokens=max_tokens, temperature=temperature, top_p=top_p,
        stop=(f"\n{words.response}", f"\n{L.output}", f"\n{words.new_instruction}"),
        seed=seed)


def _label_line(prompts: PromptSet) -> re.Pattern[str]:
    words, L = evol_words(prompts.lang), prompts.labels
    names = (words.new_instruction, words.response, L.instruction, L.output, L.input, L.task)
    alternatives = "|".join(re.escape(n) for n in names)
    return re.compile(rf"^\s*\**(?:{alternatives})\**\s*[:：]", re.IGNORECASE)


def parse_evolved(prompts: PromptSet, text: str, finish_reason: str) -> str:
    """The evolved instruction: the reply up to the first line that starts with a label, or a
    blank line after which the model comments. It may hold several lines (an input written into
    it). Cut off by the token limit, it keeps its complete lines; a label written again at its
    start ("New instruction: ...") is dropped."""
    lines = text.strip().split("\n")
    label = _label_line(prompts)
    if lines and (match := label.match(lines[0])):
        lines[0] = lines[0][match.end():]
    if finish_reason == "length":
        lines = lines[:-1]
    kept: list[str] = []
    for line in lines:
        if label.match(line):
            break
        if not line.strip():
            # A blank line ends the instruction unless what came before introduces an input.
            if kept and not kept[-1].rstrip().endswith((":", "：")):
                break
            continue
        kept.append(line.rstrip())
    result = "\n".join(kept).strip().strip("*").strip()
    if len(result) >= 2 and result[0] in "\"“" and result[-1] in "\"”" and \
            not any(q in result[1:-1] for q in "\"“”"):
        result = result[1:-1].strip()
    return result


def adds_nothing(text: str, parent: str) -> bool:
    """Whether the rewrite adds fewer than MIN_NEW_TOKENS tokens to its longest common
    subsequence with the parent (the same words in the same order, some perhaps dropped)."""
    ours, theirs = tokenize(text), tokenize(parent)
    return bool(ours) and len(ours) - LCSseq.similarity(ours, theirs) < MIN_NEW_TOKENS


def copies_evolve_prompt(prompts: PromptSet, text: str) -> bool:
    """Whether the rewrite writes the prompt back: a marker of the prompts ("new instruction",
    "rewritten prompt"), or most of its words in the wording of an evolve prompt (the parent
    left out: a rewrite is meant to share its words)."""
    words = evol_words(prompts.lang)
    folded = " ".join(normalize(text).split())
    if any(marker in folded for marker in words.markers):
        return True
    wordings = [prompts.fill("evol_breadth", instruction="")] + [
        prompts.fill("evol_depth", instruction="", change=change)
        for change in words.operations.values()]
    return any(copies_prompt(text, wording) for wording in wordings)


# -- compare ---------------------------------------------------------------------------------------

def build_compare_request(prompts: PromptSet, parent: str, instruction: str,
                          seed: int | None = None) -> Request:
    return Request(
        prompt=prompts.fill("evol_compare", parent=parent, instruction=instruction) + "\n",
        assistant_prefix=_label(prompts, evol_words(prompts.lang).same),
        max_tokens=4, temperature=0.0, stop=("\n",), seed=seed)


# -- answer ----------------------------------------------------------------------------------------

def build_answer_request(prompts: PromptSet, instruction: str, *,
                         max_tokens: int = ANSWER_TOKENS, temperature: float = 0.0,
                         seed: int | None = None) -> Request:
    words, L = evol_words(prompts.lang), prompts.labels
    return Request(
        prompt=prompts.fill("evol_answer", instruction=instruction),
        assistant_prefix=_label(prompts, words.response),
        max_tokens=max_tokens, temperature=temperature, top_p=0.9 if temperature else 1.0,
        # A model that starts another instruction has finished its answer.
        stop=(f"\n{L.instruction}", f"\n{words.new_instruction}"),
        seed=seed)


def answer_copy_checks(prompts: PromptSet, task: dict) -> dict[str, str]:
    """`filter_instances` arguments: an answer must not write back the answer prompt."""
    return {"answer_prompt": prompts.fill("evol_answer", instruction=task["instruction"]),
            "answer_rules": prompts.fill("evol_answer", instruction="")}


def eliminated(words: EvolWords, answer: str) -> str | None:
    """WizardLM's rules on the answer: a refusal or an apology in its opening sentences, or
    nothing but punctuation and stop words. An empty answer is left to the filters (it gets
    the sampled retry)."""
    if not answer.strip():
        return None
    opening = normalize(answer[:REFUSAL_CHARS]).replace("’", "'")
    if any(phrase in opening for phrase in words.refusals):
        return "refusal"
    if all(token in words.stop_words for token in tokenize(answer)):
        return "trivial_answer"
    return None
