"""The model-zoo and dataset pages, from the registries and the TOML cards.

Every registered method gets a section (a card's ``[variants.*]`` are listed under it, each with
the hyperparameters it changes and its own reported rows); a method registered by a plugin
without a card gets its name, description and entry.  Card comments are part of the card: a
hyperparameter's ``# comment`` (on its line, or the comment lines right above it) is shown
beside its value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from odbench.cards import DatasetCard, MethodCard, card_dir, dataset_cards, method_cards
from odbench.docsite.markdown import anchor, cell, code, fmt_value, generated_note, heading, table
from odbench.metrics.catalog import METRICS
from odbench.registry import DATASETS, METHODS
from odbench.reported import reported_rows

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(?:#(.*))?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-\"']+)\s*=")


@dataclass
class CardComments:
    """The comments of one TOML file: ``keys[table][key]`` (a key's inline comment and the
    comment lines right above it) and ``notes[table]`` (comment blocks standing alone in or
    right before a table; ``""`` is the top level)."""

    keys: dict[str, dict[str, str]] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)


def _inline_comment(line: str) -> str:
    """The ``# comment`` after a value, outside quoted strings."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            return line[i + 1 :].strip()
    return ""


def read_comments(path: Path) -> CardComments:
    """The comments of the TOML card at ``path`` (see :class:`CardComments`)."""
    out = CardComments()
    current = ""
    block: list[str] = []
    pending: list[str] = []  # a block ended by a blank line: a note of the next table
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            block.append(stripped.lstrip("#").strip())
            continue
        if not stripped:
            pending += block
            block = []
            continue
        header = _HEADER.match(line)
        if header:
            current = header.group(2) if header.group(1) == "[" else f"[[{header.group(2)}]]"
            notes = pending + block + ([header.group(3).strip()] if header.group(3) else [])
            if notes:
                out.notes.setdefault(current, []).append(" ".join(notes))
            pending, block = [], []
            continue
        key = _KEY.match(line)
        if key:
            if pending:
                out.notes.setdefault(current, []).append(" ".join(pending))
                pending = []
            text = " ".join([*block, _inline_comment(line)]).strip()
            if text:
                out.keys.setdefault(current, {})[key.group(1).strip("\"'")] = text
        block = []
    if pending + block:
        out.notes.setdefault(current, []).append(" ".join(pending + block))
    return out


def _backbone(card: MethodCard) -> str:
    model = card.raw.get("model", {})
    value = card.hyperparameters.get("backbone") or model.get("features") or ""
    return str(value) if value else "—"


def _ranges(rule: dict[str, Any]) -> str:
    symbols = {"min": ">=", "gt": ">", "max": "<=", "lt": "<"}
    parts = [f"{sym} {rule[k]}" for k, sym in symbols.items() if k in rule]
    if "choices" in rule:
        parts.append("one of " + ", ".join(fmt_value(c) for c in rule["choices"]))
    return ", ".join(parts)


def _settings_table(
    values: dict[str, Any], comments: dict[str, str], ranges: dict[str, Any] | None = None
) -> str:
    header = ["key", "value", "comment"] + (["valid values"] if ranges else [])
    rows = []
    for key, value in values.items():
        row = [code(key), code(value), cell(comments.get(key, ""))]
        if ranges:
            row.append(cell(_ranges(ranges.get(key, {}))))
        rows.append(row)
    return table(header, rows)


def reported_table(rows: tuple[dict[str, Any], ...]) -> str:
    """Reported rows as published: source, table, variant, dataset, then each metric."""
    fixed = ["method", "source", "table", "variant", "dataset"]
    keys = {k for r in rows for k in r}
    metrics = [k for k in METRICS if k in keys]
    other = sorted(keys - set(fixed) - set(metrics))
    header = [k for k in fixed if k in keys] + metrics + other
    labels = [METRICS[k].label if k in METRICS else k for k in header]
    body = [
        [cell(fmt_value(r[k]) if k in metrics and k in r else r.get(k, "—")) for k in header]
        for r in rows
    ]
    return table(labels, body)


def _note(notes: dict[str, list[str]], key: str) -> str:
    return "".join(f"> {cell(n)}\n\n" for n in notes.get(key, []))


def method_section(card: MethodCard, comments: CardComments, variants: list[MethodCard]) -> str:
    """One method's section of the zoo page."""
    out = [heading(2, card.name, anchor(card.name)), card.description + "\n"]
    facts = [
        ("Task", ", ".join(card.task)),
        ("Backbone", _backbone(card)),
        ("Paper", card.paper or "—"),
        ("Implementation", code(card.entry)),
        ("Card", code(f"methods/{card.path.name}")),
        ("Run it", code(f"odbench eval --method {card.name} --dataset toy")),
    ]
    out.append(table(["", ""], [(f"**{k}**", v) for k, v in facts]))
    out.append(_note(comments.notes, ""))
    tables = {k: v for k, v in card.raw.items() if isinstance(v, dict) and k not in _SKIP}
    for name, values in tables.items():
        subtables = {k: v for k, v in values.items() if isinstance(v, dict) and v}
        if subtables and len(subtables) == len(values):
            for sub, sub_values in subtables.items():
                path = f"{name}.{sub}"
                out.append(f"**`[{path}]`**\n\n" + _note(comments.notes, path))
                out.append(_settings_table(sub_values, comments.keys.get(path, {})))
            continue
        out.append(f"**`[{name}]`**\n\n" + _note(comments.notes, name))
        ranges = card.ranges if name == "hyperparameters" else None
        out.append(_settings_table(values, comments.keys.get(name, {}), ranges))
    if card.reported:
        out.append("**Reported results** (as published, never computed by odbench)\n\n")
        out.append(_note(comments.notes, "[[reported]]") + reported_table(card.reported))
    for variant in variants:
        key = variant.name.rpartition(".")[2]
        out.append(heading(3, variant.name, anchor(variant.name)))
        out.append(variant.description + "\n")
        changed = {
            k: v for k, v in variant.hyperparameters.items() if card.hyperparameters.get(k) != v
        }
        path = f"variants.{key}.hyperparameters"
        if changed:
            out.append("Changes from the card:\n\n")
            out.append(_settings_table(changed, comments.keys.get(path, {})))
        else:
            out.append("The card's hyperparameters, unchanged.\n")
        if variant.reported:
            out.append("\n" + reported_table(variant.reported))
    if card.citation:
        out.append(f"```bibtex\n{card.citation.strip()}\n```\n")
    return "\n".join(out)


_SKIP = {"variants", "ranges", "reported"}


def zoo_page() -> str:
    """The model zoo: a summary table of every registered method, then one section each."""
    cards = method_cards()
    parents = [c for c in cards.values() if c.parent is None]
    names = METHODS.names()
    out = [
        "# Model zoo\n",
        generated_note(
            "the method registry and its cards (`methods/*.toml`, `[variants.*]`, `[[reported]]`)"
        ),
        f"{len(names)} methods are registered (`odbench list methods`).  Each runs with "
        "`odbench eval --method NAME`; a variant is a method of its own, named "
        "`card.variant`.  Reported rows are the papers' numbers as published; the "
        "[leaderboard](../index.md#leaderboards) sets odbench's runs beside them.\n",
    ]
    rows = []
    for name in names:
        card = cards.get(name)
        link = f"[{name}](#{anchor(name)})"
        if card is None:
            rows.append([link, "—", "—", cell(dict(METHODS.describe())[name])])
        else:
            rows.append([link, ", ".join(card.task), _backbone(card), cell(card.description)])
    out.append(table(["method", "task", "backbone", "description"], rows))
    for card in parents:
        variants = [c for c in cards.values() if c.parent == card.name]
        out.append(method_section(card, read_comments(card.path), variants))
    methods_dir = card_dir("methods").resolve()
    elsewhere = [r for r in reported_rows() if Path(r.origin).resolve().parent != methods_dir]
    if elsewhere:
        out.append(heading(2, "Reported rows of methods without a card", "reported-elsewhere"))
        files = sorted({f"`{card_dir('reported').name}/{Path(r.origin).name}`" for r in elsewhere})
        out.append(
            f"Published numbers of the papers' other rows ({', '.join(files)} under "
            "`leaderboard/`): reference rows for `odbench leaderboard`, never computed here.\n"
        )
        flat = tuple(
            {"method": r.method, "source": r.source, "table": r.table, "variant": r.variant,
             "dataset": r.dataset, **r.metrics}
            for r in elsewhere
        )  # fmt: skip
        out.append(reported_table(flat))
    plugins = [n for n in names if n not in cards]
    if plugins:
        out.append(heading(2, "Methods from plugins", "plugins"))
        out.append("Registered through the `odbench.methods` entry-point group or in code:\n")
        descriptions = dict(METHODS.describe())
        for name in plugins:
            out.append(heading(3, name, anchor(name)) + cell(descriptions[name]) + "\n")
    return "\n".join(out)


def dataset_section(card: DatasetCard) -> str:
    """One dataset's section of the datasets page."""
    raw = card.raw
    out = [heading(2, card.name, anchor(card.name)), card.description + "\n"]
    facts = [
        ("Task", ", ".join(card.task)),
        ("Images", f"{card.count:,}" if card.count is not None else "—"),
        ("Aliases", ", ".join(code(a) for a in card.aliases) or "—"),
        ("Homepage", raw.get("homepage", "—")),
        ("Licence", cell(raw.get("license", "—"))),
        ("Ground truth", cell(raw.get("gt_format", "—"))),
        ("Loader", code(card.entry)),
        ("Card", code(f"datasets/{card.path.name}")),
    ]
    out.append(table(["", ""], [(f"**{k}**", v) for k, v in facts]))
    comments = read_comments(card.path)
    layout = raw.get("layout")
    if layout:
        out.append("**Layout** (`[layout]`: the folders odbench looks for under `--data-root`)\n")
        out.append(_settings_table(layout, comments.keys.get("layout", {})))
    download = raw.get("download")
    if download:
        files = download.get("files", [])
        out.append(f"**Download**: `odbench data download {card.name}` (verified)\n")
        out.append(_note(comments.notes, "download"))
        out.append(
            table(
                ["url", "sha256", "into"],
                [
                    [cell(f.get("url", "")), code(f.get("sha256", "")), code(f.get("into", ""))]
                    for f in files
                ],
            )
        )
    elif "generator" in raw:
        out.append("Generated by odbench (no download):\n")
        out.append(_settings_table(raw["generator"], comments.keys.get("generator", {})))
    else:
        out.append("No download: place the data under `--data-root` as the layout says.\n")
    if card.citation:
        out.append(f"```bibtex\n{card.citation.strip()}\n```\n")
    return "\n".join(out)


def datasets_page() -> str:
    """Every registered dataset: count, layout, download, licence, GT rule, citation."""
    cards = dataset_cards()
    names = DATASETS.names()
    out = [
        "# Datasets\n",
        generated_note("the dataset registry and its cards (`datasets/*.toml`)"),
        f"{len(names)} datasets are registered (`odbench list datasets`).  Nothing is "
        "downloaded by `eval`: `odbench data download NAME` fetches and verifies, "
        "`odbench data verify NAME` checks a copy.\n",
    ]
    rows = []
    for name in names:
        card = cards.get(name)
        count = f"{card.count:,}" if card is not None and card.count is not None else "—"
        task = ", ".join(card.task) if card is not None else "—"
        desc = card.description if card is not None else dict(DATASETS.describe())[name]
        rows.append([f"[{name}](#{anchor(name)})", task, count, cell(desc)])
    out.append(table(["dataset", "task", "images", "description"], rows))
    for name in names:
        if name in cards:
            out.append(dataset_section(cards[name]))
        else:
            out.append(heading(2, name, anchor(name)) + dict(DATASETS.describe())[name] + "\n")
    return "\n".join(out)
