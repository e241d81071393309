"""Numbers and tables as people read them, shared by the report's tables, its plots and `sigen
stats --compare`."""

from __future__ import annotations

import re
import unicodedata


def num(value: object) -> str:
    """A number for people: thousands separators, no trailing zeros, "-" for none."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}".rstrip("0").rstrip(".") if value % 1 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


_NUMBER = re.compile(r"-|[\d.,]+%?")


def numeric_columns(rows: list[list[str]]) -> list[bool]:
    """Columns holding only numbers, which read best right-aligned."""
    return [all(_NUMBER.fullmatch(row[i]) for row in rows) for i in range(len(rows[0]))]


def align(header: list[str], rows: list[list[str]]) -> list[str]:
    """A table as lines of text: columns padded to their widest cell, numbers right-aligned,
    no header line when the header is all empty."""
    right = numeric_columns(rows)
    shown = [header, *rows] if any(header) else rows
    widths = [max(width(r[i]) for r in shown) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        pads = [" " * (w - width(c)) for c, w in zip(cells, widths, strict=True)]
        return "  ".join(p + c if r else c + p
                         for c, p, r in zip(cells, pads, right, strict=True)).rstrip()

    return [line(r) for r in shown]


def width(text: str) -> int:
    """Columns `text` takes in a terminal: a CJK (wide) character takes two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)
