"""Per-image instance overlays of discovery runs: ``odbench report --grid N --panel instances``.

One PNG, a row per image: the image with its GT instances (white boxes; crowd regions grey),
then each method's instances as the runner cached them (never predicted again), each in its own
colour (mask tinted, box outlined) with its score; an instance that matches a GT at IoU 0.50
(the run's own match records: segm when the run scored masks, else bbox) has a thick outline, an
unmatched one a thin outline and an ``x`` after its score.  Images are chosen by recall at IoU
0.50 per image (matched GT / GT; an image without GT counts as 1): ``disagree`` (largest spread
across methods), ``worst`` or ``best`` (mean across methods), or given with ``--ids``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from odbench.cache import CacheError, PredictionCache
from odbench.data.base import Dataset
from odbench.metrics.detection import TP, ImageMatches, tie_order
from odbench.metrics.discovery_records import DiscoveryRecords
from odbench.metrics.instances import InstanceGT, Instances
from odbench.results import ResultsError, RunResult

#: Instance colours (RGB), cycled: matplotlib's tab10.
PALETTE = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)  # fmt: skip


def matched_at_50(record: ImageMatches, dets: Instances) -> np.ndarray:
    """Per detection (in the method's order): whether it matched a GT at IoU 0.50 (all areas)
    in ``record``, the image's match record (kept detections in the protocol's tie order)."""
    order = tie_order(dets)[: len(record.scores)]
    out = np.zeros(len(dets), dtype=bool)
    out[order] = record.status[0, 0] == TP
    return out


def _records(run: RunResult) -> tuple[DiscoveryRecords, str]:
    rec = run.records.discovery
    if rec is None:
        raise ResultsError(f"{run.path}: no discovery records; re-run odbench eval")
    return rec, "segm" if rec.mask is not None else "bbox"


def draw_instances(
    image: np.ndarray, dets: Instances, matched: np.ndarray, max_shown: int = 20
) -> np.ndarray:
    """``image`` with the ``max_shown`` best-scored instances (see the module docstring)."""
    from PIL import Image, ImageDraw
    from pycocotools import mask as mask_utils

    base = Image.fromarray(image).convert("RGBA")
    tint = np.zeros((*image.shape[:2], 4), dtype=np.uint8)
    shown = np.argsort(-np.asarray(dets.scores), kind="stable")[:max_shown][::-1]
    for k in shown:  # best last: drawn on top
        colour = PALETTE[int(k) % len(PALETTE)]
        if dets.masks is not None:
            tint[mask_utils.decode(dets.masks[k]).astype(bool)] = (*colour, 110)
    out = Image.alpha_composite(base, Image.fromarray(tint, "RGBA"))
    draw = ImageDraw.Draw(out)
    for k in shown:
        colour = PALETTE[int(k) % len(PALETTE)]
        x1, y1, x2, y2 = (float(v) for v in dets.boxes[k])
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=3 if matched[k] else 1)
        label = f"{float(dets.scores[k]):.2f}" + ("" if matched[k] else " x")
        draw.text((x1 + 2, y1 + 1), label, fill=colour)
    return np.asarray(out.convert("RGB"))


def draw_gt(image: np.ndarray, gt: InstanceGT) -> np.ndarray:
    """``image`` with the GT boxes: white, crowd regions grey."""
    from PIL import Image, ImageDraw

    out = Image.fromarray(image).convert("RGB")
    draw = ImageDraw.Draw(out)
    for box, crowd in zip(gt.boxes, gt.iscrowd):
        draw.rectangle(
            tuple(float(v) for v in box), outline=(128, 128, 128) if crowd else "white", width=2
        )
    return np.asarray(out)


def recall_at_50(rec: DiscoveryRecords, iou_type: str) -> np.ndarray:
    """Per image: GT matched at IoU 0.50 over GT (1 for an image without GT)."""
    out = []
    for m in rec.matches(iou_type):
        n_gt = int(m.num_gt[0])
        out.append(float(np.count_nonzero(m.status[0, 0] == TP)) / n_gt if n_gt else 1.0)
    return np.asarray(out)


def load_discovery_runs(
    results_dir: Path, dataset: str, methods: list[str], protocol: str
) -> list[RunResult]:
    """The discovery run of each method (:func:`odbench.results.select`), all on one id list."""
    from odbench.results import load_all_results, select

    results = load_all_results(results_dir)
    runs = [
        select(results, m, dataset, protocol, task="discovery", results_dir=results_dir)
        for m in methods
    ]
    ids = sorted(runs[0].records.ids)
    for run in runs[1:]:
        if sorted(run.records.ids) != ids:
            raise ResultsError(
                f"{run.path} and {runs[0].path} cover different images; evaluate every method "
                "on the same dataset and --limit"
            )
    return runs


def open_run_dataset(run: RunResult, data_root: Path | None) -> Dataset:
    """The dataset a discovery run evaluated: a COCO folder from the files it recorded, else
    the registered dataset under ``data_root``."""
    from odbench.data.base import DatasetError, create_dataset

    recorded = run.dataset
    try:
        if run.dataset_name == "coco" and data_root is None and "annotations" in recorded:
            return create_dataset(
                "coco", annotations=recorded["annotations"], images=recorded["images"]
            )
        return create_dataset(run.dataset_name, data_root=data_root)
    except DatasetError as e:
        raise ResultsError(f"{run.path}: cannot open its dataset: {e}") from e


def instance_panels(runs: list[RunResult], dataset: Dataset, sample_id: str) -> list[np.ndarray]:
    """One row of the figure: image with GT, then each run's instances."""
    sample = dataset.load(sample_id)
    if sample.instances is None:
        raise ResultsError(f"dataset {dataset.name!r}: {sample_id!r} has no instances")
    row = [draw_gt(sample.image, sample.instances)]
    for run in runs:
        rec, iou_type = _records(run)
        where = run.records.ids.index(sample_id)
        record = rec.take(np.array([where])).matches(iou_type)[0]
        cache = PredictionCache(Path(str(run.info.get("cache"))))
        try:
            dets = cache.get_instances(sample_id) if cache.has(sample_id) else None
        except CacheError as e:
            raise ResultsError(str(e)) from e
        if dets is None:
            raise ResultsError(
                f"{cache.path(sample_id)}: the instances of {sample_id!r} are not in the "
                f"prediction cache of {run.path}; re-run odbench eval to fill it"
            )
        row.append(draw_instances(sample.image, dets, matched_at_50(record, dets)))
    return row


def choose_ids(runs: list[RunResult], select: str, n: int) -> list[str]:
    """``n`` sample ids by recall at IoU 0.50 (see the module docstring)."""
    from odbench.report.select import rank_images

    ids = list(runs[0].records.ids)
    scores = []
    for run in runs:
        rec, iou_type = _records(run)
        order = {i: k for k, i in enumerate(run.records.ids)}
        scores.append(recall_at_50(rec, iou_type)[[order[i] for i in ids]])
    try:
        return [ids[int(k)] for k in rank_images(np.stack(scores), select, n)]
    except ValueError as e:
        raise ResultsError(f"--select {select}: {e}") from e


def instance_grid(
    results_dir: Path,
    dataset: str,
    methods: list[str],
    *,
    n: int,
    protocol: str,
    data_root: Path | None,
    ids: list[str] | None,
    select: str,
) -> tuple[list[list[np.ndarray]], list[str]]:
    """(panels per row, column labels) of the figure."""
    runs = load_discovery_runs(results_dir, dataset, methods, protocol)
    if ids:
        unknown = [i for i in ids if i not in runs[0].records.ids]
        if unknown:
            raise ResultsError(f"--ids: {', '.join(unknown[:5])} not among the runs' images")
        chosen = list(ids)
    else:
        if n < 1:
            raise ResultsError(f"--grid {n}: give 1 or more images")
        chosen = choose_ids(runs, select, n)
    data = open_run_dataset(runs[0], data_root)
    rows = [instance_panels(runs, data, sid) for sid in chosen]
    labels: list[Any] = ["image + GT", *methods]
    return rows, labels
