"""Class-agnostic AP / AR of many resamples of the images at once: weighted accumulation.

``odbench compare`` bootstraps discovery's dataset-level numbers (AP, AP50, AR100) by drawing
images with replacement.  A resample is a vector of per-image counts (how often each image is
drawn); :func:`accumulate_resampled` gives, for every row of such counts, exactly what
:func:`odbench.metrics.detection.accumulate` gives on the explicit resample (each record
repeated as often as it is drawn), without building it: the detections are sorted once, in
``accumulate``'s order, and each resample only weights them.

Why weighting is exact.  ``accumulate`` puts the records in image-id order (stable, so the
copies of an image are adjacent) and sorts all detections by score with a stable sort; the c
copies of a detection whose score no other detection of its image shares therefore form one
run of c consecutive entries.  An interpolated precision is the precision envelope (the best
precision at or after a point) at the first point whose recall reaches the recall threshold.
A run of copies of a true positive raises TP by 1 per entry, so precision ``tp / (tp + fp)``
rises along the run and the envelope is the same at every entry of the run as at its last one:
one entry of weight c where the run ends gives the same interpolated precisions.  A run of
copies of a false positive leaves recall where it was, so no recall threshold is first reached
inside it, and its precision is below that of the true positive before it (0 at the very start,
where the envelope is then the best precision after it): false positives (and ignored
detections, and images drawn 0 times) only add to the FP count of the true positives after
them.  So each resample evaluates precision at the true positives only, from weighted
cumulative sums.  Detections of one image with equal scores are the exception: their copies
interleave (copy 1's tied detections by rank, then copy 2's ...), so such a block is laid down
c times entry by entry, as ``accumulate`` sees it.  Counts are exact integers in float64, so
the cumulative TP / FP, precision and recall at those points are the same floats as
``accumulate``'s: the numbers are identical, not merely close (tests/test_detection_resample.py
checks this against explicit resampling).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from odbench.metrics.detection import (
    IGNORED,
    SUMMARY_KEYS,
    TP,
    ImageMatches,
    check_records,
    image_order_key,
    interpolated_precision,
    summarize,
)
from odbench.metrics.detection_protocols import (
    DEFAULT_DETECTION_PROTOCOL,
    DetectionProtocol,
    get_detection_protocol,
)

#: The area range (0 all, 1 small, 2 medium, 3 large) and budget (index into
#: ``max_dets_list``, -1 the last) each summary number reads; AP keys read precision.
_READS: dict[str, tuple[int, int]] = {
    "AP": (0, -1), "AP50": (0, -1), "AP75": (0, -1),
    "APs": (1, -1), "APm": (2, -1), "APl": (3, -1),
    "AR1": (0, 0), "AR10": (0, 1), "AR100": (0, -1),
    "ARs": (1, -1), "ARm": (2, -1), "ARl": (3, -1),
}  # fmt: skip


@dataclass(frozen=True)
class _Sequence:
    """One area range's score-sorted detections at the last budget: statuses (T, E), their
    image (E,), the blocks of one image's equal scores (start, length), and per IoU threshold
    the positions of the true positives, of the ignored detections, and how many of those
    come before each true positive."""

    status: np.ndarray
    image: np.ndarray
    block_start: np.ndarray
    block_len: np.ndarray
    tp_pos: list[np.ndarray]
    ign_pos: list[np.ndarray]
    ign_before: list[np.ndarray]

    def curves(self, counts: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per IoU threshold, the cumulative TP and FP of the resample ``counts`` (n,) at its
        true positives: the only points a recall threshold is first reached at (a false
        positive's precision is at most that of the true positive before it, so it never
        raises the envelope there)."""
        weight = counts[self.image]
        tp_pos, ign_pos, ign_before = self.tp_pos, self.ign_pos, self.ign_before
        multi = self.block_len > 1
        if multi.any():  # a tied block is laid down entry by entry, once per copy
            unit_count = weight[self.block_start]
            laid = np.where(multi, unit_count, 1).astype(np.int64)
            unit = np.repeat(np.arange(len(self.block_start)), laid)
            size = self.block_len[unit]
            first = np.repeat(np.cumsum(size) - size, size)
            unit_of_entry = np.repeat(unit, size)
            entry = self.block_start[unit_of_entry] + (np.arange(len(first)) - first)
            weight = np.where(multi[unit_of_entry], 1.0, unit_count[unit_of_entry])
            status = self.status[:, entry]
            tp_pos = [np.flatnonzero(s == TP) for s in status]
            ign_pos = [np.flatnonzero(s == IGNORED) for s in status]
            ign_before = [np.searchsorted(i, p) for i, p in zip(ign_pos, tp_pos)]
        total = np.cumsum(weight)  # every entry so far, TP + FP + ignored
        out = []
        for tp_at, ign_at, before in zip(tp_pos, ign_pos, ign_before):
            tp = np.cumsum(weight[tp_at])
            fp = total[tp_at] - tp
            if len(ign_at):
                ignored = np.concatenate([[0.0], np.cumsum(weight[ign_at])])
                fp -= ignored[before]
            out.append((tp, fp))
        return out


def accumulate_resampled(
    matches: Sequence[ImageMatches],
    counts: np.ndarray,
    protocol: str | DetectionProtocol = DEFAULT_DETECTION_PROTOCOL,
    keys: Sequence[str] = SUMMARY_KEYS,
) -> dict[str, np.ndarray]:
    """``{key: (B,)}``: :func:`~odbench.metrics.detection.accumulate`'s ``keys`` for each row of
    ``counts`` (B, n): how often each of ``matches`` is drawn (non-negative integers; row of
    ones: the records themselves).  Identical to accumulating the explicit resamples (see the
    module docstring); NaN where COCO gives -1 (e.g. a resample without counted GT)."""
    proto = get_detection_protocol(protocol)
    check_records(matches, proto)
    unknown = [k for k in keys if k not in _READS]
    if unknown:
        raise ValueError(f"unknown summary keys {unknown}; known: {', '.join(SUMMARY_KEYS)}")
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[1] != len(matches):
        raise ValueError(f"counts must be (resamples, {len(matches)}), got {counts.shape}")
    if not np.array_equal(counts, np.rint(counts)) or (counts < 0).any():
        raise ValueError("counts must be non-negative integers (how often each image is drawn)")
    order = sorted(range(len(matches)), key=lambda i: image_order_key(matches[i].image_id))
    ordered = [matches[i] for i in order]
    counts = counts[:, order]
    n_thr, n_area = len(proto.iou_thresholds), len(proto.area_ranges)
    budgets = proto.max_dets_list
    last = len(budgets) - 1
    reads = {_READS[k] for k in keys}
    recall_at = {(a, m % len(budgets)) for a, m in reads}
    precision_at = sorted({a for k in keys if k.startswith("AP") for a in [_READS[k][0]]})

    num_gt = np.array([m.num_gt for m in ordered], dtype=np.float64).reshape(-1, n_area)
    weighted_gt = counts @ num_gt  # (B, A)
    recall = -np.ones((len(counts), n_thr, 1, n_area, len(budgets)))
    for a, mi in sorted(recall_at):  # final recall: weighted TP counts over weighted GT
        tp = np.array(
            [np.count_nonzero(m.status[a, :, : budgets[mi]] == TP, axis=1) for m in ordered],
            dtype=np.float64,
        ).reshape(-1, n_thr)
        has = weighted_gt[:, a] > 0
        recall[has, :, 0, a, mi] = (counts[has] @ tp) / weighted_gt[has, a : a + 1]
    sequences = {a: _sequence(ordered, a, budgets[last]) for a in precision_at if ordered}
    out = {k: np.empty(len(counts)) for k in keys}
    for b in range(len(counts)):
        precision = -np.ones((n_thr, len(proto.recall_thresholds), 1, n_area, len(budgets)))
        for a, seq in sequences.items():
            if weighted_gt[b, a] > 0:
                p = [
                    interpolated_precision(tp, fp, weighted_gt[b, a], proto.recall_thresholds)
                    for tp, fp in seq.curves(counts[b])
                ]
                precision[:, :, 0, a, last] = np.stack(p)
        row = summarize(precision, recall[b], proto)
        for k in keys:
            out[k][b] = row[k]
    return out


def _sequence(ordered: Sequence[ImageMatches], area: int, max_det: int) -> _Sequence:
    """The detections of ``ordered`` (records in image-id order) at most ``max_det`` per image,
    sorted as ``accumulate`` sorts them (score descending, stable over images then rank), those
    ignored at every threshold left out."""
    scores = np.concatenate([m.scores[:max_det] for m in ordered])
    status = np.concatenate([m.status[area, :, :max_det] for m in ordered], axis=1)
    image = np.repeat(np.arange(len(ordered)), [min(len(m), max_det) for m in ordered])
    keep = np.argsort(-scores, kind="mergesort")
    keep = keep[(status[:, keep] != IGNORED).any(axis=0)]
    scores, status, image = scores[keep], status[:, keep], image[keep]
    new = np.ones(len(keep), bool)
    new[1:] = (scores[1:] != scores[:-1]) | (image[1:] != image[:-1])
    start = np.flatnonzero(new)
    length = np.diff(np.append(start, len(keep)))
    tp_pos = [np.flatnonzero(s == TP) for s in status]
    ign_pos = [np.flatnonzero(s == IGNORED) for s in status]
    before = [np.searchsorted(i, p) for i, p in zip(ign_pos, tp_pos)]
    return _Sequence(status, image, start, length, tp_pos, ign_pos, before)
