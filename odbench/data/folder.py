"""``folder``: any ``images/`` + ``masks/`` folder pair, matched by file stem.

This is also the engine of the named saliency benchmarks (:mod:`odbench.data.saliency`), which
only add where to find the two folders.  Images and masks are returned as stored (never resized);
masks keep their dtype (RGB / palette masks are converted to grayscale with a warning by
:func:`odbench.imageio.read_gray`).  Hidden files and folders and files that are not images
(``Thumbs.db``, ``.ipynb_checkpoints/``, ``desktop.ini``) are ignored.  An image without a mask,
a mask without an image, or two files with the same stem is one error naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from odbench.cards import DatasetCard
from odbench.data.base import Dataset, DatasetError, Sample
from odbench.imageio import ImageReadError, list_images, read_gray, read_rgb


def index_by_stem(folder: Path, what: str) -> dict[str, Path]:
    """Image files directly in ``folder`` keyed by stem; an error for duplicate stems."""
    if folder.exists() and not folder.is_dir():
        raise DatasetError(
            f"{folder}: is a file, not a folder; give the folder that holds the {what} files"
        )
    if not folder.is_dir():
        raise DatasetError(f"{folder}: {what} folder not found")
    index: dict[str, Path] = {}
    for path in list_images(folder):
        if path.stem in index:
            raise DatasetError(
                f"{path}: two {what} files share the stem {path.stem!r} ({index[path.stem].name})"
            )
        index[path.stem] = path
    return index


def pair_files(images_dir: Path, masks_dir: Path) -> dict[str, tuple[Path, Path]]:
    """``stem -> (image, mask)``; one clear error for an unmatched file or an empty dataset."""
    images = index_by_stem(images_dir, "image")
    masks = index_by_stem(masks_dir, "mask")
    no_gt = sorted(images.keys() - masks.keys())
    if no_gt:
        raise DatasetError(
            f"{images[no_gt[0]]}: image has no GT mask in {masks_dir} "
            f"({len(no_gt)} image(s) without GT in all)"
        )
    no_image = sorted(masks.keys() - images.keys())
    if no_image:
        raise DatasetError(
            f"{masks[no_image[0]]}: GT mask has no image in {images_dir} "
            f"({len(no_image)} mask(s) without an image in all)"
        )
    if not images:
        raise DatasetError(f"{images_dir}: no images found (empty dataset)")
    return {stem: (images[stem], masks[stem]) for stem in sorted(images)}


def read_image(path: Path) -> np.ndarray:
    """:func:`odbench.imageio.read_rgb`, failing with a :class:`DatasetError`."""
    try:
        return read_rgb(path)
    except ImageReadError as e:
        raise DatasetError(str(e)) from e


def load_pair(sample_id: str, image_path: Path, mask_path: Path) -> Sample:
    """Read one image/mask pair as stored; a size mismatch is an error naming both files."""
    image = read_image(image_path)
    try:
        mask = read_gray(mask_path, what="GT mask")
    except ImageReadError as e:
        raise DatasetError(str(e)) from e
    if image.shape[:2] != mask.shape:
        raise DatasetError(
            f"{mask_path}: GT mask is {mask.shape[1]}x{mask.shape[0]} but its image "
            f"{image_path.name} is {image.shape[1]}x{image.shape[0]}"
        )
    return Sample(id=sample_id, image=image, mask=mask)


class FolderDataset(Dataset):
    """Image/mask pairs from two folders, matched by file stem; sample id = stem."""

    name = "folder"
    task = ("saliency",)

    def __init__(self, images_dir: str | Path, masks_dir: str | Path, name: str = "folder") -> None:
        # Absolute paths: describe() goes into the prediction-cache key and the results.
        self.images_dir = Path(images_dir).expanduser().resolve()
        self.masks_dir = Path(masks_dir).expanduser().resolve()
        self.name = name  # type: ignore[misc]
        self._pairs = pair_files(self.images_dir, self.masks_dir)

    @classmethod
    def from_card(
        cls,
        card: DatasetCard | None,
        data_root: Any = None,
        path: str | Path | None = None,
        images: str = "images",
        masks: str = "masks",
        **kwargs: Any,
    ) -> FolderDataset:
        """``path`` (or, without it, ``data_root``) is the folder holding ``images/`` and
        ``masks/`` (other sub-folder names via ``images=`` / ``masks=``)."""
        if kwargs:
            raise DatasetError(f"folder: unknown option(s) {', '.join(sorted(kwargs))}")
        base = path if path is not None else data_root
        if base is None:
            raise DatasetError(
                "folder: give the folder that holds images/ and masks/ (path=... or --data-root)"
            )
        base = Path(base)
        if not base.is_dir():
            raise DatasetError(f"{base}: folder not found")
        return cls(base / images, base / masks)

    def ids(self) -> list[str]:
        return list(self._pairs)

    def load(self, sample_id: str) -> Sample:
        if sample_id not in self._pairs:
            raise DatasetError(f"{self.name}: no sample {sample_id!r}")
        image_path, mask_path = self._pairs[sample_id]
        return load_pair(sample_id, image_path, mask_path)

    def mask_files(self, sample_id: str) -> tuple[Path, Path] | None:
        return self.files(sample_id)

    def files(self, sample_id: str) -> tuple[Path, Path]:
        """The (image, mask) files of a sample (used by ``odbench data verify``)."""
        return self._pairs[sample_id]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "images": str(self.images_dir), "masks": str(self.masks_dir)}
