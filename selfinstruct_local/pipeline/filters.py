"""Filters for new instructions and their instances. Each returns None (keep) or a reason.

A reason is a short name, optionally followed by ":detail" (e.g. "blacklist:image"); counters use
the part before the colon. The near-duplicate check is not here: it needs the pool, so it lives in
`selfinstruct_local.dedup` and runs after these cheap checks.

Chinese (lang "zh") differs in five places: an instruction must be at least a third Chinese
(small models drift into English); its blacklist matches substrings, because Chinese is written
without spaces and has no word boundaries to anchor on; CJK-heavy text (in any run) is measured
in characters with its own bounds; a leading quoted term or book title is part of the sentence,
not punctuation noise; and 编写一个程序 counts as "Write a program". No filter rejects text for
being non-ASCII.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Callable
from difflib import SequenceMatcher

from rapidfuzz.distance import LCSseq

from selfinstruct_local.seeds import Instance
from selfinstruct_local.text import count_words, is_cjk_char, tokenize

MIN_WORDS = 3  # an instruction of at most this many words is dropped
MAX_WORDS = 150
# CJK-heavy text counts one token per character. An English word is roughly 1.5-2 Chinese
# characters, so the word bounds scale to: at most 5 characters is too short to be a task
# ("写一首诗" is 4), and more than 300 is as long as a 150-word English instruction.
MIN_CJK_CHARS = 5
MAX_CJK_CHARS = 300

BLACKLIST = {
    "en": (
        "image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map",
        "maps", "draw", "plot", "go to", "video", "audio", "music", "flowchart", "diagram",
    ),
    # Things a text-only model cannot see, hear, draw, open or visit. Only words that do not
    # hide inside harmless ones: "画出" is left out because of "刻画出人物性格" (portray), "上网"
    # because of "上网课" (online class).
    "zh": (
        "图片", "图像", "照片", "图表", "插图", "截图", "画图", "绘制", "绘画", "画一幅", "画一张",
        "流程图", "示意图", "思维导图", "地图", "文件", "附件", "视频", "录像", "音频", "音乐",
        "录音", "访问网站", "打开网页", "打开链接", "浏览网页", "上网搜索",
    ),
}
# Languages written without spaces: a blacklisted word counts wherever it appears.
SUBSTRING_LANGS = frozenset({"zh"})
# The lists each language applies; zh text often mixes in English words ("画一个 flowchart").
BLACKLISTS_FOR = {"en": ("en",), "zh": ("zh", "en")}


def _token_counts(instruction: str) -> tuple[int, int]:
    """How many tokens the instruction has, and how many of them are CJK characters."""
    tokens = tokenize(instruction)
    return len(tokens), sum(1 for t in tokens if is_cjk_char(t))


def _length(instruction: str) -> tuple[int, int, int]:
    """Token count and the (min, max) bounds that apply: CJK bounds when most tokens are CJK."""
    n, cjk = _token_counts(instruction)
    if n and 2 * cjk >= n:
        return n, MIN_CJK_CHARS, MAX_CJK_CHARS
    return n, MIN_WORDS, MAX_WORDS


def too_short(instruction: str, lang: str = "en") -> str | None:
    n, low, _ = _length(instruction)
    return "too_short" if n <= low else None


def too_long(instruction: str, lang: str = "en") -> str | None:
    n, _, high = _length(instruction)
    return "too_long" if n > high else None


def _blacklist_regex(words: tuple[str, ...], whole_words: bool) -> re.Pattern[str]:
    # Longest first: where two listed words start at the same place, the longer one is reported.
    ordered = sorted(words, key=len, reverse=True)
    alternatives = "|".join(re.escape(w).replace(r"\ ", r"\s+") for w in ordered)
    if not whole_words:
        return re.compile(f"({alternatives})", re.IGNORECASE)
    # Whole words only, any case: "plot" is dropped, "plotter" and "snapshot" are not.
    return re.compile(rf"(?<!\w)({alternatives})(?!\w)", re.IGNORECASE)


_BLACKLIST_RE = {
    lang: _blacklist_regex(words, whole_words=lang not in SUBSTRING_LANGS)
    for lang, words in BLACKLIST.items()
}


def blacklisted_word(instruction: str, lang: str = "en") -> str | None:
    for listed in BLACKLISTS_FOR.get(lang, ()):
        match = _BLACKLIST_RE[listed].search(instruction)
        if match:
            return f"blacklist:{' '.join(match.group(1).lower().split())}"
    return None


# In Chinese a task often opens with a quoted term or a book title: “截止”和“截至”有什么区别？
# or 《红楼梦》里谁最会写诗？ Such an opening mark is part of the sentence when its closing mark
# follows. Brackets are not exempt: （1） and 【任务】 are leftovers of list and label markup.
_PAIRED_OPENERS = {"zh": {"《": "》", "〈": "〉", "“": "”", "「": "」", "『": "』"}}


def starts_with_punctuation(instruction: str, lang: str = "en") -> str | None:
    # Full-width marks (，。“（【) are in Unicode's P* categories too, so this covers them.
    text = instruction.lstrip()
    first = text[:1]
    if not first or unicodedata.category(first)[0] not in "PS":
        return None
    closer = _PAIRED_OPENERS.get(lang, {}).get(first)
    return None if closer and closer in text[1:] else "starts_with_punctuation"


# Self-Instruct's rule against instructions that open by asking for a whole program, and its
# Chinese form: 编写一个程序 / 写个程序 / 请编写程序, but not 写一个程序员的日记
# (a programmer's diary).
_PROGRAM_RE = re.compile(
    r"^\s*(?:write a program|(?:请你?)?(?:编写|写|编)(?:一个|一段|个)?程序(?![员猿]))",
    re.IGNORECASE,
)


def starts_with_write_a_program(instruction: str, lang: str = "en") -> str | None:
    # Both forms apply to every language: neither can match text in another script.
    return "write_a_program" if _PROGRAM_RE.match(instruction) else None


# A Chinese run wants Chinese tasks; small models drift into English. Mixed text such as
# "用Python写一个函数" is mostly CJK tokens, so a third is a lenient floor.
MIN_CJK_SHARE = {"zh": 1 / 3}


def wrong_language(instruction: str, lang: str = "en") -> str | None:
    floor = MIN_CJK_SHARE.get(lang)
    if floor is None:
        return None
    n, cjk = _token_counts(instruction)
    return "wrong_language" if n and cjk < floor * n else None


# U+FFFD in generated text: the model wrote bytes that are no UTF-8 character (a byte-level
# tokenizer lets it; the packaged model did in a Chinese run: "用Python 从编码转�ption"), and the
# detokenizer put this in their place. What was meant there is lost.
REPLACEMENT_CHARACTER = "\ufffd"


def broken_characters(instruction: str, lang: str = "en") -> str | None:
    return "broken_characters" if REPLACEMENT_CHARACTER in instruction else None


INSTRUCTION_FILTERS: tuple[Callable[[str, str], str | None], ...] = (
    broken_characters,
    wrong_language,
    too_short,
    too_long,
    blacklisted_word,
    starts_with_punctuation,
    starts_with_write_a_program,
)


def check_instruction(instruction: str, lang: str = "en") -> str | None:
    """The first reason to drop the instruction, or None to keep it."""
    for check in INSTRUCTION_FILTERS:
        reason = check(instruction, lang)
        if reason:
            return reason
    return None


_LETTER_RUN = re.compile(r"([^\W\d_])\1{7}")  # one letter or ideograph 8 times in a row
_SENTENCE_SPLIT = re.compile(r"[\n。！？；!?;]|\.(?:\s|$)")
MAX_SENTENCE_REPEATS = 2
# A short piece written back to back ten times or more: "1. 1. 1. ...", "！！！！...", a line and
# its blank line again and again. Rules, leaders and table lines ("----", "....", "|---|")
# and digits alone ("0000") are not a loop.
_PIECE_LOOP = re.compile(r"(\S[^\n]{0,7}?\s*)\1{9,}")
_NOT_A_LOOP = re.compile(r"[-=_*#~.·|+:\s]+|[\d\s]+")
COPIED_INPUT_SHARE = 0.8


def _repeats_itself(output: str) -> bool:
    """A small model's loop: one paragraph written out again and again (or three times or more
    after other text), one sentence three times or more, one letter or ideograph eight times in
    a row (爱爱爱爱爱爱爱爱), or a short piece ten times back to back ("1. 1. 1. ...")."""
    paragraphs = [p.strip() for p in output.split("\n") if p.strip()]
    if len(paragraphs) >= 2 and len(set(paragraphs)) == 1:
        return True
    if paragraphs and max(Counter(paragraphs).values()) > MAX_SENTENCE_REPEATS:
        return True  # a loop after an opening line of its own
    if _LETTER_RUN.search(output):
        return True
    if any(not _NOT_A_LOOP.fullmatch(m.group(1)) for m in _PIECE_LOOP.finditer(output)):
        return True
    sentences = Counter(s for s in (p.strip() for p in _SENTENCE_SPLIT.split(output))
                        if count_words(s) >= 2 and len(s) >= 4)
    return bool(sentences) and max(sentences.values()) > MAX_SENTENCE_REPEATS


_CLAUSE_SPLIT = re.compile(r"[\n。！？；：!?;:]|\.(?:\s|$)")
MIN_COPY_WORDS = 4
PROMPT_SHARE = 0.6


def _clauses(text: str) -> list[list[str]]:
    return [t for t in (tokenize(c) for c in _CLAUSE_SPLIT.split(text)) if len(t) >= MIN_COPY_WORDS]


def copies_prompt(text: str, prompt: str, clauses_of: str | None = None) -> bool:
    """True when `text` writes its prompt back instead of doing what the prompt asks: most of
    its words (PROMPT_SHARE) lie in runs of two or more that appear in `prompt` in the same
    order, or one of its sentences or clauses is a near-duplicate of one in `clauses_of`
    (default: `prompt`; ROUGE-L F >= 0.7, or words nearly all taken from it in order).

    Small models often answer by repeating the instructions ("Write only the task itself ...")
    or the kind of task asked for. Runs of one word do not count, so a real task that shares
    a few words with its prompt ("根据原文，说说宝玉为什么生气") is kept.
    """
    ours, theirs = tokenize(text), tokenize(prompt)
    blocks = SequenceMatcher(None, ours, theirs, autojunk=False).get_matching_blocks()
    if ours and sum(b.size for b in blocks if b.size >= 2) >= PROMPT_SHARE * len(ours):
        return True
    references = _clauses(prompt if clauses_of is None else clauses_of)
    for clause in _clauses(text):
        for ref in references:
            common = LCSseq.similarity(clause, ref)
            if 20 * common >= 7 * (len(clause) + len(ref)) or 5 * common >= 4 * len(clause):
                return True
    return False


def copies_input(inp: str, out: str) -> bool:
    """True when most of `out` is one verbatim stretch of `inp` (spacing ignored)."""
    a, b = "".join(inp.split()), "".join(out.split())
    if len(b) < 8:
        return False
    match = SequenceMatcher(None, a, b, autojunk=False).find_longest_match(0, len(a), 0, len(b))
    return match.size >= COPIED_INPUT_SHARE * len(b)


# A task about a passage may quote a name or a phrase of it ("Why does Baoyu say '...'?"); one
# that copies a sentence of it hands the model the passage's text instead of a task. A
# sentence's worth is a run of 12 CJK characters or 8 words (mixed runs pro rata) in the same
# order as in the passage, punctuation, spacing and case aside.
COPIED_RUN = (12, 8)
# A quotation is allowed a longer run when the task has words of its own around it (4 CJK
# characters or 3 words: 是什么意思, "What does ... mean"): rewriting or explaining a line is
# what the modern and allusion kinds ask for. Up to 5 sentences' worth (60 CJK characters, 40
# words), a sentence or two of classical prose; more is the passage copied into the task.
OWN_WORDS = (4, 3)
MAX_QUOTED_RUNS = 5
MIN_MOSTLY_TOKENS = 5  # a copied stretch this long that is most of the task (COPIED_INPUT_SHARE)
# Quotation marks, Chinese and English; a single quote opens or closes only away from letters,
# so the apostrophes of "Baoyu's" and "keepers'" are not quotes.
_QUOTATION = re.compile(r"“[^“”]*”|「[^「」]*」|『[^『』]*』|‘[^‘’]*’|\"[^\"]*\""
                        r"|(?<!\w)'[^']*'(?!\w)")


def _worth(tokens: list[str], unit: tuple[int, int]) -> float:
    """How many `unit`s (CJK characters, words) the tokens make, CJK and other counted apart."""
    cjk = sum(1 for t in tokens if is_cjk_char(t))
    return cjk / unit[0] + (len(tokens) - cjk) / unit[1]


def _longest_run(tokens: list[str], passage: list[str]) -> list[str]:
    """The longest run of `tokens` that appears in `passage` as it is."""
    match = SequenceMatcher(None, tokens, passage, autojunk=False).find_longest_match(
        0, len(tokens), 0, len(passage))
    return tokens[match.a:match.a + match.size]


def copies_passage(instruction: str, passage: str) -> str | None:
    """'copied_passage' when a task about `passage` copies it instead of asking about it:

    - a sentence's worth of the passage (COPIED_RUN) outside quotation marks;
    - a copied stretch of at least MIN_MOSTLY_TOKENS tokens that is most (COPIED_INPUT_SHARE) of
      the words outside quotation marks;
    - a quotation of more than MAX_QUOTED_RUNS sentences' worth.

    A task without words of its own around its quotations (OWN_WORDS) is judged whole, quotation
    marks and all: “<a sentence>”？ is a copied sentence. Quoting a name, a phrase, or a line the
    task asks about is a good task and is kept.
    """
    theirs = tokenize(passage)
    own_parts = [tokenize(part) for part in _QUOTATION.split(instruction)]
    own = [t for part in own_parts for t in part]
    quotations = [tokenize(q.group()[1:-1]) for q in _QUOTATION.finditer(instruction)]
    if _worth(own, OWN_WORDS) < 1:  # no task around the quotations: judge it all as copied
        own_parts, own, quotations = [tokenize(instruction)], tokenize(instruction), []
    for part in own_parts:
        run = _longest_run(part, theirs)
        if _worth(run, COPIED_RUN) >= 1 or (
                len(run) >= MIN_MOSTLY_TOKENS and len(run) >= COPIED_INPUT_SHARE * len(own)):
            return "copied_passage"
    if any(_worth(_longest_run(q, theirs), COPIED_RUN) > MAX_QUOTED_RUNS for q in quotations):
        return "copied_passage"
    return None


def copy_key(text: str) -> str:
    """Text folded for the copied-example check: case, spacing and wrapping quotes ignored."""
    return " ".join(text.casefold().split()).strip("\"'“”‘’「」 ")


def _unquoted(text: str) -> str:
    """Text with its wrapping quotes and runs of spacing folded; case is kept, since changing
    it can be the task ("Write this in lower case")."""
    return " ".join(text.split()).strip("\"'“”‘’「」 ")


def reason_key(reason: str) -> str:
    return reason.split(":", 1)[0]


def filter_instances(
    instances: list[Instance], examples: frozenset[str] = frozenset(),
    answer_prompt: str | None = None, answer_rules: str | None = None,
) -> tuple[list[Instance], list[tuple[Instance, str]]]:
    """Kept instances (first occurrence order) and the dropped ones with their reasons.

    `examples` are the normalized inputs and outputs of the prompt's few-shot examples; an
    instance that repeats one of them was copied, not generated for its task. `answer_prompt`
    is given for tasks about a corpus passage (the input): it is the prompt's wording around
    the passage, task included, and `answer_rules` the same without the task. An output that is
    mostly a verbatim stretch of the passage, mostly that wording, or that writes back a sentence
    of the rules copies instead of answering (restating the task in a real answer is fine).

    Drops empty outputs, text with broken characters (U+FFFD), an input equal to its output,
    exact duplicates, and every instance whose input also appears with a different output (the
    task is then ambiguous for that input). The one exception is the empty input of an
    open-ended task ("Give three tips ..."), where several answers are all right: the first is
    kept and the others are dropped, so the task keeps data.
    """
    kept: list[Instance] = []
    dropped: list[tuple[Instance, str]] = []
    seen: set[tuple[str, str]] = set()
    for inst in instances:
        inp, out = inst.input.strip(), inst.output.strip()
        if not out:
            dropped.append((inst, "empty_output"))
        elif REPLACEMENT_CHARACTER in out or (answer_prompt is None and
                                              REPLACEMENT_CHARACTER in inp):
            # (a passage is the input of a grounded task: the user's text, kept as it is)
            dropped.append((inst, "broken_characters"))
        elif inp and _unquoted(inp) == _unquoted(out):
            dropped.append((inst, "input_equals_output"))
        elif _repeats_itself(out):
            dropped.append((inst, "repetitive_output"))
        elif examples and (copy_key(inp) in examples or copy_key(out) in examples):
            dropped.append((inst, "copied_example"))
        elif answer_prompt is not None and copies_input(inp, out):
            dropped.append((inst, "copied_input"))
        elif answer_prompt is not None and copies_prompt(out, answer_prompt, answer_rules):
            dropped.append((inst, "copied_prompt"))
        elif (inp, out) in seen:
            dropped.append((inst, "duplicate_instance"))
        else:
            seen.add((inp, out))
            kept.append(Instance(input=inp, output=out))
    outputs_per_input = Counter(inst.input for inst in kept)
    conflicting = {inp for inp, n in outputs_per_input.items() if n > 1}
    result: list[Instance] = []
    for inst in kept:
        first_open_ended = inst.input == "" and not any(r.input == "" for r in result)
        if inst.input not in conflicting or first_open_ended:
            result.append(inst)
        else:
            dropped.append((inst, "conflicting_outputs"))
    return result, dropped
