"""The generation methods: one module each, read top to bottom (its stages, then its prompts'
building and parsing), and the METHODS table that the command line, the plan and the errors read.

A method is a Source and Steps (pipeline/stages.py) that the loop runs. With `--corpus` a method
runs its grounded variant, which draws passages of the user's texts. Adding a method (Magpie,
Evol-Instruct) is one module and one line in METHODS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from selfinstruct_local.config import RunConfig
from selfinstruct_local.errors import SigenError
from selfinstruct_local.methods import (
    alpaca,
    alpaca_grounded,
    evol,
    grounded,
    magpie,
    self_instruct,
)
from selfinstruct_local.models import ModelSpec
from selfinstruct_local.pipeline.stages import Context, Method
from selfinstruct_local.prompts import PromptSet
from selfinstruct_local.seeds import Task


@dataclass(frozen=True)
class MethodInfo:
    name: str  # the --method value
    summary: str  # one line for --help
    build: Callable[[Context], Method]
    source_tokens: int  # default token limit of one source request (--max-new-tokens)
    # Default token limit of one answer (--max-answer-tokens); None: the method has no answer
    # step (Alpaca writes its outputs in the source request).
    answer_tokens: int | None
    # The variant grounded in a corpus (--corpus), and its token default (per task).
    grounded: Callable[[Context], Method] | None = None
    grounded_tokens: int | None = None
    # RunConfig fields only this method takes (another method refuses them), and what the
    # plan resolves for it: its defaults filled in, the instructions it starts from.
    options: tuple[str, ...] = ()
    resolve: Callable[[RunConfig, tuple[Task, ...]],
                      tuple[RunConfig, tuple[Task, ...]]] | None = None
    seeds: bool = True  # whether it reads seed tasks (Magpie needs none: no seed set is loaded)
    chat_model: str | None = None  # why it needs an aligned chat model (a base one is refused)
    # What it needs of the model, checked once the engine is resolved (Magpie: the tokenizer
    # and chat template here); given the configuration, the model and its checkpoint here.
    check_model: Callable[[RunConfig, ModelSpec, Path | None], None] | None = None

    def factory(self, corpus: bool) -> Callable[[Context], Method]:
        if not corpus:
            return self.build
        if self.grounded is None:
            raise SigenError(f"--method {self.name} does not take --corpus")
        return self.grounded


METHODS: dict[str, MethodInfo] = {m.name: m for m in (
    MethodInfo("self-instruct", "bootstrap, classify, then instances, in rounds (Wang et al.); "
               "with --corpus, one task of one kind per passage, answered from it",
               self_instruct.method, self_instruct.SOURCE_TOKENS, self_instruct.ANSWER_TOKENS,
               grounded.method, grounded.TASK_TOKENS),
    MethodInfo("alpaca", "one prompt asks for 20 complete tasks at a time (Taori et al.); with "
               "--corpus, as many tasks about one passage as fit the context",
               alpaca.method, alpaca.SOURCE_TOKENS, None,
               alpaca_grounded.method, alpaca_grounded.TASK_TOKENS),
    MethodInfo("evol", "Evol-Instruct (Xu et al.): rewrite instructions (--evolve-from) into "
               "harder or rarer ones for --generations rounds, and answer each",
               evol.method, evol.SOURCE_TOKENS, evol.ANSWER_TOKENS,
               options=("evolve_from", "generations"), resolve=evol.resolve),
    MethodInfo("magpie", "Magpie (Xu et al.): an aligned chat model writes the user's request "
               "from its own chat template, then answers it; no seed tasks (--system, --turns)",
               magpie.method, magpie.SOURCE_TOKENS, magpie.RESPONSE_TOKENS,
               options=("turns", "system", "system_file"), resolve=magpie.resolve,
               seeds=False, chat_model=magpie.CHAT_MODEL, check_model=magpie.check_model),
)}


def method_info(name: str) -> MethodInfo:
    """The METHODS entry; an unknown name is an error that lists the known ones."""
    if name not in METHODS:
        raise SigenError(f"--method must be one of {', '.join(METHODS)}, not {name!r}")
    return METHODS[name]


def check_method_options(info: MethodInfo, config: RunConfig) -> None:
    """An option of another method is an error naming the method it belongs to, and so is
    --max-answer-tokens for a method without an answer step."""
    if info.answer_tokens is None and config.max_answer_tokens is not None:
        raise SigenError(f"--method {info.name} has no answer step: its outputs are written "
                         "in the source request, so --max-new-tokens limits them; leave out "
                         "--max-answer-tokens")
    for other in METHODS.values():
        for name in other.options:
            if name not in info.options and getattr(config, name) is not None:
                raise SigenError(f"--{name.replace('_', '-')} is an option of --method "
                                 f"{other.name}, not of --method {info.name}")


def instance_examples(prompts: PromptSet) -> frozenset[str]:
    """The few-shot inputs and outputs of the instance prompts: an instance that copies one was
    not written for its task. Every method's instances are checked against them (small models
    copy examples whatever prompt they saw)."""
    return self_instruct.few_shot_texts(prompts)


def load_method(ctx: Context) -> Method:
    return method_info(ctx.config.method).factory(ctx.corpus is not None)(ctx)
