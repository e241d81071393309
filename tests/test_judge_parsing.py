"""The judge's prompt and parser: replies recorded from the packaged model (transformers,
greedy, through `build_judge_request`), and written ones in the forms larger models use."""

from __future__ import annotations

import pytest

from selfinstruct_local.prompts import load_prompts
from selfinstruct_local.quality.judge import (
    MAX_TOKENS,
    TRUNCATED,
    build_judge_request,
    estimate_tokens,
    fit_fields,
    parse_judgement,
)

EN, ZH = load_prompts("en"), load_prompts("zh")

# Recorded from SmolLM2-135M-Instruct (the prefix "Score:" / "评分：" is part of the reply).
RECORDED_EN = [
    ("Score: 5\n\nThe task is to identify the people and the organizations named in the news "
     "snippet. The input is a text-only assistant that can carry out the task. The output is "
     "correct, complete, and helpful.",
     5, "The task is to identify the people and the organizations named in the news snippet."),
    ("Score: 5\nReason: The output is correct, complete and helpful.\nReason: The output is "
     "correct, complete and helpful.\n\nThe task is to convert the contact details",
     5, "The output is correct, complete and helpful."),
    ("Score: 5\nReason: \nThe instruction is clear and does not require a text-only assistant. "
     "The output is correct, complete, and helpful.",
     5, "The instruction is clear and does not require a text-only assistant."),
    ('Score: 4.5\nReason: "The cat is a cat."\n\nThe instruction is clear', None, ""),
    ("Score: 5\nReason: 2 + 2 = 4\n\nThe task is clear and does not require a text-only "
     "assistant.", 5, "2 + 2 = 4"),
]
RECORDED_ZH = [
    ("评分：谦虚！谦虚！谦虚！谦虚！谦虚！谦虚！谦虚！", None, ""),
    ("评分：\n- 若是甲打碎的：甲说假话，乙、丙都说真话，有两人说真话，不符合。", None, ""),
    # The question written back: "2" of 2加2 is no score.
    ("评分：2加2等于几？\n\n请回答两行：\n\n评分：2加2等于几？\n", None, ""),
    # The rubric written back: its "5 分" is no score either.
    ("评分：A. 黄河  B. 长江  C. 珠江  D. 黑龙江\n\n请给这条数据打 1 到 5 分：\n5 分：指令清楚",
     None, ""),
    ("评分：\n\n第一行：\n\n看不到图片，听不到声音，不能运行程序。", None, ""),
]
WRITTEN = [
    (EN, "Score: **4**\n**Reason:** Clear task. The answer misses one case.", 4, "Clear task."),
    (EN, "Score: 4/5 - the output is right but terse.", 4, "the output is right but terse."),
    (EN, "Score: 3 out of 5\nReason: The output only lists two of the three steps.", 3,
     "The output only lists two of the three steps."),
    (EN, "Score: I would rate this 2/5 because the answer is off topic.", 2,
     "because the answer is off topic."),
    (EN, "Score: 10\nReason: Perfect.", None, ""),
    (EN, "Score: 0", None, ""),
    (EN, "Score: excellent", None, ""),
    (EN, "", None, ""),
    (EN, "Score:１\nReason: The output is empty.", 1, "The output is empty."),  # full-width
    (ZH, "评分：4\n理由：指令清楚，答案基本正确，但漏了一个例子。还可以更好。", 4,
     "指令清楚，答案基本正确，但漏了一个例子。"),
    (ZH, "评分：５分\n理由：回答完整准确。", 5, "回答完整准确。"),
    (ZH, "评分：三\n理由：输出有一半是错的", 3, "输出有一半是错的"),
    (ZH, "评分为五分之四。理由：整体正确。", 4, "整体正确。"),
    (ZH, "评分： 2 分，因为输出答非所问。", 2, "因为输出答非所问。"),
    (ZH, "评分：Score: 5\nReason: The answer is right.", 5, "The answer is right."),
    (ZH, "评分：七", None, ""),
]


@pytest.mark.parametrize(("reply", "score", "reason"), RECORDED_EN)
def test_recorded_english_replies(reply, score, reason):
    judgement = parse_judgement(EN, reply)
    assert (judgement.score, judgement.reason) == (score, reason)


@pytest.mark.parametrize(("reply", "score", "reason"), RECORDED_ZH)
def test_recorded_chinese_replies(reply, score, reason):
    judgement = parse_judgement(ZH, reply)
    assert (judgement.score, judgement.reason) == (score, reason)


@pytest.mark.parametrize(("prompts", "reply", "score", "reason"), WRITTEN)
def test_written_replies(prompts, reply, score, reason):
    judgement = parse_judgement(prompts, reply)
    assert (judgement.score, judgement.reason) == (score, reason)


def test_request_shows_the_task_and_starts_the_reply():
    request = build_judge_request(EN, "Name a prime number.", "", "7", seed=5)
    assert request.prompt.endswith("Instruction: Name a prime number.\nInput: <none>\n"
                                   "Output: 7")
    assert "1 to 5" in request.prompt and "text only" in request.prompt
    assert (request.assistant_prefix, request.temperature, request.seed) == ("Score:", 0.0, 5)
    assert request.max_tokens == MAX_TOKENS
    zh = build_judge_request(ZH, "写一首诗。", "春天", "春风吹。")
    assert zh.prompt.endswith("指令：写一首诗。\n输入：春天\n输出：春风吹。")
    assert zh.assistant_prefix == "评分："


def test_the_templates_have_the_same_slots_and_end_with_the_output():
    for prompts in (EN, ZH):
        text = prompts.templates["judge"]
        assert [s for s in ("{{instruction}}", "{{input}}", "{{output}}") if s in text] == [
            "{{instruction}}", "{{input}}", "{{output}}"]
        assert text.endswith("{{output}}")


def test_long_fields_are_cut_to_fit_the_context():
    passage = "床前明月光，疑是地上霜。" * 200  # ~4,400 estimated tokens
    request = build_judge_request(ZH, "概括这段原文。", passage, "一首思乡的诗。" * 150,
                                  max_model_len=2048)
    assert estimate_tokens(request.prompt) + MAX_TOKENS <= 2048
    assert request.prompt.count(TRUNCATED) == 2
    assert "指令：概括这段原文。\n" in request.prompt  # the short field is whole
    short = build_judge_request(EN, "Say hi.", "", "Hi!", max_model_len=2048)
    assert TRUNCATED not in short.prompt


def test_fit_fields_gives_short_fields_what_they_need():
    fields = ["a" * 10, "b" * 1000, "c" * 3000]  # 4, 400, 1200 estimated tokens
    fitted = fit_fields(fields, 500)
    assert fitted[0] == fields[0]
    assert [estimate_tokens(f) <= 250 for f in fitted[1:]] == [True, True]
    assert all(f.endswith(TRUNCATED) for f in fitted[1:])
    assert fit_fields(fields, 2000) == fields
