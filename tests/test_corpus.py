"""Corpus loading: decoding, chapter and paragraph structure, passage bounds, the sampler."""

import codecs
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selfinstruct_local.corpus import PassageSampler, heading, load_corpus
from selfinstruct_local.errors import SigenError

HONGLOUMENG = Path(__file__).resolve().parents[1].parent / "shared/corpora/hongloumeng.txt"

LONG_PARAGRAPH = (
    "庙里有个老僧，正在灯下读经。老僧见他浑身湿透，便请他坐下烤火。"
    "两人说起山中旧事，一直谈到深夜。石生问老僧为何独居于此？老僧笑而不答，只说：“明日自知。”"
)
TALE = (
    "《石头小记》 无名氏\n\n\n"
    "第一回  山中遇雨\u3000林下访僧\n\n"
    "\u3000\u3000那日天色阴沉，石生独自上山采药。\n\n"
    "\u3000\u3000行到半山，忽然下起雨来。他只得躲进一座破庙。\n\n"
    f"\u3000\u3000{LONG_PARAGRAPH}\n\n"
    "第二回\u3000石生下山\u3000老僧赠书\n"
    "天亮了。石生醒来，老僧已经不见。\n"
    "桌上留着一本旧书，封面上写着\n"  # a hard wrap: no sentence end, so the next line continues
    "四个大字：石头小记。\n"
    "\u3000\u3000第二回中说过的那本书，就是这一本。\n"  # prose that starts like a heading
    "第十回 尾声\n\n"
    "\u3000\u3000后来石生再也没有见过那位老僧。\n"
)


def write(path: Path, text: str, encoding: str = "utf-8", newline: str = "\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.replace("\n", newline).encode(encoding))
    return path


def strip_space(text: str) -> str:
    return "".join(text.split())


def content(passages) -> list[tuple]:
    return [(p.id, p.chapter, p.chapter_index, p.text) for p in passages]


# -- structure -------------------------------------------------------------------------------
def test_chapters_paragraphs_and_sentence_splits(tmp_path):
    passages = load_corpus(write(tmp_path / "tale.txt", TALE), max_chars=60, min_chars=20)
    assert [p.id for p in passages] == [f"tale-{n:04d}" for n in range(1, len(passages) + 1)]
    # The file by its name, not its absolute path: rows carrying it are shared.
    assert all(p.source == "tale.txt" for p in passages)
    # The title line before chapter 1 is shorter than min_chars: dropped, not a passage.
    assert [(p.chapter_index, p.chapter) for p in passages[:1]] == [(1, "第一回 山中遇雨 林下访僧")]
    chapters = dict((p.chapter_index, p.chapter) for p in passages)
    assert chapters == {
        1: "第一回 山中遇雨 林下访僧", 2: "第二回 石生下山 老僧赠书", 3: "第十回 尾声"}
    assert all(len(p.text) <= 60 for p in passages)
    # No character is lost or moved: chapter by chapter, the text is the body minus spaces.
    ch1 = "".join(p.text for p in passages if p.chapter_index == 1)
    assert strip_space(ch1) == strip_space(TALE.split("林下访僧")[1].split("第二回")[0])
    # The long paragraph (87 characters) is cut only after a sentence end.
    long_parts = [p.text.split("\n")[-1] for p in passages
                  if "老僧" in p.text and p.chapter_index == 1]
    assert len(long_parts) >= 2
    assert all(part[-1] in "。？”" for part in long_parts)
    # Chapter 2: one line per paragraph, the hard-wrapped line joined without a space, and the
    # indented "第二回中..." kept as prose.
    ch2 = "\n".join(p.text for p in passages if p.chapter_index == 2)
    assert "封面上写着四个大字：石头小记。" in ch2
    assert "第二回中说过的那本书" in ch2


def test_passages_pack_paragraphs_up_to_max_chars(tmp_path):
    # Default bounds for CJK text: 600 max, a third of that min. 30 paragraphs of 50 characters.
    para = "这是一段用来测试的文字，长度正好是五十个字符左右，不多也不少，刚刚好够用了。" * 1
    text = "第一回 测试\n\n" + "\n\n".join(f"{k:02d}{para}" for k in range(30)) + "\n"
    passages = load_corpus(write(tmp_path / "p.txt", text))
    sizes = [len(p.text) for p in passages]
    assert all(s <= 600 for s in sizes) and all(s >= 200 for s in sizes)
    assert all(p.text.count("\n") >= 3 for p in passages)  # whole paragraphs, one per line
    assert sum(p.text.count("\n") + 1 for p in passages) == 30  # none split


def test_last_small_passage_is_rebalanced(tmp_path):
    text = "\n\n".join(["甲" * 25, "乙" * 25, "丙" * 25, "丁" * 10]) + "\n"
    passages = load_corpus(write(tmp_path / "r.txt", text), max_chars=80, min_chars=30)
    # Greedy packing gives 77 + 10; the last is under min_chars, so a paragraph moves over.
    assert [p.text for p in passages] == ["甲" * 25 + "\n" + "乙" * 25,
                                          "丙" * 25 + "\n" + "丁" * 10]
    assert passages[1].chapter_index == 0 and passages[1].chapter == ""  # no headings at all


def test_a_sentence_longer_than_max_is_cut_at_commas_then_hard(tmp_path):
    text = "，".join(["风吹过竹林"] * 20) + "。" + "无" * 130 + "\n"
    passages = load_corpus(write(tmp_path / "c.txt", text), max_chars=40, min_chars=10)
    assert all(len(p.text) <= 40 for p in passages)
    assert strip_space("".join(p.text for p in passages)) == strip_space(text)
    assert passages[0].text.endswith("，")  # cut after a comma, not mid-phrase


def test_english_headings_and_wrapped_paragraphs(tmp_path):
    text = (
        "Contents\n\nChapter 1\nChapter 2\n\n"  # a table of contents: headings with no text
        "CHAPTER I\n\nIt was a dark and stormy\nnight. The rain fell.\n\n"
        "Chapter 2. The Storm\n\nThe wind rose. Chapter 3 of the\nreport says nothing more.\n\n"
        "Chapter Twenty-One\n\nThe end.\n"
    )
    passages = load_corpus(write(tmp_path / "en.txt", text), max_chars=200, min_chars=5)
    assert [(p.chapter_index, p.chapter) for p in passages] == [
        (0, ""), (1, "CHAPTER I"), (2, "Chapter 2. The Storm"), (3, "Chapter Twenty-One")]
    assert passages[0].text == "Contents"
    assert passages[1].text == "It was a dark and stormy night. The rain fell."
    assert "Chapter 3 of the report says nothing more." in passages[2].text


@pytest.mark.parametrize(
    ("line", "title"),
    [("第一回  甄士隐梦幻识通灵\u3000贾雨村风尘怀闺秀", "第一回 甄士隐梦幻识通灵 贾雨村风尘怀闺秀"),
     ("第二十三回 西厢记妙词通戏语", "第二十三回 西厢记妙词通戏语"), ("第1章 开端", "第1章 开端"),
     ("第十章：归来", "第十章：归来"),
     ("第一一七回  阻超凡佳人双护玉", "第一一七回 阻超凡佳人双护玉"),
     ("第三章", "第三章"), ("CHAPTER XII", "CHAPTER XII")],
)
def test_heading_lines(line, title):
    assert heading(line) == title


@pytest.mark.parametrize(
    "line",
    ["    第四回中既将薛家母子在荣府内寄居等事略已表明，此回则暂不能写矣．",
     "    第三十八回林潇湘魁夺菊花诗薛蘅芜讽和螃蟹咏——", "第三节课上，老师讲了一个故事。",
     "Chapter and verse are quoted below."],
)
def test_prose_is_not_a_heading(line):
    assert heading(line) is None


@settings(max_examples=60, deadline=None)
@given(
    text=st.text(alphabet="天地人和风雨。，！\n \u3000ab", max_size=400),
    max_chars=st.integers(min_value=4, max_value=80),
)
def test_passages_never_exceed_max_and_keep_every_character(tmp_path_factory, text, max_chars):
    if not text.strip():
        return
    path = write(tmp_path_factory.mktemp("h") / "x.txt", text)
    passages = load_corpus(path, max_chars=max_chars)
    assert all(0 < len(p.text) <= max_chars for p in passages)
    assert strip_space("".join(p.text for p in passages)) == strip_space(text)


# -- decoding --------------------------------------------------------------------------------
def test_gbk_crlf_and_bom_copies_give_identical_passages(tmp_path):
    reference = content(load_corpus(write(tmp_path / "u" / "tale.txt", TALE), 60, 20))
    gbk = write(tmp_path / "g" / "tale.txt", TALE, encoding="gbk", newline="\r\n")
    bom = tmp_path / "b" / "tale.txt"
    bom.parent.mkdir()
    bom.write_bytes(codecs.BOM_UTF8 + TALE.replace("\n", "\r").encode())
    assert content(load_corpus(gbk, 60, 20)) == reference
    assert content(load_corpus(bom, 60, 20)) == reference


def test_damaged_utf8_names_file_offset_and_line(tmp_path):
    good = TALE.encode()
    cut = good.index("行到半山".encode())
    path = tmp_path / "broken.txt"
    path.write_bytes(good[:cut] + b"\xff" + good[cut:])
    with pytest.raises(SigenError) as err:
        load_corpus(path)
    message = str(err.value)
    assert str(path) in message
    line = good[:cut].count(b"\n") + 1
    assert f"offset {cut}" in message and f"line {line}," in message
    assert "not valid UTF-8" in message and "save the file as UTF-8" in message
    assert "damaged there" in message  # \xff reads as nothing in GBK either


@pytest.mark.parametrize("script", ["en", "zh"])
def test_a_gbk_sentence_far_into_a_utf8_file_is_named_where_it_is(tmp_path, script):
    """Recorded: a UTF-8 file with one sentence saved as GBK 290 KB in was reported at a valid
    heading on line 1 ("neither UTF-8 nor GBK"), since its few UTF-8 dashes were outnumbered by
    the GBK bytes. The error names the first bad byte, its line, and what it reads as in GBK."""
    if script == "en":
        chapter = "Chapter {n} — The Light\n\n" + "The keeper lit the lamp at dusk. " * 400
    else:
        chapter = "第{n}回 灯下\n\n" + "\u3000\u3000石生独自上山采药，忽然下起雨来。\n" * 350
    data = ("\n\n".join(chapter.format(n=n) for n in range(1, 31)) + "\n").encode()
    at = data.index(b"\n", 290_000) + 1
    before = data[:at]
    sentence = "一时宝玉听了这话，心中大不自在。"  # 一时: GBK D2 BB CA B1, valid as UTF-8
    path = tmp_path / "我的 语料" / "mixed.txt"
    path.parent.mkdir()
    path.write_bytes(before + sentence.encode("gbk") + b"\n" + data[at:])
    with pytest.raises(SigenError) as err:
        load_corpus(path)
    message = str(err.value)
    # 一时 read as UTF-8 are two valid characters (һʱ): the first bad byte comes after them.
    offset = len(before) + 4
    line = before.count(b"\n") + 1
    assert message.startswith(f"{path}: byte 0x{sentence.encode('gbk')[4]:02X} at offset "
                              f"{offset} (line {line}, byte 5 of the line) is not valid UTF-8")
    assert f"read as GBK, the text from there says “{sentence[:24]}”" in message
    assert message.endswith("save the file as UTF-8.")


def test_gbk_text_that_starts_like_utf8_is_still_gbk(tmp_path):
    # In GBK, 一时只见 (D2 BB CA B1 D6 BB BC FB) reads as three valid UTF-8 characters before
    # a bad byte: two-byte characters are no sign of UTF-8.
    text = "\u3000\u3000一时只见宁府中人来请。\n" * 50
    path = write(tmp_path / "g.txt", text, encoding="gbk")
    assert load_corpus(path)[0].text.startswith("一时只见宁府中人来请。")


def test_english_with_one_gbk_sentence_and_no_other_non_ascii_is_valid_gbk(tmp_path):
    # Every byte is valid GBK and no UTF-8 character says otherwise: the file is GBK.
    text = "The keeper lit the lamp at dusk. " * 200 + "\n\n宝玉听了这话。\n"
    path = write(tmp_path / "g.txt", text, encoding="gbk")
    assert load_corpus(path)[-1].text.endswith("宝玉听了这话。")


def test_damaged_utf8_with_bom_reports_the_offset_in_the_file(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes(codecs.BOM_UTF8 + "一二三".encode() + b"\xfe" + "四".encode())
    with pytest.raises(SigenError, match=r"0xFE at offset 12 \(line 1"):
        load_corpus(path)


def test_neither_utf8_nor_gb18030(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"first line\nsecond \x81\x20line\n")
    with pytest.raises(SigenError, match=r"offset 18 \(line 2.*neither valid UTF-8 nor"):
        load_corpus(path)


def test_latin1_text_is_not_read_as_chinese(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("The naïve façade résumés were printed.\n".encode("latin-1"))
    assert path.read_bytes().decode("gb18030")  # decodable, but nonsense
    with pytest.raises(SigenError, match=r"offset 6 .*Latin-1"):
        load_corpus(path)


# -- files and folders -----------------------------------------------------------------------
def test_folder_of_files_in_sorted_order(tmp_path):
    write(tmp_path / "sub" / "two.txt", "第一回 二\n\n第二个文件的内容在这里。\n")
    write(tmp_path / "one.txt", "第一回 一\n\n第一个文件的内容在这里。\n")
    write(tmp_path / "notes.md", "不是语料。\n")
    passages = load_corpus(tmp_path)
    assert [(p.id, p.text) for p in passages] == [
        ("one-0001", "第一个文件的内容在这里。"),
        ("sub-two-0001", "第二个文件的内容在这里。"),
    ]
    assert [p.source for p in passages] == ["one.txt", "sub/two.txt"]


def test_rows_and_the_record_name_files_relative_to_the_corpus(tmp_path):
    """Rows (machine_instructions.jsonl, pending.jsonl) and the manifest are shared: they name
    a corpus file relative to the corpus, never by a path that shows the user's home."""
    import json

    from selfinstruct_local.corpus import corpus_record
    from selfinstruct_local.methods.grounded import passage_record

    root = tmp_path / "home" / "user" / "我的 语料"
    write(root / "hlm.txt", TALE)
    write(root / "续书" / "后四十回.txt", TALE)
    for corpus, names in ((root / "hlm.txt", {"hlm.txt"}),
                          (root, {"hlm.txt", "续书/后四十回.txt"})):
        passages = load_corpus(corpus, 60, 20)
        record = corpus_record(corpus, passages)
        assert {p.source for p in passages} == names == set(record["files"])
        stored = json.dumps([passage_record(p) for p in passages] + [record], ensure_ascii=False)
        assert str(tmp_path) not in stored and "home/user" not in stored
    assert {p.id.rsplit("-", 1)[0] for p in passages} == {"hlm", "续书-后四十回"}


def test_messages_count_one_chapter_and_one_passage_in_the_singular(tmp_path):
    from selfinstruct_local.corpus import corpus_changes, corpus_record, select_chapters

    path = write(tmp_path / "one.txt", "第一回 一\n\n只有一段文字。\n")
    passages = load_corpus(path)
    with pytest.raises(SigenError) as caught:
        select_chapters(passages, [(2, 2)])
    assert str(caught.value).endswith("it has 1 chapter (1)")
    record = corpus_record(path, passages)
    cut_otherwise = {**record, "fingerprint": "0", "passages": 2}
    assert corpus_changes(cut_otherwise, record) == ["the same files now make 1 passage, not 2"]


def test_missing_or_empty_corpus(tmp_path):
    with pytest.raises(SigenError, match="does not exist"):
        load_corpus(tmp_path / "nope.txt")
    with pytest.raises(SigenError, match="no .txt files"):
        load_corpus(tmp_path)
    with pytest.raises(SigenError, match="holds no text"):
        load_corpus(write(tmp_path / "blank.txt", "\n\n  \n"))


# -- sampler ---------------------------------------------------------------------------------
def passages_for_sampler(tmp_path, n=7):
    text = "\n\n".join(f"第{k}段：这里是一段足够长的文字。" for k in range(n))
    passages = load_corpus(write(tmp_path / "s.txt", text), max_chars=18, min_chars=1)
    assert len(passages) == n
    return passages


def test_sampler_uses_every_passage_before_repeating(tmp_path):
    passages = passages_for_sampler(tmp_path)
    sampler = PassageSampler(passages, seed=5)
    drawn = [p.id for _ in range(7) for p in sampler.draw(3)]  # 21 = three full epochs
    ids = sorted(p.id for p in passages)
    for epoch in range(3):
        assert sorted(drawn[7 * epoch: 7 * epoch + 7]) == ids
    assert drawn[:7] != drawn[7:14]  # reshuffled, not replayed
    assert sampler.used == 21 and sampler.epoch == 3


def test_sampler_is_deterministic_and_resumable(tmp_path):
    passages = passages_for_sampler(tmp_path)
    whole = PassageSampler(passages, seed=11).draw(20)
    first = PassageSampler(passages, seed=11)
    head = first.draw(2) + first.draw(3)
    resumed = PassageSampler.from_state(passages, first.state())
    assert head + resumed.draw(15) == whole
    assert PassageSampler(passages, seed=12).draw(20) != whole
    changed = [replace(passages[0], text="改过的文字。")] + passages[1:]
    with pytest.raises(SigenError, match="corpus changed"):
        PassageSampler.from_state(changed, first.state())
    with pytest.raises(SigenError):
        PassageSampler([], seed=0)


# -- 《红楼梦》 --------------------------------------------------------------------------------
@pytest.mark.skipif(not HONGLOUMENG.is_file(), reason="needs ../shared/corpora/hongloumeng.txt")
def test_hongloumeng_has_120_chapters():
    passages = load_corpus(HONGLOUMENG)
    indices = [p.chapter_index for p in passages]
    assert sorted(set(indices)) == list(range(1, 121))  # the title line before 第一回 is dropped
    assert indices == sorted(indices)
    assert passages[0].chapter == "第一回 甄士隐梦幻识通灵 贾雨村风尘怀闺秀"
    assert passages[-1].chapter == "第一二零回 甄士隐详说太虚情 贾雨村归结红楼梦"
    assert passages[0].id == "hongloumeng-0001"
    assert all(len(p.text) <= 600 for p in passages)
    assert "\r" not in "".join(p.text for p in passages)


def test_resume_refuses_a_changed_corpus(tmp_path):
    """A run records its corpus (file hashes, passage fingerprint); resuming it on a corpus
    that changed since is refused, naming what changed, before any model is loaded."""
    import json
    import shutil

    from selfinstruct_local.corpus import corpus_changes, corpus_record
    from tests.conftest import sigen

    corpus = tmp_path / "corpus"
    shutil.copytree(Path(__file__).parent / "fixtures" / "corpus_en", corpus)
    record = corpus_record(corpus, load_corpus(corpus, max_chars=300))
    assert corpus_changes(record, record) == []
    assert set(record["files"]) == {"lighthouse.txt"} and record["passages"] > 1
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps(
        {"status": "interrupted", "config": {"corpus": str(corpus), "passage_chars": 300},
         "corpus": record}))
    lighthouse = corpus / "lighthouse.txt"
    lighthouse.write_text(lighthouse.read_text(encoding="utf-8") + "\nOne more line at the end.",
                          encoding="utf-8")
    (corpus / "extra.txt").write_text("Chapter 1\n\nA new story. " * 20, encoding="utf-8")
    now = corpus_record(corpus, load_corpus(corpus, max_chars=300))
    assert corpus_changes(record, now) == ["lighthouse.txt changed", "extra.txt is new"]
    result = sigen("run", "--corpus", str(corpus), "--passage-chars", "300", "-o", str(run))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"the corpus {corpus} is not the one {run} was started on (lighthouse.txt changed; "\
        "extra.txt is new)" in result.stderr
    assert "--force" in result.stderr
