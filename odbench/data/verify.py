"""Checking a dataset on disk: it opens in a known layout, every image has its GT and reads,
and the count matches the card."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from odbench.cards import DatasetCard
from odbench.data.base import Dataset, DatasetError


@dataclass
class VerifyReport:
    name: str
    n_samples: int = 0
    expected: int | None = None
    location: str = ""
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        head = f"{self.name}: {self.n_samples} samples"
        if self.expected is not None:
            head += f" (card: {self.expected})"
        if self.location:
            head += f" at {self.location}"
        out = [head]
        out += [f"  problem: {p}" for p in self.problems]
        out += [f"  note: {n}" for n in self.notes]
        out.append("  OK" if self.ok else f"  {len(self.problems)} problem(s)")
        return out


def dataset_location(ds: Dataset) -> str:
    """Where a loader found its data (for messages and ``odbench data path``)."""
    for attr in ("folder", "images_dir"):
        value = getattr(ds, attr, None)
        if isinstance(value, Path):
            return str(value.parent if attr == "images_dir" else value)
    return ""


def open_existing(card: DatasetCard, data_root: Any = None, **kwargs: Any) -> Dataset:
    """Build ``card``'s dataset from what is on disk (never downloads)."""
    import inspect

    from odbench.registry import DATASETS

    cls = DATASETS.get(card.name)
    if "download" in inspect.signature(cls.from_card).parameters:
        kwargs.setdefault("download", False)
    return cls.from_card(card, data_root=data_root, **kwargs)  # type: ignore[no-any-return]


def verify_dataset(
    card: DatasetCard, data_root: Any = None, limit: int | None = None, **kwargs: Any
) -> VerifyReport:
    """Open ``card``'s dataset without downloading, read every sample, and report problems.

    Problems: the dataset cannot be opened (missing, wrong layout, image without GT or the
    reverse: the loader's one-line error), unreadable or mismatched files, a count different
    from the card's.  Notes: conversions the loader warned about (e.g. RGB masks)."""
    report = VerifyReport(card.name, expected=card.count)
    try:
        ds = open_existing(card, data_root, **kwargs)
    except DatasetError as e:
        report.problems.append(str(e))
        return report
    report.location = dataset_location(ds)
    ids = ds.ids()
    report.n_samples = len(ids)
    if limit is None and card.count is not None and len(ids) != card.count:
        report.problems.append(f"{len(ids)} samples found, the card says {card.count}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for sample_id in ids[:limit]:
            try:
                ds.load(sample_id)
            except DatasetError as e:
                report.problems.append(str(e))
    report.notes += sorted({str(w.message) for w in caught})
    return report
