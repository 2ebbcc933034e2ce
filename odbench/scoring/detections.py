"""Class-agnostic AP / AR of a COCO-results file (``odbench score-detections``).

A COCO-results file is a JSON list of detections ``{"image_id", "score", "bbox": [x, y, w, h],
"segmentation": RLE, "category_id"}`` (Detectron2's ``coco_instances_results.json``, CutLER's,
MaskCut's, UnSAM's...).  Scoring is class-agnostic: every GT category and every detection's
``category_id`` are mapped to one, so a category id the GT does not declare (MaskDistill's
``category_id`` 0) changes nothing; it is reported in a note, never scored as a miss.  The file
is checked before scoring, each mistake one :class:`ScoringError` line: not JSON, not a list,
missing scores / boxes / masks, image ids not in the GT, polygons instead of RLE, masks of
another size than their image, boxes written as corners ``[x1, y1, x2, y2]`` instead of
``[x, y, w, h]``.  Uncompressed RLE (``counts`` a list) is accepted and compressed.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from odbench.data.base import DatasetError
from odbench.data.instances import InstanceFile, read_instances, read_json
from odbench.metrics.detection import IouType, coco_ap
from odbench.metrics.detection_protocols import (
    DEFAULT_DETECTION_PROTOCOL,
    DetectionProtocol,
    get_detection_protocol,
)
from odbench.metrics.instances import InstanceGT, Instances
from odbench.scoring import ScoringError

#: Share of boxes that overflow their image as [x, y, w, h] (by more than a pixel) but fit as
#: corners, above which the file is refused as written in corners.
XYXY_SHARE = 0.2


@dataclass(frozen=True)
class DetectionScore:
    """The 12 summary numbers (COCO's names; NaN where COCO prints -1), the protocol they were
    computed under and notes on the file (e.g. category ids mapped to one)."""

    metrics: dict[str, float]
    protocol: DetectionProtocol
    iou_type: str
    n_images: int
    n_detections: int
    notes: list[str] = field(default_factory=list)


def score_detections(
    pred: str | Path,
    gt: str | Path,
    iou_type: IouType = "bbox",
    max_dets: int | None = None,
    protocol: str | DetectionProtocol = DEFAULT_DETECTION_PROTOCOL,
) -> DetectionScore:
    """Class-agnostic AP / AR of the COCO-results file ``pred`` against the COCO-format
    instances file ``gt`` (``max_dets`` overrides the protocol's per-image budget)."""
    if iou_type not in ("bbox", "segm"):
        raise ScoringError(f"iou type must be bbox or segm, got {iou_type!r}")
    try:
        results, _ = read_json(pred, "results file")
        instances = read_instances(gt, masks=iou_type == "segm")
    except DatasetError as e:
        raise ScoringError(str(e)) from e
    return score_results(results, instances, iou_type, max_dets, protocol, source=str(pred))


def score_results(
    results: Any,
    instances: InstanceFile | tuple[Mapping[int, InstanceGT], frozenset[int]],
    iou_type: IouType = "bbox",
    max_dets: int | None = None,
    protocol: str | DetectionProtocol = DEFAULT_DETECTION_PROTOCOL,
    source: str = "results",
) -> DetectionScore:
    """:func:`score_detections` for a parsed results list and GT (an :class:`InstanceFile`,
    or (GT by image id, declared category ids))."""
    gts: Mapping[int, InstanceGT]
    file_notes: list[str] = []
    if isinstance(instances, InstanceFile):
        gts, cats = instances.gt, instances.category_ids
        file_notes = list(instances.notes)
    else:
        gts, cats = instances
    try:
        proto = get_detection_protocol(protocol, max_dets)
    except ValueError as e:
        raise ScoringError(f"--max-dets: {e}") from e
    enabled = gc.isenabled()
    gc.disable()  # no reference cycles are made: collecting over a large parsed file is waste
    try:
        dets, notes = read_results(results, gts, cats, iou_type, source)
        # COCO.loadRes: a detection's area is its box's w * h when the file gives boxes.
        boxed = all("bbox" in r for r in results)
        metrics = coco_ap(gts, dets, iou_type, proto, det_area="box" if boxed else "mask")
    finally:
        if enabled:
            gc.enable()
    n = sum(len(d) for d in dets.values())
    return DetectionScore(metrics, proto, iou_type, len(gts), n, file_notes + notes)


def read_results(
    results: Any,
    gts: Mapping[int, InstanceGT],
    category_ids: frozenset[int],
    iou_type: str,
    source: str = "results",
) -> tuple[dict[int, Instances], list[str]]:
    """Check a parsed COCO-results list against the GT and group it into :class:`Instances`
    per image (see the module docstring for what is refused); (detections, notes)."""
    if not isinstance(results, list):
        kind = type(results).__name__
        hint = (
            " (it looks like an instances/GT file: pass it as --gt)"
            if isinstance(results, dict) and "annotations" in results
            else ""
        )
        raise ScoringError(
            f"{source}: a COCO results file is a JSON list of detections, got a {kind}{hint}"
        )
    bad = [i for i, r in enumerate(results) if type(r) is not dict]
    if bad:
        raise ScoringError(
            f"{source}: {len(bad)} entries are not objects, e.g. entry {bad[0]}: {results[bad[0]]!r}"
        )
    key = "bbox" if iou_type == "bbox" else "segmentation"
    try:
        ids = [r["image_id"] for r in results]
        raw_scores = [r["score"] for r in results]
        given = [r[key] for r in results]
    except KeyError:
        _require(results, "image_id", source, "")
        _require(results, "score", source, " (every detection needs a confidence 'score')")
        why = (
            " (bbox scoring reads [x, y, w, h])"
            if iou_type == "bbox"
            else " (segm scoring needs an RLE mask per detection)"
        )
        _require(results, key, source, why)
        raise
    unknown = [i for i in ids if i not in gts]
    if unknown:
        raise ScoringError(
            f"{source}: {len(unknown)} detections refer to image ids not in the GT "
            f"({len(set(map(repr, unknown)))} distinct, e.g. {unknown[0]!r}); the GT has "
            f"{len(gts)} images"
        )
    scores = _scores(raw_scores, source)
    notes = []
    cat_ids = {r.get("category_id") for r in results}
    foreign = sorted(map(repr, cat_ids - set(category_ids)))
    if foreign:
        n = sum(1 for r in results if r.get("category_id") not in category_ids)
        notes.append(
            f"{n} detections have category ids not declared in the GT "
            f"({', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}): class-agnostic "
            "scoring maps every category to one, so they are scored like the others"
        )
    sizes = {i: (g.height, g.width) for i, g in gts.items()}
    hw = np.array([sizes[i] for i in ids], dtype=np.float64).reshape(len(ids), 2)
    masks = _masks(results, given, hw, source) if iou_type == "segm" else None
    boxes = _boxes(results, iou_type, source, masks)
    if iou_type == "bbox":
        _check_xywh(results, boxes, hw, source)
    boxes[:, 2:] += boxes[:, :2]
    id_arr = np.asarray(ids)
    order = np.argsort(id_arr, kind="stable")
    uniq, starts = np.unique(id_arr[order], return_index=True)
    ends = np.append(starts[1:], len(order))
    out = {}
    for image_id, a, b in zip(uniq.tolist(), starts, ends):
        sel = order[a:b]
        out[image_id] = Instances(
            scores[sel], boxes[sel], [masks[i] for i in sel] if masks is not None else None
        )
    return out, notes


def _scores(raw: list[Any], source: str) -> np.ndarray:
    """The scores as float64: finite numbers (not booleans, not strings) or one error line."""
    if all(type(s) is float or type(s) is int for s in raw):
        scores = np.array(raw, dtype=np.float64)
        if np.all(np.isfinite(scores)):
            return scores
    for i, s in enumerate(raw):
        _number(s, "score", source, i)
    raise AssertionError("unreachable: a bad score was found above")


def _require(results: list[dict[str, Any]], key: str, source: str, why: str) -> None:
    missing = [i for i, r in enumerate(results) if key not in r]
    if missing:
        raise ScoringError(
            f"{source}: {len(missing)} of {len(results)} detections have no {key!r}{why}, "
            f"e.g. entry {missing[0]}: {results[missing[0]]!r}"[:400]
        )


def _number(value: Any, key: str, source: str, index: int) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ScoringError(
            f"{source}: detection {index} has {key} {value!r}; expected a finite number"
        )
    return float(value)


def _boxes(
    results: Sequence[dict[str, Any]], iou_type: str, source: str, masks: list[Any] | None
) -> np.ndarray:
    """(N, 4) [x, y, w, h]: the file's boxes (segm: the mask's box where none is given)."""
    if masks is not None:
        from pycocotools import mask as mask_utils

        out = np.zeros((len(results), 4))
        given = [i for i, r in enumerate(results) if "bbox" in r]
        missing = [i for i, r in enumerate(results) if "bbox" not in r]
        if missing:
            out[missing] = mask_utils.toBbox([masks[i] for i in missing])
        if not given:
            return out
        results = [results[i] for i in given]
    else:
        given = []
    try:
        boxes = np.array([r["bbox"] for r in results], dtype=np.float64).reshape(len(results), 4)
        ok = bool(np.all(np.isfinite(boxes)))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        for i, r in enumerate(results):
            b = r["bbox"]
            good = isinstance(b, list) and len(b) == 4
            if not good or not all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                for v in b
            ):
                raise ScoringError(
                    f"{source}: detection {given[i] if given else i} has bbox {b!r}; expected "
                    "[x, y, w, h], 4 finite numbers"
                )
    if masks is not None:
        out[given] = boxes
        return out
    return boxes


def _check_xywh(
    results: Sequence[dict[str, Any]], boxes: np.ndarray, hw: np.ndarray, source: str
) -> None:
    """Refuse boxes that are corners [x1, y1, x2, y2]: many overflow the image as [x, y, w, h]
    while fitting as corners."""
    if not len(boxes):
        return
    size = hw[:, ::-1]  # (width, height) of each detection's image
    x, y, w, h = boxes.T
    over = (x + w > size[:, 0] + 1) | (y + h > size[:, 1] + 1)
    fits = (w >= x) & (h >= y) & (w <= size[:, 0] + 1) & (h <= size[:, 1] + 1)
    n_over, n_fit = int(over.sum()), int((over & fits).sum())
    if n_over > XYXY_SHARE * len(boxes) and n_fit >= 0.9 * n_over:
        i = int(np.flatnonzero(over & fits)[0])
        raise ScoringError(
            f"{source}: boxes look like corners [x1, y1, x2, y2], not COCO's [x, y, w, h]: "
            f"{n_over} of {len(boxes)} extend beyond their image as [x, y, w, h] and {n_fit} of "
            f"those fit as corners (e.g. detection {i}: {results[i]['bbox']!r} in a "
            f"{size[i][0]:.0f}x{size[i][1]:.0f} image); convert with w = x2 - x1, h = y2 - y1"
        )
    negative = np.flatnonzero((w < 0) | (h < 0))
    if len(negative):
        i = int(negative[0])
        raise ScoringError(
            f"{source}: {len(negative)} boxes have a negative width or height, e.g. detection "
            f"{i}: {results[i]['bbox']!r}; COCO boxes are [x, y, w, h]"
        )


def _masks(
    results: Sequence[dict[str, Any]], segs: list[Any], hw: np.ndarray, source: str
) -> list[Any]:
    """The detections' masks as compressed RLE of their image's size (``hw``: (N, 2))."""
    from pycocotools import mask as mask_utils

    if all(type(s) is dict for s in segs):
        try:
            size = np.array([s["size"] for s in segs], dtype=np.float64).reshape(len(segs), 2)
            plain = all(type(s["counts"]) is str or type(s["counts"]) is bytes for s in segs)
        except (KeyError, TypeError, ValueError):
            size, plain = None, False
        if plain and size is not None and np.array_equal(size, hw):
            return segs
    out = []
    for i, seg in enumerate(segs):
        h, w = (int(v) for v in hw[i])
        if isinstance(seg, list):
            raise ScoringError(
                f"{source}: detection {i} has a polygon segmentation; a COCO results file holds "
                "RLE masks ({'size': [h, w], 'counts': ...}): encode with "
                "pycocotools.mask.encode (or frPyObjects for polygons)"
            )
        if not isinstance(seg, dict) or "counts" not in seg or "size" not in seg:
            raise ScoringError(
                f"{source}: detection {i} has segmentation {str(seg)[:80]!r}; expected an RLE "
                "{'size': [h, w], 'counts': ...}"
            )
        if list(seg["size"]) != [h, w]:
            raise ScoringError(
                f"{source}: detection {i} (image {results[i]['image_id']!r}) has a mask of size "
                f"{list(seg['size'])}, its image is [{h}, {w}] (height, width)"
            )
        if isinstance(seg["counts"], list):
            seg = mask_utils.frPyObjects(seg, h, w)
        out.append(seg)
    return out
