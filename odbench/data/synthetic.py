"""``synthetic``: datasets written by odbench itself (e.g. DiffusionSeg's synthetic pairs).

Format (version 1)::

    <folder>/manifest.json   {"format": "odbench-synthetic", "version": 1,
                              "generator": {...free-form provenance...},
                              "samples": [{"id": "000001", "image": "images/000001.png",
                                           "mask": "masks/000001.png"}, ...]}
    <folder>/images/*.png    RGB, 8-bit
    <folder>/masks/*.png     grayscale, 8- or 16-bit

The manifest is the list of samples: files not listed in it (e.g. left by an interrupted run)
are ignored, a listed file that is missing is an error.  :class:`SyntheticWriter` writes this
format: every PNG and the manifest go through a temp file and a rename, and the manifest is
rewritten after each ``flush``, so an interrupted generation leaves a loadable dataset.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from odbench.cards import DatasetCard
from odbench.data.base import Dataset, DatasetError, Sample
from odbench.data.folder import load_pair
from odbench.imageio import atomic_write_bytes, write_png

FORMAT = "odbench-synthetic"
VERSION = 1


def _safe_relative(rel: str, manifest: Path) -> PurePosixPath:
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts:
        raise DatasetError(
            f"{manifest}: path {rel!r} must be relative and inside the dataset folder"
        )
    return p


def read_manifest(folder: Path) -> dict[str, Any]:
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        raise DatasetError(f"{folder}: no manifest.json (not an odbench synthetic dataset)")
    try:
        data = json.loads(manifest.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DatasetError(f"{manifest}: unreadable manifest ({e})") from e
    if not isinstance(data, dict):
        raise DatasetError(f"{manifest}: expected a JSON object, got {type(data).__name__}")
    if data.get("format") != FORMAT or data.get("version") != VERSION:
        raise DatasetError(
            f"{manifest}: expected format {FORMAT!r} version {VERSION}, "
            f"got {data.get('format')!r} version {data.get('version')!r}"
        )
    return data  # type: ignore[no-any-return]


class SyntheticDataset(Dataset):
    """Image/mask pairs listed in an odbench ``manifest.json``."""

    name = "synthetic"
    task = ("saliency",)

    def __init__(self, folder: str | Path, name: str = "synthetic") -> None:
        self.folder = Path(folder).expanduser().resolve()  # describe() keys the cache
        self.name = name  # type: ignore[misc]
        data = read_manifest(self.folder)
        manifest = self.folder / "manifest.json"
        self.generator: dict[str, Any] = dict(data.get("generator", {}))
        self._files: dict[str, tuple[Path, Path]] = {}
        for entry in data.get("samples", []):
            if not (
                isinstance(entry, dict)
                and all(isinstance(entry.get(k), str) for k in ("image", "mask"))
                and "id" in entry
            ):
                raise DatasetError(
                    f'{manifest}: a sample must be {{"id": ..., "image": "path", '
                    f'"mask": "path"}}, got {entry!r}'
                )
            sid = str(entry["id"])
            if sid in self._files:
                raise DatasetError(f"{manifest}: sample id {sid!r} listed twice")
            image = self.folder / _safe_relative(entry["image"], manifest)
            mask = self.folder / _safe_relative(entry["mask"], manifest)
            for path, what in ((image, "image"), (mask, "mask")):
                if not path.is_file():
                    raise DatasetError(
                        f"{path}: {what} of sample {sid!r} listed in {manifest} is missing"
                    )
            self._files[sid] = (image, mask)
        if not self._files:
            raise DatasetError(f"{manifest}: no samples (empty dataset)")

    @classmethod
    def from_card(
        cls, card: DatasetCard | None, data_root: Any = None, path: str | Path | None = None
    ) -> SyntheticDataset:
        """``path`` (or, without it, ``data_root``) is the folder holding ``manifest.json``."""
        base = path if path is not None else data_root
        if base is None:
            raise DatasetError(
                "synthetic: give the folder that holds manifest.json (path=... or --data-root)"
            )
        return cls(base)

    def ids(self) -> list[str]:
        return sorted(self._files)

    def mask_files(self, sample_id: str) -> tuple[Path, Path] | None:
        return self.files(sample_id)

    def files(self, sample_id: str) -> tuple[Path, Path]:
        return self._files[sample_id]

    def load(self, sample_id: str) -> Sample:
        if sample_id not in self._files:
            raise DatasetError(f"{self.name}: no sample {sample_id!r}")
        return load_pair(sample_id, *self._files[sample_id])

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "root": str(self.folder), "generator": self.generator}


class SyntheticWriter:
    """Write samples in the synthetic format; reopening a folder appends to its manifest.

    >>> with SyntheticWriter(out, generator={"method": "diffusionseg"}) as w:  # doctest: +SKIP
    ...     w.add("000001", image, mask)
    """

    def __init__(self, folder: str | Path, generator: dict[str, Any] | None = None) -> None:
        self.folder = Path(folder)
        self.generator = dict(generator or {})
        self.samples: dict[str, dict[str, str]] = {}
        if (self.folder / "manifest.json").is_file():
            data = read_manifest(self.folder)
            self.generator = {**data.get("generator", {}), **self.generator}
            self.samples = {str(s["id"]): s for s in data.get("samples", [])}

    def __contains__(self, sample_id: str) -> bool:
        return sample_id in self.samples

    def add(self, sample_id: str, image: np.ndarray, mask: np.ndarray) -> None:
        if not sample_id or "/" in sample_id or sample_id.startswith("."):
            raise ValueError(f"bad sample id {sample_id!r}")
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"{sample_id}: image must be (H, W, 3) uint8, got {image.shape} {image.dtype}"
            )
        if mask.shape != image.shape[:2] or mask.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"{sample_id}: mask must be (H, W) uint8/uint16 at the image size")
        entry = {
            "id": sample_id,
            "image": f"images/{sample_id}.png",
            "mask": f"masks/{sample_id}.png",
        }
        write_png(self.folder / entry["image"], image)
        write_png(self.folder / entry["mask"], mask)
        self.samples[sample_id] = entry

    def flush(self) -> None:
        data = {
            "format": FORMAT,
            "version": VERSION,
            "generator": self.generator,
            "samples": [self.samples[k] for k in sorted(self.samples)],
        }
        atomic_write_bytes(
            self.folder / "manifest.json", (json.dumps(data, indent=1) + "\n").encode()
        )

    def __enter__(self) -> SyntheticWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()
