"""The ``discovery`` task in a run: multi-object discovery scored by class-agnostic COCO AP / AR
(CutLER, Wang et al. CVPR 2023; MaskCut; ProMerge).

A dataset whose ``task`` holds ``"discovery"`` gives every sample its class-agnostic instances
(:class:`odbench.metrics.instances.InstanceGT`); the runner asks the method for its instances
after its maps (:meth:`odbench.methods.base.Method.predict_instances`), stores them in the
prediction cache beside the map, matches them to the GT per image (bbox always; segm when the
GT and the method both have masks) and keeps the per-image match records
(:mod:`odbench.metrics.discovery_records`), from which ``summarize`` (and ``odbench merge``, and
``compare``'s bootstrap) compute the 12 numbers per iou type.

The discovery protocol (:mod:`odbench.metrics.detection_protocols`) is the dataset's
(``coco-agnostic``: 100 detections per image; ``lvis-agnostic`` for LVIS: 300), or the one a run
names; it is stored in the results JSON under ``protocol.discovery`` (name and definition), beside
the run's saliency protocol, which the run's name and the leaderboard keep using.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from odbench.cache import safe_name
from odbench.data.base import Dataset, Sample
from odbench.errors import OdbenchError
from odbench.imageio import atomic_write_bytes, atomic_writer
from odbench.metrics.detection_protocols import (
    DEFAULT_DETECTION_PROTOCOL,
    DetectionProtocol,
    get_detection_protocol,
)
from odbench.metrics.detection_resample import accumulate_resampled
from odbench.metrics.discovery_records import PREFIX, DiscoveryRecords, score_image
from odbench.metrics.instances import Instances

if TYPE_CHECKING:
    from odbench.distributed import Shard


class DiscoveryError(OdbenchError, ValueError):
    """A discovery run that cannot proceed (an iou type the data lacks, instances of the wrong
    shape); one line."""


def has_discovery(dataset: Dataset) -> bool:
    """Whether ``dataset``'s samples carry class-agnostic instances."""
    return "discovery" in dataset.task


def dataset_protocol(
    dataset: Dataset, name: str | DetectionProtocol | None = None, max_dets: int | None = None
) -> DetectionProtocol:
    """The discovery protocol of a run on ``dataset``: ``name`` when given, else the dataset's
    (its ``discovery_protocol`` attribute: ``lvis-agnostic`` for LVIS), else ``coco-agnostic``;
    with ``max_dets``, that per-image budget."""
    default: str = getattr(dataset, "discovery_protocol", DEFAULT_DETECTION_PROTOCOL)
    chosen = name if name is not None else default
    try:
        return get_detection_protocol(chosen, max_dets)
    except ValueError as e:
        raise DiscoveryError(f"discovery protocol: {e}") from e


def iou_types_for(dataset: Dataset, dataset_name: str, iou_type: str | None) -> tuple[str, ...]:
    """What a run scores: ``bbox`` always; segm too unless ``iou_type`` is ``"bbox"``, when the
    data has instance masks (``iou_type`` None) or because it is asked (``"segm"``: refused, in
    one line, on boxes-only data such as VOC)."""
    if iou_type not in (None, "bbox", "segm"):
        raise DiscoveryError(f"--iou-type must be bbox or segm, got {iou_type!r}")
    masks = dataset.instance_masks
    if iou_type == "segm" and not masks:
        raise DiscoveryError(
            f"{dataset_name} has boxes only (no instance masks): segm AP cannot be scored "
            "on it; use --iou-type bbox"
        )
    return ("bbox", "segm") if masks and iou_type != "bbox" else ("bbox",)


def protocol_block(protocol: DetectionProtocol) -> dict[str, Any]:
    """What the results JSON stores under ``protocol.discovery``."""
    return {"name": protocol.name, "definition": protocol.as_dict()}


def protocol_of(protocol: dict[str, Any]) -> DetectionProtocol | None:
    """The discovery protocol of a results JSON's ``protocol`` table (None: no discovery);
    :class:`DiscoveryError` when its block is damaged."""
    block = protocol.get("discovery") if isinstance(protocol, dict) else None
    if block is None:
        return None
    try:
        return DetectionProtocol.from_dict(block["definition"])
    except (TypeError, ValueError, KeyError) as e:
        raise DiscoveryError(f"damaged protocol.discovery block ({e}); re-run odbench eval") from e


def check_instances(method: str, sample: Sample, found: Any) -> Instances:
    """``found`` as the instances of ``sample``'s image, or one line saying what is wrong."""
    h, w = sample.image.shape[:2]
    if not isinstance(found, Instances):
        raise DiscoveryError(
            f"method {method!r} returned {type(found).__name__} for the instances of "
            f"{sample.id!r}; predict_instances returns one Instances per image"
        )
    if not (np.isfinite(found.scores).all() and np.isfinite(found.boxes).all()):
        raise DiscoveryError(
            f"method {method!r} returned non-finite scores or boxes for {sample.id!r}"
        )
    for m in found.masks or []:
        if list(m.get("size", [])) != [h, w]:
            raise DiscoveryError(
                f"method {method!r} returned a mask of size {m.get('size')} for {sample.id!r} "
                f"of size {[h, w]}"
            )
    return found


def score_sample(
    sample: Sample, found: Instances, protocol: DetectionProtocol, iou_types: tuple[str, ...]
) -> dict[str, bytes]:
    """One image's match records: bbox, and segm when asked and the method gave masks."""
    gt = sample.instances
    if gt is None:
        raise DiscoveryError(f"sample {sample.id!r} has no instances (not a discovery dataset)")
    segm = "segm" in iou_types and gt.masks is not None and found.masks is not None
    return score_image(sample.id, gt, found, protocol, ("bbox", "segm") if segm else ("bbox",))


def discovery_records(scored: list[dict[str, bytes]], n_gt: list[int]) -> DiscoveryRecords:
    """The run's records; segm is kept when every image has it: a method returning masks for
    some images only is refused (its segm AP would cover part of the data)."""
    with_segm = sum("segm" in r for r in scored)
    if 0 < with_segm < len(scored):
        raise DiscoveryError(
            f"the method returned instance masks for {with_segm} of {len(scored)} images; "
            "segm AP needs masks for every image (or for none: bbox only)"
        )
    return DiscoveryRecords.collect(scored, n_gt)


#: The discovery numbers ``odbench compare`` resamples, per iou type (issue 22: AP50 and AR100;
#: AP too, from the same accumulation).
COMPARED = ("AP", "AP50", "AR100")


def bootstrap_statistics(
    records: DiscoveryRecords, weights: np.ndarray, protocol: DetectionProtocol
) -> dict[str, np.ndarray]:
    """``{box_AP50: (B,), ...}``: :data:`COMPARED` per iou type under each row of ``weights``
    (B, n), how often each image is drawn (row 0 all ones: the point estimate).  Each resample
    is what accumulating its images (each as often as it is drawn) gives, computed by weighted
    accumulation (:func:`~odbench.metrics.detection_resample.accumulate_resampled`: the
    detections sorted once, each resample only weights them): ~200 resamples/s for 1,000
    images x 100 detections on one core, ~44x accumulating each resample (benchmarks/README.md)."""
    out: dict[str, np.ndarray] = {}
    counts = np.rint(weights)
    for iou_type in records.iou_types:
        values = accumulate_resampled(records.matches(iou_type), counts, protocol, COMPARED)
        out.update({f"{PREFIX[iou_type]}_{k}": v for k, v in values.items()})
    return out


#: ``--save-preds``' COCO-results file of a discovery run (Detectron2's name for it).
COCO_RESULTS = "coco_instances_results.json"
_PARTS = ".instances-parts"  # one file per image while the run goes, joined at its end


def coco_results(found: Instances, image_id: int | str) -> list[dict[str, Any]]:
    """An image's instances as COCO-results entries: ``image_id``, ``category_id`` 1
    (class-agnostic), ``bbox`` ``[x, y, w, h]``, ``score`` and, when the method gave masks, the
    compressed RLE ``segmentation`` (counts as text), what ``odbench score-detections`` reads
    (a fractional box may come back one ulp off: ``x1 + (x2 - x1)`` need not be ``x2``)."""
    entries = []
    for k, (x1, y1, x2, y2) in enumerate(np.asarray(found.boxes, np.float64).tolist()):
        entry: dict[str, Any] = {
            "image_id": image_id,
            "category_id": 1,
            "bbox": [x1, y1, x2 - x1, y2 - y1],
            "score": float(found.scores[k]),
        }
        if found.masks is not None:
            rle = found.masks[k]
            counts = rle["counts"]
            entry["segmentation"] = {
                "size": [int(v) for v in rle["size"]],
                "counts": counts.decode("ascii") if isinstance(counts, bytes) else str(counts),
            }
        entries.append(entry)
    return entries


def save_instances(folder: Path, sample_id: str, found: Instances, image_id: int | str) -> None:
    """One image's part of ``--save-preds``' COCO-results file (written by the process that
    scored the image; :func:`write_coco_results` joins the parts)."""
    body = json.dumps(coco_results(found, image_id)).encode()
    atomic_write_bytes(folder / _PARTS / f"{safe_name(sample_id)}.json", body)


def write_coco_results(folder: Path, ids: Sequence[str], shard: Shard | None = None) -> Path:
    """Join the saved instances of ``ids`` (in that order) into ``folder``'s
    :data:`COCO_RESULTS` (``coco_instances_results.shard-I-of-N.json`` for a shard: shards may
    share one folder), atomically, and remove the per-image parts."""
    parts = [folder / _PARTS / f"{safe_name(i)}.json" for i in ids]
    missing = [i for i, p in zip(ids, parts) if not p.is_file()]
    if missing:
        raise DiscoveryError(
            f"{folder / _PARTS}: the instances of {len(missing)} image(s) were not saved "
            f"(e.g. {missing[0]!r}); run eval again"
        )
    stem = COCO_RESULTS.removesuffix(".json")
    name = COCO_RESULTS if shard is None or shard.whole else f"{stem}.{shard.label()}.json"
    with atomic_writer(folder / name) as f:
        f.write(b"[")
        first = True
        for part in parts:
            body = part.read_bytes().strip()[1:-1]  # the entries of one JSON list
            if body.strip():
                f.write(body if first else b"," + body)
                first = False
        f.write(b"]\n")
    for part in parts:
        part.unlink()
    with contextlib.suppress(OSError):
        (folder / _PARTS).rmdir()
    return folder / name
