"""Class-agnostic instance ground truth from a COCO-format ``instances_*.json`` (COCO, COCO20K,
LVIS, any COCO-format folder): the ``discovery`` task's GT.

Every category is mapped to one.  Per image: boxes ``[x, y, w, h]`` become
``[x, y, x + w, y + h]``; ``area`` is the annotation's own field (COCO's small / medium /
large read it; where it is missing, the box's ``w * h``, with a note: :func:`instance_gt`, the
one builder every COCO-format reader uses); ``iscrowd`` (absent = 0, as ``COCOeval``) is kept, and crowd regions are
ignored in matching; masks are compressed RLEs made exactly as pycocotools'
``COCO.annToRLE`` makes them (polygons: ``frPyObjects`` then ``merge``; uncompressed RLE:
``frPyObjects``; compressed RLE as stored).  Annotations keep the file's order (COCO's matching
prefers the later of two GT of equal IoU).  Reading the file needs no pycocotools ``COCO``
object; masks are built only when asked (``masks=True``; bbox AP needs none).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from odbench.data.base import DatasetError
from odbench.metrics.instances import RLE, InstanceGT


@dataclass(frozen=True)
class ImageInfo:
    """One image of an instances file: its file name and size."""

    file_name: str
    height: int
    width: int


@dataclass(frozen=True)
class InstanceFile:
    """An instances file read class-agnostically: GT and image info by image id, the category
    ids it declares and the file's sha256."""

    path: Path
    sha256: str
    gt: dict[int, InstanceGT]
    images: dict[int, ImageInfo]
    category_ids: frozenset[int]
    notes: tuple[str, ...] = ()  # e.g. annotations without 'area' (:func:`missing_area`)


def ann_to_rle(segmentation: Any, height: int, width: int) -> RLE:
    """A COCO ``segmentation`` (polygons, uncompressed or compressed RLE) as one compressed RLE,
    exactly as ``pycocotools.coco.COCO.annToRLE``."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))  # type: ignore[no-any-return]
    if isinstance(segmentation.get("counts"), list):
        return mask_utils.frPyObjects(segmentation, height, width)  # type: ignore[no-any-return]
    return dict(segmentation)


def read_json(path: str | Path, what: str) -> tuple[Any, bytes]:
    """A JSON file's content and bytes, or one :class:`DatasetError` line naming it."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DatasetError(f"{path}: cannot read the {what} ({e.strerror or e})") from e
    try:
        return json.loads(raw), raw
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: not a JSON file ({e})") from e


def read_instances(path: str | Path, masks: bool = True) -> InstanceFile:
    """Read a COCO-format instances file (see the module docstring); one
    :class:`DatasetError` line naming the file for anything that is not one."""
    data, raw = read_json(path, "instances file")
    gt, images, cats = instances_from_coco(data, masks=masks, source=str(path))
    note = missing_area(data.get("annotations", []))
    notes = (f"{path}: {note}",) if note else ()
    return InstanceFile(Path(path), hashlib.sha256(raw).hexdigest(), gt, images, cats, notes)


def load_instance_gt(path: str | Path, masks: bool = True) -> dict[int, InstanceGT]:
    """Image id -> class-agnostic :class:`InstanceGT` of a COCO-format instances file."""
    return read_instances(path, masks=masks).gt


def image_info(path: str | Path) -> dict[int, ImageInfo]:
    """Image id -> :class:`ImageInfo` (file name, height, width) of an instances file."""
    return read_instances(path, masks=False).images


def instances_from_coco(
    data: Any, masks: bool = True, source: str = "instances file"
) -> tuple[dict[int, InstanceGT], dict[int, ImageInfo], frozenset[int]]:
    """:func:`read_instances` for an already parsed COCO dict: (GT, image info, category ids)."""
    if not isinstance(data, Mapping) or not isinstance(data.get("images"), list):
        raise DatasetError(f"{source}: not a COCO instances file (no 'images' list)")
    anns = data.get("annotations", [])
    if not isinstance(anns, list):
        raise DatasetError(f"{source}: 'annotations' is not a list")
    images: dict[int, ImageInfo] = {}
    try:
        for img in data["images"]:
            images[int(img["id"])] = ImageInfo(
                str(img.get("file_name", img["id"])), int(img["height"]), int(img["width"])
            )
    except (KeyError, TypeError, ValueError) as e:
        raise DatasetError(
            f"{source}: an image entry lacks a numeric id, height or width ({e!r})"
        ) from e
    per_image: dict[int, list[Mapping[str, Any]]] = {i: [] for i in images}
    for ann in anns:
        image_id = ann.get("image_id") if isinstance(ann, Mapping) else None
        if image_id not in per_image:
            raise DatasetError(
                f"{source}: annotation {_ann_id(ann)} refers to image {image_id!r}, "
                "which is not in 'images'"
            )
        per_image[image_id].append(ann)
    gt = {
        i: instance_gt(per_image[i], images[i].height, images[i].width, masks, source)
        for i in images
    }
    cats = frozenset(
        int(c["id"]) for c in data.get("categories", []) if isinstance(c, Mapping) and "id" in c
    )
    return gt, images, cats


def _ann_id(ann: Any) -> str:
    return repr(ann.get("id")) if isinstance(ann, Mapping) else repr(ann)


def instance_gt(
    anns: Sequence[Mapping[str, Any]],
    height: int,
    width: int,
    masks: bool = True,
    source: str = "instances file",
) -> InstanceGT:
    """One image's class-agnostic ground truth from its COCO annotations, for every reader of
    COCO-format files (``score-detections``, the ``coco`` / ``coco20k`` / ``lvis`` datasets):
    every annotation whatever its category, in the file's order; boxes ``[x, y, w, h]`` as
    ``[x, y, x + w, y + h]``; crowd regions flagged (``iscrowd``, absent = 0); ``area`` the
    annotation's own field, or, where it has none, its box's ``w * h`` (the missing-``area``
    policy: ``COCOeval`` needs the field and fails without it, so such a file has no pycocotools
    number to equal; :func:`missing_area` counts them for a note); masks (``masks=True``) as
    :func:`ann_to_rle`.  A malformed annotation is one :class:`DatasetError` line naming
    ``source`` and the annotation."""
    try:
        boxes = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(len(anns), 4)
        crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool)
        area = np.array(
            [a["area"] if "area" in a else a["bbox"][2] * a["bbox"][3] for a in anns],
            dtype=np.float64,
        )
    except (KeyError, TypeError, ValueError):
        bad = next((a for a in anns if not _well_formed(a)), anns[0])
        raise DatasetError(
            f"{source}: annotation {_ann_id(bad)} needs a 4-number 'bbox' [x, y, w, h] (and a "
            "numeric 'area', if any)"
        ) from None
    boxes[:, 2:] += boxes[:, :2]
    rles: list[RLE] | None = [] if masks else None
    if rles is not None:
        for a in anns:
            if "segmentation" not in a:
                raise DatasetError(
                    f"{source}: annotation {_ann_id(a)} has no segmentation (boxes only: "
                    "score bbox AP)"
                )
            try:
                rles.append(ann_to_rle(a["segmentation"], height, width))
            except (TypeError, ValueError, AttributeError, IndexError) as e:
                raise DatasetError(
                    f"{source}: annotation {_ann_id(a)}: unreadable segmentation ({e})"
                ) from e
    return InstanceGT(height, width, boxes, area, crowd, rles)


def _well_formed(ann: Mapping[str, Any]) -> bool:
    box, area = ann.get("bbox"), ann.get("area", 0.0)
    numbers = (int, float)
    return (
        isinstance(box, list)
        and len(box) == 4
        and all(isinstance(v, numbers) for v in box)
        and isinstance(area, numbers)
    )


def missing_area(anns: Sequence[Any]) -> str | None:
    """A note when some annotations have no ``area`` (their box's ``w * h`` is used: see
    :func:`instance_gt`); None when all have one."""
    n = sum(1 for a in anns if isinstance(a, Mapping) and "area" not in a)
    if not n:
        return None
    return (
        f"{n} of {len(anns)} annotations have no 'area': their box's w * h is used for the "
        "small / medium / large ranges (pycocotools' COCOeval needs the field)"
    )
