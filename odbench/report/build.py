"""``odbench report``: the static HTML report and the PNG figure grid.

Both read everything from the results store, the runs' prediction caches and the dataset
(:mod:`odbench.report.runs`, :mod:`odbench.report.thumbs`); nothing is predicted or scored again.
"""

from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from odbench.data.base import Dataset
from odbench.imageio import atomic_write_bytes
from odbench.metrics.protocols import DEFAULT_PROTOCOL
from odbench.outputs import check_output_file, check_output_folder
from odbench.report.runs import ReportData, load_report_data
from odbench.results import ResultsError


@dataclass(frozen=True)
class ReportOutcome:
    path: Path
    n_images: int
    n_selected: int
    thumbs_written: int
    thumbs_reused: int
    seconds: float


def resolve_ids(all_ids: list[str], ids: list[str]) -> list[int]:
    """Row indices in ``all_ids`` (the runs' images) of the chosen sample ids; an unknown id
    is one error listing a few valid."""
    where = {sid: k for k, sid in enumerate(all_ids)}
    unknown = [i for i in ids if i not in where]
    if unknown:
        raise ResultsError(
            f"--ids: {', '.join(unknown[:5])} not among the {len(all_ids)} images of the runs "
            f"(e.g. {', '.join(all_ids[:3])})"
        )
    return [where[i] for i in ids]


def open_dataset(data: ReportData, data_root: Path | None) -> Dataset:
    """The dataset the runs evaluated (checked against each run's record of it): a registered
    one under ``data_root``; a ``folder:NAME`` one from ``data_root`` or the images and masks
    folders its runs recorded; a dataset of ``score --config`` only (no registered name) from the
    images folder its config gave and the GT folder its runs were scored against."""
    from odbench.data.base import create_dataset
    from odbench.data.folder import FolderDataset
    from odbench.registry import DATASETS
    from odbench.report.thumbs import check_dataset

    recorded = [run.results["dataset"] for run in data.runs]
    folder = data.dataset == "folder" or data.dataset.startswith("folder:")
    saved = [run for run in data.runs if run.gt_files]
    images = next((run for run in saved if "images" in run.results["dataset"]), None)
    if folder:
        if data_root is not None:
            dataset = create_dataset("folder", data_root=data_root)
        else:
            where = next((d for d in recorded if "images" in d and "masks" in d), None)
            if where is None:
                raise ResultsError(
                    f"dataset {data.dataset!r}: its runs record no folders; give --data-root"
                )
            dataset = FolderDataset(where["images"], where["masks"])
    elif data.dataset in DATASETS:
        dataset = create_dataset(data.dataset, data_root=data_root)
    elif images is not None and images.gt_files:
        masks = next(iter(images.gt_files.values())).parent
        dataset = FolderDataset(images.results["dataset"]["images"], masks, name=data.dataset)
    elif saved:
        config = saved[0].results.get("config")
        raise ResultsError(
            f"dataset {data.dataset!r}: not a registered dataset, and no run records its "
            f'images; add images = "FOLDER" to [datasets.{data.dataset}] in {config} and '
            f"score it again"
        )
    else:
        raise ResultsError(
            f"dataset {data.dataset!r}: not a registered dataset (odbench list), a folder one "
            f"or one of odbench score --config; the report cannot open it"
        )
    for run in data.runs:
        check_dataset(dataset, run)
    return dataset


#: What a report folder holds; a folder with anything else is not overwritten.
REPORT_FILES = frozenset({"index.html", "report.js", "thumbs"})


def _check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ResultsError(f"--out {out}: exists and is not a folder")
    check_output_folder(out, "--out")
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in REPORT_FILES)
        if foreign:
            raise ResultsError(
                f"--out {out}: holds {', '.join(foreign[:3])}, not a report; choose a new or "
                f"empty folder"
            )


def _check_cached(data: ReportData, rows: list[int], dataset: Dataset, protocol: Any) -> None:
    """Every map the report shows is in its run's cache or folder, and the GT shown is the one
    each saved-maps run was scored against (checked before anything is written)."""
    from odbench.cache import PredictionCache
    from odbench.report.thumbs import check_gt, load_prediction

    for run in data.runs:
        if run.map_files is not None:
            for i in rows:
                if data.ids[i] not in run.map_files:
                    load_prediction(run, data.ids[i])  # raises the one-line error
                check_gt(dataset.load(data.ids[i]), run, protocol)
            continue
        cache = PredictionCache(run.cache_folder)
        for i in rows:
            if not cache.has(data.ids[i]):
                load_prediction(run, data.ids[i])  # raises the one-line error naming the file


def build_report(
    results_dir: Path,
    dataset: str,
    methods: list[str],
    out: Path,
    *,
    protocol: str = DEFAULT_PROTOCOL,
    data_root: Path | None = None,
    n: int = 8,
    ids: list[str] | None = None,
    thumb_size: int = 160,
    row_images: bool = True,
    workers: int | None = None,
    show_progress: bool = False,
) -> ReportOutcome:
    """Write ``out/index.html``, ``out/report.js`` and the thumbnails under ``out/thumbs/``
    (reused from an earlier build when their sources are unchanged): image, GT, maps and masks
    of the images in the grids and, with ``row_images``, a small image for every table row."""
    from rich.console import Console
    from rich.progress import track

    from odbench.metrics.protocols import get_protocol
    from odbench.report.page import GridRow, grids_for, render_page, script
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
    data = load_report_data(results_dir, dataset, methods, protocol)
    chosen = resolve_ids(data.ids, ids or [])
    selections = select_all(data.iou, n)
    wanted = sorted({*chosen, *(i for s in selections for i in s.indices)})
    dataset_obj = open_dataset(data, data_root)
    _check_cached(data, wanted, dataset_obj, get_protocol(protocol))
    thumbs = Thumbnailer(out / "thumbs", dataset_obj, get_protocol(protocol), thumb_size)
    rows: dict[int, GridRow] = {}
    console = Console(stderr=True)
    for i in track(wanted, "thumbnails", console=console, disable=not show_progress):
        sid = data.ids[i]
        image, gt = thumbs.sample(sid)
        rows[i] = GridRow(i, image, gt, [thumbs.prediction(run, sid) for run in data.runs])
    row_thumbs: dict[int, str] = {}
    if row_images:
        chunk = 500
        starts = range(0, len(data.ids), chunk)
        for first in track(starts, "table thumbnails", console=console, disable=not show_progress):
            paths = thumbs.row_images(data.ids[first : first + chunk], workers=workers)
            row_thumbs.update(enumerate(paths, first))
    grids = grids_for(data, selections, chosen, n, rows)
    html = render_page(data, grids, row_thumbs, reported_rows())
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


def fit_panel(arr: np.ndarray, cell: int) -> Any:
    """A panel scaled (up or down, Lanczos) to fit a ``cell``-pixel square, aspect kept."""
    from PIL import Image

    img = Image.fromarray(arr)
    scale = cell / max(img.width, img.height)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS)


def build_grid(
    results_dir: Path,
    dataset: str,
    methods: list[str],
    out: Path,
    *,
    n: int,
    protocol: str = DEFAULT_PROTOCOL,
    data_root: Path | None = None,
    ids: list[str] | None = None,
    select: str = "disagree",
    panel: str = "map",
    cell: int = 192,
) -> Path:
    """One PNG for a paper figure: a row per image (the ``--ids``, else ``n`` images chosen by
    ``select`` over all methods), columns image, GT, then each method's soft map (``panel="map"``)
    or binarised mask (``"mask"``), or image + GT then each method's instances of its discovery
    run (``"instances"``, :mod:`odbench.report.instances`); every panel scaled to fit a
    ``cell``-pixel square (rows as tall as their images)."""
    from odbench.metrics.protocols import get_protocol
    from odbench.metrics.saliency import binarize_gt, binarize_prediction
    from odbench.report.select import rank_images
    from odbench.report.thumbs import check_gt, load_prediction, mask_panel, to_8bit

    out = Path(out)
    if out.suffix.lower() != ".png":
        raise ResultsError(f"--out {out}: the grid is a PNG file; give a name ending in .png")
    if out.is_dir():
        raise ResultsError(f"--out {out}: is a folder; give a .png file name")
    check_output_file(out, "--out")
    if panel not in ("map", "mask", "instances"):
        raise ResultsError(f"--panel {panel!r}: expected map, mask or instances")
    if panel == "instances":
        from odbench.report.instances import instance_grid

        full, labels = instance_grid(
            results_dir, dataset, methods, n=n, protocol=protocol, data_root=data_root,
            ids=ids, select=select,
        )  # fmt: skip
        atomic_write_bytes(
            out, compose_grid([[fit_panel(a, cell) for a in r] for r in full], labels, cell)
        )
        return out
    data = load_report_data(results_dir, dataset, methods, protocol)
    proto = get_protocol(protocol)
    if ids:
        rows = resolve_ids(data.ids, ids)
    else:
        if n < 1:
            raise ResultsError(f"--grid {n}: give 1 or more images")
        try:
            rows = [int(i) for i in rank_images(data.iou, select, n)]
        except ValueError as e:
            raise ResultsError(f"--select {select}: {e}") from e
    dataset_obj = open_dataset(data, data_root)
    panels: list[list[Any]] = []  # per row: image, GT, then each method's map or mask (full size)
    for i in rows:
        sample = dataset_obj.load(data.ids[i])
        if sample.mask is None:
            raise ResultsError(f"dataset {data.dataset!r}: {data.ids[i]!r} has no mask")
        row = [sample.image, mask_panel(binarize_gt(sample.mask, proto.gt_rule))]
        for run in data.runs:
            check_gt(sample, run, proto)
            pred = load_prediction(run, data.ids[i], sample.image.shape[:2])
            row.append(
                to_8bit(pred) if panel == "map" else mask_panel(binarize_prediction(pred, proto))
            )
        panels.append([fit_panel(arr, cell) for arr in row])
    atomic_write_bytes(out, compose_grid(panels, ["image", "GT", *data.labels], cell))
    return out


def compose_grid(panels: list[list[Any]], labels: list[str], cell: int) -> bytes:
    """The PNG bytes of fitted panels (rows of PIL images) under one row of column labels."""
    from PIL import Image, ImageDraw, ImageFont

    header, gap = 28, 4
    heights = [max(p.height for p in fitted) for fitted in panels]
    canvas = Image.new(
        "RGB",
        (len(panels[0]) * (cell + gap) + gap, header + sum(heights) + gap * (len(panels) + 1)),
        "white",
    )
    draw = ImageDraw.Draw(canvas)
    try:
        font: Any = ImageFont.load_default(size=14)
    except TypeError:  # Pillow < 10.1: the fixed-size bitmap font
        font = ImageFont.load_default()
    for c, label in enumerate(labels):
        x = gap + c * (cell + gap) + cell // 2
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        xy = (x - (right - left) // 2 - left, header // 2 - (bottom - top) // 2 - top)
        draw.text(xy, label, fill="black", font=font)
    y = header + gap
    for fitted, height in zip(panels, heights):
        for c, img in enumerate(fitted):
            x = gap + c * (cell + gap) + (cell - img.width) // 2
            canvas.paste(img.convert("RGB"), (x, y + (height - img.height) // 2))
        y += height + gap
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()
