"""Chinese prompts through the real builders and parsers, and the Chinese instruction filters."""

import pytest

from selfinstruct_local.methods.alpaca import build_alpaca_request, parse_alpaca_tasks
from selfinstruct_local.methods.self_instruct import (
    build_bootstrap_request,
    build_classify_request,
    build_instances_request,
    few_shot_texts,
    parse_instances,
    parse_instructions,
    parse_is_classification,
)
from selfinstruct_local.pipeline.filters import (
    BLACKLIST,
    blacklisted_word,
    check_instruction,
    starts_with_punctuation,
    starts_with_write_a_program,
    too_long,
    too_short,
)
from selfinstruct_local.prompts import TEMPLATE_NAMES, available_languages, load_prompts
from selfinstruct_local.seeds import Instance, Task

ZH = load_prompts("zh")
EN = load_prompts("en")


# -- the prompt set --------------------------------------------------------------------------
def test_zh_is_available_with_labels_read_as_text():
    assert "zh" in available_languages()
    L = ZH.labels
    assert (L.yes, L.no) == ("是", "否")  # quoted keys: YAML 1.1 would read yes/no as booleans
    assert L.colon == "：" and L.no_input == "<无>"
    # The classification answers must not be prefixes of each other.
    assert not L.yes.startswith(L.no) and not L.no.startswith(L.yes)


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_templates_have_the_english_slots_and_end_with_the_list(name):
    def slots(text):
        names = ("{{tasks}}", "{{instruction}}", "{{count}}", "{{passage}}", "{{kind}}",
                 "{{kinds}}")
        return {s for s in names if s in text}

    assert slots(ZH.templates[name]) == slots(EN.templates[name])
    if "grounded" in name:  # the passage first, the request after it
        assert ZH.templates[name].startswith("原文：\n{{passage}}")
        assert EN.templates[name].startswith("Passage:\n{{passage}}")
        return
    last = {"bootstrap": "{{tasks}}", "alpaca": "{{tasks}}"}.get(name, "{{instruction}}")
    assert ZH.templates[name].endswith(last)


def test_classify_template_has_eight_examples_four_of_each():
    answers = [line.split("：", 1)[1] for line in ZH.templates["classify"].splitlines()
               if line.startswith("是否为分类任务：")]
    assert sorted(answers) == ["否"] * 4 + ["是"] * 4


def test_alpaca_template_asks_for_chinese():
    assert "中文" in ZH.templates["alpaca"]


# -- bootstrapping ---------------------------------------------------------------------------
def test_bootstrap_prompt_numbers_tasks_with_full_width_colon():
    tasks = [f"第{i}条示例指令。" for i in range(1, 9)]
    req = build_bootstrap_request(ZH, tasks)
    assert "任务 1：第1条示例指令。\n" in req.prompt
    assert req.prompt.rstrip().endswith("任务 8：第8条示例指令。")
    assert req.assistant_prefix == "任务 9："
    assert req.stop == ("任务 17",)


def test_bootstrap_parse_chinese_numbering_styles():
    completion = (
        "把下面这段话翻译成英文。\n"
        "任务 10：列举三种适合在阳台种植的蔬菜，并说明理由。\n"
        "11. 判断下面这句话使用的修辞手法。\n"
        "12、为一家新开的奶茶店写一句广告语。\n"
        "（13）解释“守株待兔”这个成语的意思。\n"
        "(14) 计算从北京到上海的高铁票价总和。\n"
        "15）用一句话概括《西游记》的主要情节。\n"
        "**任务 16**：“把这句话改写得更礼貌一些。”\n"
        "希望这些任务对你有帮助！\n"
        "任务 17：这一行在闲聊之后，不应被收入。"
    )
    assert parse_instructions(ZH, completion, "stop") == [
        "把下面这段话翻译成英文。",
        "列举三种适合在阳台种植的蔬菜，并说明理由。",
        "判断下面这句话使用的修辞手法。",
        "为一家新开的奶茶店写一句广告语。",
        "解释“守株待兔”这个成语的意思。",
        "计算从北京到上海的高铁票价总和。",
        "用一句话概括《西游记》的主要情节。",
        "把这句话改写得更礼貌一些。",
    ]


def test_bootstrap_parse_drops_the_cut_off_item():
    completion = " 写一首关于春雨的五言绝句。\n\n任务 10：比较两种\n"
    assert parse_instructions(ZH, completion, "length") == ["写一首关于春雨的五言绝句。"]


# -- classification --------------------------------------------------------------------------
def test_classify_prompt_and_chinese_answers():
    req = build_classify_request(ZH, "这段评论是褒义还是贬义？")
    assert req.prompt.rstrip().endswith("任务：这段评论是褒义还是贬义？")
    assert req.assistant_prefix == "是否为分类任务："
    assert parse_is_classification(ZH, "是") is True
    assert parse_is_classification(ZH, " 是的，这是分类任务。") is True
    assert parse_is_classification(ZH, "：**否**") is False
    assert parse_is_classification(ZH, "否。") is False
    # "不是" means no but is neither label: unclear, never a wrong "yes".
    assert parse_is_classification(ZH, "不是") is None
    assert parse_is_classification(ZH, "也许") is None


# -- instances -------------------------------------------------------------------------------
def test_input_first_chinese():
    req = build_instances_request(ZH, "把句子中的错别字改正过来。", False)
    assert req.assistant_prefix == "示例 1\n"
    assert req.prompt.rstrip().endswith("任务：把句子中的错别字改正过来。")
    assert "\n任务：" in req.stop and "示例 4" in req.stop
    text = ("输入：我们明天再见面吧，不见不散。\n输出：原句没有错别字。\n"
            "示例 2\n输入：他做事总是专心至志。\n输出：他做事总是专心致志。\n\n"
            "示例 3\n**输入**：今天天气很好\n**输出**：今天天气很好。\n"
            "任务：下一个任务，不属于上面的示例。")
    assert parse_instances(ZH, text, False) == [
        Instance("我们明天再见面吧，不见不散。", "原句没有错别字。"),
        Instance("他做事总是专心至志。", "他做事总是专心致志。"),
        Instance("今天天气很好", "今天天气很好。"),
    ]
    cut = parse_instances(ZH, text, False, "length")
    assert len(cut) == 2


def test_input_first_no_input_markers_and_multiline_output():
    text = ("输入：<无>\n输出：1. 早睡早起。\n2. 多喝水。\n\n"
            "示例 2\n输入：无\n输出：每天散步半小时。\n"
            "示例 3\n输入：（无）\n输出：少吃甜食。")
    assert parse_instances(ZH, text, False) == [
        Instance("", "1. 早睡早起。\n2. 多喝水。"),
        Instance("", "每天散步半小时。"),
        Instance("", "少吃甜食。"),
    ]


def test_output_first_chinese():
    req = build_instances_request(ZH, "判断这句诗表达的是喜悦还是忧愁。", True)
    assert req.assistant_prefix == "类别："
    text = ("喜悦\n输入：春风得意马蹄疾，一日看尽长安花。\n"
            "类别：忧愁\n输入：问君能有几多愁？恰似一江春水向东流。\n")
    assert parse_instances(ZH, text, True) == [
        Instance("春风得意马蹄疾，一日看尽长安花。", "喜悦"),
        Instance("问君能有几多愁？恰似一江春水向东流。", "忧愁"),
    ]
    assert parse_instances(ZH, "否\n输入：<无>\n", True) == [Instance("", "否")]


def test_few_shot_texts_from_the_chinese_templates():
    texts = few_shot_texts(ZH)
    assert {"1250.50元", "壹仟贰佰伍拾元伍角", "护士长"} <= texts
    assert "你出门的时候把后门锁上了吗？" in texts
    assert not {"好评", "否", "<无>", ""} & texts  # labels may be reused
    assert not any("任务：" in t for t in texts)  # a field ends where the next task starts


# -- Alpaca ----------------------------------------------------------------------------------
def test_alpaca_prompt_in_chinese():
    seeds = [Task(id=str(i), instruction=f"完成第{i}件事。",
                  instances=(Instance("" if i == 1 else f"输入{i}", f"输出{i}"),))
             for i in range(3)]
    req = build_alpaca_request(ZH, seeds, count=20)
    assert "任务 1\n指令：完成第0件事。\n输入：输入0\n输出：输出0" in req.prompt
    assert "输入：<无>" in req.prompt
    assert "写出20个" in req.prompt
    assert req.assistant_prefix == "任务 4\n指令："
    assert req.stop == ("任务 24",)


def test_alpaca_parse_chinese_blocks():
    text = (" 说出秘鲁的首都。\n输入：<无>\n输出：利马。\n\n"
            "任务 5\n指令：把这句话改得更简洁。\n"
            "输入：我们原本计划在周一召开的那次会议，现在已经被推迟了。\n"
            "输出：周一的会议推迟了。\n\n"
            "**任务 6**\n指令: 计算两个数的和。\n输入: 2，3\n输出: 5\n\n"
            "任务 7\n指令：写到一半")
    found = parse_alpaca_tasks(ZH, text, "stop")
    assert found == [
        ("说出秘鲁的首都。", Instance("", "利马。")),
        ("把这句话改得更简洁。",
         Instance("我们原本计划在周一召开的那次会议，现在已经被推迟了。", "周一的会议推迟了。")),
        ("计算两个数的和。", Instance("2，3", "5")),
    ]
    assert parse_alpaca_tasks(ZH, text, "length") == found


# -- filters ---------------------------------------------------------------------------------
def test_chinese_length_is_counted_in_characters():
    assert too_short("写一首诗。", "zh") == "too_short"  # 4 characters
    assert too_short("翻译这句话", "zh") == "too_short"  # 5: at most 5 is dropped
    assert too_short("写一首关于秋天的诗。", "zh") is None
    assert too_short("用Python写快速排序", "zh") is None  # mixed: 1 word + 6 characters
    assert too_long("长" * 300, "zh") is None
    assert too_long("长" * 301, "zh") == "too_long"
    # English text keeps its word bounds whatever the run's language.
    assert too_short("Summarize this text.", "zh") == "too_short"
    assert too_short("Summarize this short text.", "zh") is None


@pytest.mark.parametrize("word", BLACKLIST["zh"])
def test_every_chinese_blacklisted_word_is_dropped_inside_text(word):
    assert blacklisted_word(f"请根据下面的描述{word}给我看看。", "zh") == f"blacklist:{word}"


def test_chinese_blacklist_also_applies_english_words_and_spares_harmless_text():
    assert blacklisted_word("请画一个 flowchart 来说明流程。", "zh") == "blacklist:flowchart"
    for ok in ("用三句话刻画出主人公的性格。", "给上网课的学生写一条提醒。",
               "列举三种提高写作水平的方法。", "解释“画蛇添足”的意思。"):
        assert blacklisted_word(ok, "zh") is None
    assert blacklisted_word("描述这张图片里的内容。", "en") is None  # lists are per language


def test_full_width_punctuation_at_the_start():
    for bad in ("，列出三种水果。", "“把这句话翻译成英文。", "（1）列出三种水果。",
                "【任务】写一首诗。", "、写一首诗。", "》写一首诗。"):
        assert starts_with_punctuation(bad, "zh") == "starts_with_punctuation"
    # An opening quote or title mark whose partner follows is part of the sentence.
    for ok in ("《红楼梦》中谁最会写诗？", "“截止”和“截至”有什么区别？", "「推敲」一词从何而来？"):
        assert starts_with_punctuation(ok, "zh") is None
    assert starts_with_punctuation("\u3000列出三种水果。", "zh") is None  # full-width space
    assert starts_with_punctuation("《红楼梦》中谁最会写诗？", "en") == "starts_with_punctuation"


def test_write_a_program_in_chinese():
    for bad in ("编写一个程序，计算1到100的和。", "写一个程序判断闰年。",
                "请编写程序输出九九乘法表。", "写个程序统计字数。"):
        assert starts_with_write_a_program(bad, "zh") == "write_a_program"
    for ok in ("编写一个函数，判断一个数是否为质数。", "写一个程序员的一天的日记。",
               "解释这个程序的作用。"):
        assert starts_with_write_a_program(ok, "zh") is None


def test_check_instruction_keeps_ordinary_chinese_tasks():
    for ok in ("用三句话概括《红楼梦》第一回的内容。", "把下面的文言文翻译成现代汉语。",
               "判断下面这句话是陈述句还是疑问句。", "为一家社区图书馆写一条宣传标语。"):
        assert check_instruction(ok, "zh") is None
    assert check_instruction("画一幅山水画，并配上一首诗。", "zh") == "blacklist:画一幅"


def test_a_chinese_run_drops_tasks_not_written_in_chinese():
    # Recorded from SmolLM2-135M in a --lang zh run.
    assert check_instruction("Coming from a small village, you are often referred to as a "
                             "country bumpkin. Describe how you feel.", "zh") == "wrong_language"
    for mixed in ("用Python写一个函数，计算list的平均值。", "将下面的CSV数据转换成JSON数组。",
                  "翻译下面的句子：I love you"):
        assert check_instruction(mixed, "zh") is None
    assert check_instruction("Describe the sea in three sentences.", "en") is None
