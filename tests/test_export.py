"""`sigen export`: every format written from a hand-made finished run and loaded back with
Hugging Face `datasets`; the dataset card's front matter; LLaMA-Factory's dataset_info.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from selfinstruct_local.errors import SigenError
from selfinstruct_local.export import FORMATS, export, export_run
from selfinstruct_local.export.card import MARKER, size_category
from selfinstruct_local.export.formats import SUFFIXES
from tests.conftest import sigen
from tests.test_report import ACCEPTED, make_run

# The instances of accepted instructions, in file order (the orphan and the torn line are not).
EXPECTED = [(ident, text, inp, out) for ident, text, *_, pairs in ACCEPTED for inp, out in pairs]
SYSTEM = "You are a careful assistant. 请简洁。"


@pytest.fixture
def run_dir(tmp_path):
    return make_run(tmp_path / "run")


@pytest.fixture(scope="module")
def load_dataset(tmp_path_factory):
    """`datasets.load_dataset`, offline, with its caches in a temporary folder (never ~/.cache)."""
    home = tmp_path_factory.mktemp("hf")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in (("HF_DATASETS_OFFLINE", "1"), ("HF_HUB_OFFLINE", "1"),
                            ("HF_HOME", str(home)), ("HF_DATASETS_CACHE", str(home / "datasets"))):
            patch.setenv(name, value)
        import datasets  # reads the variables above when first imported

        def load(path: Path):
            builder = "parquet" if path.suffix == ".parquet" else "json"
            return datasets.load_dataset(builder, data_files=str(path), split="train",
                                         cache_dir=str(home / "datasets")).to_list()

        yield load


def user_text(instruction: str, inp: str) -> str:
    return instruction + (f"\n\n{inp}" if inp else "")


def expected_rows(fmt: str, system: str | None) -> list[dict]:
    """Each format's rows, written out from the fixture's data (not from the code under test)."""
    extra = {"system": system} if system is not None else {}
    if fmt == "alpaca":
        return [{"instruction": t, "input": i, "output": o, **extra} for _, t, i, o in EXPECTED]
    if fmt in ("jsonl", "parquet"):
        return [{"instruction": t, "input": i, "output": o, "instruction_id": k, **extra}
                for k, t, i, o in EXPECTED]
    if fmt == "sharegpt":
        ids = ["mi-000001-1", "mi-000001-2", "mi-000002-1", "mi-000004-1", "mi-000005-1",
               "mi-000006-1"]
        return [{"id": n, "conversations": [{"from": "human", "value": user_text(t, i)},
                                            {"from": "gpt", "value": o}], **extra}
                for n, (_, t, i, o) in zip(ids, EXPECTED, strict=True)]
    head = [{"role": "system", "content": system}] if system is not None else []
    return [{"messages": [*head, {"role": "user", "content": user_text(t, i)},
                          {"role": "assistant", "content": o}]} for _, t, i, o in EXPECTED]


@pytest.mark.parametrize("system", [None, SYSTEM])
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_loads_with_datasets(run_dir, tmp_path, load_dataset, fmt, system):
    done = export(run_dir, fmt, tmp_path / fmt / f"train.{SUFFIXES[fmt]}", system=system)
    assert done.rows == len(EXPECTED) == 6
    assert load_dataset(done.path) == expected_rows(fmt, system)


def test_default_names_and_raw_json(run_dir):
    names = {fmt: export_run(run_dir, fmt).name for fmt in FORMATS}
    assert names == {"alpaca": "export.alpaca.json", "sharegpt": "export.sharegpt.json",
                     "jsonl": "export.jsonl", "messages": "export.messages.jsonl",
                     "parquet": "export.parquet"}
    text = (run_dir / "export.alpaca.json").read_text(encoding="utf-8")
    assert json.loads(text) == expected_rows("alpaca", None)
    assert "春风吹绿了江南岸" in text  # not \\u-escaped
    lines = (run_dir / "export.messages.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == expected_rows("messages", None)


def test_output_path_and_atomic_write(run_dir, tmp_path):
    target = tmp_path / "out" / "nested" / "train.json"
    assert export_run(run_dir, " ShareGPT ", target) == target  # case and spaces forgiven
    assert len(json.loads(target.read_text(encoding="utf-8"))) == 6
    export_run(run_dir, "alpaca", target)  # replaces the file, and sigen's own card
    assert set(json.loads(target.read_text(encoding="utf-8"))[0]) == {"instruction", "input",
                                                                      "output"}
    # No temporary files left behind.
    assert sorted(p.name for p in target.parent.iterdir()) == ["README.md", "train.json"]


def test_empty_run_exports_nothing(tmp_path, load_dataset):
    # The manifest `sigen run` writes before it asks for anything; no other file yet.
    (tmp_path / "manifest.json").write_text(json.dumps({
        "status": "running", "config": {"method": "self-instruct"},
        "counts": {"rounds": 0, "accepted": 0, "instances": 0, "instructions_rejected": 0}}))
    for fmt in FORMATS:
        path = export_run(tmp_path, fmt)
        if fmt == "parquet":  # a table with its columns and no rows
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            assert table.num_rows == 0
            assert table.column_names == ["instruction", "input", "output", "instruction_id"]
        else:
            text = path.read_text(encoding="utf-8")
            assert text == ("[]\n" if fmt in ("alpaca", "sharegpt") else "")


# -- the dataset card ------------------------------------------------------------------------


def front_matter(card: Path) -> dict:
    text = card.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


def test_card_front_matter_and_body(run_dir, tmp_path):
    done = export(run_dir, "messages", tmp_path / "data" / "train.jsonl")
    assert done.card == tmp_path / "data" / "README.md"
    meta = front_matter(done.card)
    assert meta["license"] == "apache-2.0"  # from the registry's smollm2-135m entry
    assert meta["language"] == ["en"]
    assert meta["size_categories"] == ["n<1K"]
    assert meta["task_categories"] == ["text-generation"]
    assert meta["tags"] == ["self-instruct", "alpaca", "synthetic"]
    assert meta["configs"] == [{"config_name": "default",
                                "data_files": [{"split": "train", "path": "train.jsonl"}]}]
    body = done.card.read_text(encoding="utf-8").split("---\n", 2)[2]
    assert "`train.jsonl`: 6 examples in the **messages** format" in body
    for row in ("| accepted instructions | 5 |", "| instances (examples) | 6 |",
                "| rejected instructions | 5 |", "| dropped instances | 4 |",
                "| blacklist | 2 |", "| near_duplicate | 2 |", "| no_valid_instances | 1 |",
                "| duplicate_instance | 2 |", "| copied_example | 1 |",
                "| model | `smollm2-135m` |", "| sampling | temperature 0.7, top_p 0.9 |",
                "| tokens generated | 12,345 |"):
        assert row in body, row
    assert "doi       = {10.18653/v1/2023.acl-long.754}" in body
    assert "@misc{taori2023alpaca," in body


def test_card_language_and_license_from_the_registry(tmp_path):
    run_dir = make_run(tmp_path / "run")
    registry = tmp_path / "models.yaml"
    registry.write_text("models:\n  smollm2-135m:\n    path: smollm2-135m\n"
                        "    license: apache-2.0\n    sampling: {temperature: 1.0}\n")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["config"].update(lang="zh", models_file=str(registry), top_p=0.5)
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    card = export(run_dir, "alpaca").card
    meta = front_matter(card)
    assert meta["license"] == "apache-2.0" and meta["language"] == ["zh"]
    text = card.read_text(encoding="utf-8")
    assert "`apache-2.0`, from the model's registry entry" in text
    assert "| sampling | temperature 1.0, top_p 0.5 |" in text  # the run's --top-p wins


def test_card_license_from_the_checkpoint_card(tmp_path):
    run_dir = make_run(tmp_path / "run")
    checkpoint = tmp_path / "my-model"
    checkpoint.mkdir()
    (checkpoint / "README.md").write_text("---\nlicense: mit\nlanguage: [en]\n---\n# My model\n")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["model"] = {"name": "my-model", "path": str(checkpoint)}  # not a registry name
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    card = export(run_dir, "jsonl").card
    assert front_matter(card)["license"] == "mit"
    assert "`mit`, from the model checkpoint's own card" in card.read_text(encoding="utf-8")


def test_size_categories():
    assert [size_category(n) for n in (0, 999, 1000, 9999, 10_000, 52_002, 999_999,
                                       1_000_000, 10**13)] == [
        "n<1K", "n<1K", "1K<n<10K", "1K<n<10K", "10K<n<100K", "10K<n<100K", "100K<n<1M",
        "1M<n<10M", "n>1T"]


def test_card_never_replaces_a_readme_sigen_did_not_write(run_dir, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "README.md").write_text("# My notes\n")
    with pytest.raises(SigenError, match="README.md exists and was not written by sigen"):
        export(run_dir, "alpaca", folder / "train.json")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md"]  # nothing written
    export(run_dir, "alpaca", folder / "train.json", card=False)
    assert (folder / "README.md").read_text() == "# My notes\n"
    # sigen's own card is rewritten; with its marker line deleted, it is the user's.
    ours = export(run_dir, "alpaca", tmp_path / "ours" / "train.json").card
    assert MARKER in ours.read_text(encoding="utf-8")
    export(run_dir, "sharegpt", tmp_path / "ours" / "train.json")
    assert "**sharegpt** format" in ours.read_text(encoding="utf-8")
    ours.write_text(ours.read_text(encoding="utf-8").replace(MARKER + "\n", ""))
    with pytest.raises(SigenError, match="was not written by sigen"):
        export(run_dir, "alpaca", tmp_path / "ours" / "train.json")


# -- LLaMA-Factory's dataset_info.json --------------------------------------------------------


def read_like_llama_factory(folder: Path, name: str, load_dataset) -> list[tuple]:
    """(system, user, assistant) per example, as LLaMA-Factory's data README says it reads an
    entry: alpaca columns prompt/query/response/system (the user turn is prompt + "\\n" +
    query); sharegpt a message list with role/content keys and user/assistant/system tags."""
    entry = json.loads((folder / "dataset_info.json").read_text(encoding="utf-8"))[name]
    rows = load_dataset(folder / entry["file_name"])
    columns = entry.get("columns", {})
    if entry.get("formatting", "alpaca") == "alpaca":
        return [(row.get(columns.get("system")) if "system" in columns else None,
                 "\n".join(filter(None, (row[columns.get("prompt", "instruction")],
                                         row[columns.get("query", "input")]))),
                 row[columns.get("response", "output")]) for row in rows]
    tags = {"role_tag": "from", "content_tag": "value", "user_tag": "human",
            "assistant_tag": "gpt", "system_tag": "system", **entry.get("tags", {})}
    out = []
    for row in rows:
        messages = row[columns.get("messages", "conversations")]
        system = row.get(columns["system"]) if "system" in columns else None
        if messages[0][tags["role_tag"]] == tags["system_tag"]:
            system, messages = messages[0][tags["content_tag"]], messages[1:]
        assert [m[tags["role_tag"]] for m in messages] == [tags["user_tag"],
                                                           tags["assistant_tag"]]
        out.append((system, *(m[tags["content_tag"]] for m in messages)))
    return out


@pytest.mark.parametrize("system", [None, SYSTEM])
@pytest.mark.parametrize("fmt", FORMATS)
def test_dataset_info_entry_reads_the_file(run_dir, tmp_path, load_dataset, fmt, system):
    folder = tmp_path / "lf"
    done = export(run_dir, fmt, folder / f"sigen.{SUFFIXES[fmt]}", system=system,
                  llama_factory=True)
    assert (done.dataset_info, done.dataset_name) == (folder / "dataset_info.json", "run")
    joined = [(system, "\n".join(filter(None, (t, i))), o) for _, t, i, o in EXPECTED]
    spaced = [(system, user_text(t, i), o) for _, t, i, o in EXPECTED]
    # The alpaca shapes keep instruction and input apart (LLaMA-Factory joins them with a
    # newline); the conversations carry sigen's own joining.
    assert read_like_llama_factory(folder, "run", load_dataset) == (
        joined if fmt in ("alpaca", "jsonl", "parquet") else spaced)


def test_dataset_info_merges_into_an_existing_file(run_dir, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    other = {"alpaca_en": {"file_name": "alpaca_en.json"}}
    (folder / "dataset_info.json").write_text(json.dumps(other))
    export(run_dir, "sharegpt", folder / "a.json", llama_factory=True, dataset_name="mine")
    export(run_dir, "alpaca", folder / "b.json", llama_factory=True)
    info = json.loads((folder / "dataset_info.json").read_text(encoding="utf-8"))
    assert list(info) == ["alpaca_en", "mine", "run"]
    assert info["alpaca_en"] == other["alpaca_en"]
    assert info["mine"]["file_name"] == "a.json" and info["mine"]["formatting"] == "sharegpt"
    assert info["run"] == {"file_name": "b.json", "columns": {
        "prompt": "instruction", "query": "input", "response": "output"}}
    export(run_dir, "messages", folder / "c.jsonl", llama_factory=True, dataset_name="mine")
    info = json.loads((folder / "dataset_info.json").read_text(encoding="utf-8"))
    assert list(info) == ["alpaca_en", "mine", "run"] and info["mine"]["file_name"] == "c.jsonl"


def test_a_broken_dataset_info_stops_before_writing(run_dir, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "dataset_info.json").write_text("{not json")
    with pytest.raises(SigenError, match="dataset_info.json is not valid JSON"):
        export(run_dir, "alpaca", folder / "a.json", llama_factory=True)
    (folder / "dataset_info.json").write_text("[]")
    with pytest.raises(SigenError, match="not a JSON object of dataset entries"):
        export(run_dir, "alpaca", folder / "a.json", llama_factory=True)
    assert sorted(p.name for p in folder.iterdir()) == ["dataset_info.json"]


def test_option_errors(run_dir):
    with pytest.raises(SigenError, match="unknown export format 'csv'; choose one of alpaca, "
                                         "sharegpt, jsonl, messages, parquet"):
        export_run(run_dir, "csv")
    with pytest.raises(SigenError, match="add --llama-factory"):
        export(run_dir, "alpaca", dataset_name="x")
    with pytest.raises(SigenError, match="--system is empty"):
        export(run_dir, "alpaca", system="  ")
    assert not list(run_dir.glob("export*"))


# -- the command line --------------------------------------------------------------------------


def test_cli_export(run_dir, tmp_path):
    out = tmp_path / "sg" / "train.json"
    result = sigen("export", str(run_dir), "--format", "sharegpt", "-o", str(out),
                   "--system", SYSTEM, "--llama-factory", "--dataset-name", "si", timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"6 examples (sharegpt) -> {out}",
        f"dataset card -> {out.parent / 'README.md'}",
        f"dataset_info.json entry 'si' -> {out.parent / 'dataset_info.json'}",
    ]
    rows = json.loads(out.read_text(encoding="utf-8"))
    assert len(rows) == 6 and all(r["system"] == SYSTEM for r in rows)


def test_cli_errors_are_clean(run_dir, tmp_path):
    result = sigen("export", str(run_dir), "--format", "xml", timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: unknown export format 'xml'; choose one of "
                                    "alpaca, sharegpt, jsonl, messages, parquet")
    (tmp_path / "README.md").write_text("mine\n")
    result = sigen("export", str(run_dir), "-f", "alpaca", "-o", str(tmp_path / "a.json"),
                   timeout=120)
    assert result.returncode == 2 and "pass --no-card" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list(run_dir.glob("export*")) and not (tmp_path / "a.json").exists()
