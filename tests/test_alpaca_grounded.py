"""The Alpaca method on a corpus: the request (passage first, kinds, task count), parsing a
list of tasks whose input is the passage, and the copy checks. The parser cases are written
out by hand in the shapes models produce; recorded completions of SmolLM2-135M are at the end."""

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from selfinstruct_local.corpus import Passage
from selfinstruct_local.engines import Completion, Request
from selfinstruct_local.errors import SigenError
from selfinstruct_local.methods.alpaca import parse_alpaca_tasks
from selfinstruct_local.methods.alpaca_grounded import (
    CHAT_MARKUP_TOKENS,
    TASK_TOKENS,
    build_alpaca_grounded_request,
    cautious_tokens,
    copies_request,
    lead_instruction,
    output_copy_checks,
    parse_alpaca_grounded_tasks,
    prompt_wording,
    tasks_per_request,
)
from selfinstruct_local.pipeline.filters import filter_instances
from selfinstruct_local.prompts import load_prompts
from selfinstruct_local.seeds import Instance

ZH, EN = load_prompts("zh"), load_prompts("en")
ZH_KINDS, EN_KINDS = list(ZH.grounded_kinds), list(EN.grounded_kinds)
RECORDED = Path(__file__).parent / "fixtures" / "completions"
PASSAGE = Passage(
    id="hlm-0001", source="hlm.txt", chapter="第一回", chapter_index=1,
    text="士隐乃读书之人，不惯生理稼穑等事，勉强支持了一二年，越觉穷了。封肃每见面时，便说些现成话，"
         "且人前人后又怨他们不善过活，只一味好吃懒做等语。士隐知投人不着，心中未免悔恨。")
EN_PASSAGE = Passage(
    id="lighthouse-0001", source="lighthouse.txt", chapter="Chapter 1", chapter_index=1,
    text="Martha Quill had kept the light on Gull Rock for eleven years when the supply boat "
         "failed to come. She did not tell her son Tobias how little oil there was.")


# -- the request -----------------------------------------------------------------------------
@pytest.mark.parametrize(("prompts", "passage", "opening", "stops"), [
    (ZH, PASSAGE, "原文：\n", ("任务 6", "\n原文：")),
    (EN, EN_PASSAGE, "Passage:\n", ("Task 6", "\nPassage:")),
])
def test_the_request_opens_with_the_passage_and_lists_the_kinds(prompts, passage, opening,
                                                                 stops):
    kinds = ["continuation", "plot", "inner_voice"]
    req = build_alpaca_grounded_request(prompts, passage, kinds, 5, seed=3)
    # The passage comes first, so the requests about one passage share a cacheable prefix.
    assert req.prompt.startswith(opening + passage.text + "\n\n")
    lines = [f"- {prompts.grounded_kinds[k]}" for k in kinds]
    assert "\n".join(lines) in req.prompt  # in the order given
    assert not any(prompts.grounded_kinds[k] in req.prompt for k in ("summary", "allusion"))
    assert " 5 " in req.prompt or "5个" in req.prompt
    assert req.stop == stops
    assert req.max_tokens == 5 * TASK_TOKENS and req.seed == 3 and req.temperature == 0.7
    other = build_alpaca_grounded_request(prompts, passage, kinds, 5, seed=4, max_tokens=99)
    assert other.prompt == req.prompt and other.max_tokens == 99


@pytest.mark.parametrize(("prompts", "lead_prefix", "plain_prefix"), [
    (ZH, "任务 1\n指令：{}\n输出：", "任务 1\n指令："),
    (EN, "Task 1\nInstruction: {}\nOutput:", "Task 1\nInstruction:"),
])
def test_the_reply_opens_with_a_lead_task_of_a_usable_kind(prompts, lead_prefix, plain_prefix):
    kinds = list(prompts.grounded_kinds)
    leads = {}
    for seed in range(40):
        req = build_alpaca_grounded_request(prompts, PASSAGE, kinds, 4, seed=seed)
        lead = lead_instruction(prompts, kinds, f"{PASSAGE.id}:{seed}")
        assert req.assistant_prefix == lead_prefix.format(lead)
        kind = next(k for k in kinds if prompts.grounded_kinds[k].lower() in lead.lower())
        leads[kind] = lead
    # Every usable-as-written kind leads some requests; a question kind never does.
    assert set(leads) == prompts.generic_ok
    assert leads["summary"] in ("用几句话概括这段原文的内容。",
                                "Summarize the passage in a few sentences.")
    # No usable kind chosen, or one task only: the model writes the first instruction itself.
    assert build_alpaca_grounded_request(prompts, PASSAGE, ["plot", "character"], 4,
                                         seed=1).assistant_prefix == plain_prefix
    assert build_alpaca_grounded_request(prompts, PASSAGE, kinds, 1,
                                         seed=1).assistant_prefix == plain_prefix


def test_tasks_per_request_follows_the_arithmetic():
    prompt = ZH.fill("alpaca_grounded", passage="", count=20,
                     kinds="\n".join(f"- {d}" for d in ZH.grounded_kinds.values()))
    overhead = cautious_tokens(prompt) + CHAT_MARKUP_TOKENS
    for passage_tokens, context in [(341, 2048), (512, 2048), (682, 4096), (1365, 8192)]:
        room = context - passage_tokens - overhead
        assert tasks_per_request(ZH, ZH_KINDS, passage_tokens, context) == \
            min(20, room // TASK_TOKENS)
    assert tasks_per_request(ZH, ZH_KINDS, 341, 2048) == 4  # the packaged model, zh
    assert tasks_per_request(ZH, ZH_KINDS, 1000, 32768) == 20  # Alpaca's 20 where they fit
    # Fewer kinds make a shorter prompt: room for as many tasks or more, never fewer.
    assert tasks_per_request(ZH, ["plot"], 341, 2048) >= 4
    # Just room for one task: one. No room: an error naming the fix.
    tight = overhead + TASK_TOKENS + 500
    assert tasks_per_request(ZH, ZH_KINDS, 500, tight) == 1
    with pytest.raises(SigenError, match="--passage-chars"):
        tasks_per_request(ZH, ZH_KINDS, 501, tight)


def test_cautious_tokens():
    assert cautious_tokens("") == 0
    assert cautious_tokens("红楼梦") == 6
    assert cautious_tokens("abcdefg") == 3  # 7 characters, rounded up
    assert cautious_tokens("读 the 书") == 4 + 2  # " the " is 5 characters


def test_the_prompt_estimate_is_above_the_packaged_models_count(smollm2):
    """The estimate must not be below what the real tokenizer counts, chat markup included:
    otherwise n_tasks * TASK_TOKENS could overflow the context."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(smollm2.path))
    for prompts, kinds in [(ZH, ZH_KINDS), (EN, EN_KINDS)]:
        body = prompts.fill("alpaca_grounded", passage="", count=20,
                            kinds="\n".join(f"- {prompts.grounded_kinds[k]}" for k in kinds))
        req = build_alpaca_grounded_request(prompts, PASSAGE, kinds, 20)
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": body}], tokenize=False, add_generation_prompt=True)
        real = len(tokenizer(rendered + req.assistant_prefix, add_special_tokens=False)
                   ["input_ids"])
        assert real <= cautious_tokens(body) + CHAT_MARKUP_TOKENS


# -- parsing ---------------------------------------------------------------------------------
def parse(prompts, text, finish, passage=PASSAGE, prefix=None):
    """Parse `text` as the completion of a request whose reply starts with `prefix` (default:
    the plain "Task 1 / Instruction:")."""
    L = prompts.labels
    prefix = prefix if prefix is not None else f"{L.task} 1\n{L.instruction}{L.colon.rstrip()}"
    request = Request(prompt="", assistant_prefix=prefix)
    return parse_alpaca_grounded_tasks(prompts, request, Completion(text, finish, 0, 0), passage)


ZH_COMPLETION = (
    "根据原文，士隐为什么越过越穷？\n"
    "输出：士隐是读书人，不会种地和做生意，勉强撑了一两年，家道便越来越穷。\n\n"
    "任务 ２\n"  # a full-width number
    "**指令**：仿照原文的笔法，续写士隐听了封肃的话以后的情形。\n"
    "**输出**：士隐听了这些话，心中愈发烦闷，夜里独坐灯下，想起当年的光景，不觉长叹。\n"
    "次日天明，他收拾了几件旧衣，托人变卖，换些柴米度日。\n\n"  # a second paragraph
    "（3）指令：以士隐的口吻，写出他此刻的内心独白。\n"  # no header line, bracketed number
    "输入：原文\n"  # an input the model writes anyway: ignored
    "输出：我本读书之人，如今寄人篱下，岳丈冷言冷语，我又能说什么呢？\n"
    "４．指令：“好吃懒做”在这里是谁对谁的评价？\n"  # full-width number and stop
    "输出：是封肃在人前人后抱怨士隐夫妇的话。\n"
    "任务 5：\n"
    "指令：用现代白话改写“士隐知投人不着，心中未免悔恨”。\n"
    "输出：士隐知道投靠岳父是靠不住的，心里难免后悔"
)


def test_parse_zh_with_full_width_and_missing_headers():
    tasks = parse(ZH, ZH_COMPLETION, "stop")
    assert [t for t, _ in tasks] == [
        "根据原文，士隐为什么越过越穷？",
        "仿照原文的笔法，续写士隐听了封肃的话以后的情形。",
        "以士隐的口吻，写出他此刻的内心独白。",
        "“好吃懒做”在这里是谁对谁的评价？",
        "用现代白话改写“士隐知投人不着，心中未免悔恨”。",
    ]
    assert all(inst.input == PASSAGE.text for _, inst in tasks)  # the input is the passage
    assert tasks[1][1].output == ("士隐听了这些话，心中愈发烦闷，夜里独坐灯下，想起当年的光景，"
                                  "不觉长叹。\n次日天明，他收拾了几件旧衣，托人变卖，换些柴米度日。")
    assert tasks[2][1].output == "我本读书之人，如今寄人篱下，岳丈冷言冷语，我又能说什么呢？"
    assert tasks[3][1].output == "是封肃在人前人后抱怨士隐夫妇的话。"


def test_a_cut_off_list_keeps_its_complete_tasks():
    cut = parse(ZH, ZH_COMPLETION, "length")
    whole = parse(ZH, ZH_COMPLETION, "stop")
    assert cut == whole[:-1]  # task 5 was cut mid-sentence
    # Cut off right after the header of the next task: the task before it was finished.
    head = ZH_COMPLETION.split("用现代白话")[0].rsplit("指令：", 1)[0]
    assert head.endswith("任务 5：\n")
    assert parse(ZH, head, "length") == whole[:-1]
    # Cut off inside the first task: nothing.
    assert parse(ZH, "根据原文，士隐为什么", "length") == []


def test_tasks_without_an_instruction_or_an_output_are_skipped():
    text = ("\n输出：没有指令的输出。\n任务 2\n指令：只有指令，没有输出。\n任务 3\n"
            "指令：士隐靠什么度日？\n输出：靠变卖田产度日。")
    tasks = parse(ZH, text, "stop")
    assert tasks == [("士隐靠什么度日？", Instance(PASSAGE.text, "靠变卖田产度日。"))]


def test_parse_en():
    text = (" Why does Martha keep the oil level a secret from Tobias?\n"
            "Output: She does not want to frighten him; he already watches her face for "
            "signs of trouble.\n\n"
            "**Task 2:**\nInstructions: Continue the story in the passage's own style.\n"
            "Output: On the third morning Martha climbed the tower again.\n\n"
            "3) Instruction: Tell, in Martha's voice, what she thinks as she counts the stores.\n"
            "Output: Nine nights of oil, if I am careful.\n\n"
            "Task 4\nInstruction: Rewrite the first sentence in plain")
    tasks = parse(EN, text, "length", EN_PASSAGE)
    assert [t for t, _ in tasks] == [
        "Why does Martha keep the oil level a secret from Tobias?",
        "Continue the story in the passage's own style.",
        "Tell, in Martha's voice, what she thinks as she counts the stores.",
    ]
    assert tasks[2][1] == Instance(EN_PASSAGE.text, "Nine nights of oil, if I am careful.")


def test_the_lead_task_is_parsed_with_the_output_the_model_wrote():
    prefix = "任务 1\n指令：用几句话概括这段原文的内容。\n输出："
    text = ("士隐不善营生，日渐穷困，又受岳丈封肃埋怨，心中悔恨。\n\n任务 2\n"
            "指令：封肃在人前人后怎样说士隐？\n输出：说他们不善过活，好吃懒做。\n\n任务 3\n指令：")
    tasks = parse(ZH, text, "length", prefix=prefix)
    assert tasks == [
        ("用几句话概括这段原文的内容。",
         Instance(PASSAGE.text, "士隐不善营生，日渐穷困，又受岳丈封肃埋怨，心中悔恨。")),
        ("封肃在人前人后怎样说士隐？", Instance(PASSAGE.text, "说他们不善过活，好吃懒做。")),
    ]
    # Cut off inside the lead task's output: nothing is complete.
    assert parse(ZH, "士隐不善营生，日渐", "length", prefix=prefix) == []


def test_a_label_written_twice_is_not_part_of_the_instruction():
    text = (" Task: Why is the boat late?\nOutput: The passage does not say.\n\nTask 2\n"
            "Instruction: Instruction: Who is Tobias?\nOutput: Martha's son.\n")
    assert [t for t, _ in parse(EN, text, "stop", EN_PASSAGE)] == \
        ["Why is the boat late?", "Who is Tobias?"]


def test_the_plain_alpaca_parser_splits_tasks_without_headers_too():
    text = (" Name the capital of Peru.\nInput: <none>\nOutput: Lima.\n"
            "5. Instruction: Add the numbers.\nInput: 2, 3\nOutput: 5\n"
            "Task 6\n")
    assert parse_alpaca_tasks(EN, text, "length") == [
        ("Name the capital of Peru.", Instance("", "Lima.")),
        ("Add the numbers.", Instance("2, 3", "5")),  # finished: a header followed it
    ]


# -- copy checks -----------------------------------------------------------------------------
@pytest.mark.parametrize(("instruction", "copied"), [
    ("问这段原文里发生了什么事，或者某件事为什么会发生", True),  # a kind's description: a request
    ("指令要具体，点出原文里的人物、事件或词句", True),  # a rule written back
    ("不要大段抄写原文，输出里也不要重复指令。", True),
    ("用几句话概括这段原文的内容", False),  # generic_ok: a usable task as written
    ("仿照原文的笔法，续写接下来的情节", False),
    ("以原文中某个人物的口吻，写出他或她此刻的内心独白", False),
    ("士隐为什么越过越穷？", False),
    ("根据原文，说说封肃为什么抱怨士隐。", False),
])
def test_instructions_that_copy_the_request(instruction, copied):
    assert (copies_request(ZH, instruction, ZH_KINDS) == "copied_prompt") is copied


def test_english_instructions_that_copy_the_request():
    assert copies_request(EN, "a question about what happens in the passage, or why it "
                          "happens", EN_KINDS) == "copied_prompt"
    assert copies_request(EN, "Continue the story in the passage's own style.",
                          EN_KINDS) is None
    assert copies_request(EN, "Why does Martha hide the oil from Tobias?", EN_KINDS) is None


def test_outputs_that_copy_the_passage_or_the_rules_are_dropped():
    instruction = "仿照原文的笔法，续写士隐听了封肃的话以后的情形。"
    checks = output_copy_checks(ZH, ZH_KINDS, instruction)
    assert checks["answer_rules"] == prompt_wording(ZH, ZH_KINDS)
    good = "士隐听了这些话，心中愈发烦闷，夜里独坐灯下，想起当年的光景，不觉长叹。"
    found = [Instance(PASSAGE.text, PASSAGE.text[:60]),
             Instance(PASSAGE.text, "输出是对指令的完整回答，以原文为依据。"),
             Instance(PASSAGE.text, good)]
    kept, dropped = filter_instances(found, **checks)
    assert kept == [Instance(PASSAGE.text, good)]
    assert [why for _, why in dropped] == ["copied_input", "copied_prompt"]


def test_instructions_that_copy_a_sentence_of_the_passage_are_rejected_and_counted(tmp_path):
    """Screened with the method's own check over a real context: the task's input is the
    passage, and an instruction that copies a sentence of it is `copied_passage`."""
    from collections import Counter

    from selfinstruct_local.config import RunConfig
    from selfinstruct_local.dedup import NearDupIndex
    from selfinstruct_local.methods import alpaca_grounded
    from selfinstruct_local.methods.grounded import passage_record
    from selfinstruct_local.pipeline.screen import screen
    from selfinstruct_local.pipeline.stages import Context
    from selfinstruct_local.pipeline.state import RunState
    from selfinstruct_local.plan import CorpusPlan
    from selfinstruct_local.runstore import RunStore

    corpus = CorpusPlan(tmp_path / "hlm.txt", (EN_PASSAGE,), tuple(EN_KINDS), max_repeats=3,
                        passage_chars=600, record={})
    ctx = Context(RunConfig(lang="en", num_instructions=10), EN, (), RunState(),
                  RunStore(tmp_path), NearDupIndex(), corpus=corpus)
    method = alpaca_grounded.method(ctx)
    copied = "She did not tell her son Tobias how little oil there was. Why not?"
    asked = "Why does Martha not tell Tobias how little oil there was?"
    rows = [screen(ctx, method, {"instruction": text, "input": EN_PASSAGE.text,
                                 "output": "Because she did not want to frighten him.",
                                 "passage": passage_record(EN_PASSAGE)}, 1)
            for text in (copied, asked)]
    assert [row.get("reason") for row in rows] == ["copied_passage", None]
    assert ctx.state.reject_reasons == Counter(copied_passage=1)


# -- recorded from the packaged model ----------------------------------------------------------
@pytest.mark.parametrize(("lang", "prompts"), [("zh", ZH), ("en", EN)])
def test_recorded_completions_of_the_packaged_model(lang, prompts):
    """What SmolLM2-135M wrote (scripts/record_alpaca_grounded.py). A task is parsed from a
    block with an instruction and an output line and from nothing else; every one has the
    passage as its input; a list cut off by the token limit loses at most its last block."""
    L = prompts.labels
    rows = json.loads((RECORDED / f"alpaca_grounded_{lang}.json").read_text(encoding="utf-8"))
    parsed = 0
    for row in rows:
        request = Request(prompt="", assistant_prefix=row["prefix"])
        completion = Completion(row["text"], row["finish_reason"], 0, len(row["text"]))
        tasks = parse_alpaca_grounded_tasks(prompts, request, completion, PASSAGE)
        whole = parse_alpaca_grounded_tasks(prompts, request, replace(completion,
                                                                      finish_reason="stop"),
                                            PASSAGE)
        assert tasks == whole or (row["finish_reason"] == "length" and tasks == whole[:-1])
        reply = row["prefix"] + row["text"]
        outputs = len(re.findall(rf"^\s*\**{L.output}\**\s*[:：]", reply, re.MULTILINE))
        assert len(whole) <= outputs
        for instruction, inst in whole:
            assert instruction and "\n" not in instruction and inst.output
            assert inst.input == PASSAGE.text
            assert instruction in reply and inst.output in reply
            # A stray header ("输出 2" where 任务 2 was meant) ends a task, not its output.
            assert not re.search(rf"\n\s*{L.output}\s*\d+\s*$", inst.output)
        parsed += len(tasks)
    # Opened with a lead task, the model keeps to the format (without one it never wrote an
    # output line: 0 tasks from 4 requests).
    assert parsed >= 1
