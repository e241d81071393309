"""Near-duplicate filter: exact (equal to brute force), ROUGE-compatible, CJK-aware."""

from __future__ import annotations

import json
import os
import random
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rapidfuzz.distance import Indel
from rouge_score import rouge_scorer

from selfinstruct_local.dedup import (
    POOL_SAMPLE,
    NearDupIndex,
    brute_force_dedup,
    dedup_jsonl,
    default_output_path,
    greedy_dedup,
    rouge_l,
)
from selfinstruct_local.errors import SigenError
from selfinstruct_local.prefix_index import TokenCoder
from selfinstruct_local.text import tokenize

SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
EN_VOCAB = [
    "add",
    "sort",
    "list",
    "file",
    "read",
    "write",
    "test",
    "data",
    "print",
    "the",
    "a",
    "of",
    "to",
    "in",
]
ZH_VOCAB = list("的一是了我不人在他有这个上们来到时大地为")
MIXED_VOCAB = EN_VOCAB[:7] + ZH_VOCAB[:7]
# DEDUP_EXAMPLES=2000 for a long bug hunt; the default keeps the file fast.
SETTINGS = settings(max_examples=int(os.environ.get("DEDUP_EXAMPLES", "40")), deadline=None)


def lcs(a: list[str], b: list[str]) -> int:
    """Textbook dynamic programme: the oracle's oracle."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def naive_dedup(texts: list[str], threshold: float, against: list[str] = ()) -> list[bool]:
    t = Fraction(str(threshold))
    pool = [tokenize(x) for x in against]
    kept = []
    for text in texts:
        toks = tokenize(text)
        keep = bool(toks) and all(
            not p or Fraction(2 * lcs(toks, p), len(toks) + len(p)) < t for p in pool
        )
        if keep:
            pool.append(toks)
        kept.append(keep)
    return kept


def exact_f(ca: str, cb: str) -> Fraction:
    """ROUGE-L F of two coded texts as a fraction (rapidfuzz's LCS: tested against ``lcs``)."""
    total = len(ca) + len(cb)
    return Fraction(total - Indel.distance(ca, cb), total) if ca and cb else Fraction(0)


def join(tokens: list[str]) -> str:
    return " ".join(tokens)


def variant(rng: random.Random, base: list[str], vocab: list[str]) -> list[str]:
    """A copy of ``base`` edited so that its ROUGE-L with it lands around 0.7."""
    kind = rng.randrange(5)
    out = list(base)
    if kind == 0:  # interleaved deletions
        step = rng.randint(2, 5)
        out = [t for i, t in enumerate(out) if i % step != step - 1]
    elif kind == 1:  # interleaved insertions
        step = rng.randint(2, 5)
        out = [
            t
            for i, tok in enumerate(out)
            for t in ([tok, rng.choice(vocab)] if i % step == 0 else [tok])
        ]
    elif kind == 2:  # repeated tokens
        out = [t for tok in out for t in ([tok, tok] if rng.random() < 0.3 else [tok])]
    elif kind == 3 and len(out) > 1:  # reordered halves, uneven split
        cut = rng.randint(1, len(out) - 1)
        out = out[cut:] + out[:cut]
    else:  # substitutions
        out = [rng.choice(vocab) if rng.random() < 0.25 else t for t in out]
    return out


def near_threshold_texts(seed: int, vocab: list[str], n: int, sep: str = " ") -> list[str]:
    rng = random.Random(seed)
    bases = [[rng.choice(vocab) for _ in range(rng.randint(1, 14))] for _ in range(max(2, n // 6))]
    texts = []
    for _ in range(n):
        tokens = rng.choice(bases)
        for _ in range(rng.randint(0, 2)):
            tokens = variant(rng, tokens, vocab)
        texts.append(sep.join(tokens) if rng.random() > 0.03 else "。，")  # some empty ones
    return texts


# --- scores ---------------------------------------------------------------------------------


@SETTINGS
@given(
    st.lists(st.sampled_from(EN_VOCAB + ["X", "Y2"]), max_size=12),
    st.lists(st.sampled_from(EN_VOCAB + ["X", "Y2"]), max_size=12),
)
def test_rouge_l_equals_rouge_score_on_ascii(a: list[str], b: list[str]) -> None:
    expected = SCORER.score(join(a), join(b))["rougeL"].fmeasure
    assert rouge_l(join(a), join(b)) == pytest.approx(expected, abs=1e-12)


@SETTINGS
@given(
    st.lists(st.sampled_from("abcde"), max_size=15), st.lists(st.sampled_from("abcde"), max_size=15)
)
def test_rapidfuzz_lcs_equals_textbook_lcs(a: list[str], b: list[str]) -> None:
    coder = TokenCoder()
    assert exact_f(coder.encode(a), coder.encode(b)) == (
        Fraction(2 * lcs(a, b), len(a) + len(b)) if a and b else 0
    )


def test_rouge_l_examples() -> None:
    zh = "虽说有三姑娘帮着办理，他又是个没出阁的姑娘．"
    assert rouge_l(zh, zh) == 1.0
    assert rouge_l(zh, "虽说有三姑娘帮着办理") == pytest.approx(2 * 10 / (20 + 10))
    assert rouge_l("", "") == 0.0
    assert rouge_l("abc", "") == 0.0
    # rouge_score itself sees no tokens in Chinese; ours does.
    assert SCORER.score(zh, zh)["rougeL"].fmeasure == 0.0


def test_threshold_equality_is_rejected_and_just_below_is_kept() -> None:
    # m + n = 20 and LCS = 7: F = 14/20 = 0.7 exactly, which must be rejected.
    a = "a b c d e f g h i j"
    b = "a b c d e f g x y z"
    assert rouge_l(a, b) == pytest.approx(0.7)
    assert [d.kept for d in greedy_dedup([a, b])] == [True, False]
    assert brute_force_dedup([a, b]) == [True, False]
    # Just below: LCS 7 with m + n = 21 is 0.667; LCS 69 with m + n = 198 is 0.69697.
    assert [d.kept for d in greedy_dedup([a, b + " w"])] == [True, True]
    long_a = " ".join(f"w{i}" for i in range(99))
    long_b = " ".join([f"w{i}" for i in range(69)] + [f"v{i}" for i in range(30)])
    assert Fraction(2 * 69, 198) < Fraction(7, 10)
    assert [d.kept for d in greedy_dedup([long_a, long_b])] == [True, True]
    # Other exact ties: 3/4 at 0.75, 9/10 at 0.9, F = 1 at 1.0.
    assert [d.kept for d in greedy_dedup(["a b c d", "a b c x"], 0.75)] == [True, False]
    tenth = " ".join("abcdefghij")
    assert [d.kept for d in greedy_dedup([tenth, tenth[:-1] + "z"], 0.9)] == [True, False]
    assert [d.kept for d in greedy_dedup(["a b", "a b", "b a"], 1.0)] == [True, False, True]


def test_bad_threshold_is_a_sigen_error() -> None:
    for bad in (0, -0.1, 1.5, float("nan")):
        with pytest.raises(SigenError, match="threshold"):
            greedy_dedup(["a"], bad)


# --- the reference against a textbook LCS ----------------------------------------------------


@SETTINGS
@given(st.integers(0, 10**9), st.sampled_from([0.5, 0.7, 0.75, 0.9]))
def test_brute_force_equals_textbook_lcs(seed: int, threshold: float) -> None:
    texts = near_threshold_texts(seed, MIXED_VOCAB, 25)
    against = near_threshold_texts(seed + 1, MIXED_VOCAB, 4)
    assert brute_force_dedup(texts, threshold, against) == naive_dedup(texts, threshold, against)


# --- the index against the reference ---------------------------------------------------------


def assert_same_as_brute(texts: list[str], threshold: float, against: list[str] = ()) -> None:
    expected = brute_force_dedup(texts, threshold, against)
    decisions = greedy_dedup(texts, threshold, against)
    assert [d.kept for d in decisions] == expected
    pool = [*against, *texts]
    for d, text in zip(decisions, texts, strict=True):
        if d.reason == "near_duplicate":  # the reported match is real
            assert rouge_l(text, pool[d.match_id]) >= threshold - 1e-12
            assert d.match_id < len(against) or decisions[d.match_id - len(against)].kept
        elif d.reason == "empty":
            assert not tokenize(text)
    # The same through the streaming path: no primed order, epochs re-order as it grows.
    index = NearDupIndex(threshold)
    for text in against:
        index.add(text)
    assert [index.check_and_add(t).kept for t in texts] == expected


@SETTINGS
@given(st.integers(0, 10**9), st.sampled_from(["en", "zh", "mixed"]))
def test_index_equals_brute_force_near_threshold(seed: int, lang: str) -> None:
    vocab, sep = {"en": (EN_VOCAB, " "), "zh": (ZH_VOCAB, ""), "mixed": (MIXED_VOCAB, " ")}[lang]
    assert_same_as_brute(near_threshold_texts(seed, vocab, 150, sep), 0.7)


@SETTINGS
@given(
    st.lists(st.lists(st.sampled_from(MIXED_VOCAB[:6]), max_size=7).map(join), max_size=60),
    st.sampled_from([0.3, 0.5, 0.6, 0.7, 0.8, 1.0]),
)
def test_index_equals_brute_force_random(texts: list[str], threshold: float) -> None:
    assert_same_as_brute(texts, threshold)


@SETTINGS
@given(st.integers(0, 10**9), st.sampled_from([0.6, 0.7, 0.85]))
def test_index_equals_brute_force_with_against_pool(seed: int, threshold: float) -> None:
    texts = near_threshold_texts(seed, ZH_VOCAB, 80, "")
    against = near_threshold_texts(seed + 7, ZH_VOCAB, 30, "")
    assert_same_as_brute(texts, threshold, against)


def test_long_and_repetitive_texts() -> None:
    rng = random.Random(5)
    base = [rng.choice(ZH_VOCAB[:5]) for _ in range(60)]
    texts = ["".join(variant(rng, base, ZH_VOCAB[:5])) for _ in range(120)]
    texts += [" ".join(["the"] * k) for k in range(1, 40)]
    rng.shuffle(texts)
    assert_same_as_brute(texts, 0.7)


@SETTINGS
@given(st.integers(0, 10**9), st.sampled_from([0.5, 0.7, 0.8]))
def test_find_duplicate_is_exact_on_an_unconditional_pool(seed: int, threshold: float) -> None:
    pool = near_threshold_texts(seed, MIXED_VOCAB, 120)  # add() keeps near-duplicates too
    queries = near_threshold_texts(seed + 3, MIXED_VOCAB, 40)
    index = NearDupIndex(threshold)
    for text in pool:
        index.add(text)
    t = Fraction(str(threshold))
    coder = TokenCoder()
    coded_pool = [coder.encode(tokenize(p)) for p in pool]
    for query in queries:
        coded = coder.encode(tokenize(query))
        exists = any(exact_f(coded, p) >= t for p in coded_pool)
        hit = index.find_duplicate(query)
        assert (hit is not None) == exists
        if hit is not None:
            assert hit[1] == rouge_l(query, pool[hit[0]]) >= threshold


def test_texts_longer_than_the_length_field() -> None:
    # Lengths are stored clamped to 65535; longer texts must still be found.
    rng = random.Random(3)
    long = [rng.choice(EN_VOCAB) for _ in range(70_000)]
    texts = [join(long), join(long[:66_000]), join(long[5_000:]), "add sort"]
    assert [d.kept for d in greedy_dedup(texts)] == [True, False, False, True]
    index = NearDupIndex()
    index.add(texts[1])
    assert index.find_duplicate(texts[0]) is not None  # the item is the shorter one


def test_lsh_option_gives_the_same_result() -> None:
    texts = near_threshold_texts(11, MIXED_VOCAB, 300)
    plain = [d.kept for d in greedy_dedup(texts)]
    assert [d.kept for d in greedy_dedup(texts, use_lsh=True)] == plain == brute_force_dedup(texts)


# --- the index API ---------------------------------------------------------------------------


def test_primed_order_gives_the_same_result() -> None:
    texts = near_threshold_texts(4, ZH_VOCAB, 200, "")
    index = NearDupIndex()
    index.prime_order(texts[:50])  # a partial sample: unseen tokens just sort first
    assert [index.check_and_add(t).kept for t in texts] == brute_force_dedup(texts)


def test_index_api() -> None:
    index = NearDupIndex()
    assert len(index) == 0 and index.find_duplicate("anything") is None
    assert index.add("Sort a list of numbers.") == 0
    assert index.add("") == 1  # unconditional, even empty
    assert index.text(0) == "Sort a list of numbers." and len(index) == 2
    hit = index.find_duplicate("sort the list of numbers")
    assert hit is not None and hit[0] == 0 and hit[1] == pytest.approx(0.8)
    decision = index.check_and_add("Sort a list of numbers!")
    assert (decision.kept, decision.reason, decision.match_id) == (False, "near_duplicate", 0)
    assert decision.match_score == 1.0
    assert index.check_and_add("?!").reason == "empty"
    assert index.check_and_add("写一首关于春天的诗").kept
    assert index.find_duplicate("写一首关于春天的诗。") == (2, 1.0)
    assert len(index) == 3


@SETTINGS
@given(st.integers(0, 10**9), st.integers(1, 12))
def test_most_similar_is_exact_over_the_whole_pool(seed: int, k: int) -> None:
    texts = near_threshold_texts(seed, MIXED_VOCAB, 40)
    index = NearDupIndex()
    for text in texts:
        index.add(text)
    query = texts[seed % len(texts)] + " 的 add"
    top, mean = index.most_similar(query, k)
    scores = [rouge_l(query, t) for t in texts]
    expected = sorted(range(len(texts)), key=lambda i: (-scores[i], i))[:k]
    assert [i for i, _ in top] == expected
    assert [s for _, s in top] == pytest.approx([scores[i] for i in expected])
    assert mean == pytest.approx(sum(scores) / len(scores))


def test_most_similar_edge_cases() -> None:
    index = NearDupIndex()
    assert index.most_similar("x") == ([], 0.0)
    index.add("")
    index.add("a b")
    assert index.most_similar("", k=5) == ([(0, 0.0), (1, 0.0)], 0.0)
    assert index.most_similar("a b", k=1) == ([(1, 1.0)], 0.5)


@SETTINGS
@given(st.integers(0, 10**9), st.integers(1, 12))
def test_neighbours_equal_the_full_scan_on_a_small_pool(seed: int, k: int) -> None:
    texts = near_threshold_texts(seed, MIXED_VOCAB, 40)
    index = NearDupIndex()
    for text in texts:
        index.add(text)
    query = texts[seed % len(texts)] + " 的 add"
    top, mean = index.neighbours(query, k)
    exact_top, exact_mean = index.most_similar(query, k)
    assert [i for i, _ in top] == [i for i, _ in exact_top]
    assert mean == pytest.approx(exact_mean)
    own = seed % len(texts)
    top, _ = index.neighbours(texts[own], k, exclude=own)
    assert own not in [i for i, _ in top]


def test_neighbours_on_a_large_pool_find_every_item_above_the_threshold() -> None:
    rng = random.Random(5)
    words = [f"w{i}" for i in range(400)]
    texts = [" ".join(rng.choices(words, k=rng.randint(6, 14))) for _ in range(3000)]
    index = NearDupIndex()
    for text in texts:
        index.add(text)
    assert len(index) > POOL_SAMPLE
    for q in range(0, 3000, 150):
        query = texts[q].replace(texts[q].split()[0], "new", 1)
        above = {i for i, t in enumerate(texts) if rouge_l(query, t) >= 0.7}
        top, mean = index.neighbours(query, k=len(above) + 10)
        found = {i for i, _ in top}
        assert above <= found
        scores = [s for _, s in top]
        assert scores == sorted(scores, reverse=True)
        assert all(s == pytest.approx(rouge_l(query, texts[i])) for i, s in top)
        full_mean = sum(rouge_l(query, t) for t in texts) / len(texts)
        assert abs(mean - full_mean) < 0.05  # a uniform sample of POOL_SAMPLE items


# --- JSONL -----------------------------------------------------------------------------------


def test_dedup_jsonl_writes_kept_rows_unchanged_in_order(tmp_path) -> None:
    rows = [
        '{"id": 1, "instruction": "Sort a list of numbers."}\n',
        '{"instruction":"写一首关于春天的诗", "x": [1, 2]}\r\n',
        "\n",  # blank lines are skipped
        '{"id": 3, "instruction": "sort the list of numbers"}\n',
        # The same poem request with escapes and odd spacing: a duplicate, dropped.
        '{"id": 4,   "instruction": "\\u5199\\u4e00\\u9996\\u5173\\u4e8e\\u6625\\u5929'
        '\\u7684\\u8bd7"}\n',
        '{"id": 5, "instruction": "..."}\n',
        '{"id": 6, "instruction": "Translate to French: good morning"}',  # no final newline
    ]
    src = tmp_path / "in.jsonl"
    src.write_bytes("".join(rows).encode())
    counts = dedup_jsonl(src)
    out = default_output_path(src)
    assert out == tmp_path / "in.dedup.jsonl"
    assert out.read_bytes() == (rows[0] + rows[1] + rows[6]).encode()
    del counts["seconds"]
    assert counts == {"read": 6, "kept": 3, "rejected_near_duplicate": 2, "rejected_empty": 1}


def test_dedup_jsonl_against_a_pool(tmp_path) -> None:
    src, pool, out = tmp_path / "in.jsonl", tmp_path / "pool.jsonl", tmp_path / "out.jsonl"
    src.write_text('{"q": "sort a list"}\n{"q": "reverse a string"}\n')
    pool.write_text('{"instruction": "Sort a list!"}\n')
    counts = dedup_jsonl(src, out, field="q", against_path=pool, against_field="instruction")
    assert out.read_text() == '{"q": "reverse a string"}\n'
    assert counts["kept"] == 1 and counts["rejected_near_duplicate"] == 1


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json}", "not valid JSON"),
        ('{"text": "hi"}', 'no "instruction" field'),
        ('["instruction"]', "not an object"),
        ('{"instruction": 3}', "is number, not a string"),
        ('{"instruction": null}', "is null, not a string"),
    ],
)
def test_dedup_jsonl_bad_line_names_file_and_line(tmp_path, line: str, message: str) -> None:
    src = tmp_path / "bad.jsonl"
    src.write_text('{"instruction": "fine"}\n\n' + line + "\n")
    with pytest.raises(SigenError, match=message) as err:
        dedup_jsonl(src)
    assert f"{src}, line 3" in str(err.value)
    assert not default_output_path(src).exists()


def test_dedup_jsonl_missing_file_and_bad_output(tmp_path) -> None:
    with pytest.raises(SigenError, match="no such file"):
        dedup_jsonl(tmp_path / "absent.jsonl")
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"instruction": "x"}) + "\n")
    with pytest.raises(SigenError, match="overwrite the input"):
        dedup_jsonl(src, src)
    with pytest.raises(SigenError, match="no such file"):
        dedup_jsonl(src, tmp_path / "o.jsonl", against_path=tmp_path / "nope.jsonl")
    assert str(default_output_path("runs/data")) == "runs/data.dedup.jsonl"
    assert str(default_output_path("a.b/x.json")) == "a.b/x.dedup.json"
