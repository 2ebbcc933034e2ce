"""Single-object localisation: mask -> box, box IoU and CorLoc (DiffusionSeg Table 1c).

Boxes are ``[x1, y1, x2, y2]`` in continuous pixel coordinates: a box covering pixel columns
0..9 has x1 = 0, x2 = 10 (no "+1" anywhere; area = (x2 - x1) * (y2 - y1)).

CorLoc is the percentage of images whose ONE predicted box has IoU >= 0.5 with at least one GT
box.  Papers write "IoU > 0.5" but the field's code (e.g. YangtaoWANG95/TokenCut
``main_tokencut.py``: ``if torch.any(ious >= 0.5)``) uses ``>=``; so do we.  An image without a
prediction counts as a miss.

An image without any GT box (a COCO image whose every annotation is a crowd, once crowd boxes are
dropped) is left out of CorLoc's denominator and counted (``n_no_gt``), as LOST and TokenCut
do: their evaluation loop (LOST ``main_lost.py``, copied by TokenCut's ``main_tokencut.py``)
skips an image whose GT list is empty (``continue`` before ``cnt += 1``; the case arises in
their ``--no_hard`` setting, where "difficult"/crowd boxes are removed), and COCO20K holds only
images with a non-crowd box by construction.  Counting such images as misses would lower CorLoc
by an error no method can avoid.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from odbench.errors import OdbenchError
from odbench.metrics.meter import Meter


class CorLocError(OdbenchError, ValueError):
    """No CorLoc to give: no image was scored, or none of them has a GT box."""


def mask_to_box(mask: np.ndarray) -> np.ndarray:
    """Tight box ``(4,) float64`` of the largest 8-connected component of a boolean mask.

    Components come from ``cv2.connectedComponentsWithStats(connectivity=8)``; ties in area go
    to the component met first in raster order.  An empty mask gives all zeros (area 0, which
    never hits).  Note: TokenCut/LOST's ``detect_box`` instead labels with scipy's default
    4-connectivity and keeps the component containing their seed patch.
    """
    import cv2

    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    binary = (mask != 0).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if n <= 1:
        return np.zeros(4, dtype=np.float64)
    areas = stats[1:, cv2.CC_STAT_AREA]
    best = 1 + int(np.argmax(areas))
    x, y, w, h = (int(stats[best, i]) for i in range(4))  # LEFT, TOP, WIDTH, HEIGHT
    return np.array([x, y, x + w, y + h], dtype=np.float64)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU ``(N, M)`` of boxes ``a (N, 4)`` and ``b (M, 4)`` (continuous coordinates).

    Degenerate boxes have area 0; a pair whose union is 0 has IoU 0."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


class CorLocMeter(Meter):
    """Streaming CorLoc: ``score`` one image (a hit or not; None when it has no GT box), ``add``
    it, ``compute`` at the end (the meters' interface: :mod:`odbench.metrics.meter`).  ``n``
    counts the images with a GT box (the denominator), ``n_no_gt`` those without one (left
    out; module doc)."""

    threshold = 0.5
    states = ("hits", "n", "n_no_gt")

    def __init__(self) -> None:
        self.hits = 0
        self.n = 0
        self.n_no_gt = 0

    def score(
        self,
        pred_box: Sequence[float] | np.ndarray | None,
        gt_boxes: Sequence[Sequence[float]] | np.ndarray,
        image_id: str = "",
    ) -> bool | None:
        """Whether ``pred_box`` has IoU >= 0.5 with a GT box (None: no prediction, a miss);
        None when the image has no GT box (left out); counts nothing."""
        gt = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
        if len(gt) == 0:
            return None
        if pred_box is None:
            return False
        pred = np.asarray(pred_box, dtype=np.float64)
        if pred.shape != (4,):
            raise ValueError(f"{image_id}: predicted box must be 4 numbers, got {pred.shape}")
        return bool(np.any(box_iou(pred[None], gt) >= self.threshold))

    def add(self, record: bool | None) -> None:
        """Count one image's hit (or miss); None: an image without a GT box, left out."""
        if record is None:
            self.n_no_gt += 1
            return
        self.n += 1
        self.hits += record

    def update(
        self,
        pred_box: Sequence[float] | np.ndarray | None,
        gt_boxes: Sequence[Sequence[float]] | np.ndarray,
        image_id: str = "",
    ) -> bool | None:
        """Score one image, count it and return the hit (None: no GT box)."""
        hit = self.score(pred_box, gt_boxes, image_id)
        self.add(hit)
        return hit

    def compute(self) -> dict[str, float | int]:
        """``corloc`` (percent), ``hits``, ``n_images`` (with a GT box: the denominator),
        ``n_no_gt`` (images without a GT box, left out)."""
        if self.n == 0:
            if self.n_no_gt:
                raise CorLocError(f"none of the {self.n_no_gt} image(s) has a GT box: no CorLoc")
            raise CorLocError("no images were scored")
        return {
            "corloc": 100.0 * self.hits / self.n,
            "hits": self.hits,
            "n_images": self.n,
            "n_no_gt": self.n_no_gt,
        }
