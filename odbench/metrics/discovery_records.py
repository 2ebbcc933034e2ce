"""Per-image records of the ``discovery`` task and their summary (class-agnostic AP / AR).

Each image's detections are matched to its ground truth once
(:func:`odbench.metrics.detection.match_image`: bbox, and segm when both sides have masks); the
match records are kept per image, so the dataset numbers (:func:`accumulate`) are recomputed from
any subset or resample of the images (``odbench compare``'s bootstrap, ``odbench merge``) without
the masks.  In a records file they are two arrays aligned with the ids, ``disc_box`` and (when
segm was scored) ``disc_mask``: one image's match record as UTF-8 JSON bytes each (numpy ``S``
strings, readable with ``allow_pickle=False``).

The summary's keys are ``box_<N>`` and ``mask_<N>`` for COCO's 12 summary numbers ``N`` (AP, AP50,
AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl; the last AR slot is the protocol's budget,
e.g. 300 detections under ``lvis-agnostic``), plus ``n_images`` and ``n_instances`` (GT instances,
crowd regions not counted).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from odbench.metrics.detection import ImageMatches, accumulate, match_image
from odbench.metrics.detection_protocols import DetectionProtocol
from odbench.metrics.instances import InstanceGT, Instances

#: iou type -> the prefix of its summary keys and the name of its records array.
PREFIX = {"bbox": "box", "segm": "mask"}
ARRAY = {"bbox": "disc_box", "segm": "disc_mask"}


def _text(matches: ImageMatches) -> bytes:
    return json.dumps(matches.to_dict(), separators=(",", ":")).encode()


def score_image(
    image_id: str,
    gt: InstanceGT,
    dets: Instances,
    protocol: DetectionProtocol,
    iou_types: Sequence[str],
) -> dict[str, bytes]:
    """One image's match records, ``{iou type: JSON bytes}``, for ``iou_types`` (``image_id``:
    the sample id; records of equal scores are ordered by it across images)."""
    return {
        t: _text(match_image(gt, dets, t, protocol, image_id=image_id))  # type: ignore[arg-type]
        for t in iou_types
    }


@dataclasses.dataclass(frozen=True)
class DiscoveryRecords:
    """Per-image match records, (n,) ``S`` arrays of JSON aligned with the run's ids: ``box``
    (bbox) and ``mask`` (segm, None when it was not scored), and the GT instance count (n,)."""

    box: np.ndarray
    mask: np.ndarray | None
    n_gt: np.ndarray

    @classmethod
    def collect(cls, images: Sequence[dict[str, bytes]], n_gt: Sequence[int]) -> DiscoveryRecords:
        """The records of per-image :func:`score_image` results, in order."""
        segm = all("segm" in r for r in images)
        return cls(
            box=np.array([r["bbox"] for r in images], dtype="S"),
            mask=np.array([r["segm"] for r in images], dtype="S") if segm else None,
            n_gt=np.asarray(n_gt, dtype=np.int64),
        )

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"disc_box": self.box, "disc_n_gt": self.n_gt}
        if self.mask is not None:
            out["disc_mask"] = self.mask
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], n: int) -> DiscoveryRecords | None:
        """The discovery records among a records file's arrays (None: it has none); ValueError
        for damaged ones."""
        if "disc_box" not in arrays:
            return None
        keys = ("disc_box", "disc_n_gt", *(("disc_mask",) if "disc_mask" in arrays else ()))
        for key in keys:
            a = arrays.get(key)
            kind = "iu" if key == "disc_n_gt" else "S"
            if a is None or a.shape != (n,) or a.dtype.kind not in kind:
                raise ValueError(f"discovery records: {key!r} missing or not one entry per image")
        return cls(arrays["disc_box"], arrays.get("disc_mask"), arrays["disc_n_gt"])

    def take(self, order: np.ndarray) -> DiscoveryRecords:
        """The records of the images ``order`` (indices), in that order."""
        mask = None if self.mask is None else self.mask[order]
        return DiscoveryRecords(self.box[order], mask, self.n_gt[order])

    @property
    def iou_types(self) -> tuple[str, ...]:
        return ("bbox",) if self.mask is None else ("bbox", "segm")

    def matches(self, iou_type: str) -> list[ImageMatches]:
        """The decoded per-image match records of ``iou_type``."""
        texts = self.box if iou_type == "bbox" else self.mask
        if texts is None:
            raise ValueError(f"no {iou_type} records (the run scored bbox only)")
        return [ImageMatches.from_dict(json.loads(bytes(t))) for t in texts]

    def summarize(self, protocol: DetectionProtocol) -> dict[str, Any]:
        """The dataset's AP / AR (see the module docstring)."""
        return summarize_matches({t: self.matches(t) for t in self.iou_types}, protocol, self.n_gt)


def summarize_matches(
    matches: dict[str, list[ImageMatches]], protocol: DetectionProtocol, n_gt: np.ndarray
) -> dict[str, Any]:
    """``box_*`` / ``mask_*`` numbers of decoded per-image records (``{iou type: records}``)."""
    out: dict[str, Any] = {}
    for iou_type, records in matches.items():
        numbers = accumulate(records, protocol)
        out.update({f"{PREFIX[iou_type]}_{k}": v for k, v in numbers.items()})
    out["n_images"] = len(n_gt)
    out["n_instances"] = int(np.sum(n_gt))
    return out
