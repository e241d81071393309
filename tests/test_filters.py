"""Every instruction filter and the instance filters, each with what it drops and what it keeps."""

import pytest

from selfinstruct_local.pipeline.filters import (
    BLACKLIST,
    blacklisted_word,
    check_instruction,
    copies_passage,
    filter_instances,
    reason_key,
    starts_with_punctuation,
    starts_with_write_a_program,
    too_long,
    too_short,
)
from selfinstruct_local.seeds import Instance


def test_length_bounds_in_words():
    assert too_short("Summarize this text.") == "too_short"  # 3 words: at most 3 is dropped
    assert too_short("Summarize this short text.") is None
    assert too_long(" ".join(["word"] * 150)) is None
    assert too_long(" ".join(["word"] * 151)) == "too_long"


@pytest.mark.parametrize("word", BLACKLIST["en"])
def test_every_blacklisted_word_is_dropped_in_any_case(word):
    sentence = f"Please {word.upper()} something for the report today."
    assert blacklisted_word(sentence) == f"blacklist:{word}"


@pytest.mark.parametrize(
    "text",
    ["Describe the plotline of the novel in two sentences.",  # plotline is not plot
     "Explain what a mapping between two sets is.",
     "Give the filename extension used for Python code.",
     "Name a drawback of working from home."],
)
def test_blacklist_matches_whole_words_only(text):
    assert blacklisted_word(text) is None


def test_blacklist_phrase_across_spaces():
    assert blacklisted_word("Tell me when to go  to the bank and why.") == "blacklist:go to"


def test_starts_with_punctuation():
    assert starts_with_punctuation("- List three fruits that are red.") == "starts_with_punctuation"
    assert starts_with_punctuation("“Quote” the sentence in reverse order.")
    assert starts_with_punctuation("List three fruits that are red.") is None
    assert starts_with_punctuation("3 reasons to learn a language, explained.") is None


def test_write_a_program():
    assert starts_with_write_a_program("Write a program that sorts numbers.") == "write_a_program"
    assert starts_with_write_a_program("write a Program to add two numbers") == "write_a_program"
    assert starts_with_write_a_program("Write a function that sorts numbers.") is None


def test_check_instruction_returns_first_reason_or_none():
    assert check_instruction("Draw it.") == "too_short"
    assert reason_key(check_instruction("Draw a picture of a cat in the snow.")) == "blacklist"
    assert check_instruction("Explain why leaves change colour in autumn.") is None


def test_text_with_broken_characters_is_dropped():
    """Recorded from the packaged model in a Chinese Magpie run: bytes that were no UTF-8
    character, decoded as U+FFFD. A grounded task's input is the user's passage: kept as is."""
    broken = "用Python 从编码转\ufffdption的方式来进行复\ufffdch的协程，使用Jupyter Notebook的方式"
    assert check_instruction(broken, "zh") == "broken_characters"
    assert check_instruction(broken.replace("\ufffd", "换"), "zh") is None
    kept, dropped = filter_instances([Instance("", "协程是\ufffd一种"), Instance("a\ufffdb", "ok"),
                                      Instance("", "协程是一种函数")])
    assert kept == [Instance("", "协程是一种函数")]
    assert [why for _, why in dropped] == ["broken_characters", "broken_characters"]
    kept, _ = filter_instances([Instance("a\ufffdb", "ok")], answer_prompt="Passage: {}")
    assert kept == [Instance("a\ufffdb", "ok")]


def test_instance_filters():
    found = [
        Instance("2 + 2", "4"),
        Instance("2 + 2", "4"),  # exact duplicate
        Instance("hello", "hello"),  # input equals output
        Instance("x", "  "),  # empty output
        Instance("5 - 1", "4"),
        Instance("9 / 3", "3"),
        Instance("9 / 3", "three"),  # same input, different output: both go
        Instance("26.2 miles", "42.2 km"),  # copies a few-shot example
        Instance("a dog", "Max plays.\n\nMax plays.\nMax plays."),  # one line, looped
    ]
    kept, dropped = filter_instances(found, examples=frozenset({"26.2 miles"}))
    assert kept == [Instance("2 + 2", "4"), Instance("5 - 1", "4")]
    reasons = sorted(why for _, why in dropped)
    assert reasons == ["conflicting_outputs", "conflicting_outputs", "copied_example",
                       "duplicate_instance", "empty_output", "input_equals_output",
                       "repetitive_output"]


def test_an_output_that_only_requotes_its_input_is_no_answer():
    """Seen in a real run: Input "The story of the city hospital" (quoted), Output the same
    words unquoted. An edit that changes a word, or only the case, is an answer."""
    kept, dropped = filter_instances([
        Instance('"The story of the city hospital"', "The story of the city hospital"),
        Instance("「春眠不觉晓」", "春眠不觉晓"),
        Instance("The  cat\nsat.", "The cat sat."),
        Instance("I lik apples.", "I like apples."),
        Instance("HELLO WORLD", "hello world"),
    ])
    assert [why for _, why in dropped] == ["input_equals_output"] * 3
    assert kept == [Instance("I lik apples.", "I like apples."),
                    Instance("HELLO WORLD", "hello world")]


def test_multi_line_output_is_not_repetitive():
    kept, _ = filter_instances([Instance("", "Step one.\nStep two.\nStep one.")])
    assert len(kept) == 1


def test_loops_after_an_opening_and_of_short_pieces_are_repetitive():
    """Answers of the packaged model in a Chinese Magpie run (recorded, shortened): a line, then
    one short line over and over; a list marker looped; one mark looped. Tables, rules, leaders
    and digits are not loops."""
    loops = ["我在疯疦的什么？" + "\n\n疯疦！" * 12, "1. " * 20,
             "我是一个洞客，有什么用法？－－！" + "！" * 40, "ha " * 12]
    fine = ["| a | b |\n" + "|---" * 12 + "|", "0" * 24, "Wait" + "." * 24,
            "0 " * 12, "1. Apple\n2. Pear\n3. Plum", "你可以使用它，可以使用它。"]
    kept, dropped = filter_instances([Instance(str(i), text) for i, text in
                                      enumerate(loops + fine)])
    assert [inst.output for inst, why in dropped if why == "repetitive_output"] == loops
    assert [inst.output for inst in kept] == [t.strip() for t in fine]


def test_open_ended_task_keeps_its_first_answer():
    kept, dropped = filter_instances([Instance("", "Walk daily."), Instance("", "Sleep well.")])
    assert kept == [Instance("", "Walk daily.")]
    assert [why for _, why in dropped] == ["conflicting_outputs"]


# -- tasks that copy their passage -----------------------------------------------------------
# 《红楼梦》 chapter 23 as the corpus cuts it (its quotes and stops as the file has them), and a
# passage of the English test corpus.
HLM_23 = ("林黛玉听了，倒也十分感慨缠绵，便止住步侧耳细听，又听唱道是：“良辰美景奈何天，"
          "赏心乐事谁家院．\"听了这两句，不觉点头自叹，心下自思道：“原来戏上也有好文章．可惜世人"
          "只知看戏，未必能领略这其中的趣味。”想毕，又后悔不该胡想，耽误了听曲子．又侧耳时，只听"
          "唱道：“则为你如花美眷，似水流年……\"林黛玉听了这两句，不觉心动神摇．")
GULL_ROCK = ("Martha Quill had kept the light on Gull Rock for eleven years when the supply boat "
             "failed to come. She did not tell her son Tobias how little oil there was.")


@pytest.mark.parametrize("task", [
    "林黛玉为什么听了这几句曲文就心动神摇？",  # the kind of task a 7B model writes
    "“原来戏上也有好文章”这句话透露了黛玉怎样的心思？",  # a quoted phrase (9 characters)
    "黛玉说“可惜世人只知看戏”，她以为戏里有什么趣味？",
    "把“良辰美景奈何天，赏心乐事谁家院”改写成现代白话。",  # a quoted line to rewrite: 14
    "“则为你如花美眷，似水流年”出自哪部戏？是什么意思？",
    "根据原文，说说林黛玉听曲时心情有什么变化。",
])
def test_chinese_tasks_that_quote_a_phrase_or_a_line_to_work_on_are_kept(task):
    assert copies_passage(task, HLM_23) is None


@pytest.mark.parametrize("task", [
    "林黛玉听了这两句，不觉心动神摇．",  # a sentence of the passage as the task
    "可惜世人只知看戏，未必能领略这其中的趣味。黛玉为什么这样想？",  # 19 characters, unquoted
    "“原来戏上也有好文章．可惜世人只知看戏，未必能领略这其中的趣味。”？",  # quotes, no task
    "又后悔不该胡想",  # a fragment (7 of 7 characters copied)
    "林黛玉听了，倒也十分感慨缠绵，便止住步侧耳细听，她听到了什么？",  # 17 copied, unquoted
    f"解释“{HLM_23[:80]}”。",  # a quotation of 5 sentences' worth or more
])
def test_chinese_tasks_that_copy_a_sentence_of_the_passage_are_rejected(task):
    assert copies_passage(task, HLM_23) == "copied_passage"


@pytest.mark.parametrize("task", [
    "Why does Martha hide the oil from Tobias?",
    "Why does Martha not tell Tobias how little oil there was?",  # 6 words in a row: kept
    "When the supply boat failed to come, what did Martha do?",  # 7 words in a row: kept
    "What does 'failed to come' tell us about the supply boat?",
    "Rewrite 'Martha Quill had kept the light on Gull Rock for eleven years' in plain modern "
    "English.",  # a quoted sentence to work on, 12 words
    "Describe Martha's eleven years on Gull Rock and the keepers' worries.",  # apostrophes
])
def test_english_tasks_that_quote_a_phrase_or_a_sentence_to_work_on_are_kept(task):
    assert copies_passage(task, GULL_ROCK) is None


@pytest.mark.parametrize("task", [
    "She did not tell her son Tobias how little oil there was.",
    "Martha Quill had kept the light on Gull Rock for eleven years. Why?",  # 12 words unquoted
    "What did Martha do for eleven years when the supply boat failed?",  # 8 words in a row
    "The supply boat failed to come.",  # all of it copied (6 of 6 words)
    "'She did not tell her son Tobias how little oil there was.'",  # quoted, no task around
])
def test_english_tasks_that_copy_a_sentence_of_the_passage_are_rejected(task):
    assert copies_passage(task, GULL_ROCK) == "copied_passage"
