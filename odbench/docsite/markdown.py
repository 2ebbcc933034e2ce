"""Small markdown helpers for the generated pages: tables, inline code, escaping."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any


def cell(text: object) -> str:
    """``text`` made safe inside a markdown table cell (pipes escaped, one line)."""
    return " ".join(str(text).split()).replace("|", "\\|")


def code(value: object) -> str:
    """``value`` as inline code in a table cell (a value holding backticks is fenced by two)."""
    text = cell(value if isinstance(value, str) else fmt_value(value))
    if not text:
        return ""
    fence = "``" if "`" in text else "`"
    pad = " " if fence == "``" else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def fmt_value(value: Any) -> str:
    """A card or dataclass value as TOML-ish text: strings quoted, floats as written."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(fmt_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {fmt_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A markdown table; cells are taken as they are (escape with :func:`cell` / :func:`code`)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def anchor(name: str) -> str:
    """The HTML id a generated heading gets (``attentioncut.row1`` -> ``attentioncut-row1``)."""
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name.lower())


def heading(level: int, text: str, ident: str) -> str:
    """A heading with an explicit id (attr_list), so links do not depend on slug rules."""
    return f"{'#' * level} {text} {{ #{ident} }}\n"


def generated_note(source: str) -> str:
    """The line that says a page is generated, and from what."""
    return (
        f'!!! info "Generated page"\n    Written at build time from {source}; '
        "edit the source, not this page.\n"
    )
