"""Magpie (Xu et al. 2024): an aligned chat model writes the user's request itself.

The prompt is the model's own chat template rendered up to where the user's message would begin
(the pre-query: a conversation with a marker as the user's message, cut before the marker); the
model's continuation is a request of the kind it was aligned on. No seed tasks, no instruction
prompt: any chat model works, without a table of templates per model family.

1. query (the source): the pre-query, sampled (the model's temperature and top_p unless given;
   Magpie used 1.0 and 1.0), stopped at the template's end-of-turn text and at every special
   token (small models do not always write their end-of-turn token); the request is its first
   line, as in Magpie's code (early stopping: what follows is mostly the model answering
   itself);
2. response: the request answered through the full template (greedy, one sampled retry);
3. with --turns N, queryK and responseK for each next turn: the next user turn is drawn from the
   template after the assistant's answer, the same way.

A system prompt (--system TEXT, or --system-file with one per line, drawn per request) steers
the topics; with --lang zh and none given, a Chinese one makes the model write Chinese requests.

Screening, besides the shared instruction filters and the near-duplicate index (which starts
empty): what small models do in the user's place. template_echo: a request that writes the
template back (a role name as a label, "User:", a special token, the system prompt);
answer_not_request: a request that is itself an answer ("Certainly! Here are ..."); cut_off: a
request whose first line ran into the token limit (an answer that did keeps its complete
sentences, as the grounded answers do; without one it is cut_off). A later turn is also rejected
as repeated_turn when it repeats the conversation. A conversation whose later turn fails twice
is rejected with that turn's reason ("template_echo:turn 2"). An answer is dropped (then asked
once more, sampled) when it refuses, holds only punctuation and stop words, or writes its
request back (echoed_request).

A multi-turn row is a conversation: machine_instructions.jsonl keeps the first request as its
instruction, and its instances.jsonl row holds every turn as `conversation` (user and assistant
messages) besides the first turn's answer as its output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

from selfinstruct_local.config import RunConfig
from selfinstruct_local.engines import Completion, Request
from selfinstruct_local.errors import SigenError
from selfinstruct_local.methods.evol import eliminated, evol_words
from selfinstruct_local.models import ModelSpec
from selfinstruct_local.pipeline.filters import check_instruction, copies_prompt
from selfinstruct_local.pipeline.parsing import complete_sentences
from selfinstruct_local.pipeline.stages import REJECT, Context, Method, Source, Step
from selfinstruct_local.prompts import PROMPT_DIR
from selfinstruct_local.runstore import REJECTED
from selfinstruct_local.seeds import Instance, Task
from selfinstruct_local.tokenizer import local_tokenizer

SOURCE_TOKENS = 256  # one request: the 150-word filter's bound fits well within it
RESPONSE_TOKENS = 1024
MIN_ROOM = 64  # tokens of context a next request or answer needs at least
ATTEMPTS = 2  # an answer or a later turn: greedy (answers) or sampled, then one sampled retry
# A user's message no template adds to or trims: two private-use characters around a name.
MARKER = "\ue000sigen-magpie\ue001"
# Why a base model cannot do it (the plan refuses one with this).
CHAT_MODEL = ("it lets the model write the user's turn of its own chat template, which only a "
              "model aligned on that template does")


def answer_problem(answer: str, lang: str) -> str | None:
    """An answer that refuses or apologizes in its opening sentences ("I'm sorry ..., but as a
    chatbot ...": the packaged model does it to a third of its own requests), or that holds
    only punctuation and stop words: Evol-Instruct's elimination rules, its words for `lang`.
    Dropped like any bad answer (the sampled retry, then no_valid_instances)."""
    return eliminated(evol_words(lang), answer)


def method(ctx: Context) -> Method:
    template = load_template(ctx.weights)  # type: ignore[arg-type]  # checked by the plan
    systems = system_prompts(ctx.config)
    magpie = Magpie(template, systems)
    turns = ctx.config.turns or 1
    steps = [Step("response", magpie.response, magpie.answered, attempts=ATTEMPTS)]
    for turn in range(2, turns + 1):
        steps += [Step(f"query{turn}", magpie.follow_up, magpie.asked, attempts=ATTEMPTS),
                  Step(f"response{turn}", magpie.response, magpie.answered, attempts=ATTEMPTS)]
    return Method(
        name="magpie",
        source=Source("query", magpie.query, magpie.proposed),
        steps=tuple(steps),
        check=magpie.check,
        finish=magpie.finish,
        final_keys=("system", "turns"),
        instance_keys=("conversation",) if turns > 1 else (),
    )


# -- the plan's checks -----------------------------------------------------------------------------

def resolve(config: RunConfig, seed_tasks: tuple[Task, ...]) -> tuple[RunConfig,
                                                                      tuple[Task, ...]]:
    """--turns defaults to 1 (a resumed run keeps its own, config.DERIVED_KEYS)."""
    if config.system is not None and config.system_file is not None:
        raise SigenError("--system and --system-file both give the system prompt: pass one")
    return replace(config, turns=config.turns or 1), ()


def check_model(config: RunConfig, spec: ModelSpec, weights: Path | None) -> None:
    """What Magpie needs of the chat model, checked before anything is written: its tokenizer
    here (raw-text completion), a template the pre-query can be cut from, and the system
    prompts that template takes. (A base model is refused earlier: CHAT_MODEL.)"""
    if weights is None:
        raise SigenError(
            f"--method magpie renders {spec.name}'s chat template up to the user's turn and lets "
            "the model continue that text, which needs the model's tokenizer on this machine "
            f"and raw-text completion (/v1/completions). {spec.name} has no checkpoint here, so "
            "the server could only be used through /v1/chat/completions, which always closes "
            f"the user's turn before the model writes. Put the checkpoint at {spec.path}, or "
            "pass --model /path/to/checkpoint.")
    template = load_template(weights)
    for system in system_prompts(config):
        template.pre_query(system, ())  # a template that refuses the system prompt says so


# -- the chat template -----------------------------------------------------------------------------

@dataclass(frozen=True)
class ChatTemplate:
    """A chat model's template as Magpie uses it: the pre-query of a conversation, the prompt of
    its next answer, and where a turn ends."""

    tokenizer: object
    end_of_turn: str  # what the template writes after a user's message (may be "")
    special: tuple[str, ...]  # every special token's text
    special_ids: tuple[int, ...]
    where: str  # the checkpoint, for messages
    roles: tuple[str, ...] = ()  # role names the template writes as words ("user", "model")

    def render(self, messages: list[dict], generation_prompt: bool) -> str:
        try:
            return self.tokenizer.apply_chat_template(  # type: ignore[attr-defined]
                messages, tokenize=False, add_generation_prompt=generation_prompt)
        except Exception as exc:  # noqa: BLE001 - jinja's TemplateError and what it raises
            system = " with a system prompt" if messages[0]["role"] == "system" else ""
            hint = (" Leave out --system (with --lang zh, pass --system '' to run without the "
                    "Chinese system prompt)." if system else "")
            raise SigenError(f"the chat template of {self.where} fails on a conversation"
                             f"{system}: {exc}.{hint}") from None

    def pre_query(self, system: str | None, conversation: tuple[dict, ...] | list[dict]) -> str:
        """The text up to where the next user message would begin."""
        messages = [*_system(system), *conversation, {"role": "user", "content": MARKER}]
        text = self.render(messages, generation_prompt=False)
        at = text.find(MARKER)
        if at < 0:
            raise SigenError(f"the chat template of {self.where} does not write the user's "
                             "message as it is, so no text ends where the user's turn begins; "
                             "--method magpie cannot use this model")
        return text[:at]

    def prompt(self, system: str | None, conversation: list[dict]) -> str:
        """The full template of a conversation that ends with a user message, up to the
        assistant's answer."""
        return self.render([*_system(system), *conversation], generation_prompt=True)

    @property
    def stop(self) -> tuple[str, ...]:
        return (self.end_of_turn,) if self.end_of_turn else ()

    def clean(self, text: str) -> str:
        """A completion cut at the first special token or end-of-turn text left in it (a server
        that ignores stop_token_ids and returns special tokens as text)."""
        cuts = [text.find(s) for s in (*self.special, *self.stop) if s and s in text]
        return (text[:min(cuts)] if cuts else text).strip()

    def request(self, c: Completion) -> tuple[str, bool]:
        """A request written in the user's place: its first line (Magpie's early stopping: a
        small model that goes on writes its own answer or a second request), and whether it was
        cut off by the token limit before that line ended."""
        text = self.clean(c.text)
        first = text.split("\n", 1)[0].strip()
        return first, c.finish_reason == "length" and first == text

    def visible(self, text: str) -> str:
        """Template text without its special tokens: what the model could echo as words."""
        for token in sorted(self.special, key=len, reverse=True):
            text = text.replace(token, " ")
        return text

    def count(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))  # type: ignore


def _system(system: str | None) -> list[dict]:
    return [{"role": "system", "content": system}] if system else []


@cache
def load_template(weights: Path) -> ChatTemplate:
    """The template of the checkpoint at `weights`, from its tokenizer (loaded once)."""
    try:
        tokenizer = local_tokenizer(weights)
    except Exception as exc:  # noqa: BLE001 - transformers raises many kinds
        raise SigenError(f"cannot load the tokenizer of {weights}: {exc}") from None
    return template_of(tokenizer, str(weights))


def template_of(tokenizer, where: str) -> ChatTemplate:
    if not getattr(tokenizer, "chat_template", None):
        raise SigenError(f"{where} has no chat template (its tokenizer_config.json has no "
                         "chat_template and there is no chat_template.jinja): --method magpie "
                         "needs an aligned chat model")
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    ids = set(tokenizer.all_special_ids) | {i for i, t in added.items() if t.special}
    texts = {tokenizer.convert_ids_to_tokens(i) for i in ids}
    template = ChatTemplate(tokenizer, "", tuple(sorted(t for t in texts if t)),
                            tuple(sorted(ids)), where)
    return replace(template, end_of_turn=end_of_turn(template), roles=role_words(template))


ROLE_WORDS = ("system", "user", "assistant", "model", "human", "gpt", "bot")


def role_words(template: ChatTemplate) -> tuple[str, ...]:
    """The role names a conversation rendered by the template shows as words, once its special
    tokens are taken out: what a model that writes the template back writes."""
    text = template.visible(template.render(
        [{"role": "user", "content": MARKER}, {"role": "assistant", "content": MARKER}],
        generation_prompt=True)).lower()
    return tuple(w for w in ROLE_WORDS if re.search(rf"(?<![a-z]){w}(?![a-z])", text))


def end_of_turn(template: ChatTemplate) -> str:
    """What the template writes right after a user's message, up to its end of line: the text
    a user's turn ends with ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", " [/INST]")."""
    text = template.render([{"role": "user", "content": MARKER}], generation_prompt=False)
    after = text[text.find(MARKER) + len(MARKER):].strip() if MARKER in text else ""
    return after.split("\n")[0].strip()


# -- system prompts --------------------------------------------------------------------------------

def system_prompts(config: RunConfig) -> tuple[str | None, ...]:
    """The system prompts drawn from: --system-file's lines, --system (an empty one: none), or
    for a language with a default (prompts/<lang>/magpie_system.txt) that; else none, which
    leaves the template's own default."""
    if config.system_file is not None:
        return read_system_file(Path(config.system_file))
    if config.system is not None:
        return (config.system.strip() or None,)
    default = PROMPT_DIR / config.lang / "magpie_system.txt"
    return (default.read_text(encoding="utf-8").strip(),) if default.is_file() else (None,)


def read_system_file(path: Path) -> tuple[str, ...]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[:exc.start].count(b"\n") + 1
        raise SigenError(f"{path}:{line}: not UTF-8 text; save the system prompts as UTF-8, "
                         "one per line") from None
    except OSError as exc:
        raise SigenError(f"cannot read --system-file {path}: {exc.strerror}") from None
    prompts = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not prompts:
        raise SigenError(f"--system-file {path} holds no system prompt: write one per line")
    return prompts


# -- the method ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Magpie:
    template: ChatTemplate
    systems: tuple[str | None, ...]

    def _request(self, ctx: Context, prompt: str, limit: int, temperature: float, top_p: float,
                 seed: int) -> Request:
        room = ctx.context_len - self.template.count(prompt)
        return Request(prompt=prompt, raw=True, max_tokens=max(1, min(limit, room)),
                       temperature=temperature, top_p=top_p, stop=self.template.stop,
                       stop_token_ids=self.template.special_ids, seed=seed)

    # query: the source
    def query(self, ctx: Context, n: int) -> tuple[Request, dict]:
        system = ctx.rng("system", n).choice(self.systems)
        prompt = self.template.pre_query(system, ())
        request = self._request(ctx, prompt, ctx.config.max_new_tokens or SOURCE_TOKENS,
                                ctx.temperature, ctx.top_p, ctx.seed_for("query", n))
        return request, ({"system": system} if system else {})

    def proposed(self, ctx: Context, carried: dict, c: Completion) -> list[dict]:
        text, cut_off = self.template.request(c)
        return [{"instruction": text, **carried, **({"cut_off": True} if cut_off else {})}]

    def check(self, ctx: Context, candidate: dict) -> str | None:
        if candidate.get("cut_off"):
            return "cut_off"
        prompt = self.template.pre_query(candidate.get("system"), ())
        return request_problem(self.template, candidate["instruction"], prompt, ctx.config.lang)

    # responses and later turns
    def response(self, ctx: Context, task: dict, attempt: int) -> Request:
        conversation = _conversation(task)
        turn = len(conversation) // 2 + 1
        return self._request(ctx, self.template.prompt(task.get("system"), conversation),
                             ctx.config.max_answer_tokens or RESPONSE_TOKENS,
                             ctx.attempt_temperature(attempt),
                             ctx.top_p if attempt else 1.0,
                             ctx.seed_for("response", task["id"], turn, attempt))

    def answered(self, ctx: Context, task: dict, c: Completion) -> bool:
        conversation = _conversation(task)
        answer = self.template.clean(c.text)
        if c.finish_reason == "length":  # as in the grounded answers: its complete sentences
            answer = complete_sentences(answer)
        dropped = () if answer or c.finish_reason != "length" else \
            ((Instance("", self.template.clean(c.text)), "cut_off"),)
        request = conversation[-1]["content"]
        if reason := answer_problem(answer, ctx.config.lang) or echoes(answer, request):
            dropped = ((Instance("", answer), reason),)
        kept = ctx.keep_instances(task, [] if dropped else [Instance("", answer)], dropped)
        if kept:
            conversation.append({"role": "assistant", "content": kept[0].output})
            task.pop("tries", None)
            return self._room_for_more(ctx, task)
        if (ctx.config.turns or 1) == 1:  # as in the other methods: no_valid_instances
            return False
        return self._failed(task, f"no_answer:turn {len(conversation) // 2 + 1}")

    def follow_up(self, ctx: Context, task: dict, attempt: int) -> Request:
        conversation = _conversation(task)
        turn = len(conversation) // 2 + 1
        prompt = self.template.pre_query(task.get("system"), conversation)
        return self._request(ctx, prompt, ctx.config.max_new_tokens or SOURCE_TOKENS,
                             ctx.temperature, ctx.top_p,
                             ctx.seed_for("query", task["id"], turn, attempt))

    def asked(self, ctx: Context, task: dict, c: Completion) -> bool:
        conversation = _conversation(task)
        turn = len(conversation) // 2 + 1
        text, cut_off = self.template.request(c)
        opening = self.template.pre_query(task.get("system"), ())  # the template's own text
        reason = "cut_off" if cut_off else \
            check_instruction(text, ctx.config.lang) or \
            request_problem(self.template, text, opening, ctx.config.lang) or \
            repeats_conversation(text, conversation)
        if reason is None:
            conversation.append({"role": "user", "content": text})
            task.pop("tries", None)
            return self._room_for_more(ctx, task)
        # Logged as a dropped part of the conversation (its instance), with its turn.
        ctx.state.instance_rejects[reason] += 1
        ctx.store.append(REJECTED, [{"stage": "instance", "round": task["round"],
                                     "instruction_id": task["id"], "turn": turn,
                                     "reason": reason, "request": text}])
        return self._failed(task, f"{reason}:turn {turn}")

    def _failed(self, task: dict, reason: str) -> bool:
        """One more try, or after the last the conversation is rejected with this reason."""
        task["tries"] = task.get("tries", 0) + 1
        if task["tries"] < ATTEMPTS:
            return False
        task[REJECT] = reason
        return True

    def _room_for_more(self, ctx: Context, task: dict) -> bool:
        """Whether the conversation can go on within the model's context; if not, it is
        rejected as context_full (one more turn would not fit)."""
        conversation = _conversation(task)
        if len(conversation) >= 2 * (ctx.config.turns or 1):
            return True  # complete
        prompt = self.template.prompt(task.get("system"), conversation) \
            if conversation[-1]["role"] == "user" else \
            self.template.pre_query(task.get("system"), conversation)
        if ctx.context_len - self.template.count(prompt) < MIN_ROOM:
            task[REJECT] = f"context_full:turn {len(conversation) // 2 + 1}"
        return True

    def finish(self, ctx: Context, task: dict) -> list[Instance]:
        conversation = _conversation(task)
        task["turns"] = len(conversation) // 2
        if len(conversation) < 2 * (ctx.config.turns or 1):
            return []  # its answer failed twice (a single turn): no_valid_instances
        return [Instance("", conversation[1]["content"])]


def _conversation(task: dict) -> list[dict]:
    """The task's messages so far (kept on the task in memory; a resumed task starts again
    from its first request, with the same seeds)."""
    return task.setdefault("conversation", [{"role": "user", "content": task["instruction"]}])


# -- what small models write in the user's place ---------------------------------------------------

# Openers only an assistant writes, whatever follows.
_ANSWER_ALWAYS = {
    "en": re.compile(r"\b(how (can|may) i (help|assist) you|i'?d be (happy|glad) to help|"
                     r"i'?m here to help|as an ai (language model|assistant)|thank you for "
                     r"reaching out)\b", re.IGNORECASE),
    "zh": re.compile(r"(有什么(可以|能|需要)(帮|为)|我(能|可以)为(你|您)|很高兴(为|帮)(你|您)|"
                     r"作为(一个)?(AI|人工智能)(助手|语言模型))", re.IGNORECASE),
}
# Openers of an answer; a request may start the same way when it asks something ("Sure, and
# could you ...?"), so these count only in text without a question mark.
_ANSWER_OPENER = {
    "en": re.compile(r"^\W*(sure|certainly|of course|absolutely|great question|good question|"
                     r"i'?d be (happy|glad)|i'?m (happy|glad) to|happy to help)\b",
                     re.IGNORECASE),
    "zh": re.compile(r"^\W*(当然|好的|没问题|以下是|下面是|这是一|很高兴|非常好的问题)"),
}


def request_problem(template: ChatTemplate, text: str, prompt: str, lang: str) -> str | None:
    """Why `text`, written in the user's place after `prompt`, is not a user's request; None
    when nothing says so."""
    if writes_role(template, text) or any(s in text for s in template.special if s) or \
            copies_prompt(text, template.visible(prompt)):
        return "template_echo"
    always, opener = _ANSWER_ALWAYS.get(lang, _ANSWER_ALWAYS["en"]), \
        _ANSWER_OPENER.get(lang, _ANSWER_OPENER["en"])
    if always.search(text) or (opener.search(text) and not re.search(r"[?？]", text)):
        return "answer_not_request"
    return None


def writes_role(template: ChatTemplate, text: str) -> bool:
    """A role name of the template opening the text as a label ("User: ...", "assistant:"):
    the model wrote the template's turns in words."""
    if not template.roles:
        return False
    names = "|".join(template.roles)
    return re.match(rf"^[\W_]*({names})[\W_]*[:：]", text, re.IGNORECASE) is not None


def echoes(answer: str, request: str) -> str | None:
    """An answer that mostly writes its request back (the packaged model, asked in Chinese
    "2. 你想让它们一起用的合理的方式？", answered with those words)."""
    # Most of its words in runs taken from the request in order; a clause that restates the
    # request ("You asked how to ...") is fine in an answer (clauses_of: none compared).
    return "echoed_request" if answer.strip() and copies_prompt(answer, request, "") else None


def repeats_conversation(text: str, conversation: list[dict]) -> str | None:
    """A later user turn that writes an earlier message of the conversation back."""
    for message in conversation:
        if copies_prompt(text, message["content"]):
            return "repeated_turn"
    return None
