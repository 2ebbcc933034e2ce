"""The training samples: drawn (seeded), read once, hashed and resized to the training resolution
(:func:`prepare`), split into training and validation rows, and served batch by batch (the order
of epoch ``e`` a permutation drawn from ``(seed, e)``, the flips of step ``s`` from
``(seed, s)``), as images or as their cached frozen features."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from odbench.feature_cache import FeatureEntry, FeatureRows
from odbench.imageio import UMASK

PREPARED_DIR = ".prepared"
#: The file in a prepared folder that says what it holds (ids, hashes, the key it was made under).
PREPARED_INFO = "prepared.json"
#: Raised when what :func:`prepare` stores changes, so that no folder of an older layout is reused.
PREPARED_FORMAT = 1


@dataclass
class Prepared:
    """The run's samples at the training resolution (read-only memory-mapped ``.npy`` files)."""

    ids: list[str]
    images: np.ndarray  # [N, 3, R, R] uint8
    masks: np.ndarray  # [N, R, R] uint8, soft GT scaled to 0..255
    image_hashes: list[str]
    manifest_sha256: str


def content_hash(arr: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and bytes."""
    h = hashlib.sha256(f"{arr.dtype}:{arr.shape}:".encode())
    h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def select_ids(ids: list[str], n: int | None, seed: int) -> list[str]:
    """All ids, or ``n`` of them drawn at random (seeded), in sorted order."""
    if n is None or n >= len(ids):
        return list(ids)
    chosen = np.random.default_rng([seed, 7]).choice(len(ids), size=n, replace=False)
    return [ids[i] for i in sorted(chosen)]


def prepare(
    dataset: Any,
    ids: list[str],
    resolution: int,
    folder: Path,
    progress: Callable[[int], None],
    image_rows: set[int] | None = None,
    reuse: bool = False,
) -> Prepared:
    """Read, hash and resize every sample (the resize :func:`odbench.models.build.to_batch`
    applies at evaluation) into ``folder``, written whole in a temporary folder beside it and
    then swapped in.  With ``reuse``, a ``folder`` that holds the same samples already (same
    :func:`prepared_key`) is opened instead.  With ``image_rows``, only those rows' images are
    stored (the others stay unwritten, a sparse file): a rank that trains from cached features
    needs the images of its own share only."""
    key = prepared_key(dataset, ids, resolution) if reuse and image_rows is None else None
    if key is not None:
        found = _open_prepared(folder, key, len(ids), resolution)
        if found is not None:
            progress(len(ids))
            return found
    folder.parent.mkdir(parents=True, exist_ok=True)
    for stale in folder.parent.glob(f"{folder.name}-*.tmp"):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{folder.name}-", suffix=".tmp", dir=folder.parent))
    os.chmod(tmp, 0o777 & ~UMASK)  # mkdtemp makes 0700: a run folder others can read
    try:
        info = _write_prepared(dataset, ids, resolution, tmp, progress, image_rows)
        (tmp / PREPARED_INFO).write_text(json.dumps({**info, "key": key}))
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=f"{folder.name}-", suffix=".tmp", dir=folder.parent))
            os.replace(folder, old / folder.name)
            os.replace(tmp, folder)
            shutil.rmtree(old)
        else:
            os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    found = _open_prepared(folder, key, len(ids), resolution)
    assert found is not None
    return found


def prepared_key(dataset: Any, ids: list[str], resolution: int) -> str | None:
    """What the prepared samples are made from, hashed: the bytes of every sample's image and
    mask file, the ids, the resolution, the source of the code that decodes and resizes them
    and the versions of the libraries it calls, so that a reused folder can never be stale.
    None for datasets whose samples are not plain files (nothing is reused)."""
    import PIL
    import torch

    h = hashlib.sha256()
    versions = {"numpy": np.__version__, "torch": torch.__version__, "pillow": PIL.__version__}
    h.update(json.dumps([PREPARED_FORMAT, resolution, ids, versions]).encode())
    modules = (type(dataset).__module__, "odbench.data.folder", "odbench.imageio", __name__)
    for name in (*modules, "odbench.models.build"):
        importlib.import_module(name)
        h.update(Path(str(sys.modules[name].__file__)).read_bytes())
    for sample_id in ids:
        files = dataset.mask_files(sample_id)
        if files is None:
            return None
        for path in files:
            h.update(hashlib.sha256(Path(path).read_bytes()).digest())
    return h.hexdigest()


def _open_prepared(folder: Path, key: str | None, n: int, resolution: int) -> Prepared | None:
    """The prepared samples in ``folder`` when they were made under ``key`` (read-only
    memory maps), else None."""
    try:
        info = json.loads((folder / PREPARED_INFO).read_text())
        if info.get("key") != key:
            return None
        images = np.load(folder / "images.npy", mmap_mode="r")
        masks = np.load(folder / "masks.npy", mmap_mode="r")
    except (OSError, ValueError):  # absent, or damaged since: prepared again
        return None
    r = resolution
    if images.shape != (n, 3, r, r) or masks.shape != (n, r, r) or len(info["ids"]) != n:
        return None
    return Prepared(
        list(info["ids"]), images, masks, list(info["image_hashes"]), info["manifest_sha256"]
    )


def _write_prepared(
    dataset: Any,
    ids: list[str],
    r: int,
    folder: Path,
    progress: Callable[[int], None],
    image_rows: set[int] | None,
) -> dict[str, Any]:
    """Write ``images.npy`` and ``masks.npy`` of the samples into ``folder``; their ids, image
    hashes and manifest sha256."""
    import torch
    import torch.nn.functional as F

    from odbench.data.base import DatasetError
    from odbench.imageio import to_unit
    from odbench.models.build import to_batch

    image_hashes, rows = [], []
    with (
        _NpyRows(folder / "images.npy", (len(ids), 3, r, r)) as images,
        _NpyRows(folder / "masks.npy", (len(ids), r, r)) as masks,
    ):
        for i, sample_id in enumerate(ids):
            sample = dataset.load(sample_id)
            if sample.mask is None:
                raise DatasetError(f"sample {sample_id!r} of the training data has no GT mask")
            image_hashes.append(content_hash(sample.image))
            rows.append([sample_id, image_hashes[-1], content_hash(sample.mask)])
            if image_rows is None or i in image_rows:
                image = to_batch([sample.image], r)[0]
                images.write(i, (image * 255.0).round().to(torch.uint8).numpy())
            m = torch.from_numpy(to_unit(sample.mask).astype(np.float32))[None, None]
            m = F.interpolate(m, size=(r, r), mode="bilinear", antialias=True, align_corners=False)
            masks.write(i, (m[0, 0].clamp(0, 1) * 255.0).round().to(torch.uint8).numpy())
            progress(1)
    manifest = hashlib.sha256(json.dumps(rows).encode()).hexdigest()
    return {"ids": list(ids), "image_hashes": image_hashes, "manifest_sha256": manifest}


class _NpyRows:
    """A uint8 ``.npy`` file of ``shape`` written row by row (rows not written stay zeros, a
    sparse file), flushed to disk on close.  Plain writes, not a memory map: a full disk is an
    ``OSError``, where a write into a memory map would kill the process (SIGBUS)."""

    def __init__(self, path: Path, shape: tuple[int, ...]) -> None:
        self.file = path.open("wb")
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False}
        np.lib.format.write_array_header_1_0(self.file, {**header, "shape": shape})
        self.start = self.file.tell()
        self.row = int(np.prod(shape[1:]))
        self.end = self.start + shape[0] * self.row

    def write(self, i: int, row: np.ndarray) -> None:
        self.file.seek(self.start + i * self.row)
        self.file.write(np.ascontiguousarray(row, dtype=np.uint8).tobytes())

    def __enter__(self) -> _NpyRows:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self.file.truncate(self.end)
                self.file.flush()
                os.fsync(self.file.fileno())
        finally:
            self.file.close()


def split_rows(n: int, val_split: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows): ``round(val_split · n)`` rows (at least one when the
    fraction is positive) held out at random, seeded.  No training row is left when every row
    is held out (:func:`odbench.training.options.setup` refuses that)."""
    n_val = max(1, round(val_split * n)) if val_split > 0 else 0
    perm = np.random.default_rng([seed, 11]).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    return max(1, n_train // batch_size)


def batch_rows(train_rows: np.ndarray, batch_size: int, seed: int, step: int) -> np.ndarray:
    """The rows of step ``step``: epoch ``step // steps_per_epoch`` of a seeded per-epoch
    permutation, full batches only (the last partial batch of an epoch is dropped)."""
    spe = steps_per_epoch(len(train_rows), batch_size)
    epoch, pos = divmod(step, spe)
    perm = np.random.default_rng([seed, epoch]).permutation(len(train_rows))
    bs = min(batch_size, len(train_rows))
    return np.sort(train_rows[perm[pos * bs : (pos + 1) * bs]])


def flips(seed: int, step: int, n: int, enabled: bool) -> np.ndarray:
    """Which samples of step ``step`` are flipped left-right (p = 0.5, seeded by the step)."""
    if not enabled:
        return np.zeros(n, dtype=bool)
    return np.random.default_rng([seed, 13, step]).random(n) < 0.5


def fill_features(
    entry: FeatureEntry,
    extractor: Any,
    prepared: Prepared,
    rows: list[int],
    batch_size: int,
    device: str,
    progress: Callable[[int], None],
) -> int:
    """Cache the features of the prepared ``rows``; the number of images extracted."""
    hashes = [prepared.image_hashes[r] for r in rows]
    return entry.fill(
        extractor,
        hashes,
        lambda positions: prepared.images[[rows[p] for p in positions]],
        batch_size,
        progress,
        device,
    )


@dataclass
class Inputs:
    """What a step reads: images (end to end) or cached feature levels (decoder), and masks."""

    prepared: Prepared
    features: FeatureRows | None = None  # the cached feature levels of the prepared images

    def batch(self, rows: np.ndarray, flip: np.ndarray, device: str) -> tuple[Any, Any]:
        import torch

        def load(arr: np.ndarray, scale: float) -> Any:
            t = torch.from_numpy(np.asarray(arr, dtype=np.float32) * scale)
            if flip.any():
                idx = torch.from_numpy(np.nonzero(flip)[0])
                t[idx] = t[idx].flip(-1)
            return t.to(device)

        target = load(self.prepared.masks[rows], 1.0 / 255.0)[:, None]
        if self.features is None:
            return load(self.prepared.images[rows], 1.0 / 255.0), target
        return [load(level, 1.0) for level in self.features.take(rows)], target
