"""The seed loader: the published Self-Instruct format, the project's own sets, and bad input."""

from pathlib import Path

import pytest

from selfinstruct_local.errors import SigenError
from selfinstruct_local.pipeline.filters import check_instruction
from selfinstruct_local.seeds import DEFAULT_SEEDS, Instance, load_seed_tasks

FIXTURES = Path(__file__).parent / "fixtures"
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SHARED_SEEDS = SHARED / "seeds" / "self_instruct_seed_tasks.jsonl"


def test_reads_the_self_instruct_format():
    tasks = load_seed_tasks(FIXTURES / "self_instruct_format_sample.jsonl")
    assert [t.id for t in tasks] == [f"seed_task_{i}" for i in range(5)]
    assert tasks[1].name == "unit_relation"
    assert tasks[1].instances == (Instance("Meter : length :: kilogram : ?", "mass"),)
    assert tasks[2].is_classification is True and len(tasks[2].instances) == 2
    assert tasks[0].instances[0].input == ""


@pytest.mark.skipif(not SHARED_SEEDS.is_file(), reason="../shared is not beside this checkout")
def test_reads_the_original_175_tasks_unchanged():
    tasks = load_seed_tasks(SHARED_SEEDS)
    assert len(tasks) == 175
    assert sum(bool(t.is_classification) for t in tasks) == 26


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_project_seed_sets(lang):
    tasks = load_seed_tasks(DEFAULT_SEEDS[lang])
    assert len(tasks) >= 100
    share = sum(bool(t.is_classification) for t in tasks) / len(tasks)
    assert 0.15 <= share <= 0.20
    assert all(t.instances and all(i.output.strip() for i in t.instances) for t in tasks)
    assert len({t.instruction for t in tasks}) == len(tasks)


def test_english_seeds_pass_the_instruction_filters():
    tasks = load_seed_tasks(DEFAULT_SEEDS["en"])
    assert [t.instruction for t in tasks if check_instruction(t.instruction, "en")] == []


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"instruction": "Say hi to the user now.", "instances": [}', "not valid JSON"),
        ('["a list"]', "expected a JSON object"),
        ('{"instances": []}', "'instruction' is missing"),
        ('{"instruction": "Name a color of the sky.", "instances": "x"}', "'instances' must be"),
        ('{"instruction": "Name a color of the sky.", "instances": [{"input": ""}]}',
         "needs string 'input' and 'output'"),
        ('{"instruction": "Name a color of the sky.", "is_classification": "no"}',
         "'is_classification' must be true or false"),
    ],
)
def test_malformed_seed_line_names_file_and_line(tmp_path, line, message):
    path = tmp_path / "seeds.jsonl"
    good = '{"id": "a", "instruction": "Name three primary colors.", "instances": []}'
    path.write_text(good + "\n\n" + line + "\n", encoding="utf-8")
    with pytest.raises(SigenError) as err:
        load_seed_tasks(path)
    assert f"{path}:3:" in str(err.value)
    assert message in str(err.value)


def test_duplicate_ids_and_empty_files(tmp_path):
    path = tmp_path / "dup.jsonl"
    row = '{"id": "x", "instruction": "Name three primary colors."}\n'
    path.write_text(row + row, encoding="utf-8")
    with pytest.raises(SigenError, match=r"dup.jsonl:2: id 'x' already used on line 1"):
        load_seed_tasks(path)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(SigenError, match="no seed tasks"):
        load_seed_tasks(empty)
    with pytest.raises(SigenError, match="does not exist"):
        load_seed_tasks(tmp_path / "missing.jsonl")
