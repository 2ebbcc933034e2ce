"""The dataset interface: an indexed collection of samples (id, RGB image, GT mask and/or boxes).

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
from typing import Any, ClassVar

import numpy as np


class DatasetError(RuntimeError):
    """A dataset problem the user must fix; the message names the file or folder."""


@dataclass(frozen=True)
class Sample:
    id: str
    image: np.ndarray  # (H, W, 3) uint8 RGB
    mask: np.ndarray | None = None  # (H, W) uint8 or uint16 grayscale, as stored
    boxes: np.ndarray | None = None  # (N, 4) float64, x1 y1 x2 y2, continuous pixels


class Dataset(ABC):
    """An indexed dataset.  Subclasses implement :meth:`ids` and :meth:`load`.

    ``task`` says what ground truth the samples carry: ``"saliency"`` (masks),
    ``"localization"`` (boxes) or both.
    """

    name: ClassVar[str] = ""
    task: tuple[str, ...] = ("saliency",)

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


def create_dataset(name: str, data_root: str | Path | None = None, **kwargs: Any) -> Dataset:
    """Build a registered dataset by name (or alias).  ``data_root`` is where the data lives
    (default: ``$ODBENCH_DATA`` or the user cache dir); generated datasets ignore it."""
    from odbench.cards import dataset_card
    from odbench.registry import DATASETS

    card = dataset_card(name)
    key = card.name if card is not None else name
    cls = DATASETS.get(key)
    return cls.from_card(card, data_root=data_root, **kwargs)  # type: ignore[no-any-return]
