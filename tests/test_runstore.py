"""The run directory: appends survive, a torn last line is dropped, the manifest is atomic."""

import json
import os
import re

import pytest

from selfinstruct_local.errors import SigenError
from selfinstruct_local.runstore import (
    AGAIN,
    AGAIN_TO_RESUME,
    CONTAMINATION,
    INSTANCES,
    INSTRUCTIONS,
    MANIFEST,
    PENDING,
    REJECTED,
    SCORES,
    RunStore,
    manifest_problem,
    read_previous_manifest,
)


def test_append_and_read_back(tmp_path):
    store = RunStore.open(tmp_path / "run")
    store.append("a.jsonl", [{"id": 1, "text": "上善若水"}, {"id": 2}])
    store.append("a.jsonl", [])
    store.append("a.jsonl", [{"id": 3}])
    assert [r["id"] for r in store.read("a.jsonl")] == [1, 2, 3]
    assert "上善若水" in store.path("a.jsonl").read_text(encoding="utf-8")  # not \\u-escaped


def test_torn_last_line_is_reported_and_dropped(tmp_path):
    store = RunStore(tmp_path)
    store.append("a.jsonl", [{"id": 1}, {"id": 2}])
    with open(store.path("a.jsonl"), "a", encoding="utf-8") as handle:
        handle.write('{"id": 3, "text": "cut sh')  # the process died mid-write
    messages = []
    assert [r["id"] for r in store.read("a.jsonl", warn=messages.append)] == [1, 2]
    assert "torn last line" in messages[0] and "a.jsonl:3" in messages[0]
    store.append("a.jsonl", [{"id": 4}])  # appending after the repair gives clean lines
    assert [r["id"] for r in store.read("a.jsonl")] == [1, 2, 4]


def test_complete_last_line_without_newline_is_kept(tmp_path):
    store = RunStore(tmp_path)
    store.path("a.jsonl").write_text('{"id": 1}\n{"id": 2}', encoding="utf-8")
    assert [r["id"] for r in store.read("a.jsonl")] == [1, 2]
    store.append("a.jsonl", [{"id": 3}])
    assert [r["id"] for r in store.read("a.jsonl")] == [1, 2, 3]


def test_bad_line_in_the_middle_is_an_error(tmp_path):
    store = RunStore(tmp_path)
    store.path("a.jsonl").write_text('{"id": 1}\nnot json\n{"id": 3}\n', encoding="utf-8")
    with pytest.raises(SigenError, match=r"a.jsonl:2: not a JSON object"):
        store.read("a.jsonl")


def test_manifest_replaced_atomically(tmp_path):
    store = RunStore(tmp_path)
    store.write_json("manifest.json", {"round": 1})
    store.write_json("manifest.json", {"round": 2})
    assert json.loads(store.path("manifest.json").read_text()) == {"round": 2}
    assert os.listdir(tmp_path) == ["manifest.json"]  # no temporary files left behind
    assert store.path("manifest.json").stat().st_mode & 0o777 == 0o644
    assert store.read_json("missing.json") is None


def test_create_makes_missing_files_empty_and_leaves_written_ones_alone(tmp_path):
    """A run that rejected nothing still has its rejected.jsonl (seen in a real alpaca run)."""
    store = RunStore(tmp_path)
    row = {"id": "mi-000001", "round": 1, "instruction": "Name a color."}
    store.append(PENDING, [row])
    store.create([PENDING, REJECTED])
    assert (tmp_path / REJECTED).read_text() == ""
    assert store.read(PENDING) == [row]


# -- rows are checked against their file's schema ----------------------------------------------

INSTANCE = {"instruction_id": "mi-000001", "instruction": "Name a color.", "input": "",
            "output": "Blue."}


@pytest.mark.parametrize(("row", "problem"), [
    ({k: v for k, v in INSTANCE.items() if k != "instruction"}, "missing 'instruction'"),
    ({**INSTANCE, "output": None}, "'output' is null, not a string"),
    ({**INSTANCE, "input": ["x"]}, "'input' is a list, not a string"),
])
def test_a_row_without_what_readers_rely_on_names_file_line_and_key(tmp_path, row, problem):
    store = RunStore(tmp_path)
    store.append(INSTANCES, [INSTANCE, row, INSTANCE])
    before = store.path(INSTANCES).read_bytes()
    with pytest.raises(SigenError) as error:
        store.read(INSTANCES)
    assert str(error.value).startswith(f"{store.path(INSTANCES)}:2: {problem}; the run "
                                       "directory is damaged. Restore the file")
    assert "another --output" in str(error.value)
    assert store.path(INSTANCES).read_bytes() == before  # nothing repaired on the way out


@pytest.mark.parametrize(("name", "row", "problem"), [
    (INSTRUCTIONS, {"id": "mi-1", "instruction": "x", "round": "2", "num_instances": 1},
     "'round' is a string, not a whole number"),
    (INSTRUCTIONS, {"id": "mi-1", "instruction": "x", "round": 1, "num_instances": 1,
                    "max_similarity": float("nan")}, "'max_similarity' is nan, not a number"),
    (PENDING, {"id": 7, "round": 1, "instruction": "x"}, "'id' is 7, not a string"),
    (PENDING, {"id": "mi-1", "round": True, "instruction": "x"},
     "'round' is true, not a whole number"),
    (PENDING, {"id": "mi-1", "round": 1, "instruction": "x", "passage": {"text": "..."}},
     "'passage' is a JSON object, not a JSON object with a string 'id'"),
    (REJECTED, {"stage": "screening", "reason": "too_short"},
     "'stage' is the string 'screening', not 'instruction' or 'instance'"),
    (REJECTED, {"stage": "instruction", "reason": "no_valid_instances", "round": 2},
     "missing 'id'"),
    (REJECTED, {"stage": "instruction", "reason": "too_short"}, "missing 'round'"),
    (SCORES, {"id": "mi-1-1", "score": 7}, "'score' is 7, not a whole number from 1 to 5"),
    (CONTAMINATION, {"id": "mi-1-1"}, "missing 'benchmark'"),
    (INSTANCES, {**INSTANCE, "conversation": [{"role": "user"}]},
     "'conversation' is a list, not a list of JSON objects with a string 'role' and 'content'"),
])
def test_each_run_file_has_its_schema(tmp_path, name, row, problem):
    (tmp_path / name).write_text(json.dumps(row) + "\n")
    with pytest.raises(SigenError, match=f"{name}:1: {re.escape(problem)}"):
        RunStore(tmp_path).read(name, repair=False)


def test_rows_as_the_writers_write_them_pass(tmp_path):
    """One row of each kind, as loop.py, screen.py, stages.py, judge.py and contamination.py
    write them, with the extra keys of other methods and versions."""
    rows = {
        PENDING: {"stage": "instruction", "round": 3, "instruction": "Explain tides.",
                  "input": "Tides rise.", "passage": {"id": "p1", "source": "a.txt"},
                  "kind": "plot", "parent": "mi-000001", "id": "mi-000009",
                  "most_similar": [{"instruction": "x", "score": 0.2}],
                  "avg_similarity": 0.1, "max_similarity": 0.2},
        INSTRUCTIONS: {"id": "mi-000009", "instruction": "Explain tides.",
                       "is_classification": None, "round": 3, "num_instances": 2,
                       "most_similar": [], "avg_similarity": 0.0, "max_similarity": 0.0},
        INSTANCES: INSTANCE,
        REJECTED: {"stage": "instance", "round": 1, "instruction_id": "mi-000001",
                   "reason": "empty_output", "input": "", "output": ""},
        SCORES: {"id": "mi-000001-1", "instruction_id": "mi-000001", "score": None,
                 "reason": None, "judge": "smollm2-135m", "attempts": 2, "reply": "?"},
        CONTAMINATION: {"id": "mi-000001-1", "instruction_id": "mi-000001", "field": "input",
                        "benchmark": "/b/qa.jsonl", "item": 2, "where": "line 2",
                        "item_text": "x", "ngram": "a b c"},
    }
    store = RunStore(tmp_path)
    for name, row in rows.items():
        store.append(name, [row])
        assert store.read(name) == [row]
    screened = {"stage": "instruction", "round": 1, "instruction": "Plot it.",
                "reason": "blacklist:plot"}
    store.append(REJECTED, [screened])
    assert store.read(REJECTED)[-1] == screened


def test_a_file_that_cannot_be_read_is_an_error_not_a_traceback(tmp_path):
    (tmp_path / PENDING).mkdir()
    with pytest.raises(SigenError, match=f"cannot read {tmp_path / PENDING}"):
        RunStore(tmp_path).read(PENDING)


def test_a_write_failure_says_what_to_run_again(tmp_path):
    """Only `sigen run`'s store (RunStore.open) talks about resuming; every other writer
    just says to run the same command again."""
    import errno as errno_codes

    from selfinstruct_local.runstore import StorageError, writing

    for again, expected in ((AGAIN, "then run the same command again."),
                            (AGAIN_TO_RESUME, "then run the same command again to resume.")):
        with pytest.raises(StorageError) as error, writing(tmp_path / "x", again):
            raise OSError(errno_codes.ENOSPC, "No space left on device")
        assert str(error.value).endswith(expected)
        assert "the disk is full" in str(error.value)
    assert RunStore.open(tmp_path / "run").again == AGAIN_TO_RESUME
    assert RunStore(tmp_path).again == AGAIN


@pytest.mark.parametrize(("manifest", "problem"), [
    ([], "not a JSON object but a list"),
    ({"counts": {}}, "it has no 'config' object"),
    ({"config": {}, "counts": {"accepted": "8"}}, "'counts.accepted' is a string, not a number"),
    ({"config": {}, "model": "smollm2"}, "'model' is a string, not a JSON object"),
    ({"config": {}, "model": {"path": 3}}, "'model.path' is 3, not a string or null"),
    ({"config": {}, "wall_seconds": float("inf")}, "'wall_seconds' is inf, not a number"),
])
def test_manifest_problems_are_named(manifest, problem):
    assert manifest_problem(manifest) == problem


def test_a_manifest_config_of_the_wrong_types_is_refused(tmp_path):
    (tmp_path / MANIFEST).write_text(json.dumps({"config": {"seed": "42"}}))
    with pytest.raises(SigenError, match=r"config.seed is \"42\", which is not a whole number"):
        read_previous_manifest(tmp_path)
