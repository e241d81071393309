"""RepeatCap: one instruction text kept at most max_repeats times, checked against a plain
reference that compares every pair of folded texts."""

import random
import unicodedata

import pytest

from selfinstruct_local.errors import SigenError
from selfinstruct_local.pipeline.repeats import (
    DEFAULT_MAX_REPEATS,
    RepeatCap,
    repeat_key,
)

SUMMARY = "用几句话概括这段原文的内容。"


@pytest.mark.parametrize("variant", [
    "用几句话概括这段原文的内容",
    " 用几句话概括这段原文的内容！",
    "用几句话，概括这段原文的内容。",
    "用几句话概括 这段原文 的内容\n",
    "“用几句话概括这段原文的内容。”",
    "用几句话概括这段原文的内容\u200b。",  # a zero-width space
])
def test_spacing_and_punctuation_do_not_make_a_new_text(variant):
    assert repeat_key(variant) == repeat_key(SUMMARY)


def test_case_and_full_width_forms_fold():
    assert repeat_key("Summarize the passage.") == repeat_key("ＳＵＭＭＡＲＩＺＥ  the passage")
    assert repeat_key("第１回") == repeat_key("第1回")


@pytest.mark.parametrize("other", [
    "用三句话概括这段原文的内容。",
    "请用几句话概括这段原文的内容。",
    "用几句话概括这段原文的情节。",
])
def test_different_words_are_different_texts(other):
    assert repeat_key(other) != repeat_key(SUMMARY)


def test_symbols_stay():
    assert repeat_key("计算 1+2") != repeat_key("计算 12")


def test_the_cap_keeps_max_repeats_then_rejects():
    cap = RepeatCap(3)
    decisions = []
    for text in [SUMMARY, "用几句话概括这段原文的内容", SUMMARY, "宝玉为什么摔玉？", SUMMARY + " ",
                 "宝玉为什么摔玉?"]:
        reason = cap.check(text)
        decisions.append(reason)
        if reason is None:
            cap.record(text)
    assert decisions == [None, None, None, None, "repeated_generic", None]
    assert DEFAULT_MAX_REPEATS == 3 and RepeatCap().max_repeats == 3
    once = RepeatCap(1)
    once.record("续写下文。")
    assert once.check("续写下文") == "repeated_generic" and once.check("扩写下文") is None


def test_max_repeats_must_be_positive():
    with pytest.raises(SigenError, match="--max-repeats must be at least 1, not 0"):
        RepeatCap(0)


def reference_decisions(texts, max_repeats):
    """Keep a text when fewer than max_repeats kept texts equal it once spaces, punctuation,
    invisible marks, case and full-width forms are dropped (compared pair by pair)."""
    def fold(text):
        text = unicodedata.normalize("NFKC", text).lower()
        return [ch for ch in text if not (ch.isspace() or unicodedata.category(ch)[0] in "PC")]
    kept, decisions = [], []
    for text in texts:
        same = sum(1 for k in kept if fold(k) == fold(text))
        decisions.append(same < max_repeats)
        if same < max_repeats:
            kept.append(text)
    return decisions


@pytest.mark.parametrize("seed", range(5))
def test_matches_the_reference_and_resumes(seed):
    rng = random.Random(seed)
    bases = ["用几句话概括这段原文的内容", "仿照原文的笔法续写接下来的情节",
             "Summarize the passage", "把这句话改写成现代白话", "宝玉为什么生气"]
    marks = ["", "。", "！", " ", "，", "“", "”", "?", "\u3000"]
    texts = []
    for _ in range(200):
        base = rng.choice(bases)
        cut = rng.randrange(len(base) + 1)
        text = base[:cut] + rng.choice(marks) + base[cut:] + rng.choice(marks)
        texts.append(text.upper() if rng.random() < 0.2 else text)
    max_repeats = rng.choice([1, 2, 3, 5])
    expected = reference_decisions(texts, max_repeats)

    def run(cap, batch):
        out = []
        for text in batch:
            keep = cap.check(text) is None
            if keep:
                cap.record(text)
            out.append(keep)
        return out

    assert run(RepeatCap(max_repeats), texts) == expected
    # A resume rebuilds the cap from the instructions kept so far and decides the same.
    stop = rng.randrange(1, len(texts))
    first = run(RepeatCap(max_repeats), texts[:stop])
    kept = [t for t, keep in zip(texts[:stop], first, strict=True) if keep]
    assert first + run(RepeatCap.rebuild(kept, max_repeats), texts[stop:]) == expected
    assert sum(expected) < len(texts)  # the cap did reject some


def test_a_resumed_run_counts_the_instructions_it_kept_before(tmp_path):
    """On resume every pending row is admitted again (screen.admit): the cap counts the
    grounded instructions the run kept before, the same text about several passages included."""
    from selfinstruct_local.config import RunConfig
    from selfinstruct_local.corpus import Passage
    from selfinstruct_local.dedup import NearDupIndex
    from selfinstruct_local.methods import grounded
    from selfinstruct_local.pipeline.screen import admit
    from selfinstruct_local.pipeline.stages import Context
    from selfinstruct_local.pipeline.state import RunState
    from selfinstruct_local.plan import CorpusPlan
    from selfinstruct_local.prompts import load_prompts
    from selfinstruct_local.runstore import RunStore

    passage = Passage(id="p1", source="a.txt", chapter="", chapter_index=0, text="…")
    corpus = CorpusPlan(tmp_path / "a.txt", (passage,), ("summary",), max_repeats=3,
                        passage_chars=600, record={})
    ctx = Context(RunConfig(lang="zh"), load_prompts("zh"), (), RunState(), RunStore(tmp_path),
                  NearDupIndex(), corpus=corpus)
    method = grounded.method(ctx)
    texts = [SUMMARY, "这段文字里谁最先说话？", SUMMARY, "“用几句话概括这段原文的内容。”"]
    for k, text in enumerate(texts, 1):
        admit(ctx, method, {"id": f"mi-{k:06d}", "round": 1, "instruction": text, "kind": "plot",
                            "passage": {"id": f"p{k}", "source": "a.txt", "chapter": "",
                                        "chapter_index": 0}})
    candidate = {"instruction": SUMMARY, "kind": "summary", "input": "…",
                 "passage": {"id": "p9"}}
    assert method.check(ctx, candidate) == "repeated_generic"  # three kept, in three forms
    assert method.check(ctx, {**candidate, "instruction": "这段文字里谁最先说话？"}) is None
