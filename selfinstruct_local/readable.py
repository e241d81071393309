"""Numbers as people read them, shared by the report's tables and its plots."""

from __future__ import annotations


def num(value: object) -> str:
    """A number for people: thousands separators, no trailing zeros, "-" for none."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}".rstrip("0").rstrip(".") if value % 1 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)
