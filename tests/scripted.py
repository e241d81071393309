"""A scripted engine for testing the generation loop's logic (never the engines themselves).

It answers each request in the format the model's answers have (see tests/fixtures/completions
for recorded ones): a bootstrap request gets a continued numbered list of instructions drawn
from the request's seed, a classification request Yes or No, an instance request an input and
output. Given a `fail` share, that many instance answers are unusable (an empty output), so
that retries and `no_valid_instances` happen. Everything depends on the request only, so
answers repeat exactly; `ScriptedStream` returns them out of order, as servers do.
"""

from __future__ import annotations

import random

from selfinstruct_local.config import RunConfig
from selfinstruct_local.engines.base import Completion, EngineStats, Request
from selfinstruct_local.engines.stream import BatchStream
from selfinstruct_local.pipeline.loop import Loop
from selfinstruct_local.plan import resolve_plan
from selfinstruct_local.progress import Reporter
from selfinstruct_local.run import begin, make_loop, open_run

VERBS = ["Summarize", "Explain", "Compare", "Translate", "Rewrite", "Classify", "List",
         "Describe", "Outline", "Critique", "Simplify", "Extend"]
THINGS = ["a recipe", "a news story", "an email", "a poem", "a contract", "a lecture", "a tweet",
          "a review", "a letter", "a speech", "a riddle", "a diary entry", "a product manual"]
ABOUT = ["tides", "volcanoes", "bees", "trains", "chess", "rivers", "tea", "glass", "owls",
         "comets", "bridges", "salt", "maps of stars", "bicycles", "clocks", "violins"]
FOR = ["children", "a judge", "sailors", "nurses", "farmers", "chemists", "poets", "pilots"]


class Killed(Exception):
    """Stands for kill -9: raised by the engine, nothing after it runs."""


class ScriptedEngine:
    name = "scripted"

    def __init__(self, fail: float = 0.2, kill_after: int | None = None,
                 same_every_time: bool = False) -> None:
        self.fail = fail
        self.kill_after = kill_after  # batches answered before the "kill"
        self.same = same_every_time  # every bootstrap answer proposes the same instructions
        self.stats = EngineStats()
        self.sent: list[Request] = []

    def answer(self, request: Request) -> Completion:
        rng = random.Random(request.seed)
        prefix = request.assistant_prefix
        if "\nInstruction:" in prefix:  # Alpaca: a list of complete tasks
            return self.alpaca(rng, request)
        if prefix.startswith("Task ") and prefix.rstrip(":").split()[1].isdigit():
            start = int(prefix.split()[1].rstrip(":"))
            if self.same:
                rng = random.Random(0)
            lines = [self.instruction(rng)]
            lines += [f"Task {k}: {self.instruction(rng)}" for k in range(start + 1, 11)]
            return Completion(" " + "\n".join(lines) + "\n", "stop", 400, 60)
        if prefix == "Task:":  # one task about a passage
            if rng.random() < self.fail:
                return Completion(" Summarize", "stop", 300, 2)  # too short
            return Completion(f" {self.instruction(rng)}", "stop", 300, 14)
        if prefix == "Output:":  # the answer about a passage
            if rng.random() < self.fail:
                return Completion("", "stop", 300, 0)
            return Completion(f" {self.answer_text(rng)}", "stop", 300, 20)
        if prefix.startswith("Score:"):  # the judge; `fail` of its replies hold no score
            if rng.random() < self.fail:
                return Completion(" I am not sure how to rate this.", "stop", 300, 9)
            return Completion(f" {rng.randint(1, 5)}\nReason: The output follows the "
                              "instruction.", "stop", 300, 12)
        if prefix in ("New instruction:", "Same:", "Response:"):
            return self.evol(rng, request)
        if prefix.startswith("Classification:"):
            return Completion(rng.choice([" Yes", " No", " No"]), "stop", 300, 1)
        if rng.random() < self.fail:
            return Completion("Input: nothing\nOutput:", "stop", 300, 5)
        topic = rng.choice(ABOUT)
        if prefix.startswith("Class label:"):
            return Completion(f" Positive\nInput: A calm note about {topic}.\n", "stop", 300, 9)
        return Completion(f"Input: A paragraph about {topic}.\nOutput: {topic.title()} are "
                          f"explained here in {rng.randint(2, 9)} plain sentences.\n",
                          "stop", 300, 20)

    def alpaca(self, rng: random.Random, request: Request) -> Completion:
        """Alpaca's reply after "Task N\nInstruction:" (or, about a passage, after a lead
        task's "Output:"): complete tasks until the one the stop string names."""
        header = request.assistant_prefix.split("\n")[0]
        number = int(header.split()[1])
        last = int(request.stop[0].split()[1]) - 1
        grounded = request.prompt.startswith("Passage:")
        parts = []
        if request.assistant_prefix.endswith("Output:"):  # a lead task, answered here
            parts.append(f" {self.answer_text(rng)}\n\n")
            number += 1
        else:
            parts.append(" ")
        first = True
        while number <= last:
            head = "" if first and not parts[-1].endswith("\n\n") else \
                f"Task {number}\nInstruction: "
            first = False
            body = f"{self.instruction(rng)}\n"
            if not grounded:
                body += f"Input: {rng.choice(['<none>', 'A note about ' + rng.choice(ABOUT)])}\n"
            output = "" if rng.random() < self.fail else self.answer_text(rng)
            parts.append(f"{head}{body}Output: {output}\n\n")
            number += 1
        return Completion("".join(parts).rstrip() + "\n", "stop", 500, 40 * len(parts))

    def evol(self, rng: random.Random, request: Request) -> Completion:
        """Evol-Instruct: a rewrite of the parent (what ends the prompt), within `fail`: the
        parent as it was (no gain), the same request in other words (which the compare
        question calls the same), or a description of the rewrite (a copy of the prompt); the
        compare question; an answer, within `fail` a refusal or an empty one, and always a
        refusal for an instruction that says "sorry"."""
        prefix, roll = request.assistant_prefix, rng.random()
        if prefix == "New instruction:":
            parent = request.prompt.split("Original instruction: ", 1)[1]
            if roll < self.fail / 3:
                return Completion(f" {parent}", "stop", 300, 12)
            if roll < 2 * self.fail / 3:
                return Completion(f" In other words: {self.instruction(rng)}", "stop", 300, 14)
            if roll < self.fail:
                return Completion(" Here is the new instruction, harder than the original "
                                  "instruction.", "stop", 300, 12)
            extra = rng.choice([f"for {rng.choice(FOR)} in under {rng.randint(2, 9)}0 words",
                                f"comparing {rng.choice(ABOUT)} and {rng.choice(ABOUT)}",
                                "step by step, giving the reason for each step"])
            return Completion(f" {parent.rstrip('.')}, {extra}.\n\nThis adds a requirement.",
                              "stop", 300, 20)
        if prefix == "Same:":
            same = "Rewrite: In other words" in request.prompt
            return Completion(" Yes" if same else " No", "stop", 300, 1)
        if "sorry" in request.prompt.rsplit("Instruction: ", 1)[-1] or roll < self.fail / 2:
            return Completion(" I'm sorry, but I cannot help with that.", "stop", 300, 10)
        if roll < self.fail:
            return Completion("", "stop", 300, 0)
        return Completion(f" {self.answer_text(rng)}", "stop", 300, 20)

    @staticmethod
    def answer_text(rng: random.Random) -> str:
        topic = rng.choice(ABOUT)
        return (f"{topic.title()} matter here because {rng.choice(FOR)} see them "
                f"{rng.randint(2, 9)} times.")

    @staticmethod
    def instruction(rng: random.Random) -> str:
        return (f"{rng.choice(VERBS)} {rng.choice(THINGS)} about {rng.choice(ABOUT)} "
                f"for {rng.choice(FOR)}.")

    def generate(self, requests: list[Request]) -> list[Completion]:
        if self.kill_after is not None:
            if self.kill_after <= 0:
                raise Killed
            self.kill_after -= 1
        self.sent.extend(requests)
        completions = [self.answer(r) for r in requests]
        self.stats.add(completions, 0.0)
        return completions

    def render(self, request: Request) -> str:
        return request.prompt + request.assistant_prefix

    def close(self, wait: bool = True) -> None:
        pass


class ScriptedStream:
    """Like a server: every submitted request is out at once, and each collect returns a few
    of them in an order set by `order_seed`."""

    ordered = False
    blocking = False

    def __init__(self, engine: ScriptedEngine, capacity: int, order_seed: int = 0) -> None:
        self.engine, self.capacity = engine, capacity
        self.rng = random.Random(order_seed)
        self.out: list[tuple[int, Request]] = []

    @property
    def in_flight(self) -> int:
        return len(self.out)

    def submit(self, key: int, request: Request) -> None:
        self.out.append((key, request))

    def collect(self) -> list[tuple[int, Completion]]:
        self.rng.shuffle(self.out)
        done, self.out = self.out[:3], self.out[3:]
        return list(zip([k for k, _ in done],
                        self.engine.generate([r for _, r in done]), strict=True))


def scripted_loop(root, engine, stream=None, judge=False, **config) -> Loop:
    """A loop over a run directory, built by the code `sigen run` uses (resuming what `root`
    holds, its manifest included), with `engine` in place of a model; `judge`: as
    `sigen run --judge`."""
    reporter = Reporter()
    request = RunConfig(**{"num_instructions": 20, "seed": 1, "batch_size": 8, "output": root,
                           "judge": judge, **config})
    plan = resolve_plan(request, reporter)
    run = open_run(plan, reporter)
    assert run is not None, f"{root} is finished already"
    loop = make_loop(plan, run, engine, stream or BatchStream(engine, plan.engine.batch_size),
                     reporter)
    begin(run, loop)
    return loop


def scripted_completions(fail: float = 0.3):
    """A FakeOpenAIServer answer for /v1/completions: the scripted engine's reply to the prompt
    sigen rendered with the model's chat template, so a whole `sigen run --engine openai` runs
    over HTTP with no model behind it."""
    from tests.fake_openai import completion

    engine = ScriptedEngine(fail=fail)

    def answer(_headers: dict, body: dict):
        text = body.get("prompt", "")
        user, _, prefix = text.rpartition("<|im_start|>assistant\n")
        user = user.rpartition("<|im_start|>user\n")[2].removesuffix("<|im_end|>\n")
        request = Request(prompt=user, assistant_prefix=prefix, seed=body.get("seed"),
                          stop=tuple(body.get("stop") or ()))
        return completion(engine.answer(request).text)

    return answer
