"""The protocols, metrics and feature-extractor pages, from their registries and tables.

Protocols: every setting of every registered protocol side by side, each value with the line of
the source file that sets it (its own definition, the protocol it is derived from with
``replace``, or the field's default), and the field meanings from :class:`Protocol`'s
docstring.  Metrics: :data:`odbench.metrics.catalog.METRICS` with
:data:`odbench.metrics.definitions.DEFINITIONS` and the BibTeX of :mod:`odbench.metrics.papers`.
Feature extractors: :data:`odbench.registry.FEATURES`.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
from pathlib import Path
from typing import Any

from odbench.docsite.markdown import anchor, cell, code, fmt_value, generated_note, heading, table
from odbench.features.specs import FAMILIES
from odbench.metrics.catalog import METERS, METRICS
from odbench.metrics.definitions import DEFINITIONS
from odbench.metrics.papers import BIBTEX
from odbench.metrics.protocols import DEFAULT_PROTOCOL, PROTOCOLS
from odbench.registry import FEATURES

_ROOT = Path(__file__).resolve().parents[2]
_META = ("name", "description", "sources")


def _where(path: Path, line: int) -> str:
    try:
        shown = path.relative_to(_ROOT)
    except ValueError:
        shown = Path(path.name)
    return f"{shown.as_posix()}:{line}"


@dataclasses.dataclass
class _Definition:
    kwargs: dict[str, int]  # setting -> line
    parent: str | None  # the variable a replace(...) starts from
    path: Path


def _definitions(path: Path) -> tuple[dict[str, _Definition], dict[str, str]]:
    """``NAME = Cls(...)`` / ``NAME = replace(PARENT, ...)`` assignments of ``path``: by
    variable, and the protocol name each one gives (its ``name=`` keyword)."""
    by_var: dict[str, _Definition] = {}
    names: dict[str, str] = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)):
            continue
        if len(node.targets) != 1 or not isinstance(node.targets[0], ast.Name):
            continue
        call, var = node.value, node.targets[0].id
        func = call.func.id if isinstance(call.func, ast.Name) else ""
        parent = None
        if func == "replace" and call.args and isinstance(call.args[0], ast.Name):
            parent = call.args[0].id
        kwargs = {k.arg: k.lineno for k in call.keywords if k.arg}
        by_var[var] = _Definition(kwargs, parent, path)
        for k in call.keywords:
            if k.arg == "name" and isinstance(k.value, ast.Constant):
                names[str(k.value.value)] = var
    return by_var, names


def _field_defaults(cls: type) -> dict[str, str]:
    """Field -> ``file:line`` of its declaration (and default) in the class body."""
    path = Path(inspect.getsourcefile(cls) or "")
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ClassDef) and node.name == cls.__name__:
            return {
                item.target.id: _where(path, item.lineno)
                for item in node.body
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
            }
    return {}


def setting_sources(protocol: Any) -> dict[str, str]:
    """Each dataclass field of ``protocol`` -> where its value is set (``file:line``, with
    "default" or the protocol it is inherited from when not in its own definition)."""
    cls = type(protocol)
    defaults = _field_defaults(cls)
    files = {Path(inspect.getsourcefile(cls) or ""), Path(__file__).parents[1] / "metrics"}
    defs: dict[str, _Definition] = {}
    names: dict[str, str] = {}
    for where in files:
        for path in sorted(where.glob("*.py")) if where.is_dir() else [where]:
            d, n = _definitions(path)
            defs.update(d)
            names.update(n)
    out: dict[str, str] = {}
    for f in dataclasses.fields(protocol):
        var, via = names.get(protocol.name), ""
        while var is not None and var in defs:
            definition = defs[var]
            if f.name in definition.kwargs:
                out[f.name] = _where(definition.path, definition.kwargs[f.name]) + via
                break
            var, via = definition.parent, f" (from {definition.parent})"
        else:
            out[f.name] = f"default, {defaults.get(f.name, '?')}"
    return out


def field_meanings(cls: type) -> dict[str, str]:
    """``Fields:`` of a dataclass docstring: field -> meaning (``a, b: text`` gives both)."""
    doc = inspect.getdoc(cls) or ""
    _, _, rest = doc.partition("Fields:")
    out: dict[str, str] = {}
    current: list[str] = []
    for line in rest.splitlines():
        m = re.match(r"^    ([\w, ]+):\s*(.*)$", line)
        if m:
            current = [n.strip() for n in m.group(1).split(",")]
            for name in current:
                out[name] = m.group(2)
        elif line.startswith("        ") and current:
            for name in current:
                out[name] += " " + line.strip()
        elif line.strip():
            current = []
    return {k: v.replace("``", "`") for k, v in out.items()}


def protocol_notes(module_doc: str) -> dict[str, str]:
    """The module docstring's paragraph on each protocol (a line starting ````name````)."""
    out: dict[str, str] = {}
    name = None
    for line in module_doc.splitlines():
        m = re.match(r"^``(\w+)``", line)
        if m:
            name = m.group(1)
            out[name] = line
        elif name and line.startswith(" "):
            out[name] += "\n" + line
        else:
            name = None
    return {k: " ".join(v.split()).replace("``", "`") for k, v in out.items()}


def protocols_page() -> str:
    """Every registered protocol, its settings side by side with their source lines."""
    from odbench.metrics import protocols as module

    protos = [PROTOCOLS.get(n) for n in PROTOCOLS.names()]
    default = PROTOCOLS.get(DEFAULT_PROTOCOL)
    out = [
        "# Protocols\n",
        generated_note("the protocol registry (`odbench/metrics/protocols.py`)"),
        "A protocol names every choice that changes a saliency number; it is stored in every "
        "result and chosen with `--protocol NAME` (default "
        f"`{DEFAULT_PROTOCOL}`).  Values that differ from the default are **bold**; each cell "
        "gives the line that sets it.  [Why my number differs](../why-numbers-differ.md) "
        "measures what each choice does on real data.\n",
    ]
    groups: dict[type, list[Any]] = {}
    for p in protos:
        groups.setdefault(type(p), []).append(p)
    notes = protocol_notes(module.__doc__ or "")
    for cls, members in groups.items():
        meanings = field_meanings(cls)
        sources = {p.name: setting_sources(p) for p in members}
        fields = [f.name for f in dataclasses.fields(cls) if f.name not in _META]
        rows = []
        for name in fields:
            row = [code(name)]
            for p in members:
                value = code(getattr(p, name))
                if isinstance(default, cls) and getattr(p, name) != getattr(default, name):
                    if fmt_value(getattr(p, name)) != fmt_value(getattr(default, name)):
                        value = f"**{value}**"
                row.append(f"{value}<br><small>{cell(sources[p.name][name])}</small>")
            rows.append(row)
        header = ["setting", *(f"[{p.name}](#{anchor(p.name)})" for p in members)]
        out.append(table(header, rows))
        if meanings:
            out.append("## Settings\n")
            out.append(
                table(["setting", "meaning"], [[code(k), cell(v)] for k, v in meanings.items()])
            )
    for p in protos:
        out.append(heading(2, p.name, anchor(p.name)))
        out.append(cell(getattr(p, "description", "")) + "\n")
        if p.name in notes:
            out.append(notes[p.name] + "\n")
        repos = getattr(p, "sources", ())
        if repos:
            out.append("Sources:\n\n" + "".join(f"- {cell(s)}\n" for s in repos))
    return "\n".join(out)


def metrics_page() -> str:
    """The metric catalog: every metric's definition, direction, reference, citation."""
    out = [
        "# Metrics\n",
        generated_note(
            "the metric catalog (`odbench/metrics/catalog.py`) and `odbench/metrics/definitions.py`"
        ),
        "Every table, command and page reads these entries (`odbench list metrics`); "
        "`--metrics basic` is the `saliency` meter's, `--metrics all` adds the `sod` family.  "
        "Adding a metric: [its function and a catalog entry](../adding-a-metric.md).\n",
    ]
    rows = [
        [
            f"[{code(m.key)}](#{anchor(m.key)})",
            cell(m.name),
            m.arrow,
            m.task,
            code(m.meter),
            cell(m.citation or "—"),
        ]
        for m in METRICS.values()
    ]
    out.append(table(["key", "name", "better", "task", "meter", "citation"], rows))
    for m in METRICS.values():
        out.append(heading(2, f"{m.name} (`{m.key}`)", anchor(m.key)))
        facts = [
            ("Direction", f"{m.arrow} ({'higher' if m.higher_is_better else 'lower'} is better)"),
            ("Task / meter", f"{m.task} / {code(METERS.get(m.meter, m.meter))}"),
            ("Labels", f"{cell(m.label)} · {code(m.latex)} · {code(m.short)}"),
            ("Per image", "mean of per-image values" if m.per_image else "reduced from curves"),
        ]
        d = DEFINITIONS.get(m.key)
        if d is not None:
            facts.append(("Tested against", d.tested_against))
        out.append(table(["", ""], [(f"**{k}**", v) for k, v in facts]))
        if d is not None:
            out.append(d.text + "\n")
        else:
            out.append(f"No definition written yet: see {code(METERS.get(m.meter, m.meter))}.\n")
        if m.citation and m.citation in BIBTEX:
            out.append(f"```bibtex\n{BIBTEX[m.citation]}\n```\n")
    return "\n".join(out)


def features_page() -> str:
    """Every registered feature extractor: family, weights, resolution, tiny / random."""
    out = [
        "# Feature extractors\n",
        generated_note("the feature-extractor registry (`odbench/features/specs.py`)"),
        "Names for `--features` (`odbench train`), `--backbone` (`odbench eval`) and "
        "`odbench.features.load_extractor(name)`.  A tiny random extractor of each family "
        "runs the tests and smoke runs; `-random` ones are full-size architectures with "
        "random weights (benchmarks only).\n",
        table(["family", "what"], [[code(k), cell(v)] for k, v in FAMILIES.items()]),
    ]
    rows = []
    for name, description in FEATURES.describe():
        spec = FEATURES.get(name)
        config = getattr(spec, "config", {}) or {}
        weights = config.get("hub") or config.get("repo_id") or config.get("url") or ""
        kind = {None: "published", "tiny": "tiny random", "full": "random"}.get(
            getattr(spec, "random", None), str(getattr(spec, "random", ""))
        )
        if not weights and kind == "published":
            weights = "see its builder"
        rows.append(
            [
                code(name),
                code(getattr(spec, "family", "?")),
                kind,
                cell(getattr(spec, "resolution", None) or "card's"),
                code(weights) if weights else "—",
                cell(description),
            ]
        )
    out.append(table(["name", "family", "weights", "resolution", "source", "description"], rows))
    return "\n".join(out)
