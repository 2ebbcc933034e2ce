"""COCO-format datasets through pycocotools: ``coco`` (any annotation file + image folder) and
``coco20k`` (the 19,817 COCO train2014 images selected by rOSD, Vo et al. ECCV 2020, with the
file list published by LOST, Siméoni et al. BMVC 2021).

Boxes: COCO stores ``[x, y, w, h]`` in continuous pixel coordinates; odbench returns
``[x, y, x + w, y + h]`` as float64 (LOST / TokenCut round them to integers; odbench does not).
``drop_crowd`` (default on) removes ``iscrowd = 1`` annotations from the boxes, as LOST's
``extract_gt_COCO`` does for COCO20K.  With ``masks=True`` a sample also carries the union of its
(kept) instance masks as a 0/255 uint8 mask.

Multi-object discovery (task ``discovery``): every sample also carries its class-agnostic
instances (:class:`odbench.metrics.instances.InstanceGT`): EVERY annotation of the image, whatever
its category, crowd regions included and flagged (COCOeval ignores them, ``drop_crowd`` does not
apply), with the annotation's own ``area`` (its box's without one) and its mask as an RLE (``COCO.annToRLE``: polygons,
RLE and uncompressed RLE alike); a file with an annotation lacking ``segmentation`` gives boxes
only (bbox AP).

COCO20K: on first use the selection list and ``annotations/instances_train2014.json`` are turned
into ``annotations/instances_train2014_sel20k.json`` (images of the list, their non-crowd
annotations, all categories), written atomically; its ``info.odbench`` records the sha256 of the
list it was built from, and it is rebuilt if the list changes.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from odbench.cards import DatasetCard
from odbench.data.base import Dataset, DatasetError, Sample
from odbench.data.folder import read_image
from odbench.data.locate import locate_dataset
from odbench.imageio import atomic_write_bytes
from odbench.metrics.instances import InstanceGT

SEL20K_JSON = "instances_train2014_sel20k.json"


def _load_coco(annotations: Path) -> Any:
    from pycocotools.coco import COCO

    if not annotations.is_file():
        raise DatasetError(f"{annotations}: annotation file not found")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            return COCO(str(annotations))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AssertionError) as e:
        raise DatasetError(
            f"{annotations}: not a COCO annotation file ({type(e).__name__}: {e})"
        ) from e


def _only_split(base: Path) -> str:
    """The split of the one ``annotations/instances_<split>.json`` in ``base``; an error naming
    the candidates (and ``--split``) when there are none or several."""
    found = sorted(p.name for p in (base / "annotations").glob("instances_*.json"))
    if len(found) == 1:
        return found[0].removeprefix("instances_").removesuffix(".json")
    if not found:
        raise DatasetError(
            f"{base}: no annotations/instances_<split>.json (a COCO folder holds "
            "annotations/instances_<split>.json and its images in <split>/)"
        )
    splits = ", ".join(n.removeprefix("instances_").removesuffix(".json") for n in found)
    raise DatasetError(
        f"{base / 'annotations'}: {len(found)} annotation files ({splits}); choose one with --split"
    )


class CocoDataset(Dataset):
    """Images of a COCO annotation file with their boxes (and optionally union masks)."""

    name = "coco"
    task: tuple[str, ...] = ("localization", "discovery")

    def __init__(
        self,
        annotations: str | Path,
        images_dir: str | Path,
        name: str = "coco",
        drop_crowd: bool = True,
        masks: bool = False,
        selection: set[str] | None = None,
    ) -> None:
        # Absolute paths: describe() goes into the prediction-cache key and the results.
        self.annotations = Path(annotations).expanduser().resolve()
        self.images_dir = Path(images_dir).expanduser().resolve()
        self.name = name  # type: ignore[misc]
        self.drop_crowd, self.masks = drop_crowd, masks
        if masks:
            self.task = ("saliency", "localization", "discovery")
        if not self.images_dir.is_dir():
            raise DatasetError(f"{self.images_dir}: image folder not found")
        self.coco = _load_coco(self.annotations)
        anns = self.coco.dataset.get("annotations", [])
        self.instance_masks = all(a.get("segmentation") for a in anns)  # else: bbox AP only
        self._by_id: dict[str, int] = {}
        for image_id, info in self.coco.imgs.items():
            file_name = str(info["file_name"])
            if selection is not None and Path(file_name).name not in selection:
                continue
            stem = Path(file_name).stem
            if stem in self._by_id:
                raise DatasetError(f"{self.annotations}: two images named {file_name!r}")
            self._by_id[stem] = int(image_id)
        if not self._by_id:
            raise DatasetError(f"{self.annotations}: no images (empty dataset)")

    @classmethod
    def from_card(
        cls,
        card: DatasetCard | None,
        data_root: Any = None,
        path: str | Path | None = None,
        split: str | None = None,
        annotations: str | Path | None = None,
        images: str | Path | None = None,
        drop_crowd: bool = True,
        masks: bool = False,
    ) -> CocoDataset:
        """Either ``annotations=`` + ``images=`` (explicit files), or a COCO folder ``path=`` (or
        the data root, ``--data-root``): ``<path>/annotations/instances_<split>.json`` with its
        images in ``<path>/<split>/`` (or ``<path>/images/<split>/``).  ``split`` (e.g.
        ``val2017``, ``--split``) is needed only when the folder holds several annotation files.
        Crowd boxes (``iscrowd = 1``) are dropped unless ``drop_crowd=False``, as in LOST's
        COCO20K protocol."""
        name = card.name if card is not None else "coco"
        if annotations is None or images is None:
            base = path if path is not None else data_root
            if base is None:
                raise DatasetError(
                    "coco: give the COCO folder (--data-root DIR holding annotations/"
                    "instances_<split>.json and <split>/), or annotations= and images="
                )
            base = Path(base)
            split = split or _only_split(base)
            annotations = annotations or base / "annotations" / f"instances_{split}.json"
            if images is None:
                images = base / split
                if not images.is_dir() and (base / "images" / split).is_dir():
                    images = base / "images" / split
        return cls(annotations, images, name=name, drop_crowd=drop_crowd, masks=masks)

    def ids(self) -> list[str]:
        return sorted(self._by_id)

    def files(self, sample_id: str) -> tuple[Path, Path]:
        info = self.coco.imgs[self._by_id[sample_id]]
        return self.images_dir / Path(info["file_name"]).name, self.annotations

    def load(self, sample_id: str) -> Sample:
        if sample_id not in self._by_id:
            raise DatasetError(f"{self.name}: no sample {sample_id!r}")
        image_id = self._by_id[sample_id]
        image_path, _ = self.files(sample_id)
        image = read_image(image_path)
        info = self.coco.imgs[image_id]
        if (info.get("height"), info.get("width")) != image.shape[:2]:
            raise DatasetError(
                f"{image_path}: image is {image.shape[1]}x{image.shape[0]} but the annotations "
                f"say {info.get('width')}x{info.get('height')}"
            )
        every = self.coco.loadAnns(self.coco.getAnnIds(imgIds=[image_id]))
        instances = coco_instance_gt(
            self.coco, every, image.shape[0], image.shape[1], self.instance_masks
        )
        anns = [a for a in every if not a.get("iscrowd", 0)] if self.drop_crowd else every
        boxes = np.array(
            [
                [
                    a["bbox"][0],
                    a["bbox"][1],
                    a["bbox"][0] + a["bbox"][2],
                    a["bbox"][1] + a["bbox"][3],
                ]
                for a in anns
            ],
            dtype=np.float64,
        ).reshape(-1, 4)
        mask = None
        if self.masks:
            union = np.zeros(image.shape[:2], dtype=bool)
            for a in anns:
                union |= self.coco.annToMask(a).astype(bool)
            mask = union.astype(np.uint8) * 255
        return Sample(id=sample_id, image=image, mask=mask, boxes=boxes, instances=instances)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "annotations": str(self.annotations),
            "images": str(self.images_dir),
            "drop_crowd": self.drop_crowd,
        }


def coco_instance_gt(
    coco: Any, anns: list[dict[str, Any]], height: int, width: int, masks: bool = True
) -> InstanceGT:
    """One image's class-agnostic ground truth from its COCO annotations (all categories, crowd
    regions flagged; see the module docstring); ``masks=False``: boxes only (a file whose
    annotations lack ``segmentation``)."""
    boxes = np.array(
        [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], dtype=np.float64
    ).reshape(-1, 4)
    return InstanceGT(
        height=height,
        width=width,
        boxes=boxes,
        area=np.array([float(a.get("area", a["bbox"][2] * a["bbox"][3])) for a in anns]),
        iscrowd=np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool),
        masks=[coco.annToRLE(a) for a in anns] if masks else None,
    )


# ----------------------------------------------------------------------------- COCO20K


def read_selection(path: Path) -> list[str]:
    """The COCO20K list: one ``train2014/COCO_train2014_<12 digits>.jpg`` per line -> file names."""
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    basenames = [Path(n).name for n in names]
    if len(set(basenames)) != len(basenames):
        raise DatasetError(f"{path}: the selection list repeats file names")
    return basenames


def build_sel20k(selection_file: Path, instances: Path, out: Path) -> None:
    """Write the filtered COCO20K annotation file (see the module docstring), atomically."""
    names = set(read_selection(selection_file))
    digest = hashlib.sha256(selection_file.read_bytes()).hexdigest()
    try:
        data = json.loads(instances.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DatasetError(f"{instances}: unreadable COCO annotation file ({e})") from e
    images = [im for im in data["images"] if Path(im["file_name"]).name in names]
    missing = names - {Path(im["file_name"]).name for im in images}
    if missing:
        example = sorted(missing)[0]
        raise DatasetError(
            f"{selection_file}: {len(missing)} listed images are not in {instances.name} (e.g. {example})"
        )
    keep = {im["id"] for im in images}
    anns = [a for a in data["annotations"] if a["image_id"] in keep and not a.get("iscrowd", 0)]
    info = {
        **data.get("info", {}),
        "odbench": {
            "selection": selection_file.name,
            "selection_sha256": digest,
            "source": instances.name,
            "iscrowd_removed": True,
        },
    }
    out_data = {
        "info": info,
        "images": images,
        "annotations": anns,
        "categories": data["categories"],
    }
    if "licenses" in data:
        out_data["licenses"] = data["licenses"]
    atomic_write_bytes(out, json.dumps(out_data).encode())


def _sel20k_is_current(out: Path, selection_file: Path) -> bool:
    if not out.is_file():
        return False
    try:
        with out.open("rb") as f:
            info = json.load(f).get("info", {}).get("odbench", {})
    except (OSError, json.JSONDecodeError):
        return False
    return bool(
        info.get("selection_sha256") == hashlib.sha256(selection_file.read_bytes()).hexdigest()
    )


class Coco20kDataset(CocoDataset):
    """COCO20K: boxes of the 19,817 selected train2014 images, iscrowd boxes removed."""

    @classmethod
    def from_card(  # type: ignore[override]
        cls,
        card: DatasetCard | None,
        data_root: Any = None,
        path: str | Path | None = None,
        download: bool = False,
        progressbar: bool = True,
        masks: bool = False,
    ) -> Coco20kDataset:
        """``path``: the COCO folder (``annotations/instances_train2014.json``, ``train2014/``
        or ``images/train2014/``, and ``coco_20k_filenames.txt`` in it or beside it)."""
        if card is None:
            raise DatasetError("Coco20kDataset needs a dataset card")
        list_name = card.raw.get("layout", {}).get("selection", "coco_20k_filenames.txt")

        def match(folder: Path) -> tuple[Path, Path] | None:
            if not (folder / "annotations" / "instances_train2014.json").is_file():
                return None
            images = next(
                (p for p in (folder / "train2014", folder / "images" / "train2014") if p.is_dir()),
                None,
            )
            listed = next(
                (p for p in (folder / list_name, folder.parent / list_name) if p.is_file()), None
            )
            return (images, listed) if images is not None and listed is not None else None

        expected = f"annotations/instances_train2014.json, train2014/ (or images/train2014/) and {list_name}"
        folder, (images, listed) = locate_dataset(
            card, data_root, path, match, expected, download=download, progressbar=progressbar
        )
        sel = folder / "annotations" / SEL20K_JSON
        if not _sel20k_is_current(sel, listed):
            build_sel20k(listed, folder / "annotations" / "instances_train2014.json", sel)
        selection = set(read_selection(listed))
        return cls(sel, images, name=card.name, drop_crowd=True, masks=masks, selection=selection)
