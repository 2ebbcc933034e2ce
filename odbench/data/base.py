"""The dataset interface: an indexed collection of samples (id, RGB image, GT mask, boxes and/or
class-agnostic instances).

Every loader — the toy generator, a plain ``images/`` + ``masks/`` folder, the named benchmarks —
subclasses :class:`Dataset`.  Images are returned as stored (never resized); GT masks are
returned as stored (8- or 16-bit grayscale): the evaluation protocol decides how to binarise.
Boxes are ``float64`` arrays of shape (N, 4), ``[x1, y1, x2, y2]`` in continuous pixel
coordinates (a box covering pixel columns 0..9 is ``x1 = 0, x2 = 10``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from odbench.errors import OdbenchError
from odbench.metrics.instances import InstanceGT

if TYPE_CHECKING:
    from odbench.metrics.sizes import SizeMismatch


class DatasetError(OdbenchError, RuntimeError):
    """A dataset problem the user must fix; the message names the file or folder."""


@dataclass(frozen=True)
class Sample:
    id: str
    image: np.ndarray  # (H, W, 3) uint8 RGB
    mask: np.ndarray | None = None  # (H, W) uint8 or uint16 grayscale, as stored
    boxes: np.ndarray | None = None  # (N, 4) float64, x1 y1 x2 y2, continuous pixels
    instances: InstanceGT | None = None  # class-agnostic instances (task "discovery")


class Dataset(ABC):
    """An indexed dataset.  Subclasses implement :meth:`ids` and :meth:`load`.

    ``task`` says what ground truth the samples carry: ``"saliency"`` (masks),
    ``"localization"`` (boxes), ``"discovery"`` (class-agnostic instances) or several.
    """

    name: ClassVar[str] = ""
    task: tuple[str, ...] = ("saliency",)
    #: Discovery datasets: whether the instances have masks (segm AP) or boxes only (bbox AP).
    instance_masks: bool = True

    @abstractmethod
    def ids(self) -> list[str]:
        """Sample ids in a fixed, sorted order."""

    @abstractmethod
    def load(self, sample_id: str) -> Sample:
        """Load one sample; raise :class:`DatasetError` naming the file on bad data."""

    def __len__(self) -> int:
        return len(self.ids())

    def __iter__(self) -> Iterator[Sample]:
        for sample_id in self.ids():
            yield self.load(sample_id)

    def describe(self) -> dict[str, Any]:
        """What goes into a results JSON to identify the data (name, size, root)."""
        return {"name": self.name, "n_images": len(self), "task": list(self.task)}

    def gt_image_id(self, sample_id: str) -> int | str:
        """The id of ``sample_id``'s image in the dataset's ground-truth file (a COCO-format
        file's numeric image id; the sample id itself where there is no such file): what
        ``--save-preds``' COCO-results file names the image by."""
        return sample_id

    def mask_files(self, sample_id: str) -> tuple[Path, Path] | None:
        """``(image, GT mask)`` files of a sample whose mask is stored as an image file; None
        for datasets without mask files (generated, COCO, VOC)."""
        return None

    def size_mismatches(self, ids: list[str]) -> list[SizeMismatch]:
        """Samples among ``ids`` whose image and mask sizes differ, from the file headers: the
        whole set is checked before any work, so a command can report them all at once."""
        from odbench.imageio import ImageReadError, image_size
        from odbench.metrics.sizes import size_mismatches

        pairs = []
        for sample_id in ids:
            files = self.mask_files(sample_id)
            if files is None:
                continue
            try:
                pairs.append((sample_id, image_size(files[0]), image_size(files[1])))
            except ImageReadError as e:
                raise DatasetError(str(e)) from e
        return size_mismatches(pairs, resize=False)


def create_dataset(name: str, data_root: str | Path | None = None, **kwargs: Any) -> Dataset:
    """Build a registered dataset by name (or alias).  ``data_root`` is where the data lives
    (default: ``$ODBENCH_DATA`` or the user cache dir); generated datasets ignore it."""
    from odbench.cards import dataset_cards
    from odbench.registry import DATASETS

    key = DATASETS.canonical(name)  # unknown names list the valid ones
    cls = DATASETS.get(key)
    card = dataset_cards().get(key)
    return cls.from_card(card, data_root=data_root, **kwargs)  # type: ignore[no-any-return]
