"""--chapters: parsing the ranges, selecting passages by chapter, drawing from the selection,
and what a run records of it for a resume. On the test corpus and on 《红楼梦》 itself."""

import re
from pathlib import Path

import pytest

from selfinstruct_local.corpus import (
    PassageSampler,
    corpus_changes,
    corpus_record,
    format_chapters,
    load_corpus,
    parse_chapters,
    select_chapters,
)
from selfinstruct_local.errors import SigenError

FIXTURES = Path(__file__).parent / "fixtures"
SHITOU = FIXTURES / "corpus_zh" / "shitou.txt"  # four chapters, 第一回 .. 第四回
HONGLOUMENG = Path(__file__).resolve().parents[1].parent / "shared/corpora/hongloumeng.txt"


@pytest.mark.parametrize(("spec", "ranges"), [
    ("81-120", [(81, 120)]),
    ("1-5,81-120", [(1, 5), (81, 120)]),
    ("7", [(7, 7)]),
    (" 81 - 120 , 1-5 ", [(1, 5), (81, 120)]),  # sorted
    ("８１－１２０，７", [(7, 7), (81, 120)]),  # full-width, as a Chinese input method types it
    ("81~120、3", [(3, 3), (81, 120)]),
    ("81–120", [(81, 120)]),  # en dash
    ("81-100,101-120", [(81, 120)]),  # adjacent ranges join
    ("1-10,5-8,9", [(1, 10)]),  # overlapping ones too
    ("3,3", [(3, 3)]),
])
def test_parse_chapters(spec, ranges):
    assert parse_chapters(spec) == ranges


def test_format_chapters_is_the_canonical_spelling():
    assert format_chapters([(1, 5), (7, 7), (81, 120)]) == "1-5,7,81-120"
    # Two spellings of one selection record the same way, so a resume compares them equal.
    assert format_chapters(parse_chapters("81 - 100, 101-120")) == \
        format_chapters(parse_chapters("81-120"))


@pytest.mark.parametrize(("spec", "message"), [
    ("", "--chapters is empty"),
    ("  ", "--chapters is empty"),
    ("81-", "'81-' is not a chapter number or range"),
    ("a-b", "'a-b' is not a chapter number or range"),
    ("1-5,,7", "'' is not a chapter number or range"),
    ("81--120", "is not a chapter number or range"),
    ("第八十一回", "is not a chapter number or range"),
    ("0-3", "numbered from 1"),
    ("120-81", "the range 120-81 is backwards; write 81-120"),
])
def test_bad_chapter_specs_say_the_expected_form(spec, message):
    with pytest.raises(SigenError, match=re.escape(message)) as caught:
        parse_chapters(spec)
    if "not a chapter" in message or "empty" in message:
        assert "a range (81-120)" in str(caught.value)
        assert "(1-5,81-120)" in str(caught.value)


def test_select_chapters_on_the_test_corpus():
    passages = load_corpus(SHITOU, max_chars=120)
    by_chapter = {i: [p for p in passages if p.chapter_index == i] for i in (1, 2, 3, 4)}
    assert all(by_chapter.values())  # each chapter has passages at this size
    assert [by_chapter[i][0].chapter.split()[0] for i in (1, 2, 3, 4)] == \
        ["第一回", "第二回", "第三回", "第四回"]
    assert select_chapters(passages, [(2, 3)]) == by_chapter[2] + by_chapter[3]
    assert select_chapters(passages, parse_chapters("4,1")) == by_chapter[1] + by_chapter[4]
    # A range reaching past the end is fine while part of it has passages.
    assert select_chapters(passages, [(3, 9)]) == by_chapter[3] + by_chapter[4]


def test_a_range_without_passages_says_which_chapters_there_are():
    passages = load_corpus(SHITOU, max_chars=120)
    with pytest.raises(SigenError) as caught:
        select_chapters(passages, parse_chapters("2,5-9"))
    assert str(caught.value) == ("--chapters 2,5-9: the corpus has no passage in chapter 5-9; "
                                 "it has 4 chapters (1-4)")
    with pytest.raises(SigenError, match="no passage in chapter 6; it has 4 chapters"):
        select_chapters(passages, [(6, 6)])


def test_a_corpus_without_headings_is_an_error(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("一段没有回目的文字。\n\n又一段没有回目的文字。\n", encoding="utf-8")
    passages = load_corpus(plain)
    assert {p.chapter_index for p in passages} == {0}
    with pytest.raises(SigenError, match="no chapter headings .*0 chapters found"):
        select_chapters(passages, [(1, 3)])


def test_a_folder_numbers_chapters_within_each_file(tmp_path):
    (tmp_path / "a.txt").write_text("第一回 甲\n\n甲一的正文。\n第二回 乙\n\n甲二的正文。\n",
                                    encoding="utf-8")
    (tmp_path / "b.txt").write_text(
        "第一回 丙\n\n乙一的正文。\n第二回 丁\n\n乙二的正文。\n第三回 戊\n\n乙三的正文。\n",
        encoding="utf-8")
    passages = load_corpus(tmp_path)
    assert [p.text for p in select_chapters(passages, [(2, 3)])] == \
        ["甲二的正文。", "乙二的正文。", "乙三的正文。"]
    with pytest.raises(SigenError) as caught:
        select_chapters(passages, [(4, 4)])
    assert str(caught.value).endswith("it has 5 chapters in 2 files, numbered within each file "
                                      "(1-3)")


def test_the_sampler_covers_the_selection_before_repeating_and_resumes():
    passages = load_corpus(SHITOU, max_chars=60)
    chosen = select_chapters(passages, [(2, 3)])
    assert len(chosen) >= 4
    ids = sorted(p.id for p in chosen)
    sampler = PassageSampler(chosen, seed=3)
    first = sampler.draw(len(chosen) - 1)
    state = sampler.state()
    # A resume from the saved state continues the same draw: no passage of the range is
    # drawn twice before every one of them was drawn once, across the resume too.
    resumed = PassageSampler.from_state(chosen, state)
    second = resumed.draw(len(chosen) + 1)
    assert sorted(p.id for p in first + second[:1]) == ids
    assert sorted(p.id for p in second[1:]) == ids
    assert first + second == PassageSampler(chosen, seed=3).draw(2 * len(chosen))
    assert {p.chapter_index for p in first + second} == {2, 3}
    # The state belongs to the selection: resuming it on other chapters is refused.
    with pytest.raises(SigenError, match="corpus changed"):
        PassageSampler.from_state(select_chapters(passages, [(1, 3)]), state)


def test_the_run_record_includes_the_chapters():
    passages = load_corpus(SHITOU, max_chars=120)
    whole = corpus_record(SHITOU, passages)
    late = corpus_record(SHITOU, passages, parse_chapters("3-4"))
    assert "chapters" not in whole and late["chapters"] == "3-4"
    assert late["fingerprint"] == whole["fingerprint"]  # the corpus itself is the same
    assert corpus_changes(late, corpus_record(SHITOU, passages, parse_chapters("3,4"))) == []
    assert corpus_changes(late, corpus_record(SHITOU, passages, [(1, 2)])) == \
        ["--chapters 1-2 instead of 3-4"]
    assert corpus_changes(whole, late) == ["--chapters 3-4 instead of all chapters"]
    assert corpus_changes(late, whole) == ["--chapters not given (all chapters) instead of 3-4"]
    # A changed corpus and changed chapters are both named.
    shorter = corpus_record(SHITOU, passages[:-1], [(1, 2)])
    assert corpus_changes(late, shorter) == [
        "--chapters 1-2 instead of 3-4",
        f"the same files now make {len(passages) - 1} passages, not {len(passages)}"]


def zh_number(numeral: str) -> int:
    """A chapter numeral as the novel writes it: 八十一, 一百, or digit by digit, 一一九."""
    digits = {c: i for i, c in enumerate("零一二三四五六七八九")}
    if "十" not in numeral and "百" not in numeral:
        return int("".join(str(digits[c]) for c in numeral))
    total, current = 0, 0
    for c in numeral:
        if c in digits:
            current = digits[c]
        else:
            total += max(current, 1) * {"十": 10, "百": 100}[c]
            current = 0
    return total + current


@pytest.mark.skipif(not HONGLOUMENG.is_file(), reason="needs ../shared/corpora/hongloumeng.txt")
def test_hongloumeng_chapters_81_to_120():
    passages = load_corpus(HONGLOUMENG)
    late = select_chapters(passages, parse_chapters("81-120"))
    # 第八十一回 is chapter 81: the title line before 第一回 is not counted as a chapter.
    assert late[0].chapter.startswith("第八十一回 ") and late[0].chapter_index == 81
    assert late[-1].chapter.startswith("第一二零回 ") and late[-1].chapter_index == 120
    # Every heading's own number is its chapter index (第八十回 80, 第一零零回 100, ...).
    titles = {p.chapter_index: p.chapter.split()[0] for p in passages}
    assert {i: zh_number(t[1:-1]) for i, t in titles.items()} == {i: i for i in range(1, 121)}
    assert late == [p for p in passages if p.chapter_index >= 81]
    assert 0 < len(late) < len(passages)
    assert [p.chapter_index for p in select_chapters(passages, [(7, 7)])][0] == 7
    with pytest.raises(SigenError) as caught:
        select_chapters(passages, parse_chapters("121-130"))
    assert str(caught.value).endswith("it has 120 chapters (1-120)")
