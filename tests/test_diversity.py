"""The diversity figures of `sigen stats`: verb-object pairs of real instructions (the seed sets),
distinct n-grams, nearest neighbours, PCA and k-means against brute force, diversity.json and
`sigen stats --compare`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from selfinstruct_local import vector_stats
from selfinstruct_local.diversity import (
    distinct_ngrams,
    format_comparison,
    measure,
    save_figures,
    stored_embeddings,
)
from selfinstruct_local.errors import SigenError
from selfinstruct_local.runstore import DIVERSITY, check_output_dir, load_run
from selfinstruct_local.semantic_rows import EMBEDDINGS, embedding_row
from selfinstruct_local.vector_stats import (
    cluster_count,
    kmeans,
    nearest_neighbour_similarities,
    pca_2d,
)
from selfinstruct_local.verb_object import top_verb_objects, uses_jieba, verb_object
from tests.conftest import REPO, sigen

SEEDS = REPO / "seeds"

# Instructions of seeds/en_seed_tasks.jsonl with the pair a reader takes from them.
ENGLISH = [
    ("Identify the people and the organizations named in this news snippet.",
     ("identify", "people")),
    ("Explain inflation to a high school student using an everyday example.",
     ("explain", "inflation")),
    ("Convert the contact details below into a JSON object with sensible keys.",
     ("convert", "detail")),
    ("Add a clear docstring to this Python function.", ("add", "docstring")),
    ("Give five practical tips for someone who keeps waking up at 3 a.m. and can't get back to "
     "sleep.", ("give", "tip")),
    ("Suggest a one-day itinerary for a first-time visitor to Kyoto who loves temples and "
     "street food.", ("suggest", "itinerary")),
    ("Write the opening paragraph of a mystery story set in a remote lighthouse.",
     ("write", "paragraph")),
    ("Design a beginner 20-minute bodyweight workout that needs no equipment.",
     ("design", "workout")),
    ("Change this CSV data into a JSON array, using proper number and boolean types.",
     ("change", "data")),
    # Sentence-initial imperatives the tagger calls nouns or adjectives.
    ("List six questions a candidate could ask at the end of an interview for a data analyst "
     "role.", ("list", "question")),
    ("Sort these cities alphabetically and number them.", ("sort", "city")),
    ("Correct the spelling and grammar mistakes in the text below.", ("correct", "spelling")),
    # Particles, coordinated verbs, an indirect object, an opening phrase, a later sentence.
    ("Pull out each ingredient and its quantity from the recipe below as a bulleted list.",
     ("pull", "ingredient")),
    ("Come up with six blog post titles for a website about budget travel in Southeast Asia.",
     ("come", "title")),
    ("Work out the answer to this logic puzzle and explain how you reached it.",
     ("work", "answer")),
    ("Find and fix the bug in this Python function.", ("find", "bug")),
    ("How should I ask my manager for a raise? Give me a short script I can adapt.",
     ("give", "script")),
    ("Using these details, compose a strong opening paragraph for a cover letter.",
     ("compose", "paragraph")),
    ("How much paint do I need for this job? Explain your calculation.",
     ("explain", "calculation")),
    ("My chat message to my manager sounds too casual. Can you polish it?", ("polish", None)),
    # A verb whose object is a clause, and questions without an imperative.
    ("Describe how compound interest works, with a short numerical example.",
     ("describe", None)),
    ("Given a premise and a hypothesis, say whether the hypothesis is entailed, contradicted, "
     "or neutral.", ("say", None)),
    ("What number comes next in the sequence, and what is the rule?", (None, None)),
    ("Is this sentence declarative, interrogative, imperative, or exclamatory?", (None, None)),
    ("Which git command undoes my last commit but keeps the changes staged?", (None, None)),
]
# Instructions the packaged SmolLM2-135M wrote in a real run (sigen run -n 20).
ENGLISH_GENERATED = [
    ("Remove duplicates from a list.", ("remove", "duplicate")),  # tagged a verb (VBZ)
    ("Write a funny meme about the latest smartphone feature.", ("write", "meme")),  # unknown
    ("Reverse the order of a list.", ("reverse", "order")),
    ("Find the top 5 songs on the album.", ("find", "song")),
    ("Does the text mention a company? Answer yes or no.", ("answer", None)),
    ("How to bake a cake using a mixer.", (None, None)),
]
# Openers the seed set lacks.
ENGLISH_OPENERS = [
    ("Please summarize the following article.", ("summarize", "article")),
    ("I want you to write a short poem about autumn.", ("write", "poem")),
    ("Let's plan a weekend trip to the mountains.", ("plan", "trip")),
    ("Kindly, rewrite the email below.", ("rewrite", "email")),
    ("Can you explain how photosynthesis works?", ("explain", None)),
]
# Instructions of seeds/zh_seed_tasks.jsonl.
CHINESE = [
    ("为社区图书馆想三条宣传标语，要求简短好记。", ("想", "标语")),
    ("回答下面的单项选择题，只输出正确选项的字母。", ("回答", "选择题")),
    ("把这段话压缩到五十字以内，保留核心信息。", ("压缩", "这段话")),
    ("《红楼梦》里的王熙凤是个什么样的人？请分析她的性格。", ("分析", "性格")),
    ("我忘了好朋友的生日，帮我写一条真诚的道歉消息。", ("写", "消息")),
    ("列举五个适合周末在家和孩子一起做的活动。", ("列举", "活动")),
    ("用浅显的语言给小学生讲讲“卧薪尝胆”的故事。", ("讲讲", "故事")),
    ("把下面这段文言文翻译成现代汉语。", ("翻译", "文言文")),
    ("请将下面的中文句子翻译成英文。", ("翻译", "句子")),
    ("以“秋夜”为题，写一首五言绝句。", ("写", "五言绝句")),
    ("给一家新开的奶茶店起五个名字，风格清新一点。", ("起", "名字")),
    ("写一首描写城市清晨的现代短诗。", ("写", "短诗")),
    ("为一个从来不运动的上班族制定一周入门健身计划。", ("制定", "计划")),
    ("给一位即将退休的中学老师写一段祝福语。", ("写", "祝福语")),
    ("根据下面的个人信息，帮我写一段一分钟左右的面试自我介绍。", ("写", "自我介绍")),
    ("帮我写一封请假邮件给部门经理，请两天事假。", ("写", "邮件")),
    ("从下面这段文字中提取三个关键词。", ("提取", "关键词")),
    ("这两句诗是谁写的？诗人是哪个朝代的？", (None, None)),
    ("新手养绿萝需要注意哪些事项？", (None, None)),
    ("地球上为什么会有四季变化？", (None, None)),
]


def _seed_instructions(lang: str) -> set[str]:
    path = SEEDS / f"{lang}_seed_tasks.jsonl"
    return {json.loads(line)["instruction"] for line in path.read_text(encoding="utf-8")
            .splitlines()}


@pytest.mark.parametrize(("instruction", "expected"),
                         ENGLISH + ENGLISH_GENERATED + ENGLISH_OPENERS + CHINESE)
def test_verb_object_of_real_instructions(instruction, expected):
    assert verb_object(instruction) == expected


def test_the_examples_are_the_seed_sets_own():
    assert {text for text, _ in ENGLISH} <= _seed_instructions("en")
    assert {text for text, _ in CHINESE} <= _seed_instructions("zh")


def test_most_seed_instructions_have_a_verb():
    # A floor, measured on the seed sets (113 of 141 English, 92 of 124 Chinese): a change that
    # loses the imperative of many instructions shows here.
    for lang, floor in (("en", 0.75), ("zh", 0.70)):
        texts = sorted(_seed_instructions(lang))
        found = sum(verb_object(text)[0] is not None for text in texts)
        assert found >= floor * len(texts), (lang, found, len(texts))


def test_language_is_read_from_the_text():
    assert uses_jieba("请写一首关于春天的诗。") and uses_jieba("写 Python 代码")
    assert not uses_jieba("Translate 你好 into English") and not uses_jieba("Write a poem.")
    assert verb_object("") == (None, None) and verb_object("...") == (None, None)


def test_top_verb_objects_counts_and_breaks_ties_alphabetically():
    pairs = [("write", "poem"), ("write", "story"), ("write", "poem"), ("write", None),
             ("give", "tip"), ("add", None), (None, None), ("give", "example")]
    assert top_verb_objects(pairs, verbs=2, objects=1) == [
        {"verb": "write", "count": 4, "objects": [{"object": "poem", "count": 2}]},
        {"verb": "give", "count": 2, "objects": [{"object": "example", "count": 1}]},
    ]


def test_jieba_is_quiet_and_caches_beside_sigen_models(tmp_path):
    cache, temporary = tmp_path / "cache", tmp_path / "tmp"
    temporary.mkdir()
    code = ("from selfinstruct_local.verb_object import verb_object; "
            "print(verb_object('请写一首关于春天的诗。'))")
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "TMPDIR": str(temporary)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, cwd=REPO, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "('写', '诗')" and result.stderr == ""
    assert (cache / "selfinstruct-local" / "jieba" / "jieba.cache").stat().st_size > 1_000_000
    assert not list(temporary.iterdir())


def test_distinct_ngrams_count_cjk_characters_and_words():
    texts = ["Write a poem.", "Write a story.", "写一首诗"]
    # Tokens: write a poem / write a story / 写 一 首 诗 -> 10 unigrams, 8 distinct.
    assert distinct_ngrams(texts, 1) == {"distinct": 8, "total": 10, "ratio": 0.8}
    # (write a) twice, (a poem), (a story), (写 一), (一 首), (首 诗): 6 distinct of 7.
    assert distinct_ngrams(texts, 2) == {"distinct": 6, "total": 7, "ratio": 0.8571}
    assert distinct_ngrams(["Hi."], 3) == {"distinct": 0, "total": 0, "ratio": None}


# -- vectors ---------------------------------------------------------------------------------


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def _blobs(n_per: int, k: int, dim: int = 32, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim)) * 4
    return _unit(np.vstack([c + rng.normal(size=(n_per, dim)) * 0.3 for c in centres]))


def test_nearest_neighbours_match_brute_force():
    vectors = _unit(np.random.default_rng(0).normal(size=(300, 16)))
    nn = nearest_neighbour_similarities(vectors)
    brute = vectors.astype(np.float64) @ vectors.T.astype(np.float64)
    np.fill_diagonal(brute, -np.inf)
    assert nn.exact and np.allclose(nn.similarities, brute.max(axis=1), atol=1e-5)
    duplicate = np.vstack([vectors[:3], vectors[:1]])  # an item and its copy: cosine 1
    assert nearest_neighbour_similarities(duplicate).similarities[0] == pytest.approx(1.0)
    assert len(nearest_neighbour_similarities(vectors[:1]).similarities) == 0


def test_past_the_exact_limit_a_sample_is_measured_against_all(monkeypatch):
    monkeypatch.setattr(vector_stats, "NN_EXACT_LIMIT", 100)
    monkeypatch.setattr(vector_stats, "NN_SAMPLE", 40)
    vectors = _unit(np.random.default_rng(1).normal(size=(250, 8)))
    nn = nearest_neighbour_similarities(vectors)
    brute = vectors.astype(np.float64) @ vectors.T.astype(np.float64)
    np.fill_diagonal(brute, -np.inf)
    best = brute.max(axis=1)
    assert not nn.exact and len(nn.similarities) == 40
    # Each sampled value is some item's exact nearest-neighbour cosine.
    assert all(np.isclose(best, value, atol=1e-5).any() for value in nn.similarities)


def test_pca_finds_the_plane_the_points_lie_in():
    rng = np.random.default_rng(2)
    plane = rng.normal(size=(500, 2)) * [5.0, 1.0]
    basis = np.linalg.qr(rng.normal(size=(10, 2)))[0]  # two orthonormal directions in 10-D
    projection = pca_2d(plane @ basis.T)
    assert projection.explained[0] > 0.9 and sum(projection.explained) == pytest.approx(1.0)
    # The first axis carries the spread of the first coordinate (up to sign, fixed by pca_2d).
    assert abs(np.corrcoef(projection.points[:, 0], plane[:, 0])[0, 1]) > 0.999
    assert np.array_equal(pca_2d(plane @ basis.T).points, projection.points)


def test_kmeans_recovers_separated_clusters_numbered_by_size():
    vectors = np.vstack([_blobs(30, 1, seed=4), _blobs(12, 1, seed=5), _blobs(20, 1, seed=6)])
    clusters = kmeans(vectors, 3)
    assert clusters.sizes == [30, 20, 12]
    assert set(clusters.labels[:30]) == {0} and set(clusters.labels[30:42]) == {2}
    assert [clusters.labels[c] for c in clusters.centres] == [0, 1, 2]
    assert np.array_equal(kmeans(vectors, 3).labels, clusters.labels)  # seeded


def test_cluster_count_follows_the_pool_size():
    assert [cluster_count(n) for n in (5, 6, 20, 200, 1_000_000)] == [0, 2, 3, 10, 20]


# -- runs ------------------------------------------------------------------------------------


def _make_run(root: Path, instructions: list[str], lang: str = "en") -> Path:
    root.mkdir(parents=True)
    rows = [{"id": f"mi-{i:06d}", "instruction": text, "is_classification": False, "round": 1,
             "num_instances": 1, "most_similar": [], "avg_similarity": 0.1,
             "max_similarity": 0.2} for i, text in enumerate(instructions)]
    instances = [{"instruction_id": r["id"], "instruction": r["instruction"], "input": "",
                  "output": "ok"} for r in rows]
    for name, data in (("machine_instructions.jsonl", rows), ("instances.jsonl", instances),
                       ("rejected.jsonl", [])):
        (root / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n"
                                         for r in data), encoding="utf-8")
    (root / "manifest.json").write_text(json.dumps({
        "status": "finished", "config": {"method": "self-instruct", "lang": lang,
                                         "num_instructions": len(rows)},
        "counts": {"accepted": len(rows), "instances": len(rows)}}), encoding="utf-8")
    return root


def _write_embeddings(root: Path, vectors: np.ndarray, skip: int = 0) -> None:
    ids = [json.loads(line)["id"] for line in
           (root / "machine_instructions.jsonl").read_text().splitlines()]
    rows = [embedding_row(i, v) for i, v in zip(ids, vectors, strict=True)][skip:]
    rows.append(embedding_row("seed-1", vectors[0]))  # a pool item that is not an instruction
    (root / EMBEDDINGS).write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def seed_run(tmp_path):
    return _make_run(tmp_path / "en", [text for text, _ in ENGLISH])


def test_stored_embeddings_give_the_embedding_figures(seed_run):
    vectors = _blobs(5, 5)  # 25 instructions, 5 groups
    _write_embeddings(seed_run, vectors)
    run = load_run(seed_run)
    stored = stored_embeddings(run)
    assert stored.source == EMBEDDINGS and stored.rows == list(range(25))
    assert np.array_equal(stored.vectors, vectors)
    figures = measure(run, stored).figures
    e = figures["embeddings"]
    assert (e["vectors"], e["dim"], e["clusters"]["k"]) == (25, 32, 4)
    assert sum(e["clusters"]["sizes"]) == 25 and e["nearest_neighbour"]["exact"]
    assert e["nearest_neighbour"]["max"] <= 1.0
    # explain and give twice each: explain first, alphabetically.
    assert figures["verb_object"]["top"][:2] == [
        {"verb": "explain", "count": 2, "objects": [{"object": "calculation", "count": 1},
                                                    {"object": "inflation", "count": 1}]},
        {"verb": "give", "count": 2, "objects": [{"object": "script", "count": 1},
                                                 {"object": "tip", "count": 1}]}]


def test_instructions_without_a_stored_vector_are_left_out_with_a_note(seed_run):
    _write_embeddings(seed_run, _blobs(5, 5), skip=3)
    notes: list[str] = []
    stored = stored_embeddings(load_run(seed_run), notes.append)
    assert stored.rows == list(range(3, 25))
    assert "3 of 25 instructions have no vector" in notes[0]


def test_a_damaged_stored_vector_is_named(seed_run):
    _write_embeddings(seed_run, _blobs(5, 5))
    lines = (seed_run / EMBEDDINGS).read_text().splitlines()
    lines[2] = json.dumps({"id": "mi-000002", "vector": "AAAAAAAAAAA="})  # zeros
    (seed_run / EMBEDDINGS).write_text("\n".join(lines) + "\n")
    with pytest.raises(SigenError, match="vector of 'mi-000002' is damaged.*--embed-model"):
        stored_embeddings(load_run(seed_run))


def test_stats_writes_the_chinese_chart_and_figures(tmp_path):
    root = _make_run(tmp_path / "zh", [text for text, _ in CHINESE], lang="zh")
    result = sigen("stats", str(root), timeout=180)
    assert result.returncode == 0, result.stderr
    assert "写" in result.stdout and "祝福语 1" in result.stdout
    assert (root / "report-verb-object.png").read_bytes()[:4] == b"\x89PNG"
    figures = json.loads((root / DIVERSITY).read_text(encoding="utf-8"))
    assert figures["verb_object"]["top"][0]["verb"] == "写"
    assert figures["verb_object"]["taggers"][0].startswith("jieba 0.42.1")
    assert figures["embeddings"] is None
    report = (root / "report.md").read_text(encoding="utf-8")
    assert "![The most common verbs" in report and "--embed-model NAME" in report
    assert not (root / "report-embedding-map.png").exists()
    check_output_dir(root)  # a resume takes diversity.json for the run's own


def test_compare_prints_two_runs_side_by_side(tmp_path, seed_run):
    other = _make_run(tmp_path / "other", ["Write a poem about the sea.",
                                           "Write a poem about the moon.", "List three fruits."])
    _write_embeddings(seed_run, _blobs(5, 5))
    run = load_run(seed_run)
    save_figures(run, measure(run, stored_embeddings(run)).figures)  # as `sigen stats` does
    written = (seed_run / DIVERSITY).read_bytes()
    result = sigen("stats", "--compare", str(seed_run), str(other), timeout=180)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == [str(seed_run), str(other)]
    assert lines[1].split() == ["instructions", "25", "3"]
    assert "write, list" in result.stdout  # the other run's top verbs
    assert "without vectors for both runs" in result.stdout
    assert (seed_run / DIVERSITY).read_bytes() == written  # read, not measured again
    assert f"measured {other}" in result.stderr and (other / DIVERSITY).exists()


@pytest.mark.parametrize("args", [[], ["RUN", "--compare", "RUN", "RUN"]])
def test_stats_wants_one_run_or_two_to_compare(seed_run, args):
    from typer.testing import CliRunner

    from selfinstruct_local.cli import app

    result = CliRunner().invoke(app, ["stats", *(str(seed_run) if a == "RUN" else a
                                                 for a in args)])
    assert isinstance(result.exception, SigenError)
    assert "--compare RUN_A RUN_B" in str(result.exception)


def test_compare_warns_when_the_vectors_come_from_different_models():
    def figures(model: str, mean: float) -> dict:
        return {"run_dir": model, "instructions": 4,
                "distinct": {f"distinct_{n}": {"ratio": 0.5} for n in (1, 2, 3)},
                "verb_object": {"with_verb": 2, "distinct_verbs": 2, "distinct_pairs": 1,
                                "top": [{"verb": "write"}]},
                "embeddings": {"model": model, "nearest_neighbour": {"mean": mean,
                                                                     "median": mean,
                                                                     "exact": True},
                               "clusters": None}}

    text = format_comparison(figures("bge-m3", 0.81), figures("gte-base", 0.9))
    assert "different models (bge-m3, gte-base)" in text and "0.810" in text


@pytest.mark.engine
def test_stats_embeds_with_the_packaged_model(seed_run):
    result = sigen("stats", str(seed_run), "--embed-model", "smollm2-135m", timeout=600)
    assert result.returncode == 0, result.stderr
    assert "Embeddings (smollm2-135m, --embed-model)" in result.stdout
    assert "embedding 25 instructions with smollm2-135m" in result.stderr
    e = json.loads((seed_run / DIVERSITY).read_text())["embeddings"]
    assert (e["model"], e["vectors"], e["dim"], e["clusters"]["k"]) == ("smollm2-135m", 25,
                                                                         576, 4)
    assert 0 < e["nearest_neighbour"]["mean"] < 1 and e["nearest_neighbour"]["exact"]
    for name in ("report-embedding-map.png", "report-nearest-neighbour.png"):
        assert (seed_run / name).read_bytes()[:4] == b"\x89PNG"


def test_the_report_extra_brings_a_cjk_font():
    from selfinstruct_local.diversity_plots import cjk_font, font_note

    assert cjk_font() is not None  # a system font, or Noto Sans CJK of noto-cjk-sans-otc
    assert font_note({"verb_object": {"top": [{"verb": "写", "objects": []}]}}) is None


def test_without_a_cjk_font_the_chart_is_numbered_and_the_report_says_why(tmp_path, monkeypatch):
    from selfinstruct_local import diversity_plots
    from selfinstruct_local.report import write_report

    root = _make_run(tmp_path / "zh", [text for text, _ in CHINESE[:6]], lang="zh")
    monkeypatch.setattr(diversity_plots, "cjk_font", lambda: None)  # a machine without one
    top = [{"verb": "写", "count": 3, "objects": [{"object": "诗", "count": 2}]},
           {"verb": "分析", "count": 1, "objects": [{"object": "性格", "count": 1}]}]
    # The pale rest of 写's ring (its third instruction has no object) has no label.
    assert diversity_plots.wedge_labels(top, numbered=True) == (["1", "2"], ["1.1", "", "2.1"])
    assert diversity_plots.wedge_labels(top, numbered=False) == (["写", "分析"],
                                                                 ["诗", "", "性格"])
    report = write_report(root).read_text(encoding="utf-8")
    assert "no font with Chinese glyphs was found" in report
    assert (root / "report-verb-object.png").read_bytes()[:4] == b"\x89PNG"
