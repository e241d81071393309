"""`sigen decontaminate`: n-gram overlap against a brute-force reference, on written fixtures
(English, Chinese, an overlap only in the input, items shorter than n) and on random texts
built from a tiny vocabulary so that overlaps, repeats and near misses are everywhere."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from selfinstruct_local.errors import SigenError
from selfinstruct_local.quality import contamination
from selfinstruct_local.quality.benchmarks import benchmark_files, read_items
from selfinstruct_local.quality.contamination import (
    TASK_FIELDS,
    BenchmarkIndex,
    decontaminate_run,
    fetch_items,
    find_overlaps,
)
from selfinstruct_local.quality.gate import CONTAMINATION, task_ids
from selfinstruct_local.quality.ngrams import hash_windows, ngrams, split_tokens
from selfinstruct_local.report import summarize
from tests.conftest import sigen
from tests.quality_helpers import write_jsonl, write_run

MOONS = "Which planet in our solar system has the largest number of confirmed moons orbiting it?"
CELL = ("The mitochondria is often called the powerhouse of the cell because it produces most "
        "of the energy.")
APOLLO = ("In 1969 the crew of Apollo eleven landed on the moon and walked on its dusty surface "
          "for hours.")
POEM = "床前明月光，疑是地上霜。举头望明月，低头思故乡。"
SKY = "请解释为什么天空在晴朗的白天看起来是蓝色的？"
SHORT_EN = "What is the capital city of France?"  # 7 words: below n = 13
SHORT_ZH = "中国的首都是哪里"  # 8 characters: below n = 10

TASKS = [
    # 0: the benchmark question, recased and repunctuated, only in the input
    ("Answer the question.", "which planet in our Solar System has the largest number of "
     "confirmed moons, orbiting it today?", "Saturn."),
    # 1: an answer field of the benchmark in the output
    ("Explain the following.", "", CELL.replace("energy.", "energy a cell needs!")),
    # 2: a plain-text item, only in the input
    ("Summarize the passage.", APOLLO.upper().replace(" the moon", " the Moon,"),
     "Astronauts landed on the moon."),
    # 3: a Chinese poem in the output
    ("背诵一首关于思乡的诗。", "", POEM.replace("，", " ")),
    # 4, 5: items shorter than n, copied whole: cannot match
    (SHORT_ZH, "", "北京"),
    (SHORT_EN, "", "Paris."),
    # 6, 7: near misses: 12 of 13 words, 9 of 10 characters
    ("Which planet in our solar system has the largest number of confirmed comets?", "",
     "Jupiter."),
    ("请解释为什么天空在下雨前变暗。", "", "因为云层变厚了。"),
    # 8: clean
    ("Write a haiku about autumn leaves.", "", "Red leaves drift down, the wind hums."),
]


@pytest.fixture
def benchmarks(tmp_path) -> Path:
    folder = tmp_path / "benchmarks"
    (folder / "zh").mkdir(parents=True)
    write_jsonl(folder / "qa.jsonl", [
        {"question": SHORT_EN, "answer": "Paris"},
        {"question": MOONS, "answer": "Saturn", "id": 7},
        {"question": "Name a mammal.", "answer": CELL},
    ])
    (folder / "zh" / "poems.json").write_text(json.dumps(
        [{"问题": SKY, "答案": "瑞利散射"}, {"问题": "默写《静夜思》。", "答案": POEM},
         SHORT_ZH], ensure_ascii=False), encoding="utf-8")
    (folder / "history.txt").write_text(f"\n{APOLLO}\n\nThe war ended in 1945.\n",
                                        encoding="utf-8")
    (folder / "notes.md").write_text(MOONS, encoding="utf-8")  # not a benchmark suffix
    return folder


def brute_force(items_by_file: list[list[str]], tasks: list[dict], n_words: int,
                n_chars: int) -> list[tuple]:
    """Every task n-gram against every item, with plain Python sets."""
    grams = [[set(ngrams(text, n_words, n_chars)) for text in items] for items in items_by_file]
    found = []
    for t, task in enumerate(tasks):
        seen: set[int] = set()
        for field in TASK_FIELDS:
            for gram in ngrams(task[field], n_words, n_chars):
                for f, per_item in enumerate(grams):
                    item = next((i for i, g in enumerate(per_item) if gram in g), None)
                    if f not in seen and item is not None:
                        seen.add(f)
                        found.append((t, field, f, item, gram))
    return found


def as_dicts(tasks: list[tuple[str, str, str]]) -> list[dict]:
    return [dict(zip(TASK_FIELDS, t, strict=True)) for t in tasks]


def test_ngrams_lowercase_without_punctuation_and_cjk_by_character():
    assert ngrams("One, two; THREE four!", n_words=3) == ["one two three", "two three four"]
    assert split_tokens("用Python写一个函数。") == (["python"], list("用写一个函数"))
    assert ngrams("用 Python 写一个函数", n_words=2, n_chars=3) == ["用写一", "写一个", "一个函",
                                                                  "个函数"]
    assert ngrams(SHORT_EN) == [] and ngrams(SHORT_ZH) == []  # shorter than n
    assert len(ngrams(MOONS)) == 15 - 13 + 1


def test_benchmark_files_and_items(benchmarks):
    files = benchmark_files([benchmarks, benchmarks / "qa.jsonl"])
    assert [f.relative_to(benchmarks).as_posix() for f in files] == [
        "history.txt", "qa.jsonl", "zh/poems.json"]  # sorted, each once, notes.md skipped
    items = list(read_items(benchmarks / "qa.jsonl"))
    assert [i.where for i in items[:3]] == ["line 1, question", "line 1, answer",
                                            "line 2, question"]
    assert [i.text for i in read_items(benchmarks / "qa.jsonl", ("answer",))] == [
        "Paris", "Saturn", CELL]
    assert [i.where for i in read_items(benchmarks / "zh" / "poems.json")][-2:] == [
        "item 1, 答案", "item 2"]
    assert [i.text for i in read_items(benchmarks / "history.txt")] == [
        APOLLO, "The war ended in 1945."]


def test_written_fixtures_flag_exactly_the_planted_tasks(benchmarks):
    files = benchmark_files([benchmarks])
    tasks = as_dicts(TASKS)
    got = [(o.task, o.field, o.file, o.item, o.ngram)
           for o in find_overlaps(BenchmarkIndex(files), tasks)]
    reference = brute_force([[i.text for i in read_items(f)] for f in files], tasks, 13, 10)
    assert got == reference
    assert [(t, field, files[f].name) for t, field, f, *_ in got] == [
        (0, "input", "qa.jsonl"), (1, "output", "qa.jsonl"), (2, "input", "history.txt"),
        (3, "output", "poems.json")]
    assert got[3][4] == "床前明月光疑是地上霜"  # the first 10 characters, punctuation gone


def test_fields_limit_what_is_compared(benchmarks):
    files = benchmark_files([benchmarks / "qa.jsonl"])
    overlaps = find_overlaps(BenchmarkIndex(files, ("question",)), as_dicts(TASKS))
    assert [o.task for o in overlaps] == [0]  # CELL is an answer


def test_hashes_agree_with_the_strings():
    texts = ["Ａｂｃ　ＤＥＦ ghi", "ＡＢＣ def GHI", "中文和English混合的句子里有ascii词",
             "中文和english", "𠀀𠀁丂中文 ab", "𠀀𠀁丂中文 AB", "カタカナとひらがな",
             "한국어 문장 café", "Café, 한국어 문장", "漢\ufe00字 e\u0301te", "漢字 ete", "", "!!!",
             "\ud800 lone 中文"]
    windows = hash_windows(texts, 2, 2)
    for kind, rank in (("words", 0), ("chars", 1)):
        hashes, owner, position = windows[kind]
        by_string: dict[str, set[int]] = {}
        for t, text in enumerate(texts):
            stream = split_tokens(text)[rank]
            mine = sorted(int(p) for p in position[owner == t])
            assert mine == list(range(max(len(stream) - 1, 0))), (kind, text)
            for p in mine:
                gram = "".join(stream[p:p + 2])
                h = int(hashes[(owner == t) & (position == p)][0])
                by_string.setdefault(gram, set()).add(h)
        assert all(len(h) == 1 for h in by_string.values())  # one string, one hash
        assert len(set().union(*by_string.values())) == len(by_string)  # and back


def test_fetch_items_reads_back_any_item(tmp_path, benchmarks):
    extra = tmp_path / "multi.jsonl"
    extra.write_text('{"a": "x", "b": ["y", "z"]}\n\n{"a": 1}\n{"b": {"c": "w"}}\n')
    files = benchmark_files([benchmarks, extra])
    index = BenchmarkIndex(files)
    everything = {(f, i): item for f, path in enumerate(files)
                  for i, item in enumerate(read_items(path))}
    assert fetch_items(index, set(everything)) == everything
    assert [everything[(3, i)].where for i in range(4)] == [
        "line 1, a", "line 1, b[0]", "line 1, b[1]", "line 4, b.c"]
    some = {k: v for k, v in everything.items() if k[1] % 2}
    assert fetch_items(index, set(some)) == some


def _random_text(rng: random.Random, words: list[str], chars: str) -> str:
    parts = []
    for _ in range(rng.randint(0, 14)):
        parts.append(rng.choice(words) if rng.random() < 0.5 else rng.choice(chars))
        parts.append(rng.choice([" ", " ", ", ", "", "。"]))
    return "".join(parts)


@pytest.mark.parametrize("seed", range(12))
def test_random_texts_match_brute_force(tmp_path, monkeypatch, seed):
    rng = random.Random(seed)
    # Items are hashed in batches, each keeping its first item per n-gram: small batches make
    # the first item of a file come from another batch than the ones after it.
    monkeypatch.setattr(contamination, "_CHUNK", rng.choice([1, 3, 10_000]))
    words, chars = ["Alpha", "beta", "GAMMA", "ｄｅｌｔａ", "café", "한국"], "天地人和水𠀀カ"
    n_words, n_chars = rng.choice([(2, 2), (3, 3), (1, 4), (4, 1)])
    items = [[_random_text(rng, words, chars) for _ in range(rng.randint(0, 30))]
             for _ in range(3)]
    files = [tmp_path / "a.jsonl", tmp_path / "b.json", tmp_path / "c.txt"]
    write_jsonl(files[0], [{"q": t} for t in items[0]])
    files[1].write_text(json.dumps(items[1], ensure_ascii=False), encoding="utf-8")
    # A plain-text line is stripped and blank lines are no items.
    items[2] = [t.strip() for t in items[2] if t.strip()]
    files[2].write_text("\n".join(items[2]) + "\n", encoding="utf-8")
    items[0] = [t for t in items[0] if t.strip()]
    items[1] = [t for t in items[1] if t.strip()]
    tasks = [{"instruction": _random_text(rng, words, chars), "input": rng.choice(
        ["", _random_text(rng, words, chars)]), "output": _random_text(rng, words, chars)}
        for _ in range(40)]
    index = BenchmarkIndex(files, (), n_words, n_chars)
    got = [(o.task, o.field, o.file, o.item, o.ngram) for o in find_overlaps(index, tasks)]
    assert got == brute_force(items, tasks, n_words, n_chars)
    assert got or seed not in (0, 1)  # the first seeds do overlap (the test has teeth)


def rows_of(run):
    return [json.loads(line) for line in (run / CONTAMINATION).read_text().splitlines()]


def test_decontaminate_run_writes_rows_and_replaces_those_of_the_same_files(tmp_path,
                                                                            benchmarks):
    run = write_run(tmp_path / "run", TASKS)
    meta = decontaminate_run(run, [benchmarks])
    rows = rows_of(run)
    ids = task_ids(json.loads(line) for line in (run / "instances.jsonl").open())
    assert [r["id"] for r in rows] == [ids[0], ids[1], ids[2], ids[3]]
    assert rows[0]["where"] == "line 2, question" and rows[0]["item_text"] == MOONS
    assert rows[0]["benchmark"] == str(benchmarks / "qa.jsonl") and rows[0]["item"] == 2
    assert (meta["tasks_checked"], meta["contaminated"]) == (len(TASKS), 4)
    poems = str(benchmarks / "zh" / "poems.json")
    assert meta["by_file"] == {str(benchmarks / "history.txt"): 1,
                               str(benchmarks / "qa.jsonl"): 2, poems: 1}
    # Again against one of the files with a larger n: that file's rows and check are
    # replaced, the other files' stay, and exports still leave their tasks out.
    again = decontaminate_run(run, [benchmarks / "zh"], n_chars=21)
    assert again["by_file"] == {poems: 0} and again["contaminated"] == 0
    assert again["benchmarks"] == sorted(meta["by_file"]) and again["flagged"] == 3
    assert [r for r in rows_of(run) if r["benchmark"] != poems] == \
        [r for r in rows if r["benchmark"] != poems]
    assert not any(r["benchmark"] == poems for r in rows_of(run))
    checks = json.loads((run / "contamination.json").read_text())["benchmarks"]
    assert checks[poems]["n_chars"] == 21 and checks[poems]["flagged"] == 0
    assert checks[str(benchmarks / "qa.jsonl")]["n_chars"] == 10
    assert not list(run.glob(".*.json*"))  # no temporary file left


def test_a_second_benchmark_adds_its_flags_to_the_first_ones(tmp_path, benchmarks):
    """The first benchmark's flagged tasks stay out of exports after a check against another
    (they used to come back), and `sigen stats` lists both benchmarks."""
    run = write_run(tmp_path / "run", TASKS)
    first = decontaminate_run(run, [benchmarks / "qa.jsonl"])
    second = decontaminate_run(run, [benchmarks / "history.txt"])
    assert (first["contaminated"], second["contaminated"], second["flagged"]) == (2, 1, 3)
    export = run / "export.jsonl"
    assert sigen("export", str(run), "-f", "jsonl", "--no-card", timeout=120).returncode == 0
    kept = {(r["instruction"], r["input"]) for r in map(json.loads, export.open())}
    assert len(kept) == len(TASKS) - 3
    assert all(t[:2] not in kept for t in TASKS[:3])
    stats = summarize(run, warn=lambda _m: None)["contamination"]
    assert [(b["file"], b["tasks"]) for b in stats["benchmarks"]] == [
        (str(benchmarks / "qa.jsonl"), 2), (str(benchmarks / "history.txt"), 1)]
    assert (stats["contaminated"], stats["tasks_checked"]) == (3, len(TASKS))


def test_errors_are_clear(tmp_path, benchmarks):
    run = write_run(tmp_path / "run", TASKS)
    with pytest.raises(SigenError, match="no such file or folder"):
        decontaminate_run(run, [tmp_path / "missing.jsonl"])
    with pytest.raises(SigenError, match=r"no item has the field nope"):
        decontaminate_run(run, [benchmarks / "qa.jsonl"], fields=["nope"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"q": "fine"}\n{oops\n', encoding="utf-8")
    with pytest.raises(SigenError, match=r"bad.jsonl:2: not valid JSON"):
        decontaminate_run(run, [bad])


def test_cli_decontaminate(tmp_path, benchmarks):
    run = write_run(tmp_path / "run", TASKS)
    result = sigen("decontaminate", str(run), "--against", str(benchmarks / "qa.jsonl"),
                   "--against", str(benchmarks / "zh"), "--field", "question",
                   "--field", "答案", timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"{benchmarks / 'qa.jsonl'}: 3 items, 1 task" in result.stdout
    assert f"{benchmarks / 'zh' / 'poems.json'}: 3 items, 1 task" in result.stdout
    assert "2 of 9 tasks overlap a benchmark" in result.stdout
    assert (f"{run} is now checked against 2 benchmark files ({benchmarks / 'qa.jsonl'}, "
            f"{benchmarks / 'zh' / 'poems.json'}): 2 of 9 tasks overlap one") in result.stdout
