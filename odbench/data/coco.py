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
apply), built by :func:`odbench.data.instances.instance_gt` as ``score-detections`` builds them
(the annotation's own ``area``, its box's ``w * h`` without one; its mask as an RLE like
``COCO.annToRLE``: polygons, RLE and uncompressed RLE alike); a file with an annotation lacking
``segmentation`` gives boxes only (bbox AP).

COCO20K: on first use the selection list and ``annotations/instances_train2014.json`` are turned
into ``annotations/instances_train2014_sel20k.json`` (images of the list, their annotations with
their instance masks, crowd regions included and flagged, all categories), written atomically;
its ``info.odbench`` records the sha256 of the list and of the annotation file it was built from
(and that file's size and modification time), and it is rebuilt when either changes.  Its
samples' boxes leave the crowd regions out (LOST's ``extract_gt_COCO``: CorLoc); its instances
keep them flagged (COCOeval ignores them: discovery).
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
from odbench.data.instances import instance_gt
from odbench.data.locate import locate_dataset
from odbench.imageio import atomic_write_bytes

SEL20K_JSON = "instances_train2014_sel20k.json"
#: The built file's format (bumped when its content changes: 2 keeps crowd regions, flagged).
SEL20K_FORMAT = 2


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
        h, w = image.shape[:2]
        instances = instance_gt(every, h, w, self.instance_masks, str(self.annotations))
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

    def gt_image_id(self, sample_id: str) -> int:
        return self._by_id[sample_id]

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "annotations": str(self.annotations),
            "images": str(self.images_dir),
            "drop_crowd": self.drop_crowd,
        }


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
    anns = [a for a in data["annotations"] if a["image_id"] in keep]
    info = {
        **data.get("info", {}),
        "odbench": {
            "format": SEL20K_FORMAT,
            "selection": selection_file.name,
            "selection_sha256": digest,
            "source": instances.name,
            "source_sha256": sha256_file(instances),
            **_stat(instances),
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


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _stat(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"source_size": st.st_size, "source_mtime_ns": st.st_mtime_ns}


def _sel20k_is_current(out: Path, selection_file: Path, instances: Path) -> bool:
    """Built in the current format from this list and this annotation file (by its size and
    modification time: hashing ~450 MB at every load would cost seconds)."""
    if not out.is_file():
        return False
    try:
        with out.open("rb") as f:
            info = json.load(f).get("info", {}).get("odbench", {})
    except (OSError, json.JSONDecodeError):
        return False
    return bool(
        info.get("format") == SEL20K_FORMAT
        and all(info.get(k) == v for k, v in _stat(instances).items())
        and info.get("selection_sha256") == sha256_file(selection_file)
    )


class Coco20kDataset(CocoDataset):
    """COCO20K: the 19,817 selected train2014 images; boxes without crowd regions (CorLoc),
    instances with them flagged (discovery)."""

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
        sel, source = (
            folder / "annotations" / SEL20K_JSON,
            folder / "annotations" / "instances_train2014.json",
        )
        if not _sel20k_is_current(sel, listed, source):
            build_sel20k(listed, source, sel)
        selection = set(read_selection(listed))
        return cls(sel, images, name=card.name, drop_crowd=True, masks=masks, selection=selection)


# ----------------------------------------------------------------------------- LVIS

LVIS_JSON = "lvis_v1_val.json"
LVIS_BUILT = "lvis_v1_val_odbench.json"
#: What a rebuild of the class-agnostic LVIS file is keyed on (bumped when its content changes).
LVIS_FORMAT = 1


def build_lvis(source: Path, out: Path) -> None:
    """Write the COCO-format, class-agnostic LVIS file (see :class:`LvisDataset`), atomically,
    recording the source's name and sha256 in ``info.odbench``."""
    raw = source.read_bytes()
    try:
        data = json.loads(raw)
        images = [
            {**im, "file_name": "/".join(str(im["coco_url"]).split("/")[-2:])}
            for im in data["images"]
        ]
        anns = [{**a, "iscrowd": 0} for a in data["annotations"]]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DatasetError(
            f"{source}: not an LVIS annotation file ({type(e).__name__}: {e})"
        ) from e
    info = {
        "odbench": {
            "source": source.name,
            "source_sha256": hashlib.sha256(raw).hexdigest(),
            "format": LVIS_FORMAT,
        }
    }
    out_data = {
        "info": info,
        "images": images,
        "annotations": anns,
        "categories": data["categories"],
    }
    atomic_write_bytes(out, json.dumps(out_data).encode())


def _built_from(out: Path, source: Path) -> bool:
    """Whether ``out`` was built (in the current format) from ``source`` as it is now."""
    if not out.is_file():
        return False
    try:
        with out.open("rb") as f:
            info = json.load(f).get("info", {}).get("odbench", {})
    except (OSError, json.JSONDecodeError):
        return False
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    return bool(info.get("format") == LVIS_FORMAT and info.get("source_sha256") == digest)


class LvisDataset(CocoDataset):
    """LVIS v1 val (Gupta et al., CVPR 2019) for class-agnostic discovery: 19,809 COCO 2017
    images (from train2017 and val2017) with their exhaustively annotated instance masks.

    On first use ``lvis_v1_val.json`` is turned into ``lvis_v1_val_odbench.json`` beside it:
    COCO format (each image's ``file_name`` is ``<split>/<name>`` from its ``coco_url``, every
    annotation ``iscrowd = 0``: LVIS has no crowd regions), written atomically with the source's
    sha256 in ``info.odbench``; it is rebuilt when the source changes.  Class-agnostic scoring
    maps every category to one, so LVIS's federated rules (``neg_category_ids``,
    ``not_exhaustive_category_ids``: per-category) do not apply.  Scored under the protocol
    ``lvis-agnostic`` (300 detections per image, as CutLER reports LVIS)."""

    discovery_protocol = "lvis-agnostic"

    @classmethod
    def from_card(  # type: ignore[override]
        cls,
        card: DatasetCard | None,
        data_root: Any = None,
        path: str | Path | None = None,
        download: bool = False,
        progressbar: bool = True,
    ) -> LvisDataset:
        """``path``: the folder holding ``lvis_v1_val.json`` (or ``annotations/`` with it) and
        the COCO 2017 images ``train2017/`` and ``val2017/`` (or ``images/`` with them)."""
        if card is None:
            raise DatasetError("LvisDataset needs a dataset card")

        def match(folder: Path) -> tuple[Path, Path] | None:
            source = next(
                (
                    p
                    for p in (folder / LVIS_JSON, folder / "annotations" / LVIS_JSON)
                    if p.is_file()
                ),
                None,
            )
            images = next(
                (p for p in (folder, folder / "images") if (p / "val2017").is_dir()), None
            )
            return (source, images) if source is not None and images is not None else None

        expected = f"{LVIS_JSON} (or annotations/{LVIS_JSON}) and the COCO 2017 images in train2017/ and val2017/"
        _, (source, images) = locate_dataset(
            card, data_root, path, match, expected, download=download, progressbar=progressbar
        )
        built = source.parent / LVIS_BUILT
        if not _built_from(built, source):
            build_lvis(source, built)
        return cls(built, images, name=card.name, drop_crowd=True)

    def files(self, sample_id: str) -> tuple[Path, Path]:
        info = self.coco.imgs[self._by_id[sample_id]]
        return self.images_dir / str(info["file_name"]), self.annotations
