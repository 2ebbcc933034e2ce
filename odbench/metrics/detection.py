"""Class-agnostic COCO AP / AR: per-image matching records and their dataset-level summary.

The ``discovery`` task's metric, computed as pycocotools' ``COCOeval`` computes it with every
category mapped to one (``evaluateImg`` then ``accumulate`` then ``summarize``), in vectorised
numpy plus pycocotools' C mask functions (``iou``, ``area``):

* :func:`match_image` / :func:`match_images`: one image's detections put in the protocol's tie
  order (:mod:`odbench.metrics.detection_protocols`: score descending, then box, then RLE --
  never the submission order), truncated to the protocol's ``max_dets``, then matched greedily
  to the GT at every IoU threshold and area range exactly as ``evaluateImg``: GT outside the
  area range or crowd is ignored (sorted after the others, stable), a detection takes the
  unmatched regular GT of highest IoU >= t (the last one among equal IoUs, in GT order), else
  an ignore GT (crowd regions can take any number of detections, with COCO's crowd IoU:
  intersection over the detection's area), and an unmatched detection outside the area range
  is ignored.  The result is an :class:`ImageMatches`, one small JSON-ready record per image:
  the runner stores them, shards merge by concatenating them, ``compare`` resamples them.
* :func:`accumulate`: the 12 summary numbers from records (``accumulate`` + ``summarize``): the
  detections of all images sorted by score with a stable sort over images in image-id order
  (the records are sorted by image id first, whatever order they come in), cumulative TP / FP,
  the precision envelope and 101-point interpolated precision, averaged over thresholds
  (:func:`accumulate_arrays`: the precision / recall arrays; :func:`pr_curve`: the
  precision-recall curve at one IoU threshold, whose mean is AP at that threshold).
* :func:`coco_ap`: both at once for mappings image id -> GT / detections.

Summary keys (:data:`SUMMARY_KEYS`, COCO's names): ``AP`` (IoU .50:.95, all areas, at
``max_dets``), ``AP50``, ``AP75``, ``APs`` / ``APm`` / ``APl`` (small / medium / large, at
``max_dets``), ``AR1`` / ``AR10`` (recall at 1 / 10 detections per image), ``AR100`` (recall at
``max_dets`` detections: at 300 for ``lvis-agnostic``, at 1000 under ``--max-dets 1000``, as
COCO's ``summarize`` fills that slot), ``ARs`` / ``ARm`` / ``ARl`` (at ``max_dets``).  Where
COCO prints -1 (no GT in that area range, or no image at all) odbench gives NaN, so that a
missing value can never be averaged or ranked as a number (JSON writes it as null).

Boxes are ``x1, y1, x2, y2``; COCO's box IoU reads ``w = x2 - x1`` where COCO keeps the file's
``w``: the two differ only by rounding (an IoU within one ulp of a threshold could match
differently; never seen on real data).  A detection's area (for the area ranges) is its box's ``w * h``, for
segm too, as ``COCO.loadRes`` computes it whenever the results carry boxes (Detectron2's, CutLER's
files do); ``det_area="mask"`` takes the mask's pixel count, as ``loadRes`` does for masks
without boxes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from odbench.metrics.detection_protocols import (
    DEFAULT_DETECTION_PROTOCOL,
    DetectionProtocol,
    get_detection_protocol,
)
from odbench.metrics.instances import InstanceGT, Instances
from odbench.metrics.protocols import MetricInputError

IouType = Literal["bbox", "segm"]
DetArea = Literal["box", "mask"]
ImageId = int | str

#: The 12 summary numbers, in COCO's ``summarize`` order (see the module docstring).
SUMMARY_KEYS: tuple[str, ...] = (
    "AP", "AP50", "AP75", "APs", "APm", "APl",
    "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
)  # fmt: skip

#: Status codes of a detection at one (area range, IoU threshold) in :attr:`ImageMatches.status`.
FP, TP, IGNORED = 0, 1, 2
_PAIR_BUDGET = 4_000_000  # detection x GT pairs per batch of images (bounds memory)


@dataclass(frozen=True, eq=False)
class ImageMatches:
    """One image's matching record (picklable; :meth:`to_dict` / :meth:`from_dict` for JSON).

    ``scores``: the kept detections' scores in the tie-policy order (at most ``max_dets``);
    ``status``: (areas, thresholds, detections) codes :data:`FP`, :data:`TP` (matched a regular
    GT) or :data:`IGNORED` (matched an ignore GT, or unmatched outside the area range);
    ``num_gt``: the GT counted per area range (not crowd, area inside the range);
    ``max_dets``: the budget they were matched under (:func:`accumulate` checks it).
    """

    image_id: ImageId
    max_dets: int
    scores: np.ndarray  # (D,) float64
    status: np.ndarray  # (A, T, D) uint8
    num_gt: np.ndarray  # (A,) int64

    def __len__(self) -> int:
        return len(self.scores)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ImageMatches):
            return NotImplemented
        return (
            self.image_id == other.image_id
            and self.max_dets == other.max_dets
            and np.array_equal(self.scores, other.scores)
            and np.array_equal(self.status, other.status)
            and np.array_equal(self.num_gt, other.num_gt)
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``status`` as one string of digits (0 FP, 1 TP, 2 ignored) per area range
        and threshold, one character per detection."""
        codes = (self.status + ord("0")).astype(np.uint8)
        return {
            "image_id": self.image_id,
            "max_dets": self.max_dets,
            "scores": self.scores.tolist(),
            "num_gt": self.num_gt.tolist(),
            "status": [[row.tobytes().decode("ascii") for row in area] for area in codes],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ImageMatches:
        """The record :meth:`to_dict` wrote; ValueError (or KeyError, TypeError) otherwise."""
        scores = np.asarray(data["scores"], dtype=np.float64).reshape(-1)
        rows = data["status"]
        d = len(scores)
        status = np.array(
            [[np.frombuffer(str(s).encode("ascii"), np.uint8) for s in area] for area in rows],
            dtype=np.uint8,
        ).reshape(len(rows), len(rows[0]) if len(rows) else 0, d) - ord("0")
        if status.size and status.max() > IGNORED:
            raise ValueError("ImageMatches: status codes must be 0, 1 or 2")
        return cls(
            image_id=data["image_id"],
            max_dets=int(data["max_dets"]),
            scores=scores,
            status=status,
            num_gt=np.asarray(data["num_gt"], dtype=np.int64),
        )


def image_order_key(image_id: ImageId) -> tuple[int, Any]:
    """Sort key of image ids: integers ascending, then strings ascending (as ``COCOeval``
    sorts its integer ids)."""
    if isinstance(image_id, int | np.integer):
        return (0, int(image_id))
    return (1, str(image_id))


def _counts_bytes(rle: Mapping[str, Any]) -> bytes:
    counts = rle["counts"]
    return counts if isinstance(counts, bytes) else str(counts).encode()


def tie_order(dets: Instances) -> np.ndarray:
    """Indices putting ``dets`` in the ``score-box-rle`` order: score descending, then box
    ``x1, y1, x2, y2`` ascending, then mask RLE counts (bytes) ascending; never the input
    order (entries equal in all keys are identical detections)."""
    scores = np.asarray(dets.scores, dtype=np.float64)
    boxes = np.asarray(dets.boxes, dtype=np.float64).reshape(-1, 4)
    order = np.lexsort((boxes[:, 3], boxes[:, 2], boxes[:, 1], boxes[:, 0], -scores))
    if dets.masks is None or len(order) < 2:
        return order
    keys = np.column_stack([scores, boxes])[order]
    same = np.all(keys[1:] == keys[:-1], axis=1)
    if not same.any():
        return order
    group = np.concatenate([[0], np.cumsum(~same)])  # runs of equal score and box
    masks = dets.masks
    ranked = sorted(range(len(order)), key=lambda i: (group[i], _counts_bytes(masks[order[i]])))
    return order[np.asarray(ranked)]


def _check(gt: InstanceGT, dets: Instances, iou_type: str) -> None:
    if iou_type not in ("bbox", "segm"):
        raise MetricInputError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    scores = np.asarray(dets.scores, dtype=np.float64)
    if not np.all(np.isfinite(scores)):
        raise MetricInputError("detection scores must be finite numbers (found NaN or inf)")
    if iou_type == "segm":
        if len(gt) and gt.masks is None:
            raise MetricInputError(
                "segm AP needs GT masks; this ground truth has boxes only (score bbox instead)"
            )
        if len(dets) and dets.masks is None:
            raise MetricInputError("segm AP needs detection masks; these detections are boxes")
        size = [gt.height, gt.width]
        if len(dets) and any(list(m["size"]) != size for m in dets.masks or ()):
            raise MetricInputError(f"detection masks must have the image's size {size}")


def match_image(
    gt: InstanceGT,
    dets: Instances,
    iou_type: IouType = "bbox",
    protocol: str | DetectionProtocol = DEFAULT_DETECTION_PROTOCOL,
    *,
    image_id: ImageId,
    det_area: DetArea = "box",
) -> ImageMatches:
    """One image's :class:`ImageMatches` (``COCOeval.evaluateImg`` for all area ranges and IoU
    thresholds, after the protocol's tie order; see the module docstring)."""
    return match_images([(image_id, gt, dets)], iou_type, protocol, det_area=det_area)[0]


def match_images(
    items: Iterable[tuple[ImageId, InstanceGT, Instances]],
    iou_type: IouType = "bbox",
    protocol: str | DetectionProtocol = DEFAULT_DETECTION_PROTOCOL,
    *,
    det_area: DetArea = "box",
) -> list[ImageMatches]:
    """:func:`match_image` for many images at once (vectorised over images; same records).

    ``det_area``: a detection's area for the area ranges: ``box`` (``w * h``, what
    ``COCO.loadRes`` uses whenever the results carry boxes, as Detectron2's and CutLER's do,
    for segm too) or ``mask`` (its pixel count: ``loadRes`` on masks without boxes)."""
    proto = get_detection_protocol(protocol)
    items = list(items)
    for _, gt, dets in items:
        _check(gt, dets, iou_type)
    out: list[ImageMatches] = []
    start, pairs = 0, 0
    for i, (_, gt, dets) in enumerate(items):
        pairs += min(len(dets), proto.max_dets) * len(gt)
        if pairs > _PAIR_BUDGET and i > start:
            out.extend(_match_batch(items[start:i], iou_type, proto, det_area))
            start, pairs = i, min(len(dets), proto.max_dets) * len(gt)
    out.extend(_match_batch(items[start:], iou_type, proto, det_area))
    return out


def _match_batch(
    items: Sequence[tuple[ImageId, InstanceGT, Instances]],
    iou_type: str,
    proto: DetectionProtocol,
    det_area: str,
) -> list[ImageMatches]:
    n_img = len(items)
    if n_img == 0:
        return []
    ranges = np.asarray(proto.area_ranges, dtype=np.float64)  # (A, 2)
    thr = np.minimum(np.asarray(proto.iou_thresholds, dtype=np.float64), 1 - 1e-10)  # (T,)
    n_area, n_thr = len(ranges), len(thr)

    # Detections: each image's in the tie order, at most max_dets, concatenated.
    orders = [tie_order(dets)[: proto.max_dets] for _, _, dets in items]
    n_det = np.array([len(o) for o in orders], dtype=np.int64)
    det_off = np.concatenate([[0], np.cumsum(n_det)])
    det_score = _concat(
        [np.asarray(d.scores, np.float64)[o] for (_, _, d), o in zip(items, orders)]
    )
    det_box = _concat(
        [np.asarray(d.boxes, np.float64).reshape(-1, 4)[o] for (_, _, d), o in zip(items, orders)],
        (0, 4),
    )
    det_masks: list[Any] = []
    if iou_type == "segm":
        for (_, _, dets), order in zip(items, orders):
            det_masks.extend(dets.masks[k] for k in order)  # type: ignore[index]
    if iou_type == "segm" and det_area == "mask":
        area = mask_areas(det_masks)
    else:
        area = (det_box[:, 2] - det_box[:, 0]) * (det_box[:, 3] - det_box[:, 1])

    # Ground truth, in each image's own order.
    n_gt = np.array([len(gt) for _, gt, _ in items], dtype=np.int64)
    gt_off = np.concatenate([[0], np.cumsum(n_gt)])
    gt_box = _concat(
        [np.asarray(gt.boxes, np.float64).reshape(-1, 4) for _, gt, _ in items], (0, 4)
    )
    gt_area = _concat([np.asarray(gt.area, np.float64) for _, gt, _ in items])
    gt_crowd = _concat([np.asarray(gt.iscrowd, bool) for _, gt, _ in items]).astype(bool)
    gt_ignore = gt_crowd[None] | (gt_area[None] < ranges[:, :1]) | (gt_area[None] > ranges[:, 1:])
    det_out = (area[None] < ranges[:, :1]) | (area[None] > ranges[:, 1:])

    # Candidate (detection, GT) pairs: IoU >= the lowest threshold; sorted by detection, GT.
    if iou_type == "bbox":
        pair_det, pair_gt, pair_iou = _box_candidates(
            det_box, det_off, n_det, gt_box, gt_crowd, gt_off, n_gt, thr.min()
        )
    else:
        pair_det, pair_gt, pair_iou = _mask_candidates(
            items, det_masks, det_off, n_det, gt_off, thr.min()
        )

    status = np.zeros((n_area, n_thr, len(det_score)), np.uint8)
    _greedy(status, pair_det, pair_gt, pair_iou, det_off, n_det, gt_ignore, gt_crowd, thr)
    status[(status == FP) & det_out[:, None, :]] = IGNORED

    counted = (~gt_ignore).astype(np.int64)
    num_gt = np.add.reduceat(np.pad(counted, ((0, 0), (0, 1))), gt_off[:-1], axis=1)
    num_gt[:, n_gt == 0] = 0
    return [
        ImageMatches(
            image_id=items[i][0],
            max_dets=proto.max_dets,
            scores=det_score[det_off[i] : det_off[i + 1]],
            status=status[:, :, det_off[i] : det_off[i + 1]],
            num_gt=num_gt[:, i],
        )
        for i in range(n_img)
    ]


def mask_areas(masks: Sequence[Any]) -> np.ndarray:
    """Pixel counts of compressed RLEs (``pycocotools.mask.area``, 255 at a time: with numpy 2
    it overflows a uint8 count above that)."""
    from pycocotools import mask as mask_utils

    parts = [mask_utils.area(list(masks[i : i + 255])) for i in range(0, len(masks), 255)]
    return np.concatenate(parts).astype(np.float64) if parts else np.zeros(0)


def _concat(arrays: list[np.ndarray], empty: tuple[int, ...] = (0,)) -> np.ndarray:
    return np.concatenate(arrays) if arrays else np.zeros(empty)


def _box_candidates(
    det_box: np.ndarray,
    det_off: np.ndarray,
    n_det: np.ndarray,
    gt_box: np.ndarray,
    gt_crowd: np.ndarray,
    gt_off: np.ndarray,
    n_gt: np.ndarray,
    t_min: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every detection against every GT of its image (pycocotools' ``bbIou`` arithmetic), the
    pairs with IoU >= ``t_min``."""
    det_img = np.repeat(np.arange(len(n_det)), n_det)
    per_det = n_gt[det_img]  # GT count of each detection's image
    total = int(per_det.sum())
    pair_det = np.repeat(np.arange(len(det_img)), per_det)
    first = np.repeat(np.cumsum(per_det) - per_det, per_det)
    pair_gt = np.repeat(gt_off[:-1][det_img], per_det) + (np.arange(total) - first)
    dx1, dy1, dx2, dy2 = (np.ascontiguousarray(det_box[:, k]) for k in range(4))
    gx1, gy1, gx2, gy2 = (np.ascontiguousarray(gt_box[:, k]) for k in range(4))
    w = np.minimum(dx2[pair_det], gx2[pair_gt])
    w -= np.maximum(dx1[pair_det], gx1[pair_gt])
    keep = np.flatnonzero(w > 0)
    pair_det, pair_gt, w = pair_det[keep], pair_gt[keep], w[keep]
    h = np.minimum(dy2[pair_det], gy2[pair_gt])
    h -= np.maximum(dy1[pair_det], gy1[pair_gt])
    keep = np.flatnonzero(h > 0)
    pair_det, pair_gt = pair_det[keep], pair_gt[keep]
    inter = w[keep] * h[keep]
    d_area = ((dx2 - dx1) * (dy2 - dy1))[pair_det]
    g_area = ((gx2 - gx1) * (gy2 - gy1))[pair_gt]
    union = np.where(gt_crowd[pair_gt], d_area, d_area + g_area - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / union
    keep = iou >= t_min
    return pair_det[keep], pair_gt[keep], iou[keep]


def _mask_candidates(
    items: Sequence[tuple[ImageId, InstanceGT, Instances]],
    det_masks: list[Any],
    det_off: np.ndarray,
    n_det: np.ndarray,
    gt_off: np.ndarray,
    t_min: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mask IoU (pycocotools ``mask.iou``, crowd-aware) per image, pairs with IoU >= t_min."""
    from pycocotools import mask as mask_utils

    dets_i, gts_i, ious_i = [], [], []
    for i, (_, gt, _) in enumerate(items):
        if not n_det[i] or not len(gt):
            continue
        ious = np.asarray(
            mask_utils.iou(
                det_masks[det_off[i] : det_off[i + 1]],
                list(gt.masks),  # type: ignore[arg-type]
                [int(c) for c in gt.iscrowd],
            ),
            dtype=np.float64,
        ).reshape(n_det[i], len(gt))
        d, g = np.nonzero(ious >= t_min)
        dets_i.append(d + det_off[i])
        gts_i.append(g + gt_off[i])
        ious_i.append(ious[d, g])
    if not dets_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    return np.concatenate(dets_i), np.concatenate(gts_i), np.concatenate(ious_i)


def _greedy(
    status: np.ndarray,
    pair_det: np.ndarray,
    pair_gt: np.ndarray,
    pair_iou: np.ndarray,
    det_off: np.ndarray,
    n_det: np.ndarray,
    gt_ignore: np.ndarray,
    gt_crowd: np.ndarray,
    thr: np.ndarray,
) -> None:
    """COCO's greedy matching, in rounds: round r takes, in every image at once, its r-th
    detection that has a candidate GT (detections without one are unmatched whatever the
    order).  Writes TP / IGNORED into ``status`` (A, T, D)."""
    if not len(pair_det):
        return
    n_area, n_thr = status.shape[:2]
    # One key per detection with candidates: its pairs are pair[start : start + count].
    new = np.concatenate([[True], pair_det[1:] != pair_det[:-1]])
    start = np.flatnonzero(new)
    count = np.diff(np.append(start, len(pair_det)))
    key_det = pair_det[start]
    det_img = np.repeat(np.arange(len(n_det)), n_det)
    img = det_img[key_det]
    first = np.concatenate([[True], img[1:] != img[:-1]])
    rank = np.arange(len(key_det)) - np.maximum.accumulate(np.where(first, np.arange(len(img)), 0))
    by_round = np.argsort(rank, kind="stable")
    bounds = np.searchsorted(rank[by_round], np.arange(rank.max() + 2))
    matched = np.zeros((n_area, n_thr, len(gt_crowd)), bool)  # gtm
    for r in range(len(bounds) - 1):
        keys = by_round[bounds[r] : bounds[r + 1]]
        k = int(count[keys].max())
        cols = np.arange(k)
        valid = cols[None] < count[keys][:, None]  # (n, k)
        pairs = np.where(valid, start[keys][:, None] + cols[None], start[keys][:, None])
        gts = pair_gt[pairs]  # (n, k)
        iou = np.where(valid, pair_iou[pairs], -1.0)
        free = ~matched[:, :, gts] | gt_crowd[gts]  # (A, T, n, k)
        ok = free & (iou[None] >= thr[:, None, None])[None]
        ign = gt_ignore[:, gts][:, None]  # (A, 1, n, k)
        regular, ignore = ok & ~ign, ok & ign
        # The last GT of highest IoU (COCO's scan keeps a later GT of equal IoU).
        pick_reg = k - 1 - np.argmax(np.where(regular, iou, -1.0)[..., ::-1], axis=-1)
        pick_ign = k - 1 - np.argmax(np.where(ignore, iou, -1.0)[..., ::-1], axis=-1)
        has_reg, has_ign = regular.any(-1), ignore.any(-1)
        pick = np.where(has_reg, pick_reg, pick_ign)  # (A, T, n)
        hit = has_reg | has_ign
        dets = key_det[keys]
        a, t, j = np.nonzero(hit)
        matched[a, t, gts[j, pick[a, t, j]]] = True
        status[:, :, dets] = np.where(has_reg, TP, np.where(has_ign, IGNORED, FP))


def accumulate(
    matches: Sequence[ImageMatches],
    protocol: str | DetectionProtocol = DEFAULT_DETECTION_PROTOCOL,
) -> dict[str, float]:
    """The 12 summary numbers (:data:`SUMMARY_KEYS`) from per-image records, as
    ``COCOeval.accumulate`` + ``summarize`` (NaN where COCO gives -1).  Records are taken in
    image-id order (:func:`image_order_key`, stable: a resampled record keeps its place)."""
    proto = get_detection_protocol(protocol)
    return summarize(*accumulate_arrays(matches, proto), proto)


def accumulate_arrays(
    matches: Sequence[ImageMatches],
    protocol: str | DetectionProtocol = DEFAULT_DETECTION_PROTOCOL,
) -> tuple[np.ndarray, np.ndarray]:
    """``COCOeval.accumulate``'s arrays from per-image records: ``precision`` (T, R, 1, A, M),
    the interpolated precision at each IoU threshold, recall threshold, area range and
    detection budget, and ``recall`` (T, 1, A, M); -1 where an area range has no GT."""
    proto = get_detection_protocol(protocol)
    n_area, n_thr = len(proto.area_ranges), len(proto.iou_thresholds)
    check_records(matches, proto)
    ordered = sorted(matches, key=lambda m: image_order_key(m.image_id))
    rec_thr = proto.recall_thresholds
    max_dets = proto.max_dets_list
    precision = -np.ones((n_thr, len(rec_thr), 1, n_area, len(max_dets)))
    recall = -np.ones((n_thr, 1, n_area, len(max_dets)))
    if ordered:
        scores = np.concatenate([m.scores for m in ordered])
        status = np.concatenate([m.status for m in ordered], axis=2)
        rank = np.concatenate([np.arange(len(m)) for m in ordered])
        num_gt = np.sum([m.num_gt for m in ordered], axis=0)
        for mi, md in enumerate(max_dets):
            kept = np.flatnonzero(rank < md)
            kept = kept[np.argsort(-scores[kept], kind="mergesort")]
            for a in range(n_area):
                if num_gt[a] == 0:
                    continue
                st = status[a][:, kept]  # (T, D), sorted by score
                p, r = _precision_recall(st, int(num_gt[a]), rec_thr)
                precision[:, :, 0, a, mi] = p
                recall[:, 0, a, mi] = r
    return precision, recall


def pr_curve(
    matches: Sequence[ImageMatches],
    protocol: str | DetectionProtocol = DEFAULT_DETECTION_PROTOCOL,
    iou: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """(recall thresholds (R,), interpolated precision (R,)) at IoU threshold ``iou``, all
    areas, the protocol's budget (``max_dets``): the curve whose mean is AP at that IoU (AP50
    at 0.5, AP75 at 0.75); precision is NaN throughout when no image has GT.  ValueError for
    an ``iou`` that is not one of the protocol's thresholds."""
    proto = get_detection_protocol(protocol)
    at = np.flatnonzero(np.isclose(proto.iou_thresholds, iou, rtol=0.0, atol=1e-9))
    if len(at) == 0:
        raise ValueError(
            f"IoU {iou} is not a threshold of protocol {proto.name!r} "
            f"({', '.join(f'{t:g}' for t in proto.iou_thresholds)})"
        )
    precision, _ = accumulate_arrays(matches, proto)
    curve = precision[at[0], :, 0, 0, -1]
    return proto.recall_thresholds, np.where(curve > -1, curve, np.nan)


def check_records(matches: Sequence[ImageMatches], proto: DetectionProtocol) -> None:
    """ValueError unless every record was matched under ``proto``'s area ranges, IoU
    thresholds and detection budget."""
    n_area, n_thr = len(proto.area_ranges), len(proto.iou_thresholds)
    for m in matches:
        if m.status.shape[:2] != (n_area, n_thr) or m.max_dets != proto.max_dets:
            raise ValueError(
                f"image {m.image_id!r}: record of {m.status.shape[0]} area ranges, "
                f"{m.status.shape[1]} IoU thresholds, max_dets {m.max_dets}; protocol "
                f"{proto.name!r} has {n_area}, {n_thr}, {proto.max_dets}"
            )


def _precision_recall(
    status: np.ndarray, npig: int, rec_thr: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Interpolated precision (T, R) and final recall (T,) of score-sorted statuses (T, D)."""
    # Ignored detections add no TP or FP: dropping them changes no interpolated precision
    # (each repeats the (TP, FP) of the detection before it) and no recall.
    status = status[:, (status != IGNORED).any(axis=0)]
    tp_sum = np.cumsum(status == TP, axis=1, dtype=np.float64)
    fp_sum = np.cumsum(status == FP, axis=1, dtype=np.float64)
    n_thr, nd = status.shape
    if nd == 0:
        return np.zeros((n_thr, len(rec_thr))), np.zeros(n_thr)
    q = [interpolated_precision(tp_sum[t], fp_sum[t], npig, rec_thr) for t in range(n_thr)]
    return np.stack(q), tp_sum[:, -1] / npig


def interpolated_precision(
    tp_sum: np.ndarray, fp_sum: np.ndarray, npig: int | float, rec_thr: np.ndarray
) -> np.ndarray:
    """``COCOeval.accumulate``'s interpolated precision (R,) at one IoU threshold from the
    cumulative TP and FP counts (D,) of score-sorted detections and the counted GT ``npig``
    (> 0): the precision envelope (the best precision at or after a point) at the first point
    reaching each recall threshold, 0 where none does."""
    rc = tp_sum / npig
    pr = tp_sum / (fp_sum + tp_sum + np.spacing(1))
    pr = np.maximum.accumulate(pr[::-1])[::-1]  # precision envelope
    inds = np.searchsorted(rc, rec_thr, side="left")
    inside = inds < len(rc)
    q = np.zeros(len(rec_thr))
    q[inside] = pr[inds[inside]]
    return q


def summarize(
    precision: np.ndarray, recall: np.ndarray, proto: DetectionProtocol
) -> dict[str, float]:
    """``COCOeval.summarize``'s 12 numbers (NaN for its -1) from :func:`accumulate_arrays`:
    ``precision`` (T, R, 1, A, M) and ``recall`` (T, 1, A, M), -1 where an area range has no
    counted GT (M: the budgets of ``max_dets_list``)."""
    thrs = np.asarray(proto.iou_thresholds)
    md = proto.max_dets_list

    def mean(ap: bool, area: int, max_det: int, iou: float | None = None) -> float:
        s = precision[..., area, md.index(max_det)] if ap else recall[..., area, md.index(max_det)]
        if iou is not None:
            s = s[np.where(iou == thrs)[0]]
        valid = s[s > -1]
        return float(np.mean(valid)) if len(valid) else math.nan

    last = md[-1]
    values = (
        mean(True, 0, last),
        mean(True, 0, last, 0.5),
        mean(True, 0, last, 0.75),
        mean(True, 1, last),
        mean(True, 2, last),
        mean(True, 3, last),
        mean(False, 0, md[0]),
        mean(False, 0, md[1]),
        mean(False, 0, last),
        mean(False, 1, last),
        mean(False, 2, last),
        mean(False, 3, last),
    )
    return dict(zip(SUMMARY_KEYS, values))


def coco_ap(
    gts: Mapping[Any, InstanceGT],
    dets: Mapping[Any, Instances],
    iou_type: IouType = "bbox",
    protocol: str | DetectionProtocol = DEFAULT_DETECTION_PROTOCOL,
    *,
    det_area: DetArea = "box",
) -> dict[str, float]:
    """Class-agnostic AP / AR of ``dets`` against ``gts`` (every GT image counts; an image
    without detections has none; ``det_area`` as :func:`match_images`).  Detections of an image
    not in ``gts`` are an error."""
    unknown = [i for i in dets if i not in gts]
    if unknown:
        raise MetricInputError(
            f"{len(unknown)} detection image id(s) not in the ground truth, e.g. {unknown[0]!r}"
        )
    proto = get_detection_protocol(protocol)
    empty = Instances(np.zeros(0), np.zeros((0, 4)), [] if iou_type == "segm" else None)
    items = [(i, gt, dets.get(i, empty)) for i, gt in gts.items()]
    return accumulate(match_images(items, iou_type, proto, det_area=det_area), proto)
