"""Discovery protocols: every choice that changes a class-agnostic COCO AP / AR number, as data.

A :class:`DetectionProtocol` is to the ``discovery`` task what
:class:`odbench.metrics.protocols.Protocol` is to saliency: named, stored in every result
(:meth:`DetectionProtocol.as_dict`), read back with :meth:`DetectionProtocol.from_dict`, and
interpreted by :mod:`odbench.metrics.detection`.  The built-ins follow pycocotools'
``COCOeval`` (``Params.setDetParams``) with every category mapped to one (class-agnostic, as
CutLER, MaskCut, ProMerge and UnSAM report):

``coco-agnostic`` (default)
    IoU thresholds .50:.05:.95 (``np.linspace(.5, .95, 10)``), 101 recall points
    (``np.linspace(0, 1, 101)``), area ranges all / small / medium / large =
    [0, 1e10], [0, 32²], [32², 96²], [96², 1e10] on the annotation's ``area`` field (inclusive at
    both ends, as COCO), max detections 1 / 10 / 100.
``lvis-agnostic``
    The same with max detections 1 / 10 / 300: LVIS v1 val is reported at 300 detections per
    image (CutLER's README).

``max_dets`` (the last of ``max_dets_list``) may be changed per run (``--max-dets N``,
:func:`get_detection_protocol`); the protocol's name then records it (``coco-agnostic@1000``).

Tie policy ``score-box-rle``: before matching, an image's detections are put in one total order
that never depends on the order a method or a file lists them: score descending, then the box
``x1, y1, x2, y2`` ascending, then the mask's compressed RLE ``counts`` (bytes, ascending;
masks only).  Detections equal in all of these are identical for scoring, so their order cannot
change a number.  pycocotools keeps the submission order among equal scores (a stable sort), so
its AP depends on it when scores tie (CutLER issues #18, #41, #70: unscored MaskCut masks);
without ties both orders are the same and the numbers equal pycocotools'.  Across images, the
dataset-level sort by score is stable over images in image-id order, as ``COCOeval.accumulate``
(deterministic: the image order is sorted, whatever order the images came in).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, get_args

import numpy as np

from odbench.registry import Registry

TiePolicy = Literal["score-box-rle"]

#: COCO's IoU thresholds, computed exactly as ``COCOeval.Params`` does (bit-identical values).
COCO_IOU_THRESHOLDS: tuple[float, ...] = tuple(
    np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True).tolist()
)
#: COCO's area ranges (all, small, medium, large) on the annotation's ``area``.
COCO_AREA_RANGES: tuple[tuple[float, float], ...] = (
    (0.0, 1e5**2),
    (0.0, 32.0**2),
    (32.0**2, 96.0**2),
    (96.0**2, 1e5**2),
)


@dataclass(frozen=True)
class DetectionProtocol:
    """One class-agnostic AP / AR protocol (see the module docstring for the built-ins).

    Fields:
        iou_thresholds: matching thresholds; a detection matches a GT at IoU >= t (t capped at
            1 - 1e-10, as COCO).
        recall_points: number of evenly spaced recall values precision is interpolated at
            (101: ``np.linspace(0, 1, 101)``).
        area_ranges: (low, high) per area range, in the order all, small, medium, large; a GT
            outside is ignored, and so is an unmatched detection outside (by its own area:
            box ``w * h`` for bbox, mask area for segm).
        max_dets_list: the detection budgets AR1 / AR10 / AR100 read (ascending); the last is
            the per-image budget of AP and of the "AR100" slot (COCO's summarize).
        tie_policy: the total order of an image's detections before matching.
        sources: the code this protocol reproduces.
    """

    name: str
    description: str
    iou_thresholds: tuple[float, ...] = COCO_IOU_THRESHOLDS
    recall_points: int = 101
    area_ranges: tuple[tuple[float, float], ...] = COCO_AREA_RANGES
    max_dets_list: tuple[int, ...] = (1, 10, 100)
    tie_policy: TiePolicy = "score-box-rle"
    sources: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.tie_policy not in get_args(TiePolicy):
            raise ValueError(
                f"protocol {self.name!r}: tie_policy must be one of "
                f"{', '.join(get_args(TiePolicy))}, got {self.tie_policy!r}"
            )
        if len(self.area_ranges) != 4 or len(self.max_dets_list) != 3:
            raise ValueError(
                f"protocol {self.name!r}: need 4 area ranges (all, small, medium, large) and "
                "3 max-detection budgets (COCO's summary reads them by position)"
            )
        if list(self.max_dets_list) != sorted(self.max_dets_list) or self.max_dets_list[0] < 1:
            raise ValueError(f"protocol {self.name!r}: max_dets_list must ascend from >= 1")
        if not self.iou_thresholds or self.recall_points < 2:
            raise ValueError(f"protocol {self.name!r}: need IoU thresholds and >= 2 recall points")

    @property
    def max_dets(self) -> int:
        """The per-image detection budget (the last of :attr:`max_dets_list`)."""
        return self.max_dets_list[-1]

    @property
    def recall_thresholds(self) -> np.ndarray:
        """The recall values precision is read at, exactly as ``COCOeval.Params.recThrs``."""
        return np.linspace(0.0, 1.0, self.recall_points)

    def with_max_dets(self, max_dets: int) -> DetectionProtocol:
        """This protocol with another per-image budget (the "AR100" slot reads it); its name
        records the change (``coco-agnostic@1000``)."""
        if max_dets == self.max_dets:
            return self
        if max_dets < self.max_dets_list[1]:
            raise ValueError(f"max_dets must be >= {self.max_dets_list[1]}, got {max_dets}")
        base = self.name.split("@")[0]
        return replace(
            self,
            name=f"{base}@{max_dets}",
            description=f"{self.description} Max detections {max_dets}.",
            max_dets_list=(*self.max_dets_list[:2], max_dets),
        )

    def as_dict(self) -> dict[str, object]:
        """JSON-ready description (tuples as lists)."""
        out: dict[str, object] = {}
        for key in self.__dataclass_fields__:
            value = getattr(self, key)
            if isinstance(value, tuple):
                value = [list(v) if isinstance(v, tuple) else v for v in value]
            out[key] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> DetectionProtocol:
        """The protocol :meth:`as_dict` describes (unknown keys ignored); TypeError or
        ValueError for a description that is not one."""
        values: dict[str, object] = {}
        for key, value in data.items():
            if key not in cls.__dataclass_fields__:
                continue
            if isinstance(value, list):
                value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
            values[key] = value
        return cls(**values)  # type: ignore[arg-type]


COCO_AGNOSTIC = DetectionProtocol(
    name="coco-agnostic",
    description="Class-agnostic COCO AP/AR (all categories as one): IoU .50:.05:.95, "
    "101 recall points, COCO area ranges, max dets 1/10/100, crowd ignored, "
    "ties by score, box, RLE.",
    sources=(
        "cocodataset/cocoapi PythonAPI/pycocotools/cocoeval.py",
        "facebookresearch/CutLER cutler/evaluation (class-agnostic COCO evaluation)",
    ),
)
LVIS_AGNOSTIC = replace(
    COCO_AGNOSTIC,
    name="lvis-agnostic",
    description="As coco-agnostic with max dets 1/10/300 (LVIS v1 val, as CutLER reports it).",
    max_dets_list=(1, 10, 300),
)

#: The discovery protocol every command scores under unless told otherwise.
DEFAULT_DETECTION_PROTOCOL = COCO_AGNOSTIC.name

#: Discovery protocols by name (``odbench list protocols`` may list them beside saliency's).
DETECTION_PROTOCOLS: Registry[DetectionProtocol] = Registry("discovery protocol")
for _proto in (COCO_AGNOSTIC, LVIS_AGNOSTIC):
    DETECTION_PROTOCOLS.add(_proto.name, obj=_proto, description=_proto.description)


def get_detection_protocol(
    name: str | DetectionProtocol = DEFAULT_DETECTION_PROTOCOL, max_dets: int | None = None
) -> DetectionProtocol:
    """A discovery protocol by name (unknown names list the valid ones; a protocol passes
    through), with its per-image budget changed to ``max_dets`` when given
    (:meth:`DetectionProtocol.with_max_dets`)."""
    proto = name if isinstance(name, DetectionProtocol) else DETECTION_PROTOCOLS.get(name)
    return proto if max_dets is None else proto.with_max_dets(max_dets)
