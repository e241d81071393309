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
from selfinstruct_local.dedup import NearDupIndex
from selfinstruct_local.engines.base import Completion, EngineStats, Request
from selfinstruct_local.methods import load_method
from selfinstruct_local.pipeline.instances import few_shot_texts
from selfinstruct_local.pipeline.judge import TaskJudge
from selfinstruct_local.pipeline.loop import Loop
from selfinstruct_local.pipeline.stages import Context
from selfinstruct_local.pipeline.state import load_state
from selfinstruct_local.prompts import load_prompts
from selfinstruct_local.quality import unjudged_tasks
from selfinstruct_local.runstore import RunStore
from selfinstruct_local.seeds import default_seed_path, load_seed_tasks

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
        if prefix.startswith("Task "):
            start = int(prefix.split()[1].rstrip(":"))
            if self.same:
                rng = random.Random(0)
            lines = [self.instruction(rng)]
            lines += [f"Task {k}: {self.instruction(rng)}" for k in range(start + 1, 11)]
            return Completion(" " + "\n".join(lines) + "\n", "stop", 400, 60)
        if prefix.startswith("Score:"):  # the judge; `fail` of its replies hold no score
            if rng.random() < self.fail:
                return Completion(" I am not sure how to rate this.", "stop", 300, 9)
            return Completion(f" {rng.randint(1, 5)}\nReason: The output follows the "
                              "instruction.", "stop", 300, 12)
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


def scripted_loop(root, engine, stream=None, counts=None, judge=False, **config) -> Loop:
    """A loop over a run directory, as `sigen run` builds it (resuming what `root` holds),
    with `engine` in place of a model. `counts`: the last manifest's counters; `judge`: as
    `sigen run --judge`."""
    config = RunConfig(**{"num_instructions": 20, "seed": 1, **config})
    seeds = load_seed_tasks(default_seed_path(config.lang))
    store = RunStore(root, group_commit=True)
    index = NearDupIndex()
    for task in seeds:
        index.add(task.instruction)
    state = load_state(store, index, counts, warn=lambda _m: None)
    prompts = load_prompts(config.lang)
    ctx = Context(config, prompts, seeds, state, store, index, examples=few_shot_texts(prompts))
    from selfinstruct_local.engines.stream import BatchStream

    batch = config.batch_size or 8
    judging = {}
    if judge:
        judging = {"judge": TaskJudge(prompts, "scripted", 2048, config.seed),
                   "unjudged": unjudged_tasks(store.root, "scripted")}
    return Loop(ctx, load_method(ctx), stream or BatchStream(engine, batch), batch, **judging)
