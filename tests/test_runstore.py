"""The run directory: appends survive, a torn last line is dropped, the manifest is atomic."""

import json
import os

import pytest

from selfinstruct_local.errors import SigenError
from selfinstruct_local.runstore import PENDING, REJECTED, RunStore


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
    store.append(PENDING, [{"id": "mi-000001"}])
    store.create([PENDING, REJECTED])
    assert (tmp_path / REJECTED).read_text() == ""
    assert store.read(PENDING) == [{"id": "mi-000001"}]
