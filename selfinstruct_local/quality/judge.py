"""The judge stage: one request rates one task (instruction, input, output) from 1 to 5.

The reply is started for the model ("Score:" / "评分："), so even a small model's first tokens
are the number. Parsing is lenient about form (bold, full-width digits and colons, "4/5",
"4 分", a reply that starts with the number) and strict about meaning: a number outside 1-5, a
decimal or no number at all is None, which the caller counts as unparsed (and asks once more).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

from selfinstruct_local.engines import Request
from selfinstruct_local.prompts import PromptSet
from selfinstruct_local.text import is_cjk_char

MAX_TOKENS = 96  # a number and one sentence; the rest of a rambling reply is not read
PROMPT_MARGIN = 64  # tokens kept free besides the estimate, which is rough
REASON_CHARS = 300
TRUNCATED = " […]"
RETRY_TEMPERATURE = 0.7  # the second ask samples: greedy decoding would repeat the first reply
REPLY_CHARS = 200  # of an unreadable reply, kept in its row to see what went wrong

_NUMERALS = {"1": 1, "2": 2, "3": 3, "4": 4, "5": 5,
             "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5}
_NUMBER = r"(?:\d+(?:\.\d+)?|[一二两三四五六七八九十])"
# What may follow a score: an end, a space, punctuation, "/5", "分" (not a letter, a digit or a
# CJK character, which make it part of something else).
_AFTER_NUMBER = r"$|\s|[.,;:!?)\]/，。；：！？、）]|分|out of"
# Full-width digits and colons fold to ASCII, markdown emphasis to spaces: one char for one.
_FOLD = str.maketrans("０１２３４５６７８９：*#", "0123456789:  ")
# Words that introduce the rating besides the prompt's own: small models answer in English
# under a Chinese prompt and the other way round.
_SCORE_WORDS = ("score", "rating", "rate", "评分", "分数", "得分", "打分")
_REASON_WORDS = ("reason", "explanation", "理由", "原因")
_SCALE = re.compile(r"\s*(?:/\s*5|out of 5|分(?!之))?", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s|(?<=[。！？])")


@dataclass(frozen=True)
class Judgement:
    score: int | None  # 1-5, or None when the reply holds no readable score
    reason: str


@dataclass(frozen=True)
class TaskJudge:
    """Judging one task, for `sigen judge` and for `sigen run --judge` alike: its request
    (attempt 1 greedy, attempt 2 sampled, each with a seed fixed by the task's id) and its row
    of scores.jsonl."""

    prompts: PromptSet
    judge: str  # the judge model's name, recorded in every row
    max_model_len: int
    seed: int
    attempts: int = 2

    def request(self, ident: str, task: dict, attempt: int) -> Request:
        temperature = RETRY_TEMPERATURE if attempt > 1 else 0.0
        return build_judge_request(
            self.prompts, task["instruction"], task.get("input") or "", task.get("output") or "",
            max_model_len=self.max_model_len, seed=task_seed(self.seed, ident, attempt),
            temperature=temperature, top_p=0.95 if temperature else 1.0)

    def row(self, ident: str, task: dict, completion: str, attempt: int) -> dict | None:
        """The task's score row from the completion of its request; None when the score
        cannot be read and another attempt is left."""
        reply = reply_prefix(self.prompts) + completion
        verdict = parse_judgement(self.prompts, reply)
        if verdict.score is None and attempt < self.attempts:
            return None
        row = {"id": ident, "instruction_id": task["instruction_id"], "score": verdict.score,
               "reason": verdict.reason, "judge": self.judge, "attempts": attempt}
        if verdict.score is None:
            row["reply"] = reply[:REPLY_CHARS]
        return row


def task_seed(seed: int, ident: str, attempt: int) -> int:
    """A request's seed from the task's id: the same wherever the task falls in a batch."""
    return (seed * 1_000_003 + zlib.crc32(f"{ident}#{attempt}".encode())) % 2**31


def build_judge_request(prompts: PromptSet, instruction: str, input_text: str, output: str,
                        max_model_len: int = 4096, seed: int | None = None,
                        temperature: float = 0.0, top_p: float = 1.0) -> Request:
    """The judge's request; fields are shortened (marked with […]) so that the prompt and the
    reply fit in `max_model_len` tokens."""
    L = prompts.labels
    empty = prompts.fill("judge", instruction="", input="", output="")
    budget = max_model_len - MAX_TOKENS - PROMPT_MARGIN - estimate_tokens(empty)
    fields = fit_fields([instruction, input_text or L.no_input, output], budget)
    return Request(
        prompt=prompts.fill("judge", instruction=fields[0], input=fields[1], output=fields[2]),
        assistant_prefix=reply_prefix(prompts),
        max_tokens=MAX_TOKENS, temperature=temperature, top_p=top_p, seed=seed,
    )


def reply_prefix(prompts: PromptSet) -> str:
    """Where the judge's reply starts, written for the model: "Score:" / "评分："."""
    return f"{prompts.labels.score}{prompts.labels.colon.rstrip()}"


def estimate_tokens(text: str) -> float:
    """A generous token count without the tokenizer: small models' vocabularies spend up to
    two tokens on a Chinese character (SmolLM2: 1.8) and rarely more than one per 2.5 other
    characters."""
    cjk = sum(1 for ch in text if is_cjk_char(ch))
    return 2.0 * cjk + 0.4 * (len(text) - cjk)


def fit_fields(fields: list[str], budget: float) -> list[str]:
    """Shorten the longest fields first until the estimated total fits `budget`: each field
    gets what it needs, or an equal share of what the shorter ones leave."""
    need = [estimate_tokens(f) for f in fields]
    if sum(need) <= budget:
        return list(fields)
    allowed = [0.0] * len(fields)
    left, order = max(budget, 0.0), sorted(range(len(fields)), key=need.__getitem__)
    for rank, i in enumerate(order):
        allowed[i] = min(need[i], left / (len(fields) - rank))
        left -= allowed[i]
    return [f if need[i] <= allowed[i] else _cut(f, allowed[i]) for i, f in enumerate(fields)]


def _cut(text: str, tokens: float) -> str:
    spent, end = estimate_tokens(TRUNCATED), 0
    for end, ch in enumerate(text):  # noqa: B007 (end is used after the loop)
        spent += 2.0 if is_cjk_char(ch) else 0.4
        if spent > tokens:
            break
    return text[:end].rstrip() + TRUNCATED


def parse_judgement(prompts: PromptSet, reply: str) -> Judgement:
    """Score and reason from the whole reply (the assistant prefix included); no reason
    without a score."""
    # Same-length folding, so that positions found here cut the reply itself.
    text = reply.translate(_FOLD)
    score, end = _score(text, (prompts.labels.score, *_SCORE_WORDS))
    if score is None:
        return Judgement(None, "")
    return Judgement(score, _reason(reply, text, (prompts.labels.reason, *_REASON_WORDS), end))


def _score(text: str, words: tuple[str, ...]) -> tuple[int | None, int]:
    """The score and where its mention ends. Only a number that stands alone counts: the "2"
    of "2加2等于几" or of "2.5" is no score, nor a rubric line the model writes back."""
    number = rf"(?P<n>{_NUMBER})(?={_AFTER_NUMBER})"
    patterns = (
        # Score: 4, 评分：4分, 评分为五分之四; on the label's line (a list below it is no score)
        rf"(?<![a-z])(?:{'|'.join(map(re.escape, words))})[ \t]*(?:[:=]|is|为|是)?[ \t]*"
        rf"(?:{_NUMBER}[ \t]*分之[ \t]*)?{number}",
        rf"^\W*{number}",  # a reply that opens with the number
        rf"{number}\s*(?:/|out of)\s*5\b",  # 4/5, 4 out of 5 anywhere
    )
    for pattern in patterns:
        found = re.search(pattern, text, re.IGNORECASE)
        if found:
            end = _SCALE.match(text, found.end()).end()  # "/5", "out of 5", "分" go too
            return _NUMERALS.get(found.group("n")), end
    return None, 0


def _reason(reply: str, text: str, words: tuple[str, ...], score_end: int) -> str:
    """The sentence after the reason label; else the first line after the score."""
    label = re.search(rf"(?:{'|'.join(map(re.escape, words))})\s*:\s*(?P<r>.+)", text,
                      re.IGNORECASE)
    if label:
        line = reply[label.start("r"):label.end("r")]
    else:
        rest = reply[score_end:].lstrip(" \t.,;:-–—)）：，。")
        line = next((s for s in rest.splitlines() if s.strip()), "")
    sentence = _SENTENCE_END.split(line.strip(), maxsplit=1)[0].strip()
    return sentence[:REASON_CHARS]
