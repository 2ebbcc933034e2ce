"""Class-agnostic AP / AR of a COCO-results file (``odbench score-detections``).

A COCO-results file is a JSON list of detections ``{"image_id", "score", "bbox": [x, y, w, h],
"segmentation": RLE, "category_id"}`` (Detectron2's ``coco_instances_results.json``, CutLER's,
MaskCut's, UnSAM's...).  Scoring is class-agnostic: every GT category and every detection's
``category_id`` are mapped to one, so a category id the GT does not declare (MaskDistill's
``category_id`` 0) changes nothing; it is reported in a note, never scored as a miss.  The file
is checked before scoring, each mistake one :class:`ScoringError` line: not JSON, not a list,
missing scores / boxes / masks, image ids not in the GT, polygons instead of RLE, masks of
another size than their image, RLEs whose runs do not cover their image exactly (pycocotools
loops forever on one), boxes written as corners ``[x1, y1, x2, y2]`` instead of
``[x, y, w, h]`` (segm too: the boxes' ``w * h`` are the detections' areas, as in
``COCO.loadRes``); a GT file without annotations.  Uncompressed RLE (``counts`` a list) is accepted and compressed.
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
    if not any(len(g.area) for g in instances.gt.values()):
        raise ScoringError(
            f"{gt}: no annotations in this instances file (an image-info file of a test split?): "
            "every AP / AR would be undefined; give --gt the file with the annotations"
        )
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
    # segm too: the file's boxes give the detections' areas (COCO.loadRes: w * h) and the
    # tie order; boxes made from the masks always fit
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
            _check_lengths(results, segs, hw, source)
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
        if not isinstance(seg["counts"], list | str | bytes):
            raise ScoringError(
                f"{source}: detection {i} has RLE counts {str(seg['counts'])[:80]!r}; expected "
                "a string (compressed) or a list of run lengths"
            )
        if list(seg["size"]) != [h, w]:
            raise ScoringError(
                f"{source}: detection {i} (image {results[i]['image_id']!r}) has a mask of size "
                f"{list(seg['size'])}, its image is [{h}, {w}] (height, width)"
            )
        if isinstance(seg["counts"], list):
            runs = seg["counts"]
            length = sum(runs) if all(type(c) is int and c >= 0 for c in runs) else -1
            if length != h * w:
                _bad_length(results, i, hw, source, "uncompressed counts", length)
            seg = mask_utils.frPyObjects(seg, h, w)
        out.append(seg)
    _check_lengths(results, out, hw, source)
    return out


def _check_lengths(
    results: Sequence[dict[str, Any]], segs: Sequence[Any], hw: np.ndarray, source: str
) -> None:
    """Refuse a compressed RLE whose runs do not cover exactly its image's height x width
    pixels: pycocotools' mask IoU loops forever on one that is short or long (and its area and
    box are garbage)."""
    lengths = rle_lengths([s["counts"] for s in segs])
    wrong = np.flatnonzero(lengths != hw[:, 0] * hw[:, 1])
    if len(wrong):
        _bad_length(results, int(wrong[0]), hw, source, "counts", int(lengths[wrong[0]]))


def _bad_length(
    results: Sequence[dict[str, Any]],
    i: int,
    hw: np.ndarray,
    source: str,
    what: str,
    length: int | None = None,
) -> None:
    h, w = (int(v) for v in hw[i])
    covers = "are not run lengths" if length is None or length < 0 else f"cover {length} pixels"
    raise ScoringError(
        f"{source}: detection {i} (image {results[i]['image_id']!r}) has an RLE mask whose "
        f"{what} {covers}, not its {h}x{w} image's {h * w} (a truncated or corrupt RLE: "
        "pycocotools would loop forever or score garbage on it); encode each mask whole with "
        "pycocotools.mask.encode"
    )


def rle_lengths(counts: Sequence[str | bytes], chunk: int = 1 << 22) -> np.ndarray:
    """The number of pixels each compressed RLE ``counts`` string covers (the sum of its runs,
    decoded as pycocotools' ``rleFrString`` decodes them), or -1 where the string is not one (a
    character outside '0'..'o', a number cut off or too long); vectorised over the strings,
    about ``chunk`` characters at a time.  (A negative run that others make up for is not
    seen: only a string crafted so.)"""
    raw = [c.encode() if isinstance(c, str) else c for c in counts]
    out = np.zeros(len(raw), np.int64)
    i = 0
    while i < len(raw):
        j, size = i, 0
        while j < len(raw) and (size == 0 or size + len(raw[j]) <= chunk):
            size += len(raw[j])
            j += 1
        out[i:j] = _rle_lengths(raw[i:j])
        i = j
    return out


def _rle_lengths(raw: Sequence[bytes]) -> np.ndarray:
    n = len(raw)
    lens = np.fromiter(map(len, raw), np.int64, n)
    out = np.zeros(n, np.int64)
    chars = np.frombuffer(b"".join(raw), np.uint8) - np.uint8(48)  # wraps below '0': > 63
    if not len(chars):
        return out
    string_ends = np.cumsum(lens)
    bad_chars = [np.flatnonzero(chars > 63)]
    end = (chars & 0x20) == 0  # a number's last character
    last = string_ends[lens > 0] - 1
    bad_chars.append(last[~end[last]])  # the string stops inside a number
    end[last] = True  # a number never runs on into the next string
    stops = np.flatnonzero(end)
    starts = np.empty_like(stops)
    starts[0], starts[1:] = 0, stops[:-1] + 1
    width = stops - starts + 1  # characters per number
    bad_chars.append(stops[width > 7])  # over 35 bits: no run of a 32-bit count
    digits = (chars & 0x1F).astype(np.int64)
    x = digits[starts]
    for k in range(1, 7):  # the few numbers of several characters
        more = np.flatnonzero(width > k)
        if not len(more):
            break
        x[more] += digits[starts[more] + k] << (5 * k)
    negative = np.flatnonzero(chars[stops] & 0x10)
    x[negative] -= np.int64(1) << (5 * np.minimum(width[negative], 7))  # x |= -1 << 5k
    # counts[j] = x[j] + counts[j - 2] for j >= 3, so the runs of a string of m numbers sum to
    # x[0] + sum over j >= 1 of x[j] * (the numbers j, j + 2, ... before m)
    final = np.searchsorted(stops, last)  # each (non-empty) string's last number
    first = np.concatenate(([0], final[:-1] + 1))
    weight = (np.repeat(final, final - first + 1) - np.arange(len(x))) // 2 + 1
    weight[first] = 1
    out[lens > 0] = np.add.reduceat(x * weight, first)
    if any(len(b) for b in bad_chars):
        out[np.searchsorted(string_ends, np.concatenate(bad_chars), side="right")] = -1
    return out
