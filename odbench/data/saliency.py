"""Named saliency benchmarks (ECSSD, DUTS-TE, DUTS-TR, DUT-OMRON, CUB) in any known layout.

The card's ``[layout]`` says where the images and masks are.  For the folder-pair benchmarks,
``pairs`` lists the accepted ``(images, masks)`` sub-folder pairs with the codebase that uses
each, e.g. for ECSSD ``images/ + ground_truth_mask/`` (the official archives, SelfMask, FOUND,
Deep Spectral) and ``img/ + gt/`` (TokenCut).  Samples are image/mask pairs matched by stem, as
stored (see :mod:`odbench.data.folder`).

CUB-200-2011 (Wah et al. 2011) is evaluated on the 1,000-image test split of ReDO (Chen et al.,
NeurIPS 2019): ``train_val_test_split.txt`` (one ``<image index> <split>`` line per row of the
official ``images.txt``) with split value 2.  Its masks are the official ``segmentations/``
(soft 8-bit masks: the fraction of annotators that marked the pixel, as stored); its boxes come
from the official ``bounding_boxes.txt`` (``x y w h`` in pixels -> ``[x, y, x + w, y + h]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from odbench.cards import DatasetCard
from odbench.data.base import Dataset, DatasetError, Sample
from odbench.data.folder import FolderDataset, load_pair
from odbench.data.locate import locate_dataset


@dataclass(frozen=True)
class PairLayout:
    images: str
    masks: str
    origin: str = ""

    def describe(self) -> str:
        return f"{self.images}/ + {self.masks}/" + (f" ({self.origin})" if self.origin else "")


def pair_layouts(card: DatasetCard) -> list[PairLayout]:
    pairs = card.raw.get("layout", {}).get("pairs", [])
    if not pairs:
        raise DatasetError(f"{card.path}: the card has no [layout] pairs")
    return [PairLayout(p["images"], p["masks"], p.get("origin", "")) for p in pairs]


class SaliencyDataset(FolderDataset):
    """A named image/mask benchmark found by its card's layouts (downloaded when absent)."""

    task = ("saliency",)

    def __init__(
        self, images_dir: str | Path, masks_dir: str | Path, name: str, layout: str = ""
    ) -> None:
        super().__init__(images_dir, masks_dir, name=name)
        self.layout = layout

    @classmethod
    def from_card(  # type: ignore[override]
        cls,
        card: DatasetCard | None,
        data_root: Any = None,
        path: str | Path | None = None,
        download: bool = False,
        progressbar: bool = True,
    ) -> SaliencyDataset:
        """``path``: the dataset folder itself; otherwise it is looked up under the data root
        (``data_root`` > ``$ODBENCH_DATA`` > user cache) and downloaded if absent."""
        if card is None:
            raise DatasetError(f"{cls.__name__} needs a dataset card")
        layouts = pair_layouts(card)

        def match(folder: Path) -> PairLayout | None:
            for lay in layouts:
                if (folder / lay.images).is_dir() and (folder / lay.masks).is_dir():
                    return lay
            return None

        expected = " or ".join(lay.describe() for lay in layouts)
        folder, lay = locate_dataset(
            card, data_root, path, match, expected, download=download, progressbar=progressbar
        )
        return cls(folder / lay.images, folder / lay.masks, name=card.name, layout=lay.describe())

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "layout": self.layout}


@dataclass(frozen=True)
class _CubFiles:
    masks: Path


class CubDataset(Dataset):
    """CUB-200-2011, ReDO's 1,000-image test split, with masks and boxes."""

    task = ("saliency", "localization")

    def __init__(
        self, folder: str | Path, masks_dir: str | Path, name: str = "cub", split: int = 2
    ) -> None:
        # Absolute paths: describe() goes into the prediction-cache key and the results.
        self.folder = Path(folder).expanduser().resolve()
        self.masks_dir = Path(masks_dir).expanduser().resolve()
        self.name = name  # type: ignore[misc]
        self.split = split
        names = _read_index(self.folder / "images.txt")
        splits = _read_index(self.folder / "train_val_test_split.txt")
        boxes = _read_index(self.folder / "bounding_boxes.txt")
        if len(splits) != len(names):
            raise DatasetError(
                f"{self.folder / 'train_val_test_split.txt'}: {len(splits)} rows but images.txt has {len(names)}"
            )
        self._items: dict[str, tuple[str, np.ndarray]] = {}
        for index, rel in names.items():
            value = splits.get(index)
            if value is None:
                raise DatasetError(
                    f"{self.folder / 'train_val_test_split.txt'}: no row for image {index}"
                )
            if int(value) != split:
                continue
            if index not in boxes:
                raise DatasetError(
                    f"{self.folder / 'bounding_boxes.txt'}: no row for image {index}"
                )
            x, y, w, h = (float(v) for v in boxes[index].split())
            self._items[Path(rel).stem] = (rel, np.array([[x, y, x + w, y + h]]))
        if not self._items:
            raise DatasetError(f"{self.folder}: no images with split value {split} (empty dataset)")

    @classmethod
    def from_card(
        cls,
        card: DatasetCard | None,
        data_root: Any = None,
        path: str | Path | None = None,
        download: bool = False,
        progressbar: bool = True,
        split: int = 2,
    ) -> CubDataset:
        if card is None:
            raise DatasetError("CubDataset needs a dataset card")
        files = ("images.txt", "train_val_test_split.txt", "bounding_boxes.txt")

        def match(folder: Path) -> _CubFiles | None:
            if not (folder / "images").is_dir() or not all((folder / f).is_file() for f in files):
                return None
            for masks in (folder / "segmentations", folder.parent / "segmentations"):
                if masks.is_dir():
                    return _CubFiles(masks)
            return None

        expected = (
            "images/, images.txt, bounding_boxes.txt, train_val_test_split.txt (ReDO's split) "
            "and segmentations/ inside it or beside it"
        )
        folder, found = locate_dataset(
            card, data_root, path, match, expected, download=download, progressbar=progressbar
        )
        return cls(folder, found.masks, name=card.name, split=split)

    def ids(self) -> list[str]:
        return sorted(self._items)

    def mask_files(self, sample_id: str) -> tuple[Path, Path] | None:
        return self.files(sample_id)

    def files(self, sample_id: str) -> tuple[Path, Path]:
        rel, _ = self._items[sample_id]
        mask = self.masks_dir / Path(rel).with_suffix(".png")
        return self.folder / "images" / rel, mask

    def load(self, sample_id: str) -> Sample:
        if sample_id not in self._items:
            raise DatasetError(f"{self.name}: no sample {sample_id!r}")
        image_path, mask_path = self.files(sample_id)
        if not image_path.is_file():
            raise DatasetError(f"{image_path}: image listed in images.txt is missing")
        if not mask_path.is_file():
            raise DatasetError(f"{image_path}: image has no GT mask ({mask_path} is missing)")
        sample = load_pair(sample_id, image_path, mask_path)
        boxes = self._items[sample_id][1].astype(np.float64)
        return Sample(id=sample.id, image=sample.image, mask=sample.mask, boxes=boxes)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "root": str(self.folder), "split": self.split}


def _read_index(path: Path) -> dict[str, str]:
    """``<index> <rest>`` lines (CUB's metadata files) -> {index: rest}."""
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    out: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        index, _, rest = line.strip().partition(" ")
        if not rest:
            raise DatasetError(f"{path}:{number}: expected '<index> <value>', got {line!r}")
        out[index] = rest.strip()
    return out
