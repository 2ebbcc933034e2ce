"""Per-image instance overlays of discovery runs: ``odbench report --grid N --panel instances``
and the discovery page of ``odbench report`` draw them here (one place).

The image with its GT instances (white boxes; crowd regions dashed grey, labelled ``crowd``:
ignored by the matching), then each method's instances as the runner cached them (never
predicted again), the ``max_shown`` best in the protocol's tie order, each in its own colour
(:data:`PALETTE` by rank: the best first; mask tinted, box outlined) with its score.  The state
of each instance is its status at IoU 0.50, all areas, in the image's match record
(:func:`instance_states`: :func:`odbench.metrics.detection.match_image` on the GT shown and the
cached instances, under the run's discovery protocol, checked equal to the record the run
stored): matched a GT (:data:`~odbench.metrics.detection.TP`, solid outline), unmatched
(:data:`~odbench.metrics.detection.FP`, dashed outline, ``x`` after the score), matched a crowd
region (:data:`~odbench.metrics.detection.IGNORED`, dotted outline, ``c``), or beyond the
protocol's per-image budget (:data:`BEYOND`: not scored, not drawn).  Images are chosen by
recall at IoU 0.50 per image (matched GT / GT; never an image without GT): ``disagree``
(largest spread across methods), ``worst`` or ``best`` (mean across methods), or given with
``--ids``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from odbench.cache import CacheError, PredictionCache
from odbench.data.base import Dataset
from odbench.metrics.detection import FP, IGNORED, TP, ImageMatches, match_image, tie_order
from odbench.metrics.detection_protocols import DetectionProtocol
from odbench.metrics.discovery_records import DiscoveryRecords
from odbench.metrics.instances import InstanceGT, Instances
from odbench.results import ResultsError, RunResult

#: Instance colours (RGB), by rank (best first), cycled: matplotlib's tab10.
PALETTE = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)  # fmt: skip
#: State of a detection the protocol's budget left out (after the record's ``max_dets``).
BEYOND = 3
#: State code -> the word the page shows.
STATE_NAMES = {TP: "matched", FP: "unmatched", IGNORED: "crowd", BEYOND: "beyond budget"}
#: The IoU threshold the overlays show.
IOU_SHOWN = 0.5


def iou_index(protocol: DetectionProtocol, iou: float = IOU_SHOWN) -> int:
    """The position of IoU threshold ``iou`` in the protocol's thresholds."""
    at = np.flatnonzero(np.isclose(protocol.iou_thresholds, iou, rtol=0.0, atol=1e-9))
    if len(at) == 0:
        raise ResultsError(f"discovery protocol {protocol.name!r} has no IoU threshold {iou}")
    return int(at[0])


def states_of(
    record: ImageMatches, dets: Instances, protocol: DetectionProtocol, iou: float = IOU_SHOWN
) -> np.ndarray:
    """Per detection, in the method's order: its status at IoU ``iou``, all areas, in
    ``record`` (the image's match record, detections in the protocol's tie order);
    :data:`BEYOND` for those after the budget."""
    order = tie_order(dets)[: len(record.scores)]
    out = np.full(len(dets), BEYOND, dtype=np.uint8)
    out[order] = record.status[0, iou_index(protocol, iou)]
    return out


def instance_states(
    run: RunResult, gt: InstanceGT, dets: Instances, sample_id: str
) -> tuple[np.ndarray, str]:
    """(:func:`states_of` the image's match record, the iou type): the record is
    :func:`~odbench.metrics.detection.match_image` of the cached instances against the GT
    shown, under the run's protocol and iou type (segm when the run scored masks), and must
    equal the record the run stored (else the cache or dataset is not the run's)."""
    rec, iou_type = _records(run)
    protocol = run_protocol(run)
    record = match_image(gt, dets, iou_type, protocol, image_id=sample_id)  # type: ignore[arg-type]
    where = run.records.ids.index(sample_id)
    if record != rec.take(np.array([where])).matches(iou_type)[0]:
        raise ResultsError(
            f"{run.path}: the instances cached for {sample_id!r} or the GT found do not give "
            "the match record the run stored; re-run odbench eval (or pass the run's --data-root)"
        )
    return states_of(record, dets, protocol), iou_type


def run_protocol(run: RunResult) -> DetectionProtocol:
    """The discovery protocol a run was scored under (``protocol.discovery``)."""
    from odbench.discovery import DiscoveryError, protocol_of

    try:
        protocol = protocol_of(run.protocol)
    except DiscoveryError as e:
        raise ResultsError(f"{run.path}: {e}") from e
    if protocol is None:
        raise ResultsError(f"{run.path}: no discovery protocol recorded; re-run odbench eval")
    return protocol


def _records(run: RunResult) -> tuple[DiscoveryRecords, str]:
    rec = run.records.discovery
    if rec is None:
        raise ResultsError(
            f"{run.path}: no discovery records (a run without the discovery task, or one "
            "written before its records were kept); re-run odbench eval on a dataset with "
            "instances"
        )
    return rec, "segm" if rec.mask is not None else "bbox"


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed-size bitmap font
        return ImageFont.load_default()


def _dashed_box(draw: Any, box: Any, colour: Any, width: int, dash: int, gap: int) -> None:
    """An outlined box of dashes ``dash`` px long, ``gap`` px apart."""
    x1, y1, x2, y2 = box
    for xa, ya, xb, yb in ((x1, y1, x2, y1), (x2, y1, x2, y2), (x2, y2, x1, y2), (x1, y2, x1, y1)):
        length = max(abs(xb - xa), abs(yb - ya))
        t = 0.0
        while t < length:
            u = min(t + dash, length)
            draw.line(
                (xa + (xb - xa) * t / max(length, 1e-9), ya + (yb - ya) * t / max(length, 1e-9),
                 xa + (xb - xa) * u / max(length, 1e-9), ya + (yb - ya) * u / max(length, 1e-9)),
                fill=colour, width=width,
            )  # fmt: skip
            t += dash + gap


def _unit(image: np.ndarray) -> int:
    """Line width unit: about one pixel per 240 of the longer side (outlines stay visible in
    thumbnails and figure cells)."""
    return max(1, round(max(image.shape[:2]) / 240))


def shown_instances(dets: Instances, states: np.ndarray, max_shown: int = 20) -> np.ndarray:
    """Indices of the instances drawn, best first (the tie order), those beyond the budget
    left out; the colour of the ``r``-th is ``PALETTE[r % len(PALETTE)]``."""
    order = tie_order(dets)
    return order[states[order] != BEYOND][:max_shown]


def draw_instances(
    image: np.ndarray, dets: Instances, states: np.ndarray, max_shown: int = 20
) -> np.ndarray:
    """``image`` with the :func:`shown_instances` (see the module docstring); ``states`` per
    instance (:func:`states_of`; booleans read as matched / unmatched)."""
    from PIL import Image, ImageDraw
    from pycocotools import mask as mask_utils

    states = np.asarray(states, dtype=np.uint8)
    unit = _unit(image)
    base = Image.fromarray(image).convert("RGBA")
    tint = np.zeros((*image.shape[:2], 4), dtype=np.uint8)
    shown = shown_instances(dets, states, max_shown)
    for r in range(len(shown) - 1, -1, -1):  # best last: drawn on top
        if dets.masks is not None:
            colour = PALETTE[r % len(PALETTE)]
            tint[mask_utils.decode(dets.masks[shown[r]]).astype(bool)] = (*colour, 110)
    out = Image.alpha_composite(base, Image.fromarray(tint, "RGBA"))
    draw = ImageDraw.Draw(out)
    font = _font(11 * unit)
    for r in range(len(shown) - 1, -1, -1):
        k = int(shown[r])
        colour = PALETTE[r % len(PALETTE)]
        box = tuple(float(v) for v in dets.boxes[k])
        if states[k] == TP:
            draw.rectangle(box, outline=colour, width=2 * unit)
        else:
            dash = 6 * unit if states[k] == FP else 2 * unit
            _dashed_box(draw, box, colour, 2 * unit, dash, 3 * unit)
        mark = {TP: "", FP: " x", IGNORED: " c"}.get(int(states[k]), "")
        label = f"{float(dets.scores[k]):.2f}{mark}"
        xy = (box[0] + 2 * unit, box[1] + unit)
        draw.rectangle(draw.textbbox(xy, label, font=font), fill=(0, 0, 0, 160))
        draw.text(xy, label, fill=colour, font=font)
    return np.asarray(out.convert("RGB"))


def draw_gt(image: np.ndarray, gt: InstanceGT) -> np.ndarray:
    """``image`` with the GT boxes: white, crowd regions dashed grey labelled ``crowd``."""
    from PIL import Image, ImageDraw

    unit = _unit(image)
    out = Image.fromarray(image).convert("RGB")
    draw = ImageDraw.Draw(out)
    font = _font(11 * unit)
    for box, crowd in zip(gt.boxes, gt.iscrowd):
        xy = tuple(float(v) for v in box)
        if crowd:
            _dashed_box(draw, xy, (160, 160, 160), 2 * unit, 6 * unit, 3 * unit)
            draw.text((xy[0] + 2 * unit, xy[1] + unit), "crowd", fill=(160, 160, 160), font=font)
        else:
            draw.rectangle(xy, outline="white", width=2 * unit)
    return np.asarray(out)


def recall_at_50(rec: DiscoveryRecords, iou_type: str, protocol: DetectionProtocol) -> np.ndarray:
    """Per image: GT matched at IoU 0.50 (all areas) over GT (NaN for an image without GT:
    never chosen for a figure)."""
    t = iou_index(protocol)
    out = []
    for m in rec.matches(iou_type):
        n_gt = int(m.num_gt[0])
        out.append(float(np.count_nonzero(m.status[0, t] == TP)) / n_gt if n_gt else np.nan)
    return np.asarray(out)


def load_discovery_runs(
    results_dir: Path, dataset: str, methods: list[str], protocol: str
) -> list[RunResult]:
    """The discovery run of each method (:func:`odbench.results.select`), all on one id list."""
    from odbench.results import load_all_results, select

    results = load_all_results(results_dir) if Path(results_dir).is_dir() else []
    for m in methods:
        other = sorted(
            {
                task
                for r in results
                if r.method_name == m and r.dataset_name == dataset
                and r.protocol_name == protocol
                for task in r.metrics
            }
        )  # fmt: skip
        if other and "discovery" not in other:
            raise ResultsError(
                f"no discovery results of method {m!r} on dataset {dataset!r} (its runs there "
                f"hold {', '.join(other)} only); the discovery view needs a run on a dataset "
                "with instances (coco, coco20k, voc07, voc12, lvis)"
            )
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


def cached_instances(run: RunResult, sample_id: str) -> tuple[Instances, Path]:
    """The instances of ``sample_id`` the run cached, and the cache entry's file."""
    cache = PredictionCache(Path(str(run.info.get("cache"))))
    try:
        dets = cache.get_instances(sample_id) if cache.has(sample_id) else None
    except CacheError as e:
        raise ResultsError(str(e)) from e
    if dets is None:
        raise ResultsError(
            f"{cache.path(sample_id)}: the instances of {sample_id!r} "
            f"{cache.why_missing(sample_id)} (the run {run.path}); re-run odbench eval to fill it"
        )
    return dets, cache.path(sample_id)


def instance_panels(runs: list[RunResult], dataset: Dataset, sample_id: str) -> list[np.ndarray]:
    """One row of the figure: image with GT, then each run's instances."""
    sample = dataset.load(sample_id)
    if sample.instances is None:
        raise ResultsError(f"dataset {dataset.name!r}: {sample_id!r} has no instances")
    row = [draw_gt(sample.image, sample.instances)]
    for run in runs:
        dets, _ = cached_instances(run, sample_id)
        states, _ = instance_states(run, sample.instances, dets, sample_id)
        row.append(draw_instances(sample.image, dets, states))
    return row


def choose_ids(runs: list[RunResult], select: str, n: int) -> list[str]:
    """``n`` sample ids by recall at IoU 0.50 (see the module docstring)."""
    from odbench.report.select import rank_images

    ids = list(runs[0].records.ids)
    scores = []
    for run in runs:
        rec, iou_type = _records(run)
        order = {i: k for k, i in enumerate(run.records.ids)}
        scores.append(recall_at_50(rec, iou_type, run_protocol(run))[[order[i] for i in ids]])
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
