"""`sigen export`: alpaca, sharegpt and jsonl files from a hand-made run, checked field by field."""

from __future__ import annotations

import json

import pytest

from selfinstruct_local.errors import SigenError
from selfinstruct_local.export import FORMATS, export_run
from tests.conftest import sigen
from tests.test_report import ACCEPTED, make_run

# The instances of accepted instructions, in file order (the orphan and the torn line are not).
EXPECTED = [(ident, text, inp, out) for ident, text, *_, pairs in ACCEPTED for inp, out in pairs]


@pytest.fixture
def run_dir(tmp_path):
    return make_run(tmp_path / "run")


def test_alpaca(run_dir):
    path = export_run(run_dir, "alpaca")
    assert path == run_dir / "export.alpaca.json"
    rows = json.loads(path.read_text(encoding="utf-8"))
    assert rows == [{"instruction": t, "input": i, "output": o} for _, t, i, o in EXPECTED]
    assert "春风吹绿了江南岸" in path.read_text(encoding="utf-8")  # not \\u-escaped


def test_sharegpt(run_dir):
    rows = json.loads(export_run(run_dir, "sharegpt").read_text(encoding="utf-8"))
    assert len(rows) == 6
    assert [r["id"] for r in rows[:3]] == ["mi-000001-1", "mi-000001-2", "mi-000002-1"]
    assert rows[0]["conversations"] == [
        {"from": "human", "value": "Write a poem about the sea."},
        {"from": "gpt", "value": "The sea is wide and blue."},
    ]
    assert rows[1]["conversations"][0]["value"] == "Write a poem about the sea.\n\nTone: calm"
    assert all([c["from"] for c in r["conversations"]] == ["human", "gpt"] for r in rows)


def test_jsonl(run_dir):
    path = export_run(run_dir, "jsonl")
    assert path == run_dir / "export.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    assert rows == [{"instruction": t, "input": i, "output": o, "instruction_id": k}
                    for k, t, i, o in EXPECTED]


def test_output_path_and_atomic_write(run_dir, tmp_path):
    target = tmp_path / "out" / "nested" / "train.json"
    assert export_run(run_dir, " ShareGPT ", target) == target  # case and spaces forgiven
    assert len(json.loads(target.read_text(encoding="utf-8"))) == 6
    export_run(run_dir, "alpaca", target)  # replaces the file
    assert set(json.loads(target.read_text(encoding="utf-8"))[0]) == {"instruction", "input",
                                                                      "output"}
    assert [p.name for p in target.parent.iterdir()] == ["train.json"]  # no temporary files


def test_empty_run_exports_nothing(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"counts": {"accepted": 0}}))
    for fmt in FORMATS:
        text = export_run(tmp_path, fmt).read_text(encoding="utf-8")
        assert text == ("" if fmt == "jsonl" else "[]\n")


def test_unknown_format_lists_the_choices(run_dir):
    with pytest.raises(SigenError, match="unknown export format 'csv'; choose one of alpaca, "
                                         "sharegpt, jsonl"):
        export_run(run_dir, "csv")


def test_cli_export(run_dir, tmp_path):
    out = tmp_path / "sg.json"
    result = sigen("export", str(run_dir), "--format", "sharegpt", "-o", str(out), timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"6 examples (sharegpt) -> {out}" in result.stdout
    assert len(json.loads(out.read_text(encoding="utf-8"))) == 6


def test_cli_unknown_format_is_a_clean_error(run_dir):
    result = sigen("export", str(run_dir), "--format", "xml", timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: unknown export format 'xml'; choose one of "
                                    "alpaca, sharegpt, jsonl")
    assert not list(run_dir.glob("export*"))
