"""The report page: one static ``index.html`` (data embedded as JSON, inline CSS, inline SVG
plots) plus ``report.js`` (written here, no library) and the thumbnails beside it.

Sections: the leaderboard of the runs with the paper's reference rows (†, copied from the
cards, never computed), the per-image table (sorted, filtered and paginated by ``report.js``),
the qualitative grids, the plots (IoU histograms, the paired scatter drawn by ``report.js``,
the stored Fβ-threshold curves and any other curve the results carry) and the runs' metadata.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import numpy as np

from odbench.metrics.catalog import METRICS
from odbench.metrics.catalog import keys as keys_of
from odbench.report.runs import ReportData
from odbench.report.select import Selection

#: Kind of grid -> heading.
GRID_TITLES = {
    "worst": "worst {n} images of {m} (lowest IoU)",
    "best": "best {n} images of {m} (highest IoU)",
    "disagree": "{n} images where {m} disagrees most with the other methods (|ΔIoU|)",
    "ids": "Chosen images (--ids)",
}
#: Distinct colours for up to 10 methods (Tableau 10), cycled beyond.
PALETTE = (
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
    "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
)  # fmt: skip


@dataclass(frozen=True)
class GridRow:
    """One image of a grid: its index and the thumbnails (image, GT, (soft, mask) per run)."""

    index: int
    image: str
    gt: str
    preds: list[tuple[str, str]]


@dataclass(frozen=True)
class Grid:
    title: str
    method: int | None  # the method the grid is about (highlighted), None for --ids
    rows: list[GridRow]


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{float(value):.{digits}f}"


def _round(values: np.ndarray) -> list[float | None]:
    return [round(float(v), 4) if math.isfinite(v) else None for v in values]


def colour(m: int) -> str:
    return PALETTE[m % len(PALETTE)]


# ----------------------------------------------------------------------------- leaderboard


def header(key: str) -> str:
    """A metric's column header: its catalog label, ↓ when lower is better."""
    m = METRICS[key]
    return m.label if m.higher_is_better else f"{m.label} ↓"


def _reported_cell(row: Any, key: str) -> str:
    """A reported value; one the reference marks doubtful as printed gets `` (?)`` and its note
    as the cell's tooltip."""
    if key not in row.doubtful:
        return f"<td>{fmt(row.metrics.get(key))}</td>"
    return f"<td title='{esc(row.note)}'>{fmt(row.metrics.get(key))} (?)</td>"


def leaderboard_html(data: ReportData, reported: Sequence[Any]) -> str:
    """Our runs (latest chosen per method), then the paper's rows for this dataset (†).
    Columns: the catalog's saliency metrics, the basic ones always, the others where a run
    stored them (``odbench eval --metrics all``)."""
    basic = keys_of(meter="saliency")
    keys = [
        k
        for k in keys_of(task="saliency")
        if k in basic or any(isinstance(r.saliency.get(k), int | float) for r in data.runs)
    ]
    head = "<tr><th>method</th><th>protocol</th><th>images</th>"
    head += "".join(f"<th>{esc(header(k))}</th>" for k in keys) + "<th>source</th></tr>"
    rows = []
    for run in data.runs:
        s = run.saliency
        n = run.results["dataset"].get("n_evaluated", len(data.ids))
        limit = run.results["dataset"].get("limit")
        kind = "saved maps" if run.map_files is not None else "odbench run"
        src = f"{kind} {run.results['date']}" + (f", --limit {limit}" if limit else "")
        rows.append(
            f"<tr><td>{esc(run.label)}</td><td>{esc(data.protocol)}</td><td>{n}</td>"
            + "".join(f"<td>{fmt(s.get(k))}</td>" for k in keys)
            + f"<td>{esc(src)}</td></tr>"
        )
    ours = {run.results["method"]["name"] for run in data.runs}
    ref = [r for r in reported if r.dataset == data.dataset and r.table in ("1a", "1c")]
    ref.sort(key=lambda r: r.method not in ours)  # our methods' reported rows first (stable)
    for r in ref:
        name = f"{r.method} ({r.variant})" if r.variant else r.method
        rows.append(
            f"<tr class='reported'><td>{esc(name)} †</td><td>{esc(r.protocol or 'paper')}</td>"
            "<td></td>"
            + "".join(_reported_cell(r, k) for k in keys)
            + f"<td>{esc(r.source)}, Tab. {esc(r.table)}</td></tr>"
        )
    note = (
        "<p class='note'>† reported in the cited paper (copied from the cards, not computed by "
        "odbench; the paper's protocol may differ from this run's).</p>"
    )
    return f"<table class='lb'><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>{note}"


# ----------------------------------------------------------------------------- grids


def grids_html(data: ReportData, grids: list[Grid]) -> str:
    parts = []
    for g_index, grid in enumerate(grids):
        if not grid.rows:
            continue
        head = (
            "<tr><th>image</th><th>GT</th>"
            + "".join(
                f"<th colspan='2' class='{'hl' if m == grid.method else ''}'>{esc(label)}"
                "<br><small>map · mask</small></th>"
                for m, label in enumerate(data.labels)
            )
            + "</tr>"
        )
        body = []
        for row in grid.rows:
            sid = data.ids[row.index]
            scores = " ".join(
                f"<span style='color:{colour(m)}'>{fmt(data.iou[m, row.index])}</span>"
                for m in range(len(data.runs))
            )
            cells = [
                f"<td><img src='{esc(row.image)}' alt='image {esc(sid)}' loading='lazy'>"
                f"<div class='cap'>{esc(sid)}<br>IoU {scores}</div></td>",
                f"<td><img src='{esc(row.gt)}' alt='GT {esc(sid)}' loading='lazy'></td>",
            ]
            for m, (soft, mask) in enumerate(row.preds):
                cls = " class='hl'" if m == grid.method else ""
                cells.append(f"<td{cls}><img src='{esc(soft)}' alt='map' loading='lazy'></td>")
                cells.append(f"<td{cls}><img src='{esc(mask)}' alt='mask' loading='lazy'></td>")
            body.append(f"<tr id='g{g_index}-{row.index}'>{''.join(cells)}</tr>")
        opened = " open" if g_index == 0 else ""
        parts.append(
            f"<details class='grid'{opened}><summary>{esc(grid.title)}</summary>"
            f"<table class='grid'><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>"
            "</details>"
        )
    if not parts:
        return "<p>No images selected.</p>"
    return "\n".join(parts)


def grids_for(
    data: ReportData, selections: list[Selection], ids: list[int], n: int, rows: dict[int, GridRow]
) -> list[Grid]:
    """Grids (titles, rows) for the selections and the chosen ``ids``; ``rows`` holds the
    thumbnails of every selected image."""
    out = []
    if ids:
        out.append(Grid(GRID_TITLES["ids"], None, [rows[i] for i in ids]))
    for sel in selections:
        title = GRID_TITLES[sel.kind].format(n=len(sel.indices), m=data.labels[sel.method])
        out.append(Grid(title[0].upper() + title[1:], sel.method, [rows[i] for i in sel.indices]))
    return out


# ----------------------------------------------------------------------------- plots (SVG)


def _axes(width: int, height: int, pad: int, xlabel: str, ylabel: str, ymax: float) -> list[str]:
    x0, y0, x1, y1 = pad, height - pad, width - 10, 10
    out = [
        f"<line x1='{x0}' y1='{y0}' x2='{x1}' y2='{y0}' class='ax'/>",
        f"<line x1='{x0}' y1='{y0}' x2='{x0}' y2='{y1}' class='ax'/>",
        f"<text x='{(x0 + x1) / 2}' y='{height - 4}' class='lbl'>{esc(xlabel)}</text>",
        f"<text x='12' y='{(y0 + y1) / 2}' class='lbl' transform='rotate(-90 12 {(y0 + y1) / 2})'>"
        f"{esc(ylabel)}</text>",
    ]
    for t in (0.0, 0.5, 1.0):
        x = x0 + t * (x1 - x0)
        out.append(f"<text x='{x:.1f}' y='{y0 + 14}' class='tick'>{t:g}</text>")
        y = y0 - t * (y0 - y1)
        out.append(
            f"<text x='{x0 - 4}' y='{y + 4:.1f}' class='tick' text-anchor='end'>"
            f"{t * ymax:.3g}</text>"
        )
    return out


def histograms_svg(
    values: np.ndarray,
    labels: Sequence[str],
    xlabel: str = "IoU",
    bins: int = 20,
    missing: str | None = None,
) -> str:
    """One histogram of per-image ``values`` (M, N) on [0, 1] per method (shared bins and y
    scale; NaN values counted apart, and their mean NaN; with ``missing``, what a NaN means,
    they are left out of the mean)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    counts = [np.histogram(v[np.isfinite(v)], bins=edges)[0] for v in values]
    ymax = max(1, max(int(c.max()) for c in counts))
    w, h, pad = 260, 170, 36
    out = []
    for m, c in enumerate(counts):
        parts = _axes(w, h, pad, xlabel, "images", ymax)
        bw = (w - 10 - pad) / bins
        for k, count in enumerate(c):
            bh = count / ymax * (h - pad - 10)
            parts.append(
                f"<rect x='{pad + k * bw:.1f}' y='{h - pad - bh:.1f}' width='{bw - 1:.1f}' "
                f"height='{bh:.1f}' fill='{colour(m)}'><title>{edges[k]:.2f}–{edges[k + 1]:.2f}: "
                f"{count}</title></rect>"
            )
        finite = np.isfinite(values[m])
        nan = int(np.count_nonzero(~finite))
        note = f" ({nan} {missing or 'NaN'})" if nan else ""
        mean = np.mean(values[m][finite]) if missing and finite.any() else np.mean(values[m])
        out.append(
            f"<figure><svg width='{w}' height='{h}' role='img'>{''.join(parts)}</svg>"
            f"<figcaption>{esc(labels[m])}: mean {esc(xlabel)} {fmt(mean)}{esc(note)}"
            "</figcaption></figure>"
        )
    return "<div class='plots'>" + "".join(out) + "</div>"


def curves_svg(title: str, xlabel: str, ylabel: str, curves: list[Curve]) -> str:
    """Line plot of curves on [0, 1]²; a curve with ``mark_max`` gets its maximum marked."""
    w, h, pad = 420, 300, 40
    parts = _axes(w, h, pad, xlabel, ylabel, 1.0)
    legend = []
    for c in curves:
        x, y = np.asarray(c.x, dtype=np.float64), np.asarray(c.y, dtype=np.float64)
        ok = np.isfinite(x) & np.isfinite(y)
        px, py = pad + x * (w - 10 - pad), (h - pad) - y * (h - pad - 10)
        pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(px[ok], py[ok]))
        parts.append(f"<polyline points='{pts}' fill='none' stroke='{c.colour}' stroke-width='2'/>")
        entry = f"<span style='color:{c.colour}'>■</span> {esc(c.label)}{esc(c.note)}"
        if c.mark_max and ok.any():
            k = int(np.flatnonzero(ok)[np.argmax(y[ok])])
            at = f"max {y[k]:.3f} at {c.xname} {x[k]:.3f}"
            parts.append(
                f"<circle cx='{px[k]:.1f}' cy='{py[k]:.1f}' r='4' fill='{c.colour}'>"
                f"<title>{at}</title></circle>"
            )
            entry += f" ({at})"
        legend.append(entry)
    return (
        f"<figure><svg width='{w}' height='{h}' role='img'>{''.join(parts)}</svg>"
        f"<figcaption>{esc(title)}<br>{'<br>'.join(legend)}</figcaption></figure>"
    )


@dataclass(frozen=True)
class Curve:
    label: str
    colour: str
    x: np.ndarray
    y: np.ndarray
    xname: str = "threshold"
    mark_max: bool = True
    note: str = ""


def fbeta_curves_html(data: ReportData) -> str:
    """The runs' stored mean Fβ-threshold curves (``metrics.saliency.fbeta_curve``)."""
    from odbench.metrics.protocols import get_protocol

    thresholds = get_protocol(data.protocol).thresholds
    curves = []
    for m, run in enumerate(data.runs):
        y = np.asarray(run.saliency.get("fbeta_curve") or [], dtype=np.float64)
        if y.shape == thresholds.shape:
            curves.append(Curve(run.label, colour(m), thresholds, y))
    if not curves:
        return "<p>The results carry no Fβ curves.</p>"
    definition = data.runs[0].results["protocol"].get("definition") or {}
    note = (
        "mean over images of the per-image Fβ at each threshold; maxFβ is its maximum"
        if definition.get("max_over") != "per_image"
        else "mean over images of the per-image Fβ at each threshold; under this protocol "
        "maxFβ is the mean of per-image maxima (not the maximum of this curve)"
    )
    return curves_svg(f"Fβ against threshold ({note})", "threshold", "Fβ", curves)


def _stored_curves(run: Any) -> dict[str, np.ndarray] | None:
    """The mean curves a run stored (``metrics.saliency.curves``: ``thresholds``,
    ``precision``, ``recall``, ``fpr``, ``e_measure``), or None when absent or malformed."""
    raw = run.saliency.get("curves")
    if not isinstance(raw, dict) or not isinstance(raw.get("thresholds"), list):
        return None
    n = len(raw["thresholds"])
    out = {}
    for key, values in raw.items():
        if isinstance(values, list) and len(values) == n:
            out[key] = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    return out


def stored_curves_html(data: ReportData) -> str:
    """PR, ROC and Eξ-threshold curves, drawn from what the runs stored (never recomputed)."""
    stored = [(m, run, _stored_curves(run)) for m, run in enumerate(data.runs)]
    have = [(m, run, c) for m, run, c in stored if c is not None]
    if not have:
        return (
            "<p class='note'>No precision-recall, ROC or E-measure curves in these results "
            "(they are stored by runs scored with the salient-object metric family).</p>"
        )
    plots = []
    for title, xk, yk, xlabel, ylabel in (
        ("precision-recall (mean over images per threshold)", "recall", "precision", "recall",
         "precision"),
        ("ROC (mean over images per threshold)", "fpr", "recall", "FPR", "TPR"),
        ("Eξ against threshold", "thresholds", "e_measure", "threshold", "Eξ"),
    ):  # fmt: skip
        curves = []
        for m, run, c in have:
            if xk not in c or yk not in c:
                continue
            auc = run.saliency.get("auc_roc")
            note = f" (AUC {fmt(auc)})" if xk == "fpr" and isinstance(auc, int | float) else ""
            curves.append(
                Curve(run.label, colour(m), c[xk], c[yk], mark_max=yk == "e_measure", note=note)
            )
        if curves:
            plots.append(curves_svg(title, xlabel, ylabel, curves))
    missing = [run.label for _, run, c in stored if c is None]
    note = f"<p class='note'>No stored curves for {esc(', '.join(missing))}.</p>" if missing else ""
    return "".join(plots) + note


# ----------------------------------------------------------------------------- metadata


def metadata_html(runs: Sequence[Any]) -> str:
    """Each run's files, timing, settings and packages (``runs``: with ``label`` and
    ``results``, the results JSON with its ``_path``)."""
    parts = []
    for m, run in enumerate(runs):
        r = run.results
        fields = [
            ("results file", r.get("_path")),
            ("date (UTC)", r.get("date")),
            ("git commit", r.get("git_commit")),
            ("device", r.get("device")),
            ("wall time", f"{r['wall_time_s']:.1f} s" if r.get("wall_time_s") else None),
            ("images/s", fmt(r.get("images_per_s"), 2)),
            ("predicted / from cache", f"{r.get('n_predicted')} / {r.get('n_cached')}")
            if "cache" in r
            else ("scored by", f"{r.get('source')} {r.get('config')}"),
            ("prediction cache", r.get("cache"))
            if "cache" in r
            else ("saved maps", r["method"].get("predictions")),
            ("card sha256", r["method"].get("card_sha256")),
        ]
        rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in fields)
        blocks = [
            ("hyperparameters", r["method"].get("hyperparameters")),
            ("overrides", r["method"].get("overrides")),
            ("dataset", r.get("dataset")),
            ("protocol definition", r["protocol"]),
            ("packages", r.get("packages")),
        ]
        pre = "".join(
            f"<h4>{esc(k)}</h4><pre>{esc(json.dumps(v, indent=1, sort_keys=True))}</pre>"
            for k, v in blocks
        )
        parts.append(
            f"<details class='meta'><summary style='color:{colour(m)}'>{esc(run.label)}</summary>"
            f"<table class='kv'>{rows}</table>{pre}</details>"
        )
    return "\n".join(parts)


# ----------------------------------------------------------------------------- assembly


def page_data(data: ReportData, grids: list[Grid], row_thumbs: dict[int, str]) -> dict[str, Any]:
    """What ``report.js`` reads: labels, ids, per-image IoU and Fβ (4 decimals, NaN as null),
    the table's thumbnails (``row_thumbs``, else the grid thumbnail of the images in a grid) and
    the anchor of each grid image's first grid row."""
    thumbs = {str(i): path for i, path in row_thumbs.items()}
    anchors: dict[str, str] = {}
    for g, grid in enumerate(grids):
        for row in grid.rows:
            thumbs.setdefault(str(row.index), row.image)
            anchors.setdefault(str(row.index), f"g{g}-{row.index}")
    return {
        "columns": [["iou", "IoU"], ["fbeta", "Fβ"]],
        "methods": data.labels,
        "colours": [colour(m) for m in range(len(data.runs))],
        "ids": data.ids,
        "iou": [_round(v) for v in data.iou],
        "fbeta": [_round(v) for v in data.fbeta],
        "thumbs": thumbs,
        "anchors": anchors,
        "extra": {k: [_round(v) for v in arr] for k, arr in data.extra.items()},
        "extraLabels": {k: header(k) for k in data.extra},
    }


def render_page(
    data: ReportData, grids: list[Grid], row_thumbs: dict[int, str], reported: Sequence[Any]
) -> str:
    payload = json.dumps(page_data(data, grids, row_thumbs), separators=(",", ":"), allow_nan=False)
    payload = payload.replace("</", "<\\/")  # never close the script element early
    title = f"odbench report: {data.dataset}, {len(data.ids)} images, protocol {data.protocol}"
    two = len(data.runs) > 1
    options = "".join(
        f"<option value='{m}'>{esc(label)}</option>" for m, label in enumerate(data.labels)
    )
    pair = (
        f"<label>A <select id='pa'>{options}</select></label> "
        f"<label>B <select id='pb'>{options}</select></label>"
        if two
        else ""
    )
    extra = (
        "<label>more columns <select id='extra'><option value=''>none</option>"
        + "".join(f"<option value='{esc(k)}'>{esc(header(k))}</option>" for k in data.extra)
        + "</select></label>"
        if data.extra
        else ""
    )
    scatter = (
        "<figure><svg id='scatter' width='340' height='340' role='img'></svg>"
        "<figcaption>per-image IoU, B against A (above the diagonal: B better); click a point "
        "to find the image in the table</figcaption></figure>"
        if two
        else ""
    )
    definition = data.runs[0].results["protocol"].get("definition") or {}
    crop = (
        " Under this protocol only the centred square of each image (and GT) is scored; the "
        "thumbnails show the whole image."
        if definition.get("center_crop")
        else ""
    )
    return TEMPLATE.format(
        title=esc(title),
        css=CSS,
        leaderboard=leaderboard_html(data, reported),
        pair=pair + extra,
        grids=grids_html(data, grids),
        crop=crop,
        histograms=histograms_svg(data.iou, data.labels),
        scatter=scatter,
        fbeta=fbeta_curves_html(data),
        curves=stored_curves_html(data),
        metadata=metadata_html(data.runs),
        payload=payload,
    )


def script() -> bytes:
    """``report.js``: the per-image table and the scatter plot."""
    return files("odbench.report").joinpath("report.js").read_bytes()


CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1em 2em; color: #222; }
h1 { font-size: 1.3em; } h2 { border-bottom: 1px solid #ccc; margin-top: 1.5em; }
nav a { margin-right: 1em; }
table { border-collapse: collapse; }
td, th { padding: 2px 6px; border-bottom: 1px solid #eee; text-align: right; }
td:first-child, th:first-child { text-align: left; }
tr.reported { color: #666; }
table.lb td:last-child { text-align: left; font-size: 0.9em; }
#pi th { cursor: pointer; user-select: none; position: sticky; top: 0; background: #f6f6f6; }
#pi th[aria-sort=ascending]::after { content: " ▲"; }
#pi th[aria-sort=descending]::after { content: " ▼"; }
#pi td.neg { color: #c0392b; } #pi td.pos { color: #27ae60; }
#pi img { height: 32px; vertical-align: middle; }
.controls { margin: 0.5em 0; } .controls > * { margin-right: 1em; }
table.grid td, table.grid th { padding: 1px; text-align: center; vertical-align: top; }
table.grid th.hl, table.grid td.hl { background: #fff3c4; }
table.grid img { max-height: 120px; display: block; margin: auto; }
.cap { font-size: 0.8em; text-align: left; max-width: 160px; overflow-wrap: anywhere; }
details.grid, details.meta { margin: 0.5em 0; }
summary { cursor: pointer; font-weight: 600; }
.plots { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0.5em; } figcaption { font-size: 0.85em; max-width: 420px; }
svg .ax { stroke: #444; } svg .lbl { font-size: 11px; text-anchor: middle; }
svg .tick { font-size: 10px; text-anchor: middle; fill: #444; }
pre { background: #f6f6f6; padding: 0.5em; max-height: 20em; overflow: auto; font-size: 0.85em; }
table.kv th { text-align: left; }
.note { color: #666; font-size: 0.9em; }
"""

TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title><style>{css}</style></head>
<body>
<h1>{title}</h1>
<nav><a href="#leaderboard">leaderboard</a><a href="#images">per-image table</a>
<a href="#grids">qualitative grids</a><a href="#plots">plots</a><a href="#metadata">runs</a></nav>
<h2 id="leaderboard">Leaderboard</h2>
{leaderboard}
<h2 id="images">Per-image table</h2>
<div class="controls">
<label>filter ids <input id="filter" type="search" placeholder="substring of the id"></label>
{pair}
<span id="count"></span>
<button id="prev">‹ previous</button><span id="page"></span><button id="next">next ›</button>
</div>
<table id="pi"><thead></thead><tbody></tbody></table>
<h2 id="grids">Qualitative grids</h2>
<p class="note">Thumbnails: image, GT (binarised by the protocol's rule), then each method's soft
map and binarised mask (the pixels Acc and IoU count). Scores are per-image IoU in the order of
the columns. Images come from the dataset and the runs' prediction caches (saved maps: their
files).{crop}</p>
{grids}
<h2 id="plots">Plots</h2>
{histograms}
<div class="plots">{scatter}{fbeta}</div>
<div class="plots">{curves}</div>
<h2 id="metadata">Runs</h2>
{metadata}
<script id="odb-data" type="application/json">{payload}</script>
<script src="report.js"></script>
</body></html>
"""
