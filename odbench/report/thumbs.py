"""Images for the report, read from the dataset and the runs' prediction caches (never predicted
again), and PNG thumbnails of them written once and reused.

A thumbnail's file name is a hash of everything its pixels depend on: the kind (image, GT, soft
map, binarised mask), the thumbnail size, the protocol's binarisation rules, and the source --
the image/mask files' paths, sizes and modification times (the dataset's description and the
sample id for generated datasets), or the cache entry's path, size and modification time.  A
rebuilt report therefore reuses every thumbnail whose source is unchanged and can never show a
stale one.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from odbench.cache import CacheError, PredictionCache
from odbench.data.base import Dataset, Sample
from odbench.imageio import atomic_write_bytes
from odbench.metrics.protocols import Protocol
from odbench.report.runs import ReportRun
from odbench.results import ResultsError

#: Keys of a run's dataset record that are not part of the dataset's own description.
_RUN_ONLY_KEYS = ("name", "limit", "n_evaluated", "skipped_ids")


def check_dataset(dataset: Dataset, run: ReportRun) -> None:
    """Refuse a dataset that is not the one the run evaluated (another root, layout or size);
    for saved maps (``score --config``, which records GT files, not a dataset) refuse one that
    lacks images of the run (its GT is checked image by image, :func:`check_gt`)."""
    if run.gt_files is not None:
        have = set(dataset.ids())
        absent = [str(i) for i in run.records["ids"] if str(i) not in have]
        if absent:
            raise ResultsError(
                f"{run.results['_path']}: {len(absent)} of its images are not in the dataset "
                f"found ({', '.join(absent[:3])}); pass the --data-root that holds them"
            )
        return
    recorded = {k: v for k, v in run.results["dataset"].items() if k not in _RUN_ONLY_KEYS}
    found = {k: v for k, v in dataset.describe().items() if k not in _RUN_ONLY_KEYS}
    found = json.loads(json.dumps(found))  # tuples -> lists, as in the JSON
    diff = sorted(k for k in set(recorded) | set(found) if recorded.get(k) != found.get(k))
    if diff:
        what = ", ".join(
            f"{k}: {found.get(k)!r} here, {recorded.get(k)!r} in the run" for k in diff
        )
        raise ResultsError(
            f"{run.results['_path']}: the dataset found is not the one this run evaluated "
            f"({what}); pass the run's --data-root"
        )


def check_gt(sample: Sample, run: ReportRun, protocol: Protocol) -> None:
    """The GT the report shows (the dataset's) is the one a saved-maps run was scored against
    (the GT file it recorded), binarised by the protocol's rule."""
    from odbench.imageio import ImageReadError, read_gray
    from odbench.metrics.saliency import binarize_gt

    if run.gt_files is None or sample.mask is None:
        return
    path = run.gt_files.get(sample.id)
    try:
        scored = read_gray(path, what="mask") if path is not None else None
    except ImageReadError as e:
        raise ResultsError(str(e)) from e
    shown = binarize_gt(sample.mask, protocol.gt_rule)
    if scored is None or not np.array_equal(binarize_gt(scored, protocol.gt_rule), shown):
        raise ResultsError(
            f"{run.results['_path']}: its GT of {sample.id!r} ({path or 'gone'}) is not the "
            f"dataset's; pass the --data-root of the dataset it was scored on"
        )


def map_file(run: ReportRun, sample_id: str) -> Path:
    """Where the run's map of one image is: its file (saved maps) or prediction-cache entry."""
    if run.map_files is not None:
        return run.map_files.get(sample_id) or Path(run.results["method"]["predictions"])
    return PredictionCache(run.cache_folder).path(sample_id)


def load_prediction(
    run: ReportRun, sample_id: str, shape: tuple[int, int] | None = None
) -> np.ndarray:
    """The run's map of one image as it was scored: the cached map (uint16) the runner scored,
    or the saved map file (uint8 / uint16; resized bilinearly to ``shape``, the image's size,
    when it differs, as the meter resizes it)."""
    if run.map_files is not None:
        return _saved_map(run, sample_id, shape)
    cache = PredictionCache(run.cache_folder)
    if not cache.has(sample_id):
        raise ResultsError(
            f"{cache.path(sample_id)}: the map of {sample_id!r} {cache.why_missing(sample_id)} "
            f"(the run {run.results['_path']}); re-run odbench eval --method "
            f"{run.results['method']['name']}"
            f" --dataset {run.results['dataset']['name']} to fill it"
        )
    try:
        pred, _ = cache.get(sample_id)
    except CacheError as e:
        raise ResultsError(str(e)) from e
    return pred


def _saved_map(run: ReportRun, sample_id: str, shape: tuple[int, int] | None) -> np.ndarray:
    from odbench.imageio import ImageReadError, read_gray, to_unit
    from odbench.metrics.saliency import resize_bilinear

    assert run.map_files is not None
    path = run.map_files.get(sample_id)
    if path is None:
        raise ResultsError(
            f"{run.results['method']['predictions']}: no map of {sample_id!r} (the maps "
            f"{run.results['_path']} scored have changed); score them again"
        )
    try:
        pred = read_gray(path, what="prediction")
    except ImageReadError as e:
        raise ResultsError(str(e)) from e
    if shape is not None and pred.shape != shape:
        return resize_bilinear(to_unit(pred), shape)
    return pred


def to_8bit(arr: np.ndarray) -> np.ndarray:
    """A uint16 / bool / uint8 map as 8-bit gray (uint16: ``round(v / 257)``)."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if arr.dtype == np.uint16:
        return ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)
    return np.round(np.clip(arr.astype(np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)


def mask_panel(mask: np.ndarray) -> np.ndarray:
    """A boolean mask as an 8-bit image (foreground white)."""
    return mask.astype(np.uint8) * 255


@dataclass
class Thumbnailer:
    """Writes (or reuses) the thumbnails of samples and of runs' predictions under ``folder``."""

    folder: Path
    dataset: Dataset
    protocol: Protocol
    size: int = 160
    written: int = 0
    reused: int = 0
    _samples: dict[str, Sample] = field(default_factory=dict)

    def _source(self, sample_id: str) -> dict[str, Any]:
        files = getattr(self.dataset, "files", None)
        if files is None:
            return {"dataset": self.dataset.describe(), "id": sample_id}
        return {"files": [stat_key(Path(p)) for p in files(sample_id)], "id": sample_id}

    def source(self, sample_id: str) -> dict[str, Any]:
        """What the pixels of a sample's thumbnails depend on (its files, or the dataset's
        description and the id)."""
        return self._source(sample_id)

    def drawn(self, kind: str, source: dict[str, Any], make: Any) -> str:
        """Relative path of the thumbnail of ``make()`` (an image array drawn from ``source``,
        everything its pixels depend on; ``kind`` names the drawing and its version), written
        once and reused."""
        return self._write(self._name(kind, source), make)

    def _name(self, kind: str, source: dict[str, Any], suffix: str = ".png") -> str:
        key = {
            "kind": kind,
            "size": self.size,
            "source": source,
            "gt_rule": self.protocol.gt_rule,
            "binarize": [
                self.protocol.pred_norm,
                self.protocol.binarize_op,
                self.protocol.binarize_at,
            ],
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode())
        return f"{kind}-{digest.hexdigest()[:20]}{suffix}"

    def _write(self, name: str, make: Any) -> str:
        path = self.folder / name
        if path.is_file():
            self.reused += 1
        else:
            img = Image.fromarray(make())
            img.thumbnail((self.size, self.size), Image.Resampling.BILINEAR, reducing_gap=3.0)
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            atomic_write_bytes(path, buf.getvalue())
            self.written += 1
        return f"{self.folder.name}/{name}"

    def _sample(self, sample_id: str) -> Sample:
        if sample_id not in self._samples:
            self._samples = {sample_id: self.dataset.load(sample_id)}  # keep one
        return self._samples[sample_id]

    def sample(self, sample_id: str) -> tuple[str, str]:
        """Relative paths of the image and GT (binarised by the protocol's rule) thumbnails."""
        from odbench.metrics.saliency import binarize_gt

        source = self._source(sample_id)

        def gt() -> np.ndarray:
            mask = self._sample(sample_id).mask
            if mask is None:
                raise ResultsError(f"dataset {self.dataset.name!r}: {sample_id!r} has no mask")
            return mask_panel(binarize_gt(mask, self.protocol.gt_rule))

        return (
            self._write(self._name("image", source), lambda: self._sample(sample_id).image),
            self._write(self._name("gt", source), gt),
        )

    def row_images(self, sample_ids: list[str], size: int = 48, workers: int = 1) -> list[str]:
        """Relative paths of small JPEGs of the images for the per-image table, written by
        ``workers`` threads (Pillow decodes and encodes without the GIL).  Image files are
        opened with Pillow's draft mode (a JPEG is decoded at 1/2, 1/4 or 1/8 scale)."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            done = list(pool.map(lambda i: self._row_image(i, size), sample_ids))
        self.written += sum(wrote for _, wrote in done)
        self.reused += sum(not wrote for _, wrote in done)
        return [path for path, _ in done]

    def _row_image(self, sample_id: str, size: int) -> tuple[str, bool]:
        from PIL import UnidentifiedImageError

        from odbench.imageio import ImageReadError

        name = self._name(f"row{size}", self._source(sample_id), ".jpg")
        path = self.folder / name
        if path.is_file():
            return f"{self.folder.name}/{name}", False
        files = getattr(self.dataset, "files", None)
        if files is not None:
            source = Path(files(sample_id)[0])
            try:
                with Image.open(source) as opened:
                    opened.draft("RGB", (2 * size, 2 * size))
                    img = opened.convert("RGB")
            except (OSError, UnidentifiedImageError) as e:
                raise ImageReadError(f"{source}: unreadable or corrupt image ({e})") from e
        else:
            img = Image.fromarray(self.dataset.load(sample_id).image)
        img.thumbnail((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=85)
        atomic_write_bytes(path, buf.getvalue())
        return f"{self.folder.name}/{name}", True

    def prediction(self, run: ReportRun, sample_id: str) -> tuple[str, str]:
        """Relative paths of the soft map and binarised mask thumbnails of a run's prediction."""
        from odbench.metrics.saliency import binarize_prediction

        path = map_file(run, sample_id)
        source = {"cache": stat_key(path) if path.is_file() else str(path), "id": sample_id}
        names = (self._name("soft", source), self._name("mask", source))
        if all((self.folder / n).is_file() for n in names):
            self.reused += 2
            return tuple(f"{self.folder.name}/{n}" for n in names)  # type: ignore[return-value]
        shape = self._sample(sample_id).image.shape[:2]
        pred = load_prediction(run, sample_id, shape)
        if pred.shape != shape:
            raise ResultsError(
                f"{path}: cached map of shape {pred.shape} for an image of size {shape}; "
                f"the cache does not belong to this dataset"
            )
        return (
            self._write(names[0], lambda: to_8bit(pred)),
            self._write(names[1], lambda: mask_panel(binarize_prediction(pred, self.protocol))),
        )


def stat_key(path: Path) -> list[Any]:
    """What a file's contents are known by: its resolved path, size and modification time."""
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]
