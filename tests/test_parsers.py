"""Prompt builders and parsers, on completions recorded from the packaged model and written ones."""

import random
from pathlib import Path

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
    sample_prompt_tasks,
)
from selfinstruct_local.prompts import load_prompts
from selfinstruct_local.seeds import Instance, Task

RECORDED = Path(__file__).parent / "fixtures" / "completions"
EN = load_prompts("en")


def recorded(name: str) -> str:
    return (RECORDED / name).read_text(encoding="utf-8")


# -- bootstrapping ---------------------------------------------------------------------------
def test_bootstrap_prompt_numbers_tasks_and_starts_the_next():
    tasks = [f"Instruction number {i}." for i in range(8)]
    req = build_bootstrap_request(EN, tasks, seed=3)
    for n, text in enumerate(tasks, start=1):
        assert f"Task {n}: {text}\n" in req.prompt
    assert "Task 9" not in req.prompt
    assert req.assistant_prefix == "Task 9:"
    assert req.stop == ("Task 17",)  # at most 8 new tasks
    assert req.seed == 3


def test_sampling_takes_six_human_and_two_machine_tasks():
    human = [f"h{i}" for i in range(50)]
    machine = [f"m{i}" for i in range(50)]
    chosen = sample_prompt_tasks(random.Random(0), human, machine)
    assert len(chosen) == 8 and len(set(chosen)) == 8
    assert sum(c.startswith("m") for c in chosen) == 2
    early = sample_prompt_tasks(random.Random(0), human, ["m0"])
    assert sum(c.startswith("m") for c in early) == 1 and len(early) == 8
    assert sample_prompt_tasks(random.Random(0), human, []) == sample_prompt_tasks(
        random.Random(0), human, []
    )


def test_parse_recorded_chat_completion():
    items = parse_instructions(EN, recorded("bootstrap_chat_stop.txt"), "stop")
    assert items == [
        "Recap the main points of the event of the French Revolution.",
        "Conclude the survey with the most interesting facts about the French Revolution.",
    ]


def test_parse_stops_where_the_model_starts_chatting():
    items = parse_instructions(EN, recorded("bootstrap_chat_trailing_chat.txt"), "stop")
    assert items == [
        "Read a news article about a car accident.",
        "Create a list of all the planets in our solar system.",
    ]


def test_parse_drops_the_last_item_when_cut_by_the_token_limit():
    text = recorded("bootstrap_completion_length.txt")
    cut = parse_instructions(EN, text, "length")
    whole = parse_instructions(EN, text, "stop")
    assert whole[-1] == "What is the most powerful superintelligent AI"
    assert cut == whole[:-1]
    assert len(cut) == 6  # the blank line before Task 12 does not end the list
    assert cut[0] == "What is the most famous movie in the history of film?"


@pytest.mark.parametrize(
    "line",
    ["Task 10: Name a river.", "10. Name a river.", "10) Name a river.",
     "**Task 10:** Name a river.", "(10) Name a river.", "Task 10. Name a river."],
)
def test_parse_accepts_common_numbering_styles(line):
    items = parse_instructions(EN, f" Sort the words by length.\n{line}", "stop")
    assert items == ["Sort the words by length.", "Name a river."]


def test_parse_cleans_quotes_and_bold_but_keeps_inner_quotes():
    text = ' "List three uses of vinegar."\nTask 10: **Translate "good night" into Spanish.**'
    assert parse_instructions(EN, text, "stop") == [
        "List three uses of vinegar.",
        'Translate "good night" into Spanish.',
    ]


# -- classification --------------------------------------------------------------------------
def test_classify_prompt_and_answers():
    req = build_classify_request(EN, "Is the review positive or negative?")
    assert req.prompt.rstrip().endswith("Task: Is the review positive or negative?")
    assert req.assistant_prefix == "Classification:" and req.temperature == 0.0
    assert parse_is_classification(EN, " Yes") is True
    assert parse_is_classification(EN, " no.") is False
    assert parse_is_classification(EN, " **Yes**, it is") is True
    assert parse_is_classification(EN, " Maybe") is None


# -- instances -------------------------------------------------------------------------------
def test_input_first_prompt_and_parse():
    req = build_instances_request(EN, "Convert the time to 24-hour format.", False)
    assert req.assistant_prefix == "Example 1\n"
    assert req.prompt.rstrip().endswith("Task: Convert the time to 24-hour format.")
    text = "Input: 3:15 pm\nOutput: 15:15\nExample 2\nInput: 7:05 am\nOutput: 07:05\n"
    assert parse_instances(EN, text, False) == [
        Instance("3:15 pm", "15:15"),
        Instance("7:05 am", "07:05"),
    ]


def test_input_first_no_input_and_multiline_output():
    text = "Input: <none>\nOutput: 1. Stretch.\n2. Walk.\n\nExample 2\nInput: None\nOutput: Rest."
    assert parse_instances(EN, text, False) == [
        Instance("", "1. Stretch.\n2. Walk."),
        Instance("", "Rest."),
    ]


def test_input_first_cut_off_loses_the_last_example():
    text = "Input: 2 + 2\nOutput: 4\nExample 2\nInput: 7 * 6\nOutput: 4"
    assert parse_instances(EN, text, False, "length") == [Instance("2 + 2", "4")]


def test_recorded_instance_with_trailing_code_keeps_first_output_only():
    # Recorded with an "Input:" reply prefix; the parser sees the same fields.
    text = "Input:" + recorded("instances_code.txt")
    found = parse_instances(EN, text, False)
    assert found[0].input == "[1, 2, 3, 4, 5]"
    assert found[0].output.startswith("15")
    repeated = parse_instances(EN, "Input:" + recorded("instances_repeated_output.txt"), False)
    assert repeated == [
        Instance("The committee postponed its decision until more data becomes available.",
                 "Positive")
    ]


def test_output_first_prompt_and_parse():
    req = build_instances_request(EN, "Is the sentence formal or informal?", True)
    assert req.assistant_prefix == "Class label:"
    text = (" Formal\nInput: We regret to inform you that the meeting is postponed.\n"
            "Class label: Informal\nInput: hey, meeting's off, see ya\n")
    assert parse_instances(EN, text, True) == [
        Instance("We regret to inform you that the meeting is postponed.", "Formal"),
        Instance("hey, meeting's off, see ya", "Informal"),
    ]
    assert parse_instances(EN, " No\nInput: <none>\n", True) == [Instance("", "No")]


def test_few_shot_texts_come_from_the_templates():
    texts = few_shot_texts(EN)
    assert {"26.2 miles", "42.2 kilometers", "head nurse"} <= texts
    assert "did you remember to lock the back door?" in texts
    assert not {"positive", "no", "<none>"} & texts  # labels may be reused
    assert not any("task:" in t for t in texts)  # a field ends where the next task starts


# -- Alpaca ----------------------------------------------------------------------------------
def test_alpaca_prompt_shows_three_examples_and_opens_task_four():
    seeds = [Task(id=str(i), instruction=f"Do thing {i}.",
                  instances=(Instance("" if i == 1 else f"in {i}", f"out {i}"),))
             for i in range(3)]
    req = build_alpaca_request(EN, seeds, count=20)
    assert "Task 1\nInstruction: Do thing 0.\nInput: in 0\nOutput: out 0" in req.prompt
    assert "Input: <none>" in req.prompt
    assert "20 new" in req.prompt
    assert req.assistant_prefix == "Task 4\nInstruction:"
    assert req.stop == ("Task 24",)


def test_alpaca_parse_blocks():
    text = (" Name the capital of Peru.\nInput: <none>\nOutput: Lima.\n\n"
            "Task 5\nInstruction: Shorten the sentence.\nInput: The meeting that we had planned "
            "for Monday has been moved.\nOutput: Monday's meeting has moved.\n\n"
            "Task 6\nInstructions: Add the numbers.\nInput: 2, 3\nOutput: 5\n\nTask 7\n"
            "Instruction: Half-written")
    stop = parse_alpaca_tasks(EN, text, "stop")
    assert stop[:3] == [
        ("Name the capital of Peru.", Instance("", "Lima.")),
        ("Shorten the sentence.", Instance("The meeting that we had planned for Monday has been "
                                           "moved.", "Monday's meeting has moved.")),
        ("Add the numbers.", Instance("2, 3", "5")),
    ]
    assert len(stop) == 3  # the block without an output is skipped
    assert parse_alpaca_tasks(EN, text, "length") == stop
