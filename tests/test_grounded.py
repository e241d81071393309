"""Grounded generation: prompts carry a passage and a kind of task; answers come from the passage;
near-duplicates are judged per passage. Completions below were recorded from SmolLM2-135M."""

import random
from collections import Counter

import pytest

from selfinstruct_local.corpus import Passage
from selfinstruct_local.errors import SigenError
from selfinstruct_local.methods.grounded import (
    KINDS_PER_PASSAGE,
    answer_copy_checks,
    assign_kinds,
    build_answer_request,
    build_grounded_request,
    copies_kind,
    parse_answer,
    parse_grounded_task,
)
from selfinstruct_local.pipeline.filters import filter_instances
from selfinstruct_local.prompts import load_prompts, parse_kinds
from selfinstruct_local.seeds import Instance

PASSAGE = Passage(id="hlm-0001", source="hlm.txt", chapter="第一回", chapter_index=1,
                  text="士隐乃读书之人，不惯生理稼穑等事，勉强支持了一二年，越觉穷了。")


@pytest.mark.parametrize(("lang", "prefix"), [("en", "Task:"), ("zh", "题目：")])
def test_grounded_prompt_carries_the_passage_and_the_kind(lang, prefix):
    prompts = load_prompts(lang)
    assert set(prompts.grounded_kinds) == {"plot", "character", "summary", "allusion", "modern",
                                           "continuation", "expansion", "inner_voice"}
    for kind, description in prompts.grounded_kinds.items():
        req = build_grounded_request(prompts, PASSAGE, kind, seed=1)
        assert PASSAGE.text in req.prompt and description in req.prompt
        # The passage opens the prompt: requests about one passage share a cacheable prefix.
        assert req.prompt.index(PASSAGE.text) < req.prompt.index(description)
        assert req.assistant_prefix == prefix and req.stop == ("\n",)


def test_both_languages_have_the_same_kinds_and_generic_ones_among_them():
    zh, en = load_prompts("zh"), load_prompts("en")
    assert list(zh.grounded_kinds) == list(en.grounded_kinds)
    assert zh.generic_ok == en.generic_ok and zh.generic_ok <= set(zh.grounded_kinds)


@pytest.mark.parametrize(("spec", "kinds"), [
    ("continuation,plot", ("plot", "continuation")),  # in the file's order
    ("plot", ("plot",)),
    (" inner_voice，expansion、plot ", ("plot", "expansion", "inner_voice")),
    (",".join(reversed(list(load_prompts("zh").grounded_kinds))),
     tuple(load_prompts("zh").grounded_kinds)),
])
def test_parse_kinds(spec, kinds):
    assert parse_kinds(load_prompts("zh"), spec) == kinds


@pytest.mark.parametrize(("lang", "spec", "what"), [
    ("zh", "plot,story", "unknown kind 'story'"),
    ("en", "续写,sequel", "unknown kinds '续写', 'sequel'"),
    ("en", " , ", "no kind given (leave --kinds out to ask for every kind)"),
    ("en", "", "no kind given (leave --kinds out to ask for every kind)"),
    ("en", "plot,,plot", "an empty name between commas"),
    ("en", "plot,summary,plot", "'plot' given twice"),
    ("en", "PLOT", "unknown kind 'PLOT' (did you mean 'plot'?)"),
    ("en", "inner-voice,story", "unknown kinds 'inner-voice' (did you mean 'inner_voice'?), "
     "'story'"),
])
def test_unknown_kinds_list_the_known_ones(lang, spec, what):
    known = ", ".join(load_prompts(lang).grounded_kinds)
    with pytest.raises(SigenError) as caught:
        parse_kinds(load_prompts(lang), spec)
    assert str(caught.value) == (f"--kinds {spec!r}: {what}; the kinds for --lang {lang} are "
                                 f"{known} (see prompts/{lang}/grounded_kinds.yaml)")
    assert "continuation" in known and "inner_voice" in known


def test_kinds_are_spread_evenly_and_differ_per_passage():
    kinds = list(load_prompts("zh").grounded_kinds)
    assigned = assign_kinds(kinds, 30, random.Random(3))
    assert all(len(set(ks)) == KINDS_PER_PASSAGE for ks in assigned)
    counts = Counter(k for ks in assigned for k in ks)
    assert set(counts) == set(kinds) and max(counts.values()) - min(counts.values()) <= 1


@pytest.mark.parametrize(("text", "finish", "expected"), [
    (" 士隐为什么越过越穷？", "stop", "士隐为什么越过越穷？"),
    ("题目：用现代白话改写“不惯生理稼穑等事”。", "stop", "用现代白话改写“不惯生理稼穑等事”。"),
    (" “赏他哥哥赏他哥哥的，只不说．”", "stop", "赏他哥哥赏他哥哥的，只不说．"),
    ("", "stop", None),
    (" 综向表明宝玉那里找老太太是没有什么缘故的；；；；", "length", None),
])
def test_grounded_task_parsing(text, finish, expected):
    assert parse_grounded_task(load_prompts("zh"), text, finish) == expected


@pytest.mark.parametrize(("task", "kind", "copied"), [  # recorded from SmolLM2-135M
    ("A question about a character's nature or motives", "character", True),
    ("What happens in the passage of the passage?", "plot", True),
    ("Continue the story in the passage's own style.", "continuation", False),
    ("Rewrite the passage in plain modern language.", "modern", False),
    ("Write only the task itself, in one or two sentences.", "summary", True),
    ("Why does Martha keep the oil a secret from Tobias?", "plot", False),
])
def test_english_copies_of_the_prompt(task, kind, copied):
    assert (copies_kind(load_prompts("en"), task, kind) == "copied_prompt") is copied


def test_english_task_parsing():
    en = load_prompts("en")
    assert parse_grounded_task(en, " Task: Why does Shiyin grow poorer?", "stop") == \
        "Why does Shiyin grow poorer?"


@pytest.mark.parametrize(("task", "kind", "copied"), [
    # Recorded: the description of a question kind written back is no question ...
    ("问某个人物的性格和心思", "character", True),
    # ... but a summary, rewriting or continuation request is a usable task, if generic.
    ("让读者概括这段原文的内容。", "summary", False),
    ("让读者把原文中的某一句话改写成现代白话。", "modern", False),
    ("问某个人物的性格；", "character", True),  # a fragment of it
    ("问“这段原文里发生了什么事！”", "plot", True),
    # recorded: a task followed by the prompt's own instructions
    ("请用几句话概括这段原文的内容。请用一两句话写出题目本身，不要抄写原文，也不要写出答案。",
     "summary", True),
    ("根据上面这段原文，给读者出一道题目本身，不要写出答案。", "allusion", True),
    ("请根据上面这段原文，给读者出一道题目的一个词语、俗语、诗句或典故以及具有更多的良好评维度的"
     "诗句，用一两句话写出题目本身。", "allusion", True),
    ("上面的原文里的一两句话：", "plot", True),
    ("根据上面这段原文，说说士隐为什么一年比一年穷。", "plot", False),
    ("用两三句话概括这段文字。", "summary", False),
    ("把“不惯生理稼穑等事”改写成现代白话。", "modern", False),
    ("仿照原文的笔法，续写士隐离家之后的事。", "continuation", False),
    ("士隐为什么越过越穷？", "plot", False),
])
def test_a_task_that_copies_the_prompt_is_caught(task, kind, copied):
    assert (copies_kind(load_prompts("zh"), task, kind) == "copied_prompt") is copied


def test_answer_prompt_and_parse():
    zh = load_prompts("zh")
    req = build_answer_request(zh, "士隐为什么越过越穷？", PASSAGE.text)
    assert req.prompt.startswith("原文：\n" + PASSAGE.text)
    assert "任务：士隐为什么越过越穷？" in req.prompt
    assert req.assistant_prefix == "输出：" and req.stop == ("\n原文", "\n任务")
    assert parse_answer(zh, " 因为他不会经营田产。\n任务：下一题", "stop") == "因为他不会经营田产。"
    # Cut off by the token limit: the complete sentences are kept, the torn one dropped.
    assert parse_answer(zh, " 他不会种田。又不善经营，所以", "length") == "他不会种田。"
    assert parse_answer(zh, " 因为他不会经营", "length") == ""


def test_answers_that_loop_or_copy_the_passage_are_dropped():
    passage = PASSAGE.text
    found = [
        Instance(passage, "爱爱爱爱爱爱爱爱爱爱"),  # recorded loops
        Instance(passage, "请用词：张老汉\n请用词：张老汉\n请用词：张老汉"),
        Instance(passage, "从上到下，他的生命中有多少种生命！从上到下，他的生命中有多少种生命！"
                          "从上到下，他的生命中有多少种生命！"),
        Instance(passage, "士隐乃读书之人，不惯生理稼穑等事，勉强支持了一二年。"),  # the passage
        Instance(passage, "他是读书人，不会种田，也不会做买卖，所以一年比一年穷。"),
    ]
    zh = load_prompts("zh")
    task = "士隐为什么越过越穷？"
    found += [  # recorded: the task, or the prompt's instructions, written back
        Instance(passage, "士隐为什么越过越穷？\n请以上面的原文为依据完成任务。"),
        Instance(passage, "确定对形性的看会\n请以上面的原文为依据完成任务。直接写出答案。"),
    ]
    kept, dropped = filter_instances(found, **answer_copy_checks(zh, task))
    assert [why for _, why in dropped] == (["repetitive_output"] * 3 + ["copied_input"]
                                           + ["copied_prompt"] * 2)
    assert [k.output for k in kept] == [found[4].output]
    restated = Instance(passage, "士隐为什么越过越穷？因为他是读书人，不会经营田产。")
    assert filter_instances([restated], **answer_copy_checks(zh, task))[0] == [restated]
    # Without an answer prompt (tasks whose input is not a source text), a quote is fine.
    kept, _ = filter_instances(found[3:4])
    assert kept


# -- screening, with the real methods, index and run store ------------------------------------
def screening(tmp_path, lang="zh"):
    """A screen function over a real context: (candidates, carried) -> accepted rows."""
    from selfinstruct_local.config import RunConfig
    from selfinstruct_local.dedup import NearDupIndex
    from selfinstruct_local.methods import grounded, self_instruct
    from selfinstruct_local.pipeline.screen import screen
    from selfinstruct_local.pipeline.stages import Context
    from selfinstruct_local.pipeline.state import RunState
    from selfinstruct_local.plan import CorpusPlan
    from selfinstruct_local.runstore import RunStore
    from selfinstruct_local.seeds import default_seed_path, load_seed_tasks

    seeds = tuple(load_seed_tasks(default_seed_path(lang)))
    index = NearDupIndex()
    for task in seeds:
        index.add(task.instruction)
    config = RunConfig(lang=lang, num_instructions=100)
    corpus = CorpusPlan(tmp_path / "t.txt", (PASSAGE,), tuple(load_prompts(lang).grounded_kinds),
                        max_repeats=3, passage_chars=600, record={})
    # Screening makes no engine call: the engine is not needed for this step.
    ctx = Context(config, load_prompts(lang), seeds, RunState(), RunStore(tmp_path), index,
                  corpus=corpus)
    methods = {True: grounded.method(ctx), False: self_instruct.method(ctx)}

    def accept(candidates, carried=None):
        method = methods[bool(carried)]
        rows = [screen(ctx, method, {"instruction": text, **(carried[k] if carried else {})}, 1)
                for k, text in enumerate(candidates)]
        ctx.store.append("rejected.jsonl", [r for r in rows if "reason" in r])
        return [r for r in rows if "reason" not in r]

    return ctx, accept


def grounded_payload(passage_id, kind="plot"):
    return {"input": "原文" + passage_id, "kind": kind,
            "passage": {"id": passage_id, "source": "t.txt", "chapter": "", "chapter_index": 1}}


def test_a_verbatim_repeat_about_the_same_passage_is_rejected(tmp_path):
    ctx, accept = screening(tmp_path)
    question = "士隐为什么一年比一年穷？"
    kept = accept(
        [question, question, question, "问这段原文里发生了什么事。"],
        [grounded_payload("p1"), grounded_payload("p1"), grounded_payload("p2"),
         grounded_payload("p2", "plot")])
    assert [(r["instruction"], r["passage"]["id"]) for r in kept] == [
        (question, "p1"), (question, "p2")]
    assert all(r["kind"] == "plot" for r in kept)
    rejected = ctx.store.read("rejected.jsonl")
    assert [r["reason"] for r in rejected] == ["near_duplicate", "copied_prompt"]
    assert rejected[0]["most_similar"][0] == {"instruction": question, "score": 1.0}
    assert ctx.state.reject_reasons == Counter(near_duplicate=1, copied_prompt=1)


def test_same_question_about_different_passages_is_kept(tmp_path):
    ctx, accept = screening(tmp_path)
    question = "这段文字里谁最着急？为什么？"
    kept = accept([question, question, question, "概括这段文字的主要内容。"],
                  [grounded_payload("p1"), grounded_payload("p2"), grounded_payload("p1"),
                   grounded_payload("p1", "summary")])
    # Another passage: kept; the same passage again: a near-duplicate.
    assert [(r["instruction"], r["passage"]["id"]) for r in kept] == [
        (question, "p1"), (question, "p2"), ("概括这段文字的主要内容。", "p1")]
    assert [r["reason"] for r in ctx.store.read("rejected.jsonl")] == ["near_duplicate"]


def test_chinese_near_duplicates_of_the_pool_are_rejected(tmp_path):
    ctx, accept = screening(tmp_path)
    seed = ctx.seed_tasks[0].instruction
    fresh = "为《红楼梦》第三回写一段两百字以内的内容提要。"
    kept = accept([seed, fresh, fresh + "", fresh[:-1] + "！"])
    assert [r["instruction"] for r in kept] == [fresh]
    assert [r["reason"] for r in ctx.store.read("rejected.jsonl")] == ["near_duplicate"] * 3


def test_a_task_that_copies_a_sentence_of_its_passage_is_rejected_and_counted(tmp_path):
    """The candidate carries its passage as its input; a task that copies a sentence of it is
    `copied_passage`, one that quotes a phrase of it is kept."""
    ctx, accept = screening(tmp_path)
    about_it = {**grounded_payload(PASSAGE.id), "input": PASSAGE.text}
    copied = "士隐乃读书之人，不惯生理稼穑等事，他后来怎样了？"  # 15 characters of the passage
    quoting = "“不惯生理稼穑等事”说的是士隐什么样的处境？"
    kept = accept([copied, quoting], [about_it, about_it])
    assert [r["instruction"] for r in kept] == [quoting]
    assert [(r["instruction"], r["reason"]) for r in ctx.store.read("rejected.jsonl")] == [
        (copied, "copied_passage")]
    assert ctx.state.reject_reasons == Counter(copied_passage=1)
