"""--method evol (Evol-Instruct): its prompts and parsers, its elimination rules, and its lines of
instructions through the real loop and run directory, driven by the scripted engine
(tests/scripted.py): rows that name their parent, operation and generation, a refusal and a
no-gain evolution rejected with their reasons, each parent evolved once, a resume in the middle
of generation 2, an exhausted source, and the plan's checks of --evolve-from. The packaged model
runs the method in test_evol_engine.py."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from selfinstruct_local.config import RunConfig
from selfinstruct_local.errors import SigenError
from selfinstruct_local.methods.evol import (
    ATTEMPTS,
    OPERATIONS,
    adds_nothing,
    build_compare_request,
    build_evolve_request,
    copies_evolve_prompt,
    eliminated,
    evol_words,
    parse_evolved,
)
from selfinstruct_local.plan import resolve_plan
from selfinstruct_local.progress import Reporter
from selfinstruct_local.prompts import load_prompts
from selfinstruct_local.report import summarize
from selfinstruct_local.runstore import INSTANCES, INSTRUCTIONS, PENDING, REJECTED
from tests.scripted import Killed, ScriptedEngine, scripted_loop
from tests.test_loop import check_finished, rows

EN, ZH = load_prompts("en"), load_prompts("zh")


# -- prompts and parsers ---------------------------------------------------------------------------

@pytest.mark.parametrize("prompts", [EN, ZH], ids=["en", "zh"])
def test_every_operation_has_a_prompt_in_both_languages(prompts):
    words = evol_words(prompts.lang)
    assert sorted(words.operations) == sorted(op for op in OPERATIONS if op != "breadth")
    for operation in OPERATIONS:
        request = build_evolve_request(prompts, "Name three rivers of Africa.", operation, seed=1)
        assert "{{" not in request.prompt and request.prompt.endswith("Name three rivers of "
                                                                      "Africa.")
        assert request.assistant_prefix.startswith(words.new_instruction)
    compare = build_compare_request(prompts, "First one.", "Second one.")
    assert compare.prompt.rstrip().endswith("Second one.") and compare.max_tokens == 4


@pytest.mark.parametrize(("text", "finish", "expected"), [
    (" Explain why the sky is blue, in two sentences.", "stop",
     "Explain why the sky is blue, in two sentences."),
    # The model goes on: a blank line and a comment, or a label, ends the instruction.
    (" List four uses of salt.\n\nThis adds a number.", "stop", "List four uses of salt."),
    (" List four uses of salt.\nResponse: Salt preserves food.", "stop", "List four uses of salt."),
    # A label written again at the start, wrapping quotes and bold.
    (' New instruction: "Sort the words by length."', "stop", "Sort the words by length."),
    (" **Sort the words by length.**", "stop", "Sort the words by length."),
    # An input introduced by a colon stays part of the instruction, blank line and all.
    (" Find the largest number in this list:\n\n3, 18, 7\n\nDone.", "stop",
     "Find the largest number in this list:\n3, 18, 7"),
    # Cut off by the token limit: only complete lines are kept.
    (" Describe the water cycle.\nThen explain how cl", "length", "Describe the water cycle."),
    (" Describe the water cycle and explain how cl", "length", ""),
    (" 用三句话解释潮汐是怎样形成的。\n\n这条指令增加了要求。", "stop",
     "用三句话解释潮汐是怎样形成的。"),
    (" 新指令：列出三种茶，并说明产地。", "stop", "列出三种茶，并说明产地。"),
])
def test_parse_evolved(text, finish, expected):
    prompts = ZH if any("\u4e00" <= ch <= "\u9fff" for ch in text) else EN
    assert parse_evolved(prompts, text, finish) == expected


@pytest.mark.parametrize(("text", "parent", "nothing"), [
    ("Write a poem about tea.", "Write a poem about tea.", True),
    ("Please write a poem about tea.", "Write a poem about tea.", True),  # one word more
    ("Write a poem.", "Write a poem about tea.", True),  # shorter
    ("Write a poem about tea in exactly four lines.", "Write a poem about tea.", False),
    ("Compose verses on green tea from Japan for children.", "Write a poem about tea.", False),
    ("请写一首关于茶的诗。", "写一首关于茶的诗。", True),
    ("写一首关于茶的诗，不超过四行。", "写一首关于茶的诗。", False),
])
def test_a_rewrite_that_adds_nothing(text, parent, nothing):
    assert adds_nothing(text, parent) is nothing


@pytest.mark.parametrize(("prompts", "text", "copied"), [
    (EN, "Rewrite the original instruction so that it is harder.", True),
    (EN, "Here is a more demanding version of the task.", True),
    (EN, "Add one more requirement the answer must meet, such as a limit on its length.", True),
    (EN, "Explain the rules of chess to a child in under 100 words.", False),
    (ZH, "下面是改写后的指令：写一首诗。", True),
    (ZH, "把问题问得更深、更广，让答案还必须谈到原因、后果、比较或者例外", True),
    (ZH, "用不超过一百字向小学生解释象棋的规则。", False),
])
def test_a_rewrite_that_copies_the_prompt(prompts, text, copied):
    assert copies_evolve_prompt(prompts, text) is copied


@pytest.mark.parametrize(("lang", "answer", "reason"), [
    ("en", "I'm sorry, but I cannot help with that request.", "refusal"),
    ("en", "I apologize, but as an AI I do not have opinions.", "refusal"),
    ("en", "As an AI language model, I can't browse the web.", "refusal"),
    ("en", "...", "trivial_answer"),
    ("en", "It is not.", "trivial_answer"),
    ("en", "Tea leaves are picked, withered, rolled and dried.", None),
    # An answer that says sorry later on, as an apology letter does, is an answer.
    ("en", "Dear Ms. Park, thank you for your patience with our order. " * 3 + "I am sorry.",
     None),
    ("en", "", None),  # empty: the filters' empty_output, with a sampled retry
    ("zh", "抱歉，我无法完成这个任务。", "refusal"),
    ("zh", "作为一个AI，我没有个人看法。", "refusal"),
    ("zh", "好的。", "trivial_answer"),
    ("zh", "茶叶采摘以后要经过萎凋、揉捻和干燥。", None),
])
def test_answers_that_end_an_evolution(lang, answer, reason):
    assert eliminated(evol_words(lang), answer) == reason


# -- the method in the loop ------------------------------------------------------------------------

def evolutions(root: Path) -> list[dict]:
    """One row per evolution decided: its pending row, or its rejection at screening."""
    return rows(root, PENDING) + [r for r in rows(root, REJECTED)
                                  if r["stage"] == "instruction" and "id" not in r]


def check_lines(root: Path, generations: int, starting: str) -> list[dict]:
    """Every row names its parent, operation and generation; a parent is a starting
    instruction (its id prefixed with `starting`) or an accepted row one generation up. A parent
    has at most ATTEMPTS rewrites, each with another operation (so none was asked twice), and at
    most one child in the data."""
    finals = {r["id"]: r for r in rows(root, INSTRUCTIONS)}
    for row in [*finals.values(), *rows(root, PENDING),
                *(r for r in rows(root, REJECTED) if r["stage"] == "instruction")]:
        assert row["operation"] in OPERATIONS
        assert 1 <= row["generation"] <= generations
        if row["generation"] == 1:
            assert row["parent_id"].startswith(f"{starting}/")
        else:
            parent = finals[row["parent_id"]]
            assert parent["generation"] == row["generation"] - 1
    tried = Counter((r["parent_id"], r["operation"]) for r in evolutions(root))
    assert max(tried.values()) == 1, tried.most_common(3)
    assert max(Counter(parent for parent, _ in tried).values()) <= ATTEMPTS
    children = Counter(r["parent_id"] for r in finals.values())
    assert max(children.values()) == 1
    return list(finals.values())


def check_exhausted(root: Path, starting: list[str], generations: int) -> None:
    """Every parent has its child in the data, or ATTEMPTS rewrites rejected."""
    finals = rows(root, INSTRUCTIONS)
    parents = starting + [r["id"] for r in finals if r["generation"] < generations]
    children = {r["parent_id"] for r in finals}
    tried = Counter(r["parent_id"] for r in evolutions(root))
    for parent in parents:
        assert parent in children or tried[parent] == ATTEMPTS, parent


def test_lines_of_evolved_instructions(tmp_path):
    engine = ScriptedEngine(fail=0.4)
    loop = scripted_loop(tmp_path, engine, method="evol", num_instructions=30)
    loop.run()
    assert loop.stages == ("evolve", "compare", "answer")
    finals = check_finished(tmp_path, 30)
    check_lines(tmp_path, 3, "en_seed_tasks.jsonl")
    assert {r["generation"] for r in finals} >= {1, 2}
    for row in rows(tmp_path, INSTANCES):
        assert row["input"] == "" and row["output"]
    rejected = [r for r in rows(tmp_path, REJECTED) if r["stage"] == "instruction"]
    reasons = Counter(r["reason"] for r in rejected)
    # No gain: the parent written back (screening) and the same request in other words (the
    # compare question, after screening: the row has the task's id).
    no_gain = [r for r in rejected if r["reason"] == "no_information_gain"]
    assert any("id" in r for r in no_gain) and any("id" not in r for r in no_gain)
    assert reasons["refusal"] and reasons["copied_prompt"]
    refused = [r for r in rows(tmp_path, REJECTED) if r["reason"] == "refusal"]
    assert {r["stage"] for r in refused} == {"instruction", "instance"}  # its answer is kept
    # The compare question's no-gain got no answer; a refusal is the task's last answer.
    answers = {r.seed: r for r in engine.sent if r.assistant_prefix == "Response:"}
    for row in rejected:
        tries = [answers[seed] for seed in (loop.ctx.seed_for("answer", row.get("id"), attempt)
                                            for attempt in (0, 1)) if seed in answers]
        if row["reason"] == "no_information_gain":
            assert not tries
        if row["reason"] == "refusal":
            replies = [engine.answer(request).text for request in tries]
            assert ["sorry" in reply for reply in replies] == [False] * (len(tries) - 1) + [True]
    counts = json.loads((tmp_path / "manifest.json").read_text())["counts"]
    assert counts["evolve_requests"] == counts["source_requests"]
    summary = summarize(tmp_path, warn=lambda m: None)["evolution"]
    by_generation = {r["generation"]: r for r in summary["by_generation"]}
    assert sum(r["survived"] for r in by_generation.values()) == 30
    kept_out_by_the_target = {r["id"] for r in rejected if r["reason"] == "target_reached"}
    assert by_generation[1]["evolved"] == sum(1 for r in evolutions(tmp_path)
                                              if r["generation"] == 1
                                              and r.get("id") not in kept_out_by_the_target)


def test_a_resume_in_the_middle_of_generation_2(tmp_path):
    """Killed while generation 2 is under way (some of its rewrites decided, gen-1 rows still
    waiting for a child), the run resumes: what was decided stays, no rewrite is asked twice,
    the rows before the kill are all there, and the target is met exactly."""
    first = scripted_loop(tmp_path, ScriptedEngine(fail=0.4, kill_after=6), method="evol",
                          num_instructions=30, batch_size=4)
    with pytest.raises(Killed):
        first.run()
    before = evolutions(tmp_path)
    finals_before = rows(tmp_path, INSTRUCTIONS)
    tried = Counter(r["parent_id"] for r in before)
    children = {r["parent_id"] for r in finals_before}
    gen1_waiting = [r for r in finals_before if r["generation"] == 1
                    and r["id"] not in children and tried[r["id"]] < ATTEMPTS]
    assert any(r["generation"] == 2 for r in before) and gen1_waiting  # mid-generation 2

    engine = ScriptedEngine(fail=0.4)
    resumed = scripted_loop(tmp_path, engine, method="evol", num_instructions=30, batch_size=4)
    resumed.run()
    finals = check_lines(tmp_path, 3, "en_seed_tasks.jsonl")
    check_finished(tmp_path, 30)
    assert all(row in finals for row in finals_before)
    # Rewrites decided before the kill were not asked for again (check_lines: no parent and
    # operation twice), and the resumed run rewrote more.
    assert len(evolutions(tmp_path)) > len(before)
    # The rows left waiting before the kill were rewritten by the resumed run.
    tried_now = Counter(r["parent_id"] for r in evolutions(tmp_path))
    assert any(tried_now[r["id"]] > tried[r["id"]] for r in gen1_waiting)


@pytest.mark.parametrize("kill_after", [1, 3, 8, 11])
def test_a_kill_at_any_point_then_resume(tmp_path, kill_after):
    first = scripted_loop(tmp_path, ScriptedEngine(fail=0.4, kill_after=kill_after),
                          method="evol", num_instructions=20, batch_size=4)
    with pytest.raises(Killed):
        first.run()
    before = rows(tmp_path, INSTRUCTIONS)
    scripted_loop(tmp_path, ScriptedEngine(fail=0.4), method="evol", num_instructions=20,
                  batch_size=4).run()
    assert all(row in check_lines(tmp_path, 3, "en_seed_tasks.jsonl") for row in before)
    check_finished(tmp_path, 20)


def write_jsonl(path: Path, rows_: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows_),
                    encoding="utf-8")
    return path


def test_nothing_left_to_evolve_stops_the_run_and_more_generations_continue_it(tmp_path):
    source = write_jsonl(tmp_path / "start.jsonl", [
        {"instruction": "Describe how a lighthouse keeper spends a stormy night."},
        {"id": "q2", "instruction": "Summarize the text in one sentence.",
         "input": "Bees dance to tell the hive where flowers are."},
        {"instruction": "Explain why bread goes stale.",
         "instances": [{"input": "", "output": ""}]},
    ])
    out = tmp_path / "run"
    options = {"method": "evol", "evolve_from": source, "num_instructions": 40, "generations": 1}
    loop = scripted_loop(out, ScriptedEngine(fail=0.0), **options)
    loop.run()
    assert "nothing left to evolve" in loop.no_more_sources
    finals = rows(out, INSTRUCTIONS)
    check_exhausted(out, ["start.jsonl/line-1", "start.jsonl/line-3", "start.jsonl/q2"], 1)
    assert {r["generation"] for r in finals} == {1}
    # The input is part of what is evolved.
    q2 = next(r for r in finals if r["parent_id"] == "start.jsonl/q2")
    assert "Bees dance" in q2["instruction"]

    kept = resolve_plan(RunConfig(output=out, method="evol", evolve_from=source), Reporter())
    assert kept.config.generations == 1  # a resume keeps the run's own
    more = scripted_loop(out, ScriptedEngine(fail=0.0), **{**options, "generations": 2})
    more.run()
    check_lines(out, 2, "start.jsonl")
    check_exhausted(out, ["start.jsonl/line-1", "start.jsonl/line-3", "start.jsonl/q2"], 2)
    assert {r["generation"] for r in rows(out, INSTRUCTIONS)} == {1, 2}


def test_evolving_the_rows_of_another_run(tmp_path):
    source = tmp_path / "demo"
    scripted_loop(source, ScriptedEngine(fail=0.0), num_instructions=12).run()
    demo = {r["id"]: r for r in rows(source, INSTRUCTIONS)}
    inputs: dict[str, str] = {}
    for row in rows(source, INSTANCES):
        inputs.setdefault(row["instruction_id"], row["input"])
    out = tmp_path / "evolved"
    loop = scripted_loop(out, ScriptedEngine(fail=0.3), method="evol", evolve_from=source,
                         generations=2, num_instructions=20)
    assert len(loop.ctx.starting) == 12
    for task in loop.ctx.starting:
        row = demo[task.id.removeprefix("demo/")]
        assert task.instruction.startswith(row["instruction"])
        assert inputs[row["id"]] in task.instruction
    loop.run()
    finals = check_lines(out, 2, "demo")
    assert {r["parent_id"].removeprefix("demo/") for r in finals
            if r["generation"] == 1} <= set(demo)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["evolve_from"] == str(source)
    assert manifest["config"]["generations"] == 2


def plan_for(tmp_path: Path, **options):
    return resolve_plan(RunConfig(output=tmp_path / "run", **options), Reporter())


@pytest.mark.parametrize(("lines", "message"), [
    (["{\"instruction\": \"Name a river.\"}", "not json"], r"start.jsonl:2: not valid JSON"),
    (["{\"text\": \"Name a river.\"}"], r"start.jsonl:1: .*non-empty string `instruction`"),
    (["{\"id\": 1, \"instruction\": \"A.\"}", "{\"id\": 1, \"instruction\": \"B.\"}"],
     r"start.jsonl:2: id '1' already used on line 1"),
    ([""], r"no instructions to evolve"),
])
def test_a_bad_evolve_from_file_is_refused_with_its_line(tmp_path, lines, message):
    path = tmp_path / "start.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(SigenError, match=message):
        plan_for(tmp_path, method="evol", evolve_from=path)
    assert not (tmp_path / "run").exists()


def test_evolve_options_are_checked_before_anything_is_written(tmp_path):
    with pytest.raises(SigenError, match="--evolve-from is an option of --method evol"):
        plan_for(tmp_path, evolve_from=tmp_path)
    with pytest.raises(SigenError, match="--generations is an option of --method evol"):
        plan_for(tmp_path, method="alpaca", generations=2)
    with pytest.raises(SigenError, match="no such file or directory"):
        plan_for(tmp_path, method="evol", evolve_from=tmp_path / "nowhere.jsonl")
    with pytest.raises(SigenError, match="is not a complete sigen run directory"):
        plan_for(tmp_path, method="evol", evolve_from=tmp_path)
    with pytest.raises(SigenError, match="does not take --corpus"):
        plan_for(tmp_path, method="evol", corpus=tmp_path)
    assert not (tmp_path / "run").exists()
    plan = plan_for(tmp_path, method="evol")
    assert plan.config.generations == 3 and len(plan.starting) == len(plan.seed_tasks)
    assert plan.starting[0].id.startswith("en_seed_tasks.jsonl/")


def test_a_resume_from_other_instructions_is_refused(tmp_path):
    first = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "Explain how tides work."}])
    scripted_loop(tmp_path / "run", ScriptedEngine(fail=0.0), method="evol", evolve_from=first,
                  num_instructions=1).run()
    other = write_jsonl(tmp_path / "b.jsonl", [{"instruction": "Explain how clocks work."}])
    with pytest.raises(SigenError, match="evolve_from"):
        plan_for(tmp_path, method="evol", evolve_from=other)
    with pytest.raises(SigenError, match="evolve_from"):
        plan_for(tmp_path, method="evol")  # from the seeds
