r"""Leaderboard rendering, generated only from results files and reported rows.

``render_saliency`` / ``render_localization`` lay out the paper's Table 1 (datasets as column
groups): odbench's own runs and, clearly marked with †, the numbers published in papers
(:mod:`odbench.reported`); ``render_discovery`` the class-agnostic AP / AR of multi-object
discovery (CutLER's layout: box and mask AP50, AP, AR100 per dataset).  ``render_ablation`` shows the paper's Tables 3-7 (reported only).
Run comparisons with bootstrap CIs live in :mod:`odbench.compare`.

Which runs are shown: by default the run of each method, dataset and protocol
(:func:`odbench.results.select`, the rule every command uses) when it has the card's settings
(no ``--set`` / ``--backbone`` overrides, hyperparameters equal to the card's) over the full
dataset.  ``show_all`` adds the others as their own rows, labelled with their overrides,
``[subset]`` for ``--limit`` runs, runs that skipped images and runs on a copy of the dataset
missing images (fewer than its card's ``count``; cells marked \*), and ``[other card
settings]`` when the card changed since the run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from odbench.metrics.catalog import METRICS
from odbench.reported import ReportedRow, reported_rows
from odbench.results import (
    RunResult,
    has_card_settings,
    is_saved_maps,
    is_subset,
    load_all_results,
    preference,
    select_all,
)

#: Paper display names of the benchmark datasets (snake_case ids), in Table 1's order.
DATASET_LABELS = {
    "dut_omron": "DUT-OMRON",
    "duts_te": "DUTS-TE",
    "ecssd": "ECSSD",
    "cub": "CUB",
    "voc07": "VOC07",
    "voc12": "VOC12",
    "coco20k": "COCO20K",
    "coco": "COCO",  # discovery: COCO val2017 (class-agnostic instances)
    "lvis": "LVIS",  # discovery: LVIS v1 val (class-agnostic)
}
SALIENCY_DATASETS = ("dut_omron", "duts_te", "ecssd", "cub")
LOCALIZATION_DATASETS = ("voc07", "voc12", "coco20k")
DISCOVERY_DATASETS = ("coco", "coco20k", "voc07", "voc12", "lvis")
#: The discovery table's metrics per dataset (CutLER's README reports AP50 and AR; papers AP).
DISCOVERY_METRICS = ("box_AP50", "box_AP", "box_AR100", "mask_AP50", "mask_AP")
#: Table 1a/1c's metrics (labels: the catalog's).
SALIENCY_METRICS = ("acc", "iou", "max_fbeta")
ABLATION_TABLES = {
    "3": "Table 3: segmentation networks trained on synthetic vs real data (Acc / IoU)",
    "4": "Table 4: frozen backbones + the same decoder (Acc / IoU)",
    "5": "Table 5: training-free mask generators on diffusion features (Acc / IoU)",
    "6": "Table 6: AttentionCut ablation (Acc / IoU)",
    "7": "Table 7: CLIP-classifiable prior (Acc / IoU)",
}
#: Formats one metric value for a table cell.
Fmt = Callable[[float | None], str]


# ----------------------------------------------------------------------------- our runs


RowKey = tuple[str, str, str, str]  # (method, overrides JSON, protocol, variant label)


def _row_key(run: RunResult) -> RowKey:
    notes = []
    if is_saved_maps(run):
        notes.append("saved maps")
    elif not run.overrides and not has_card_settings(run):
        notes.append("other card settings")
    if is_subset(run):
        notes.append("subset")
    skipped = run.dataset.get("skipped_ids") or []
    if skipped:  # --on-mismatch skip: say how many images were left out
        notes.append(f"{len(skipped)} skipped")
    overrides = json.dumps(run.overrides, sort_keys=True)
    return run.method_name, overrides, run.protocol_name, ", ".join(notes)


def shown_runs(
    results: Iterable[RunResult], show_all: bool = False
) -> dict[tuple[RowKey, str], RunResult]:
    """The run to show per (row, dataset).  By default the :func:`~odbench.results.select` ed
    run of each method, dataset and protocol, when it has the card's settings over the full
    dataset; ``show_all``: every kind of run, each its own row (the first by
    :func:`~odbench.results.preference` per row and dataset: the latest)."""
    if not show_all:
        chosen = [r for r in select_all(results) if has_card_settings(r) and not is_subset(r)]
        return {(_row_key(r), r.dataset_name): r for r in chosen}
    best: dict[tuple[RowKey, str], RunResult] = {}
    for r in results:
        key = (_row_key(r), r.dataset_name)
        old = best.get(key)
        if old is None or preference(r) > preference(old):
            best[key] = r
    return best


# ----------------------------------------------------------------------------- rendering


def _fmt_fraction(v: float | None) -> str:
    """Paper style: ``.843`` (``1.000`` stays as is)."""
    if v is None or not math.isfinite(v):
        return "-"
    s = f"{v:.3f}"
    return s[1:] if s.startswith("0.") else s


def _fmt_percent(v: float | None) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.1f}"


@dataclass
class _Row:
    label: str
    protocol: str
    method: str = ""
    cells: dict[tuple[str, str], str] = field(default_factory=dict)


def _interleave(run_rows: list[_Row], ref_rows: list[_Row]) -> list[_Row]:
    """Our runs, each method's reported row (same method name) right after its runs, then the
    remaining reported rows in source order."""
    out: list[_Row] = []
    placed: set[int] = set()
    for i, row in enumerate(run_rows):
        out.append(row)
        if i + 1 == len(run_rows) or run_rows[i + 1].method != row.method:
            for j, ref in enumerate(ref_rows):
                if ref.method == row.method and j not in placed:
                    out.append(ref)
                    placed.add(j)
    return out + [r for j, r in enumerate(ref_rows) if j not in placed]


def _table(columns: list[tuple[str, str, str]], rows: list[_Row]) -> str:
    """Markdown table; ``columns`` are (dataset, metric key, header)."""
    header = ["method", "protocol", *(h for _, _, h in columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row.cells.get((d, k), "-") for d, k, _ in columns]
        lines.append("| " + " | ".join([row.label, row.protocol, *cells]) + " |")
    return "\n".join(lines)


def _short_source(source: str) -> str:
    return source.split(" (")[0].strip()


def _reported_table_rows(
    rows: list[ReportedRow], tables: set[str], fmt: dict[str, Fmt]
) -> list[_Row]:
    merged: dict[tuple[str, str, str, str], _Row] = {}
    table_ids: dict[tuple[str, str, str, str], list[str]] = {}
    for r in rows:
        if r.table not in tables:
            continue
        key = (r.method, r.variant, r.protocol, _short_source(r.source))
        row = merged.setdefault(key, _Row("", r.protocol or "paper", r.method))
        ids = table_ids.setdefault(key, [])
        if r.table not in ids:
            ids.append(r.table)
        for metric, value in r.metrics.items():
            if metric in fmt:
                row.cells[(r.dataset, metric)] = fmt[metric](value) + _flag(r, metric)
    for key, row in merged.items():
        method, variant, _, source = key
        name = f"{method} ({variant})" if variant else method
        row.label = f"{name} † (reported, {source} Tab. {', '.join(table_ids[key])})"
    return list(merged.values())


def _flag(row: ReportedRow, metric: str) -> str:
    """`` (?)`` after a value the reference marks doubtful as printed."""
    return " (?)" if metric in row.doubtful else ""


def _doubtful_notes(rows: list[ReportedRow], tables: set[str]) -> list[str]:
    """One footer line per reported row of ``tables`` with a doubtful value: which, and why."""
    return [
        f"(?) doubtful as printed: {r.method} "
        f"{DATASET_LABELS.get(r.dataset, r.dataset)} "
        + ", ".join(METRICS[m].label for m in r.doubtful)
        + f" (Tab. {r.table}): {r.note}."
        for r in rows
        if r.table in tables and r.doubtful
    ]


def run_label(method: str, overrides: dict[str, Any], note: str = "") -> str:
    """``wctr``, ``wctr (sigma_clr=10)`` for a run with hyperparameter overrides, plus a note
    such as ``[subset]``."""
    label = method
    if overrides:
        label += " (" + ", ".join(f"{k}={v}" for k, v in sorted(overrides.items())) + ")"
    return f"{label} [{note}]" if note else label


def _run_rows(
    runs: dict[tuple[RowKey, str], RunResult], task: str, fmt: dict[str, Fmt]
) -> tuple[list[_Row], set[str], bool]:
    rows: dict[RowKey, _Row] = {}
    datasets: set[str] = set()
    subset = False
    for (key, dataset), r in sorted(runs.items(), key=lambda kv: kv[0]):
        metrics = r.metrics.get(task)
        if metrics is None:
            continue
        method, overrides, protocol, note = key
        label = run_label(method, json.loads(overrides), note)
        row = rows.setdefault(key, _Row(label, protocol, method))
        mark = ""
        if is_subset(r):
            mark, subset = "*", True
        for metric in fmt:
            if metric in metrics:
                row.cells[(dataset, metric)] = fmt[metric](metrics[metric]) + mark
        datasets.add(dataset)
    return list(rows.values()), datasets, subset


def _footer(subset: bool, show_all: bool, saved: bool = False) -> str:
    if show_all:
        ours = (
            "other rows are odbench runs of every kind (latest per row and dataset): overrides "
            "in parentheses, [subset] and [other card settings] labelled."
        )
    else:
        ours = (
            "other rows are odbench runs with the card's settings over the full dataset "
            "(latest per method/dataset/protocol); `odbench leaderboard --all` shows the others."
        )
    notes = [f"† reported in the cited paper (copied, not computed by odbench); {ours}"]
    if saved:
        notes[0] += " [saved maps]: prediction folders scored by `odbench score --config`."
    if subset:
        notes.append(
            "\\* evaluated on a subset of the dataset (--limit, skipped images, or a copy of "
            "the dataset missing images)."
        )
    return "\n\n".join(notes)


def _ordered_datasets(paper: tuple[str, ...], found: set[str]) -> list[str]:
    return [d for d in paper if d in found] + sorted(found - set(paper))


def render_saliency(
    results: list[RunResult], reported: list[ReportedRow], show_all: bool = False
) -> str:
    """Table 1a/1c layout: Acc / IoU / maxFβ per dataset (DUT-OMRON, DUTS-TE, ECSSD, CUB,
    then every other dataset with results)."""
    fmt: dict[str, Fmt] = {k: _fmt_fraction for k in SALIENCY_METRICS}
    run_rows, found, subset = _run_rows(shown_runs(results, show_all), "saliency", fmt)
    ref_rows = _reported_table_rows(reported, {"1a", "1c"}, fmt)
    found |= {r.dataset for r in reported if r.table in {"1a", "1c"}}
    columns = [
        (d, k, f"{DATASET_LABELS.get(d, d)} {METRICS[k].label}")
        for d in _ordered_datasets(SALIENCY_DATASETS, found)
        for k in SALIENCY_METRICS
    ]
    title = "## Saliency segmentation (layout of DiffusionSeg Table 1a/1c)"
    saved = any("saved maps" in row.label for row in run_rows)
    footer = "\n\n".join(
        [_footer(subset, show_all, saved), *_doubtful_notes(reported, {"1a", "1c"})]
    )
    return f"{title}\n\n{_table(columns, _interleave(run_rows, ref_rows))}\n\n{footer}\n"


def render_localization(
    results: list[RunResult], reported: list[ReportedRow], show_all: bool = False
) -> str:
    """Table 1b layout: CorLoc (%) per dataset (VOC07, VOC12, COCO20K, then others)."""
    fmt: dict[str, Fmt] = {"corloc": _fmt_percent}
    run_rows, found, subset = _run_rows(shown_runs(results, show_all), "localization", fmt)
    ref_rows = _reported_table_rows(reported, {"1b"}, fmt)
    found |= {r.dataset for r in reported if r.table == "1b"}
    columns = [
        (d, "corloc", f"{DATASET_LABELS.get(d, d)} {METRICS['corloc'].label}")
        for d in _ordered_datasets(LOCALIZATION_DATASETS, found)
    ]
    title = "## Single-object localization, CorLoc % (layout of DiffusionSeg Table 1b)"
    footer = "\n\n".join([_footer(subset, show_all), *_doubtful_notes(reported, {"1b"})])
    return f"{title}\n\n{_table(columns, _interleave(run_rows, ref_rows))}\n\n{footer}\n"


def render_discovery(
    results: list[RunResult], reported: list[ReportedRow], show_all: bool = False
) -> str:
    """Multi-object discovery: class-agnostic box / mask AP50, AP and AR100 (×100, as the
    papers print them) per dataset (COCO, COCO20K, VOC07, VOC12, LVIS, then others), under each
    run's discovery protocol (LVIS: 300 detections)."""
    fmt: dict[str, Fmt] = {k: _fmt_ap for k in DISCOVERY_METRICS}
    shown = shown_runs(results, show_all)
    run_rows, found, subset = _run_rows(shown, "discovery", fmt)
    names: dict[str, set[str]] = {}  # a row's discovery protocols (coco-agnostic, lvis-...)
    for (key, _), r in shown.items():
        block = r.protocol.get("discovery")
        if block and "discovery" in r.metrics:
            label = run_label(key[0], json.loads(key[1]), key[3])
            names.setdefault(label, set()).add(str(block.get("name")))
    for row in run_rows:
        row.protocol = ", ".join(sorted(names.get(row.label, ()))) or row.protocol
    tables = {r.table for r in reported if set(r.metrics) & set(DISCOVERY_METRICS)}
    ref_rows = _reported_table_rows(reported, tables, fmt)
    found |= {r.dataset for r in reported if r.table in tables}
    columns = [
        (d, k, f"{DATASET_LABELS.get(d, d)} {METRICS[k].label}")
        for d in _ordered_datasets(DISCOVERY_DATASETS, found)
        for k in DISCOVERY_METRICS
    ]
    title = "## Multi-object discovery, class-agnostic AP / AR ×100 (CutLER's layout)"
    footer = "\n\n".join([_footer(subset, show_all), *_doubtful_notes(reported, tables)])
    return f"{title}\n\n{_table(columns, _interleave(run_rows, ref_rows))}\n\n{footer}\n"


def _fmt_ap(v: float | None) -> str:
    """AP / AR as the discovery papers print them: ×100, one decimal."""
    return "-" if v is None or not math.isfinite(v) or v < 0 else f"{100 * v:.1f}"


def render_ablation(reported: list[ReportedRow]) -> str:
    """The paper's Tables 3-7 from reported rows: "Acc / IoU" per dataset."""
    parts = []
    for table, title in ABLATION_TABLES.items():
        rows = [r for r in reported if r.table == table]
        if not rows:
            continue
        merged: dict[tuple[str, str, str], _Row] = {}
        for r in rows:
            label = f"{r.method} ({r.variant}) †" if r.variant else f"{r.method} †"
            row = merged.setdefault(
                (r.method, r.variant, r.protocol), _Row(label, r.protocol or "paper")
            )
            acc = _fmt_fraction(r.metrics.get("acc")) + _flag(r, "acc")
            iou = _fmt_fraction(r.metrics.get("iou")) + _flag(r, "iou")
            row.cells[(r.dataset, "acc_iou")] = f"{acc} / {iou}"
        found = {r.dataset for r in rows}
        columns = [
            (d, "acc_iou", DATASET_LABELS.get(d, d))
            for d in _ordered_datasets(SALIENCY_DATASETS, found)
        ]
        source = _short_source(rows[0].source)
        parts.append(
            f"## {title}, reported by {source}\n\n{_table(columns, list(merged.values()))}\n"
        )
    return "\n".join(parts) if parts else "No reported rows for Tables 3-7.\n"


def render(
    task: str,
    results_dir: Path,
    reported_dir: Path | None = None,
    show_all: bool = False,
    skipped: list[str] | None = None,
) -> str:
    """``task``: saliency, localization, discovery, ablation or all; ``show_all``: see the module doc;
    ``skipped``: unreadable results files are left out and reported there
    (:func:`odbench.results.load_all_results`), else they are an error."""
    results = load_all_results(results_dir, skipped) if task != "ablation" else []
    reported = reported_rows(reported_dir)
    parts = {
        "saliency": lambda: render_saliency(results, reported, show_all),
        "localization": lambda: render_localization(results, reported, show_all),
        "discovery": lambda: render_discovery(results, reported, show_all),
        "ablation": lambda: render_ablation(reported),
    }
    if task == "all":
        return "\n".join(f() for f in parts.values())
    return parts[task]()
