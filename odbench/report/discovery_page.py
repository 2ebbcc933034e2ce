"""The discovery page of ``odbench report``: one static ``index.html`` (data embedded as JSON,
inline CSS and SVG) with ``report.js`` and the overlay thumbnails beside it.

Sections: the runs' 12 class-agnostic AP / AR numbers per iou type (×100, as the papers print
them) with the papers' rows for the dataset (†, from ``leaderboard/reported/``, never
computed), the per-image table (recall and precision at IoU 0.50, detections; sorted, filtered
and paginated by ``report.js``), the grids of instance overlays with a legend per image (each
instance's colour, score and state at IoU 0.50), the precision-recall curves at IoU 0.50 and
0.75 and the recall histograms, and the runs' metadata.  Nothing here is a saliency metric.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from odbench.metrics.detection import SUMMARY_KEYS
from odbench.report.discovery import CURVE_IOUS, DiscoveryData, OverlayRow, pr_curves
from odbench.report.page import (
    CSS,
    Curve,
    _round,
    colour,
    curves_svg,
    esc,
    fmt,
    histograms_svg,
    metadata_html,
)

#: iou type -> the prefix of its metric keys and its heading.
IOU_TYPES = {"bbox": ("box", "boxes (bbox)"), "segm": ("mask", "masks (segm)")}


@dataclass(frozen=True)
class Grid:
    title: str
    method: int | None  # the method the grid is about (highlighted), None for --ids
    rows: list[OverlayRow]


def _ap(value: Any) -> str:
    from odbench.leaderboard import _fmt_ap

    return _fmt_ap(value if isinstance(value, int | float) else None)


def metrics_html(data: DiscoveryData, reported: Sequence[Any]) -> str:
    """Per iou type a table: our runs, then the papers' rows for the dataset (†)."""
    parts = []
    for prefix, heading in IOU_TYPES.values():
        keys = [f"{prefix}_{k}" for k in SUMMARY_KEYS]
        ours = [(m, r) for m, r in enumerate(data.runs) if keys[0] in r.metrics["discovery"]]
        ref = [
            r for r in reported if r.dataset == data.dataset and any(k in r.metrics for k in keys)
        ]
        if not ours and not ref:
            continue
        head = "<tr><th>method</th><th>protocol</th><th>images</th>"
        head += "".join(f"<th>{esc(k)}</th>" for k in SUMMARY_KEYS) + "<th>source</th></tr>"
        rows = []
        for m, run in ours:
            block = run.protocol.get("discovery") or {}
            values = run.metrics["discovery"]
            limit = run.limit
            src = f"odbench run {run.date}" + (f", --limit {limit}" if limit else "")
            rows.append(
                f"<tr><td style='color:{colour(m)}'>{esc(data.labels[m])}</td>"
                f"<td>{esc(block.get('name', ''))}</td><td>{run.n_evaluated or len(data.ids)}</td>"
                + "".join(f"<td>{_ap(values.get(k))}</td>" for k in keys)
                + f"<td>{esc(src)}</td></tr>"
            )
        for r in ref:
            name = f"{r.method} ({r.variant})" if r.variant else r.method
            rows.append(
                f"<tr class='reported'><td>{esc(name)} †</td><td>{esc(r.protocol or 'paper')}"
                "</td><td></td>"
                + "".join(f"<td>{_ap(r.metrics.get(k))}</td>" for k in keys)
                + f"<td>{esc(r.source)}</td></tr>"
            )
        parts.append(
            f"<h3>{esc(heading)}</h3><table class='lb'><thead>{head}</thead>"
            f"<tbody>{''.join(rows)}</tbody></table>"
        )
    note = (
        "<p class='note'>Class-agnostic COCO AP / AR ×100 (every category as one; crowd regions "
        "ignored); AR100 is recall at the protocol's budget (lvis-agnostic: 300 detections); "
        "– where COCO gives -1 (no GT in that area range).  † reported in the cited source "
        "(not computed by odbench).</p>"
    )
    return "".join(parts) + note


def _legend(overlay: Any) -> str:
    items = "".join(
        f"<li data-det='{k}' data-state='{esc(state)}' class='st-{esc(state.split()[0])}'>"
        f"<span style='color:{c}'>■</span> {score:.3f} {esc(state)}</li>"
        for k, score, state, c in overlay.shown
    )
    return f"<ul class='inst'>{items}</ul>" if items else "<p class='note'>no instance</p>"


def grids_html(data: DiscoveryData, grids: list[Grid]) -> str:
    parts = []
    for g_index, grid in enumerate(grids):
        if not grid.rows:
            continue
        head = "<tr><th>image + GT</th>" + "".join(
            f"<th class='{'hl' if m == grid.method else ''}'>{esc(label)}"
            f"<br><small>{esc(data.iou_types[m])}</small></th>"
            for m, label in enumerate(data.labels)
        )
        body = []
        for row in grid.rows:
            sid = data.ids[row.index]
            recall = " ".join(
                f"<span style='color:{colour(m)}'>{fmt(data.recall[m, row.index])}</span>"
                for m in range(len(data.runs))
            )
            cells = [
                f"<td><img src='{esc(row.gt)}' alt='image and GT {esc(sid)}' loading='lazy'>"
                f"<div class='cap'>{esc(sid)}<br>{int(data.n_gt[row.index])} GT; recall@.5 "
                f"{recall}</div></td>"
            ]
            for m, overlay in enumerate(row.overlays):
                cls = " class='hl'" if m == grid.method else ""
                cells.append(
                    f"<td{cls} data-method='{m}'><img src='{esc(overlay.thumb)}' "
                    f"alt='instances of {esc(data.labels[m])}' loading='lazy'>"
                    f"{_legend(overlay)}</td>"
                )
            body.append(
                f"<tr id='g{g_index}-{row.index}' data-id='{esc(sid)}'>{''.join(cells)}</tr>"
            )
        opened = " open" if g_index == 0 else ""
        parts.append(
            f"<details class='grid'{opened}><summary>{esc(grid.title)}</summary>"
            f"<table class='grid'><thead>{head}</tr></thead><tbody>{''.join(body)}</tbody>"
            "</table></details>"
        )
    return "\n".join(parts) if parts else "<p>No images selected.</p>"


def pr_html(data: DiscoveryData) -> str:
    """The precision-recall curves at each IoU of :data:`CURVE_IOUS`, per iou type, one curve
    per run (its AP at that IoU, the curve's mean, in the legend)."""
    plots = []
    for iou_type, (_, heading) in IOU_TYPES.items():
        for iou in CURVE_IOUS:
            curves = []
            for m, run in enumerate(data.runs):
                rec = run.records.discovery
                if rec is None or iou_type not in rec.iou_types:
                    continue
                x, y = pr_curves(run, iou_type, iou)
                ap = float(np.mean(y)) if np.isfinite(y).all() else float("nan")
                note = f" (AP{round(iou * 100)} {_ap(ap)})"
                curves.append(Curve(data.labels[m], colour(m), x, y, mark_max=False, note=note))
            if curves:
                title = (
                    f"{heading}: precision-recall at IoU {iou:g} (all areas, interpolated at "
                    "101 recall points; AP is its mean)"
                )
                plots.append(curves_svg(title, "recall", "precision", curves))
    return "".join(plots)


def page_data(data: DiscoveryData, grids: list[Grid], row_thumbs: dict[int, str]) -> dict[str, Any]:
    """What ``report.js`` reads (see :func:`odbench.report.page.page_data`)."""
    thumbs = {str(i): path for i, path in row_thumbs.items()}
    anchors: dict[str, str] = {}
    for g, grid in enumerate(grids):
        for row in grid.rows:
            thumbs.setdefault(str(row.index), row.gt)
            anchors.setdefault(str(row.index), f"g{g}-{row.index}")
    return {
        "columns": [
            ["recall50", "recall@.5"],
            ["precision50", "precision@.5"],
            ["ndet", "dets", 0],
        ],
        "common": [["ngt", "GT", 0]],
        "methods": data.labels,
        "colours": [colour(m) for m in range(len(data.runs))],
        "ids": data.ids,
        "recall50": [_round(v) for v in data.recall],
        "precision50": [_round(v) for v in data.precision],
        "ndet": data.n_det.tolist(),
        "ngt": data.n_gt.tolist(),
        "thumbs": thumbs,
        "anchors": anchors,
    }


def render_discovery_page(
    data: DiscoveryData, grids: list[Grid], row_thumbs: dict[int, str], reported: Sequence[Any]
) -> str:
    from odbench.report.runs import _as_report_run

    payload = json.dumps(page_data(data, grids, row_thumbs), separators=(",", ":"), allow_nan=False)
    payload = payload.replace("</", "<\\/")  # never close the script element early
    protocols = sorted({str((r.protocol.get("discovery") or {}).get("name")) for r in data.runs})
    title = (
        f"odbench report: multi-object discovery on {data.dataset}, {len(data.ids)} images, "
        f"protocol {', '.join(protocols)}"
    )
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
    scatter = (
        "<figure><svg id='scatter' width='340' height='340' role='img'></svg>"
        "<figcaption>per-image recall at IoU .5, B against A (above the diagonal: B better); "
        "click a point to find the image in the table</figcaption></figure>"
        if two
        else ""
    )
    shown = []
    for run, label in zip(data.runs, data.labels):
        meta_run = _as_report_run(run, label)  # its protocol: the discovery one it was scored by
        discovery = run.protocol.get("discovery") or {}
        shown.append(replace(meta_run, results={**meta_run.results, "protocol": discovery}))
    return TEMPLATE.format(
        title=esc(title),
        css=CSS + DISCOVERY_CSS,
        metrics=metrics_html(data, reported),
        pair=pair,
        grids=grids_html(data, grids),
        pr=pr_html(data),
        histograms=histograms_svg(data.recall, data.labels, "recall@.5", missing="without GT"),
        scatter=scatter,
        metadata=metadata_html(shown),
        payload=payload,
    )


DISCOVERY_CSS = """
ul.inst { list-style: none; padding: 0; margin: 2px 0; font-size: 0.75em; text-align: left; }
ul.inst li.st-unmatched { color: #a33; } ul.inst li.st-crowd { color: #777; }
table.grid img { max-height: 240px; max-width: 260px; }
.key span { margin-right: 1.2em; }
"""

TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title><style>{css}</style></head>
<body>
<h1>{title}</h1>
<nav><a href="#leaderboard">AP / AR</a><a href="#images">per-image table</a>
<a href="#grids">instance overlays</a><a href="#plots">plots</a><a href="#metadata">runs</a></nav>
<h2 id="leaderboard">Class-agnostic AP / AR</h2>
{metrics}
<h2 id="images">Per-image table</h2>
<p class="note">Per image and method, at IoU .5, all areas (segm when the run scored masks,
else bbox): recall (GT matched / GT; – without GT), precision (matched / scored detections,
crowd matches left out) and the detections scored (at most the protocol's budget).</p>
<div class="controls">
<label>filter ids <input id="filter" type="search" placeholder="substring of the id"></label>
{pair}
<span id="count"></span>
<button id="prev">‹ previous</button><span id="page"></span><button id="next">next ›</button>
</div>
<table id="pi"><thead></thead><tbody></tbody></table>
<h2 id="grids">Instance overlays</h2>
<p class="note key">Image + GT: <span>white box: a GT instance</span><span>dashed grey box,
"crowd": a crowd region (ignored by the matching)</span><br>Each method: its best instances by
score (at most 20), a colour each (mask tinted, box outlined), the score on the box; at IoU .5:
<span>solid outline: matched a GT</span><span>dashed, "x": unmatched</span><span>dotted, "c":
matched a crowd region (ignored)</span>.  The list under each image gives every instance
drawn: colour, score, state.  Instances come from the runs' prediction caches; their
matching is recomputed with the run's protocol and checked equal to the stored record.</p>
{grids}
<h2 id="plots">Plots</h2>
<div class="plots">{pr}</div>
{histograms}
<div class="plots">{scatter}</div>
<h2 id="metadata">Runs</h2>
{metadata}
<script id="odb-data" type="application/json">{payload}</script>
<script src="report.js"></script>
</body></html>
"""
