"""Every instruction filter and the instance filters, each with what it drops and what it keeps."""

import pytest

from selfinstruct_local.pipeline.filters import (
    BLACKLIST,
    blacklisted_word,
    check_instruction,
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


def test_open_ended_task_keeps_its_first_answer():
    kept, dropped = filter_instances([Instance("", "Walk daily."), Instance("", "Sleep well.")])
    assert kept == [Instance("", "Walk daily.")]
    assert [why for _, why in dropped] == ["conflicting_outputs"]
