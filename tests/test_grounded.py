"""Grounded generation: prompts carry a passage; answers come from it; keys include it."""

import pytest

from selfinstruct_local.corpus import Passage
from selfinstruct_local.pipeline.bootstrap import parse_instructions
from selfinstruct_local.pipeline.grounded import (
    PassageIndexes,
    build_answer_request,
    build_grounded_request,
    parse_answer,
)
from selfinstruct_local.prompts import load_prompts

PASSAGE = Passage(id="hlm-0001", source="hlm.txt", chapter="第一回", chapter_index=1,
                  text="士隐乃读书之人，不惯生理稼穑等事，勉强支持了一二年，越觉穷了。")


@pytest.mark.parametrize(("lang", "prefix", "stop"), [("en", "Task 1:", "Task 9"),
                                                      ("zh", "任务 1：", "任务 9")])
def test_grounded_prompt_carries_the_passage(lang, prefix, stop):
    req = build_grounded_request(load_prompts(lang), PASSAGE, seed=1)
    assert PASSAGE.text in req.prompt
    assert req.assistant_prefix == prefix and req.stop == (stop,)


def test_grounded_tasks_parse_with_chinese_numbering():
    zh = load_prompts("zh")
    text = ("士隐为什么越过越穷？\n任务 2：概括这段文字的主要内容。\n"
            "3、用白话文改写“不惯生理稼穑等事”。")
    assert parse_instructions(zh, text, "stop") == [
        "士隐为什么越过越穷？", "概括这段文字的主要内容。", "用白话文改写“不惯生理稼穑等事”。"]


def test_answer_prompt_and_parse():
    zh = load_prompts("zh")
    req = build_answer_request(zh, "士隐为什么越过越穷？", PASSAGE.text)
    assert req.prompt.rstrip().endswith("任务：士隐为什么越过越穷？")
    assert req.assistant_prefix == "输出："
    assert parse_answer(zh, " 因为他不会经营田产。\n任务：下一题", "stop") == "因为他不会经营田产。"
    assert parse_answer(zh, " 因为他不会经营", "length") == ""


def test_same_question_about_different_passages_is_kept():
    indexes = PassageIndexes()
    question = "这段文字里谁最着急？为什么？"
    assert indexes["p1"].check_and_add(question).kept
    assert indexes["p2"].check_and_add(question).kept  # another passage: kept
    assert not indexes["p1"].check_and_add(question).kept  # same passage: a duplicate
    assert indexes["p1"].check_and_add("概括这段文字的主要内容。").kept
    assert len(indexes["p1"]) == 2 and len(indexes) == 2
