"""Tokenizer: rouge_score-identical on ASCII, one token per CJK character, sane elsewhere."""

from __future__ import annotations

import string
import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st
from rouge_score import tokenize as rouge_tokenize
from rouge_score import tokenizers

from selfinstruct_local.text import count_words, is_cjk_char, tokenize

ROUGE_DEFAULT = tokenizers.DefaultTokenizer(use_stemmer=False)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=80))
def test_ascii_tokens_equal_rouge_score(text: str) -> None:
    assert tokenize(text) == rouge_tokenize.tokenize(text, None)
    assert tokenize(text) == ROUGE_DEFAULT.tokenize(text)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=string.ascii_letters + string.digits + " _-.,'\"\t\n!?/", max_size=60))
def test_ascii_tokens_equal_rouge_score_on_wordy_text(text: str) -> None:
    assert tokenize(text) == ROUGE_DEFAULT.tokenize(text)


def test_ascii_examples() -> None:
    assert tokenize("Hello, World! snake_case x-ray 3.14 C++") == [
        "hello", "world", "snake", "case", "x", "ray", "3", "14", "c",
    ]  # fmt: skip
    assert tokenize("") == []
    assert tokenize("  \t\n ") == []


def test_each_cjk_character_is_a_token() -> None:
    assert tokenize("虽说有三姑娘帮着办理，他又是个没出阁的姑娘．") == list(
        "虽说有三姑娘帮着办理他又是个没出阁的姑娘"
    )
    assert tokenize("ひらがなとカタカナ") == list("ひらがなとカタカナ")
    assert tokenize("使用Python写一个函数") == ["使", "用", "python", "写", "一", "个", "函", "数"]
    assert tokenize("テスト・ゲーム") == ["テ", "ス", "ト", "ゲ", "ー", "ム"]  # ・ separates
    assert tokenize("𠀀𠀁 abc") == ["𠀀", "𠀁", "abc"]  # astral ideographs too


def test_nfkc_and_lowercase() -> None:
    assert tokenize("ＦＵＬＬ ｗｉｄｔｈ １２３") == ["full", "width", "123"]
    assert tokenize("ｶﾀｶﾅ") == ["カ", "タ", "カ", "ナ"]  # half-width kana fold to full width
    assert tokenize("ﬁne ⑦") == ["fine", "7"]
    assert tokenize("Café NAÏVE") == ["café", "naïve"]
    assert tokenize("Cafe\u0301") == ["café"]  # decomposed accent composes, stays in the word


def test_combining_marks_continue_words() -> None:
    # Devanagari vowel signs are marks: the words must not be shredded at them.
    assert tokenize("नमस्ते दुनिया") == ["नमस्ते", "दुनिया"]
    assert tokenize("x\u0301 \u0301y") == ["x\u0301", "y"]  # a stray mark separates
    assert tokenize("葛\U000e0100城") == ["葛\U000e0100", "城"]  # variation selector stays on
    assert tokenize("안녕하세요 세계") == ["안녕하세요", "세계"]  # Hangul keeps its spaces


def test_count_words() -> None:
    assert count_words("Write a poem about 春天.") == 6
    assert count_words("请写一首关于春天的诗") == 10
    assert count_words("") == 0


def test_is_cjk_char() -> None:
    for ch in "的カひー𠀀々〇":
        assert is_cjk_char(ch), ch
    for ch in ["a", "1", "・", "，", "한", " ", "", "é"]:
        assert not is_cjk_char(ch), ch
    assert is_cjk_char("葛\U000e0100")  # a token: its first character decides


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_tokens_are_words_or_single_cjk_characters(text: str) -> None:
    for tok in tokenize(text):
        assert tok
        assert tok[0].isalnum()
        assert all(ch.isalnum() or unicodedata.category(ch)[0] == "M" for ch in tok)
        if is_cjk_char(tok[0]):
            assert all(unicodedata.category(ch)[0] == "M" for ch in tok[1:])
        else:
            assert not any(is_cjk_char(ch) for ch in tok)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "的", "カ", "ab1", "é", "ß", "x\u0301", "Ｚ"])))
def test_separators_do_not_matter(words: list[str]) -> None:
    joined = [tok for w in words for tok in tokenize(w)]
    assert tokenize(" ".join(words)) == joined
    assert tokenize(", ".join(words)) == joined
