"""Multi-object discovery data: a method's scored instances in one image, and one image's
class-agnostic ground truth (the ``discovery`` task, scored by class-agnostic COCO AP / AR as in
CutLER, Wang et al. CVPR 2023).

Boxes are ``[x1, y1, x2, y2]`` in continuous pixels, as everywhere in odbench
(:mod:`odbench.metrics.boxes`); COCO's files hold ``[x, y, w, h]``: convert at the file boundary
only.  Masks are COCO run-length encodings (``{"size": [H, W], "counts": ...}``, as
``pycocotools.mask.encode`` returns them), so an image's instances stay small in caches and
records whatever their number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

RLE = dict[str, Any]  # {"size": [H, W], "counts": bytes | str}: pycocotools' compressed RLE


@dataclass(frozen=True)
class Instances:
    """A method's N instances in one image, each with a score (higher = more confident).

    ``masks`` is None for a method that proposes boxes only (bbox AP only).  The order of the
    instances carries no meaning: scoring breaks ties among equal scores by its own documented
    total order, never by this order.
    """

    scores: np.ndarray  # (N,) float64
    boxes: np.ndarray  # (N, 4) float64, x1 y1 x2 y2, continuous pixels
    masks: list[RLE] | None = None  # N RLEs of the image's size, or None (boxes only)

    def __post_init__(self) -> None:
        n = len(self.scores)
        if np.shape(self.boxes) != (n, 4):
            raise ValueError(f"Instances: {n} scores but boxes of shape {np.shape(self.boxes)}")
        if self.masks is not None and len(self.masks) != n:
            raise ValueError(f"Instances: {n} scores but {len(self.masks)} masks")

    def __len__(self) -> int:
        return len(self.scores)


@dataclass(frozen=True)
class InstanceGT:
    """One image's class-agnostic ground truth: every category mapped to one.

    ``area`` is the annotation's own ``area`` field (COCO's area ranges small / medium / large
    read it, not the box's area); crowd regions (``iscrowd``) are kept and ignored in matching,
    as COCO does.  ``masks`` is None for datasets with boxes only (VOC: bbox AP only).
    """

    height: int
    width: int
    boxes: np.ndarray  # (M, 4) float64, x1 y1 x2 y2, continuous pixels
    area: np.ndarray  # (M,) float64
    iscrowd: np.ndarray  # (M,) bool
    masks: list[RLE] | None = None  # M RLEs of size (height, width), or None (boxes only)

    def __post_init__(self) -> None:
        m = len(self.area)
        if np.shape(self.boxes) != (m, 4) or np.shape(self.iscrowd) != (m,):
            raise ValueError(
                f"InstanceGT: {m} areas but boxes {np.shape(self.boxes)}, "
                f"iscrowd {np.shape(self.iscrowd)}"
            )
        if self.masks is not None and len(self.masks) != m:
            raise ValueError(f"InstanceGT: {m} areas but {len(self.masks)} masks")

    def __len__(self) -> int:
        return len(self.area)
