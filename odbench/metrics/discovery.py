"""The ``discovery`` task's meter: per-image matching records for boxes and masks, reduced to
the catalog's ``box_AP`` ... ``box_ARl`` and ``mask_AP`` ... ``mask_ARl``
(:mod:`odbench.metrics.catalog`) by :func:`odbench.metrics.detection.accumulate`.

AP is a dataset-level number: the meter's state is the list of per-image records
(:class:`~odbench.metrics.detection.ImageMatches`, small), so shards and workers merge by
concatenation (the order does not matter: records are sorted by image id) and ``compare``
resamples images by resampling records.  Mask metrics are computed when every image has a
mask record (GT and detections with masks); a boxes-only dataset (VOC) or method gives box
metrics only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from odbench.metrics.detection import ImageId, ImageMatches, accumulate, match_image
from odbench.metrics.detection_protocols import (
    DEFAULT_DETECTION_PROTOCOL,
    DetectionProtocol,
    get_detection_protocol,
)
from odbench.metrics.instances import InstanceGT, Instances
from odbench.metrics.meter import Meter


@dataclass(frozen=True)
class DiscoveryRecord:
    """One image's records: box matching, and mask matching when both sides have masks."""

    box: ImageMatches
    mask: ImageMatches | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "box": self.box.to_dict(),
            "mask": None if self.mask is None else self.mask.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiscoveryRecord:
        mask = data.get("mask")
        return cls(
            ImageMatches.from_dict(data["box"]),
            None if mask is None else ImageMatches.from_dict(mask),
        )


class DiscoveryMeter(Meter):
    """Class-agnostic COCO AP / AR of one method on one dataset, for boxes and masks."""

    states: ClassVar[tuple[str, ...]] = ("box", "mask")

    def __init__(self, protocol: str | DetectionProtocol = DEFAULT_DETECTION_PROTOCOL) -> None:
        self.protocol = get_detection_protocol(protocol)
        self.box: list[ImageMatches] = []
        self.mask: list[ImageMatches] = []

    def score(self, gt: InstanceGT, dets: Instances, image_id: ImageId) -> DiscoveryRecord:
        """One image's record (pure: touches no state)."""
        box = match_image(gt, dets, "bbox", self.protocol, image_id=image_id)
        mask = None
        if gt.masks is not None and dets.masks is not None:
            mask = match_image(gt, dets, "segm", self.protocol, image_id=image_id)
        return DiscoveryRecord(box, mask)

    def update(self, gt: InstanceGT, dets: Instances, image_id: ImageId) -> DiscoveryRecord:
        """Score one image and add its record; returns the record."""
        record = self.score(gt, dets, image_id)
        self.add(record)
        return record

    def add(self, record: DiscoveryRecord) -> None:
        self.box.append(record.box)
        if record.mask is not None:
            self.mask.append(record.mask)

    def compute(self) -> dict[str, float]:
        """``box_*`` (and ``mask_*`` when every image has a mask record): NaN where COCO gives
        -1."""
        out = {f"box_{k}": v for k, v in accumulate(self.box, self.protocol).items()}
        if self.mask and len(self.mask) == len(self.box):
            out.update({f"mask_{k}": v for k, v in accumulate(self.mask, self.protocol).items()})
        return out
