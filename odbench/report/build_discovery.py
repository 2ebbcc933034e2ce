"""``odbench report --task discovery``: the discovery page put together from the runs
(:mod:`odbench.report.discovery`), its overlays (:mod:`odbench.report.instances`) and its HTML
(:mod:`odbench.report.discovery_page`)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from odbench.data.base import Dataset
from odbench.report.build import ReportOutcome, _check_out_dir
from odbench.report.discovery import load_discovery_data, overlay_row
from odbench.results import ResultsError


def build_discovery_report(
    results_dir: Path,
    dataset: str,
    methods: list[str],
    out: Path,
    *,
    protocol: str,
    data_root: Path | None = None,
    n: int = 8,
    ids: list[str] | None = None,
    thumb_size: int = 160,
    row_images: bool = True,
    workers: int | None = None,
    show_progress: bool = False,
    dataset_obj: Dataset | None = None,
) -> ReportOutcome:
    """Write the discovery page (``out/index.html``, ``report.js``, ``thumbs/``): the runs' 12
    AP / AR numbers per iou type with the papers' rows, the per-image table, grids of instance
    overlays (worst / best / most disagreeing by recall at IoU 0.50, and ``ids``), the
    precision-recall curves at IoU 0.50 and 0.75 and the runs' metadata.  ``dataset_obj``: the
    dataset itself (else opened from the runs' records or ``data_root``); overlays are drawn
    at twice ``thumb_size``."""
    from rich.console import Console
    from rich.progress import track

    from odbench.metrics.protocols import get_protocol
    from odbench.report.build import resolve_ids
    from odbench.report.discovery_page import Grid, render_discovery_page
    from odbench.report.instances import open_run_dataset
    from odbench.report.page import GRID_TITLES, script
    from odbench.report.select import select_all
    from odbench.report.thumbs import Thumbnailer
    from odbench.reported import reported_rows

    start = time.perf_counter()
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2
    out = Path(out)
    _check_out_dir(out)
    if n < 0:
        raise ResultsError(f"-n {n}: give 0 or more images per grid")
    data = load_discovery_data(results_dir, dataset, methods, protocol)
    chosen = resolve_ids(data.ids, ids or [])
    selections = select_all(data.recall, n)
    wanted = sorted({*chosen, *(i for s in selections for i in s.indices)})
    if dataset_obj is None:
        dataset_obj = open_run_dataset(data.runs[0], data_root)
    thumbs = Thumbnailer(out / "thumbs", dataset_obj, get_protocol(protocol), 2 * thumb_size)
    console = Console(stderr=True)
    rows = {
        i: overlay_row(data, i, dataset_obj, thumbs)
        for i in track(wanted, "overlays", console=console, disable=not show_progress)
    }
    row_thumbs: dict[int, str] = {}
    if row_images:
        paths = thumbs.row_images(data.ids, workers=workers)
        row_thumbs.update(enumerate(paths))
    grids = [Grid(GRID_TITLES["ids"], None, [rows[i] for i in chosen])] if chosen else []
    titles = {
        "worst": "worst {n} images of {m} (lowest recall at IoU .5)",
        "best": "best {n} images of {m} (highest recall at IoU .5)",
        "disagree": "{n} images where {m} disagrees most with the other methods "
        "(|Δ recall at IoU .5|)",
    }
    for sel in selections:
        title = titles[sel.kind].format(n=len(sel.indices), m=data.labels[sel.method])
        grids.append(Grid(title[0].upper() + title[1:], sel.method, [rows[i] for i in sel.indices]))
    html = render_discovery_page(data, grids, row_thumbs, reported_rows())
    from odbench.imageio import atomic_write_bytes

    atomic_write_bytes(out / "report.js", script())
    atomic_write_bytes(out / "index.html", html.encode())
    return ReportOutcome(
        out / "index.html",
        len(data.ids),
        len(wanted),
        thumbs.written,
        thumbs.reused,
        time.perf_counter() - start,
    )
