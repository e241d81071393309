"""Small text helpers shared by the parsers of every stage.

Models write field names with ":" or the full-width "：", sometimes in bold, sometimes with extra
spaces; these helpers accept all of that so each stage's parser stays a few lines long.
"""

from __future__ import annotations

import re

COLON = r"\s*[:：]"
_QUOTES = "\"'“”‘’「」『』"
# Where a sentence ends: a stop mark and any closing quotes or brackets after it.
SENTENCE_END = re.compile(r"(?:[。！？!?…]+|\.(?=\s|$))[\"'”’」』）)]*")


_ITEM_NUMBER = re.compile(r"(?:^|\n)[ \t]*\d+\.$")  # "1." opening a list item


def complete_sentences(text: str) -> str:
    """An answer cut off by the token limit, up to its last complete sentence (a long answer is
    still an answer); empty when it has none. The number opening a list item ("\n2.") ends
    no sentence."""
    ends = [m.end() for m in SENTENCE_END.finditer(text)
            if not _ITEM_NUMBER.search(text, 0, m.end())]
    return text[: ends[-1]] if ends else ""


def field_regex(*names: str) -> re.Pattern[str]:
    """Matches a line that starts a field, e.g. 'Input:' or '**输出**：', capturing the rest."""
    alternatives = "|".join(re.escape(n) for n in names)
    return re.compile(
        rf"^[ \t]*\**(?P<name>{alternatives})\**{COLON}\**[ \t]*(?P<rest>.*)$",
        re.IGNORECASE | re.MULTILINE,
    )


def item_marker(task_label: str) -> str:
    """Regex source for the number that opens a list item: "Task 10:", "**任务 10**：", "10.",
    "10、", "10）", "(10)", "（10）". Python's \\d matches every Unicode digit, so full-width
    numbers (１０．, 任务 １０：) count too."""
    task = re.escape(task_label)
    return rf"(?:\**{task}\s*\d+\**\s*[:：.．、]|\d+\s*[.．、:：)）]|[(（]\d+[)）])"


def split_fields(block: str, names: list[str]) -> dict[str, str]:
    """The text of each named field in a block; a field runs until the next field line.

    Keys are the names as given; a field that appears twice keeps its first occurrence.
    """
    pattern = field_regex(*names)
    matches = list(pattern.finditer(block))
    by_lower = {n.lower(): n for n in names}
    fields: dict[str, str] = {}
    for k, match in enumerate(matches):
        end = matches[k + 1].start() if k + 1 < len(matches) else len(block)
        name = by_lower[match.group("name").lower()]
        value = (match.group("rest") + block[match.end() : end]).strip()
        fields.setdefault(name, value)
    return fields


def clean_item(text: str) -> str:
    """A generated line as an instruction: spaces folded, bold markers and wrapping quotes gone.

    Quotes are removed only when they wrap the whole item and appear nowhere inside it, so
    'Translate "hello" into French' keeps its quotes.
    """
    text = " ".join(text.split()).strip("*` ")
    while len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        inner = text[1:-1]
        if any(q in inner for q in _QUOTES):
            break
        text = inner.strip()
    return text


def is_no_input(value: str, no_input_marker: str) -> bool:
    v = value.strip().strip("<>()[]（）【】").strip().lower()
    return v in {"", no_input_marker.strip("<>").lower(), "none", "no input", "noinput", "n/a",
                 "无", "无输入", "空"}
