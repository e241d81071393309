"""The verb and the direct object of an instruction, for the verb-object chart of `sigen stats`
(the Self-Instruct paper's Figure 2: the most common leading verbs and their objects).

The paper parsed each instruction (Berkeley Neural Parser) and kept the verb closest to the root
with its first direct noun object. Without a parser model offline, a part-of-speech tagger whose
model ships in its PyPI package, and a rule:

- English: the tagger of TextBlob (Pattern's Brill tagger: lexicon, context and morphology rules
  inside the wheel; nothing downloaded). The verb is the first word of the first imperative
  sentence: after "please", "kindly", "can/could/would/will you", "I want/need/would like you
  to", "help me (to)", "let's", and after an opening phrase up to its comma ("Given a list of
  numbers, sort them"). A tagger trained on newspaper text calls a sentence-initial imperative a
  noun ("List", "Sort", "Plan"), so the first word is taken as the verb when the tagger says verb,
  or says singular noun or adjective and a determiner, pronoun, number, particle or "yes" follows
  ("List three fruits", "Work out the answer", "Answer yes or no").
  Questions and statements ("What is...", "Is this...", "The text below...") have no verb. The
  object is the head noun of the noun phrase right after the verb: determiners, numbers,
  adjectives and participles ("the following", "the given") are skipped, the last noun of the
  first run of nouns is the head ("a workout plan" -> plan, "a list of names" -> list), plural
  nouns singularized; a pronoun or a clause ("how...", "why...") gives a verb without object.
  The README's "A diversity report" states the whole rule.
- Chinese: jieba's segmenter with its part-of-speech tags (jieba.posseg; its dictionary ships in
  the package). In the first clause (split at ，。？！；：) that opens with a verb: politeness (请,
  麻烦, 帮我...), adverbs, conjunctions and modals are skipped, and a prepositional phrase (根据...,
  用..., 把...) is passed over to its verb; 是 and 有 are not taken as the verb (a question). The
  object is the head noun after it in the clause: the noun after the last 的 when the noun
  phrase has one ("回答下面的选择题" -> 选择题), else the last noun of the first run of nouns; in a
  把/将 clause, the noun before the verb ("把这段话压缩..." -> 这段话).
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections import Counter
from collections.abc import Iterable
from functools import cache
from pathlib import Path

from selfinstruct_local.text import is_cjk_char, tokenize

TOP_VERBS = 20
TOP_OBJECTS = 4
Pair = tuple[str | None, str | None]


def verb_object(instruction: str) -> Pair:
    """(verb, object) of an instruction; (None, None) without an imperative verb, (verb, None)
    without a noun object. Chinese or English by the instruction's own script."""
    if uses_jieba(instruction):
        return _chinese(instruction)
    return _english(instruction)


def uses_jieba(text: str) -> bool:
    """Whether `text` is read as Chinese: at least as many CJK characters as other words (a
    Chinese character carries about as much as a word: "写 Python 代码" is Chinese)."""
    tokens = tokenize(text)
    cjk = sum(map(is_cjk_char, tokens))
    return cjk > 0 and 2 * cjk >= len(tokens)


def top_verb_objects(pairs: Iterable[Pair], verbs: int = TOP_VERBS,
                     objects: int = TOP_OBJECTS) -> list[dict]:
    """The `verbs` most common verbs, each with its count and its `objects` most common objects
    (ties broken alphabetically, so the chart does not depend on file order)."""
    verb_counts: Counter[str] = Counter()
    object_counts: dict[str, Counter[str]] = {}
    for verb, obj in pairs:
        if verb is None:
            continue
        verb_counts[verb] += 1
        if obj is not None:
            object_counts.setdefault(verb, Counter())[obj] += 1

    def ranked(counter: Counter[str], n: int) -> list[tuple[str, int]]:
        return sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:n]

    return [{"verb": verb, "count": count,
             "objects": [{"object": o, "count": c}
                         for o, c in ranked(object_counts.get(verb, Counter()), objects)]}
            for verb, count in ranked(verb_counts, verbs)]


# -- English -------------------------------------------------------------------------------

Tagged = list[tuple[str, str]]
# Openers skipped before the verb, as lowercase token sequences (longest first).
_EN_OPENERS = sorted((tuple(p.split()) for p in (
    "please", "kindly", "now", "then", "also", "next", "finally", "first", "lastly",
    "can you", "could you", "would you", "will you", "would you kindly",
    "i want you to", "i need you to", "i would like you to", "i ' d like you to",
    "help me", "help me to", "let ' s", "let us",  # the tagger splits "let's" in three
)), key=len, reverse=True)
_AUXILIARIES = {"be", "is", "are", "was", "were", "am", "do", "does", "did", "have", "has",
                "had", "can", "could", "will", "would", "shall", "should", "may", "might",
                "must", "need"}
_OPENING_PHRASE = {"IN", "VBN", "VBG", "TO", "RB"}  # "Given X, ...", "Using X, ...", "In ..."
# After a first word tagged noun or adjective, what makes it an imperative verb: "List three",
# "Sort the", "Correct these", "Name famous", "Reply "yes"", "Work out".
_VERB_FOLLOWERS = {"DT", "PDT", "PRP$", "PRP", "CD", "``", '"', "RP"}
_PARTICLES = {"out", "up", "down", "off", "over", "through", "together", "back", "away"}
_NOUN_VERB_FOLLOWERS = _VERB_FOLLOWERS | {"JJ", "JJS", "JJR", "UH"}  # "Answer yes or no"
_DETERMINERS = {"DT", "PDT", "PRP$"}  # only before the noun phrase's first noun
_NP_MODIFIERS = {"CD", "JJ", "JJR", "JJS", "VBN", "VBG", "RB", "RBS", "POS", "``", "''", '"'}
_NOUNS = {"NN", "NNS", "NNP", "NNPS"}
_WORD = re.compile(r"[^\W\d_]{2,}(?:-[^\W\d_]+)*")  # letters, maybe hyphenated; not "A"
_OBJECT_PRONOUNS = {"me", "us", "him", "her", "them"}  # "Give me five tips": skipped
# Plurals that singularize() gets wrong, or that are their own singular.
_KEEP_PLURAL = {"data", "media", "people", "news", "series", "species", "lyrics", "clothes",
                "criteria", "physics", "mathematics", "economics", "politics", "ethics"}


@cache
def _english_tagger():
    from textblob.en import parse
    from textblob.en.inflect import singularize

    def tag(text: str) -> list[Tagged]:
        tagged = parse(text, tokenize=True, tags=True, chunks=False, relations=False,
                       lemmata=False)
        return [[(word, pos) for word, pos in sentence] for sentence in tagged.split()]

    return tag, singularize


def _english(instruction: str) -> Pair:
    tag, singularize = _english_tagger()
    for sentence in tag(instruction):
        tokens = _after_opening_phrase(_skip_openers(sentence))
        if tokens and _is_imperative_verb(tokens):
            return tokens[0][0].lower(), _english_object(tokens[1:], singularize)
    return None, None


def _is_imperative_verb(tokens: Tagged) -> bool:
    word, pos = tokens[0]
    if not word.isalpha() or word.lower() in _AUXILIARIES:
        return False
    following = tokens[1][1] if len(tokens) > 1 else None
    if len(tokens) > 1 and tokens[1][0].lower() in _PARTICLES:
        following = "RP"  # the tagger's "out/IN" in "Work out the answer"
    # A plural noun is no imperative: "Returns a list" (a docstring) has no verb.
    return (pos in ("VB", "VBP") or pos in ("NN", "NNP") and following in _NOUN_VERB_FOLLOWERS
            or pos == "JJ" and following in _VERB_FOLLOWERS)


def _skip_openers(tokens: Tagged) -> Tagged:
    while True:
        words = [w.lower() for w, _ in tokens]
        for opener in _EN_OPENERS:
            if tuple(words[:len(opener)]) == opener:
                tokens = tokens[len(opener):]
                while tokens and tokens[0][1] == ",":
                    tokens = tokens[1:]
                break
        else:
            return tokens


def _after_opening_phrase(tokens: Tagged) -> Tagged | None:
    """The clause after "Given a list of numbers," and the like (the sentence itself when it
    opens otherwise); None when such a phrase has no comma to end it."""
    if not tokens or tokens[0][1] not in _OPENING_PHRASE:
        return tokens
    commas = [i for i, (w, _) in enumerate(tokens) if w == ","]
    return _skip_openers(tokens[commas[0] + 1:]) if commas else None


def _english_object(tokens: Tagged, singularize) -> str | None:
    """The head noun of the noun phrase that `tokens` (what follows the verb) opens."""
    if len(tokens) > 1 and tokens[0][1] == "CC" and tokens[1][1] in _NOUNS | {"VB"}:
        tokens = tokens[2:]  # "Find and fix the bug"
    if tokens and (tokens[0][0].lower() in _PARTICLES or tokens[0][1] == "RP"):
        # "Pull out each ingredient", "Come up with titles"
        tokens = tokens[2:] if len(tokens) > 1 and tokens[1][1] == "IN" else tokens[1:]
    if (len(tokens) > 1 and tokens[0][0].lower() in _OBJECT_PRONOUNS
            and tokens[1][1] in _DETERMINERS | _NP_MODIFIERS | _NOUNS):
        tokens = tokens[1:]  # the indirect object of "Give me five tips"
    head: tuple[str, str] | None = None
    for k, (word, pos) in enumerate(tokens):
        after = tokens[k + 1][1] if k + 1 < len(tokens) else "."
        if pos == "VBG" and head is None and after not in _NOUNS | _NP_MODIFIERS:
            pos = "NN"  # a word the lexicon lacks, guessed from its -ing: "a clear docstring"
        elif pos == "FW" and head is None:
            pos = "NN"  # a word the lexicon lacks: "a funny meme"
        elif pos == "VBZ" and k == 0 and after not in _NOUNS:
            pos = "NNS"  # a plural taken for a verb: "Remove duplicates from"
        if pos in _NOUNS and _WORD.fullmatch(word):
            head = (word, pos)  # the last noun of "a beginner bodyweight workout"
        elif not (pos in _NP_MODIFIERS or head is None and (pos in _DETERMINERS or pos == ",")):
            break
    if head is None:
        return None
    word = head[0].lower()
    if head[1] in ("NNS", "NNPS") and word not in _KEEP_PLURAL and not word.endswith(
            ("ss", "is", "us", "ics")):
        word = singularize(word)
    return word


# -- Chinese -------------------------------------------------------------------------------

_ZH_CLAUSE_END = re.compile(r"[，。？！；：?!;:\n]|[,.](?!\d)")  # not in 3.75 or 1,200
_ZH_QUOTES = re.compile(r"“[^”]*”|《[^》]*》|「[^」]*」|\"[^\"]*\"")
_ZH_POLITE = {"请", "麻烦", "帮", "帮忙", "替", "劳驾", "烦请", "请帮", "试着", "尝试"}
_ZH_PRONOUNS = {"我", "我们", "你", "您", "你们"}
_ZH_MODALS = {"能", "能否", "可", "可以", "可否", "能不能", "可不可以", "要", "需要", "需", "应该",
              "应", "得", "必须", "会"}
_ZH_ADVERBS = {"尽量", "尽可能", "简要", "简单", "分别", "逐行", "认真", "仔细"}
_ZH_COPULAS = {"是", "有", "为", "在", "就是", "即是", "像"}
# Coverbs that open a phrase before the verb, whatever jieba tags them (请用, 将 as an adverb).
_ZH_PREPOSITIONS = {"用", "以", "根据", "按", "按照", "通过", "从", "对", "向", "给", "为", "替",
                    "把", "将", "在", "由", "针对", "围绕", "基于", "关于", "面向"}
_ZH_DISPOSAL = {"把", "将"}  # 把 X 压缩: X is the object
_ZH_NOUN_TAGS = {"n", "vn", "l", "i", "nz", "nr", "ns", "nt", "ng", "nw", "nrt", "nrfg"}
_ZH_VERB_TAGS = {"v", "vd", "vg", "vi", "vq"}
# What follows a clause-initial verb that jieba tags as a noun or adverb (总结/n 这篇...,
# 比较/d 《三国演义》): a demonstrative, a number, a quoted title.
_ZH_DETERMINERS = {"这", "这个", "这些", "这段", "这篇", "这首", "这句", "这条", "这则", "这位",
                   "这款", "该", "其", "以下", "下面", "下列", "上面", "如下", "你", "您", "他",
                   "她", "它", "他们", "她们", "它们", "我", "我们"}
_ZH_SUFFIXES = ("一下", "成", "为")  # 翻译成, 解释一下: the verb is the stem
_DE = {"的", "之", "的话"}  # 的话 (用小朋友听得懂的话): a 的 before the verb's head, a noun after
Token = tuple[str, str]


def _jieba_cache_dir() -> Path:
    # jieba caches its prefix dictionary (9 MB) in the temporary folder by default, where any
    # user could replace it; keep it beside sigen's prepared models instead.
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "selfinstruct-local" / "jieba"


@cache
def _chinese_tagger():
    with warnings.catch_warnings():  # jieba 0.42.1 imports the deprecated pkg_resources
        warnings.simplefilter("ignore", DeprecationWarning)
        import jieba
        import jieba.posseg

    jieba.setLogLevel(logging.CRITICAL)  # "Building prefix dict..." on stderr, each process
    cache_dir = _jieba_cache_dir()
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        jieba.dt.tmp_dir = str(cache_dir)
    except OSError:
        pass  # jieba then tries the temporary folder, and builds the dictionary if it cannot
    tokenizer = jieba.posseg.POSTokenizer(jieba.dt)
    tags = jieba.posseg.dt.word_tag_tab
    return lambda text: [(p.word, p.flag) for p in tokenizer.cut(text)], tags


def _chinese(instruction: str) -> Pair:
    for clause in _ZH_CLAUSE_END.split(_ZH_QUOTES.sub(_quoted, instruction)):
        found = _chinese_clause(_zh_tokens(clause))
        if found is not None:
            return found
    return None, None


def _quoted(match: re.Match) -> str:
    # A quoted word or a book title is a mention, never the verb: one placeholder token.
    return "\ue000" * (len(match.group()) > 2)


def _zh_tokens(clause: str) -> list[Token]:
    cut, dictionary = _chinese_tagger()
    tokens: list[Token] = []
    for word, flag in cut(clause):
        if not word.strip():
            continue
        if word.startswith("\ue000"):
            tokens.append(("“”", "q"))
            continue
        if word.startswith("请") and len(word) > 1:  # jieba's 请写, 请用
            tokens.append(("请", "v"))
            word, flag = word[1:], dictionary.get(word[1:], flag)
        for suffix in _ZH_SUFFIXES:
            stem = word[:-len(suffix)]
            if word.endswith(suffix) and stem and dictionary.get(stem, "").startswith("v"):
                word, flag = stem, "v"  # 翻译成 -> 翻译
                break
        if word in _ZH_PREPOSITIONS and flag not in _ZH_VERB_TAGS | {"p"} or word in _ZH_DISPOSAL:
            flag = "p"
        tokens.append((word, flag))
    return tokens


def _chinese_clause(tokens: list[Token]) -> Pair | None:
    i = 0
    while i < len(tokens):
        word, flag = tokens[i]
        if word in _ZH_POLITE | _ZH_MODALS | _ZH_ADVERBS or word in _ZH_PRONOUNS and i > 0:
            i += 1  # 请, 帮我, 请你, 能否, 尽量
        elif not _zh_verb_at(tokens, i, start=True) and flag in ("d", "ad", "c"):
            i += 1
        else:
            break
    if i >= len(tokens):
        return None
    word, flag = tokens[i]
    if word == "以" and any(w == "为" for w, _ in tokens[i + 1:]):
        return None  # 以“秋夜”为题: how, not what
    if flag == "p" or word in _ZH_PREPOSITIONS:  # 根据..., 用 JavaScript 实现, 把这段话压缩
        for j in range(i + 1, len(tokens)):
            if _zh_verb_at(tokens, j, start=False):
                before = _chinese_object(tokens[i + 1:j]) if word in _ZH_DISPOSAL else None
                return tokens[j][0], before or _chinese_object(tokens[j + 1:])
        return None
    if _zh_verb_at(tokens, i, start=True):
        return word, _chinese_object(tokens[i + 1:])
    return None


def _zh_verb_at(tokens: list[Token], i: int, start: bool) -> bool:
    """Whether tokens[i] is the clause's verb: at its start (after politeness), or after a
    prepositional phrase, where a verb of a relative clause (新开的, 的叙述) is passed over."""
    word, flag = tokens[i]
    after = tokens[i + 1][0] if i + 1 < len(tokens) else ""
    if word in _ZH_COPULAS or word in _ZH_MODALS or word in _ZH_POLITE or after in _DE:
        return False
    if not start:
        return flag in _ZH_VERB_TAGS and not (i and tokens[i - 1][0] in ("的", "之")) and not (
            _in_relative_clause(tokens, i))
    if flag in _ZH_VERB_TAGS:
        return True
    # jieba tags some verbs as nouns, verbal nouns or adverbs at a clause's start (总结/n 这篇,
    # 分析/vn 她的, 比较/d 《三国演义》).
    if flag not in ("n", "vn", "d") or len(word) != 2 or i + 1 >= len(tokens):
        return False
    return after in _ZH_DETERMINERS or tokens[i + 1][1] == "m" or (flag == "d" and after == "“”")


def _in_relative_clause(tokens: list[Token], i: int) -> bool:
    """Whether the verb tokens[i] modifies a noun before the main verb (给不懂技术的人讲讲): a
    的 follows it, then another verb with something after it. A verb that ends the clause
    after a 的 is a noun (写一段商品的介绍)."""
    rest = tokens[i + 1:]
    de = next((k for k, (w, _) in enumerate(rest) if w in _DE), None)
    if de is None:
        return False
    return any(f in _ZH_VERB_TAGS and w not in _ZH_COPULAS | _ZH_MODALS and k + 1 < len(rest)
               for k, (w, f) in enumerate(rest[de + 1:], start=de + 1))


def _chinese_object(tokens: list[Token]) -> str | None:
    span: list[Token] = []
    for k, (word, flag) in enumerate(tokens):
        # A preposition ends the phrase (写一封邮件给经理), unless a 的 follows: then it is
        # inside it (一首关于春天的诗).
        if flag in ("p", "c") and word not in ("和", "与", "及") and not any(
                w in _DE for w, _ in tokens[k + 1:]):
            break
        # A verb right after 的 is a noun (的投诉, 的叙述).
        span.append((word, "vn" if span and span[-1][0] in _DE and flag in _ZH_VERB_TAGS
                     else flag))
    # The head comes after the noun phrase's last 的 ("下面的单项选择题" -> 选择题).
    nouns = [k for k, (_, f) in enumerate(span) if f in _ZH_NOUN_TAGS]
    des = [k for k, (w, _) in enumerate(span) if w in _DE and nouns and k < nouns[-1]]
    head = None
    for k in range(des[-1] + 1 if des else 0, len(span)):
        word, flag = span[k]
        if flag in _ZH_NOUN_TAGS:
            head = word
        elif head is not None and not (flag in _ZH_VERB_TAGS and k + 1 < len(span)
                                       and span[k + 1][1] in _ZH_NOUN_TAGS):
            break  # a verb between two nouns continues the run (入门健身计划)
    return head
