"""PASCAL VOC 2007 / 2012 trainval (Everingham et al., IJCV 2010) for single- and multi-object
discovery.

Ids come from ``ImageSets/Main/<image_set>.txt`` (trainval: 5,011 images for 2007, 11,540 for
2012); boxes from ``Annotations/<id>.xml``.

Box convention.  VOC's ``xmin ymin xmax ymax`` are 1-based, inclusive pixel indices (a box over
the whole W-pixel-wide image is ``xmin = 1, xmax = W``).  odbench boxes are continuous pixel
coordinates with the image spanning ``[0, W] x [0, H]``, so a VOC box becomes
``[xmin - 1, ymin - 1, xmax, ymax]``: the same convention as LOST / TokenCut's ``extract_gt_VOC``
(Siméoni et al., BMVC 2021).  Some VOC 2012 files store fractional coordinates; they are kept as
floats.

All objects are kept by default, including ``difficult`` and ``truncated`` ones (as the CorLoc
protocol of LOST / TokenCut does); ``drop_difficult`` / ``drop_truncated`` remove them.  An image
whose boxes were all dropped yields an empty ``(0, 4)`` array.

Multi-object discovery (task ``discovery``): the same boxes as class-agnostic instances
(:class:`odbench.metrics.instances.InstanceGT`), boxes only (VOC's detection annotations have no
instance masks: bbox AP only, segm refused), none of them crowd, each with its box's area
(VOC has no ``area`` field; COCO's small / medium / large ranges read it).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np

from odbench.cards import DatasetCard
from odbench.data.base import Dataset, DatasetError, Sample
from odbench.data.folder import read_image
from odbench.data.locate import locate_dataset
from odbench.metrics.instances import InstanceGT


def parse_voc_xml(
    path: Path, drop_difficult: bool = False, drop_truncated: bool = False
) -> np.ndarray:
    """The boxes of one VOC annotation file as (N, 4) float64 ``[x1, y1, x2, y2]`` (see the
    module docstring for the conversion)."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        raise DatasetError(f"{path}: unreadable annotation ({e})") from e
    boxes = []
    for obj in root.findall("object"):
        if drop_difficult and (obj.findtext("difficult") or "0").strip() == "1":
            continue
        if drop_truncated and (obj.findtext("truncated") or "0").strip() == "1":
            continue
        bnd = obj.find("bndbox")
        if bnd is None:
            raise DatasetError(f"{path}: an <object> has no <bndbox>")
        try:
            x1, y1, x2, y2 = (
                float(bnd.findtext(k) or "") for k in ("xmin", "ymin", "xmax", "ymax")
            )
        except ValueError as e:
            raise DatasetError(f"{path}: bad <bndbox> coordinates ({e})") from e
        boxes.append([x1 - 1.0, y1 - 1.0, x2, y2])
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


class VOCDataset(Dataset):
    """VOC images with GT boxes (no masks)."""

    task = ("localization", "discovery")
    instance_masks = False  # boxes only: bbox AP

    def __init__(
        self,
        folder: str | Path,
        name: str = "voc",
        image_set: str = "trainval",
        drop_difficult: bool = False,
        drop_truncated: bool = False,
    ) -> None:
        self.folder = Path(folder).expanduser().resolve()  # describe() keys the cache
        self.name = name  # type: ignore[misc]
        self.image_set = image_set
        self.drop_difficult, self.drop_truncated = drop_difficult, drop_truncated
        listing = self.folder / "ImageSets" / "Main" / f"{image_set}.txt"
        if not listing.is_file():
            raise DatasetError(f"{listing}: image set list not found")
        self._ids = sorted(
            {line.strip() for line in listing.read_text().splitlines() if line.strip()}
        )
        if not self._ids:
            raise DatasetError(f"{listing}: no image ids (empty dataset)")

    @classmethod
    def from_card(
        cls,
        card: DatasetCard | None,
        data_root: Any = None,
        path: str | Path | None = None,
        download: bool = False,
        progressbar: bool = True,
        image_set: str | None = None,
        drop_difficult: bool = False,
        drop_truncated: bool = False,
    ) -> VOCDataset:
        """``path``: the ``VOC2007`` / ``VOC2012`` folder (with ``Annotations/``,
        ``JPEGImages/``, ``ImageSets/``); otherwise looked up under the data root."""
        if card is None:
            raise DatasetError("VOCDataset needs a dataset card")
        subset = image_set or card.raw.get("layout", {}).get("image_set", "trainval")

        def match(folder: Path) -> bool | None:
            ok = (folder / "Annotations").is_dir() and (folder / "JPEGImages").is_dir()
            return True if ok and (folder / "ImageSets" / "Main").is_dir() else None

        expected = "Annotations/, JPEGImages/ and ImageSets/Main/ (a VOCdevkit/VOC20xx folder)"
        folder, _ = locate_dataset(
            card, data_root, path, match, expected, download=download, progressbar=progressbar
        )
        return cls(folder, card.name, subset, drop_difficult, drop_truncated)

    def ids(self) -> list[str]:
        return list(self._ids)

    def files(self, sample_id: str) -> tuple[Path, Path]:
        return (
            self.folder / "JPEGImages" / f"{sample_id}.jpg",
            self.folder / "Annotations" / f"{sample_id}.xml",
        )

    def load(self, sample_id: str) -> Sample:
        image_path, xml_path = self.files(sample_id)
        if not xml_path.is_file():
            raise DatasetError(f"{image_path}: image has no annotation ({xml_path} is missing)")
        image = read_image(image_path)
        boxes = parse_voc_xml(xml_path, self.drop_difficult, self.drop_truncated)
        instances = InstanceGT(
            height=image.shape[0],
            width=image.shape[1],
            boxes=boxes,
            area=(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]),
            iscrowd=np.zeros(len(boxes), dtype=bool),
        )
        return Sample(id=sample_id, image=image, boxes=boxes, instances=instances)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "root": str(self.folder),
            "image_set": self.image_set,
            "drop_difficult": self.drop_difficult,
            "drop_truncated": self.drop_truncated,
        }
