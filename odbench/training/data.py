"""The training samples: drawn (seeded), read once, hashed and resized to the training resolution
(:func:`prepare`), split into training and validation rows, and served batch by batch (the order
of epoch ``e`` a permutation drawn from ``(seed, e)``, the flips of step ``s`` from
``(seed, s)``), as images or as their cached frozen features."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from odbench.feature_cache import FeatureEntry, FeatureRows

PREPARED_DIR = ".prepared"


@dataclass
class Prepared:
    """The run's samples at the training resolution (memory-mapped ``.npy`` files)."""

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
) -> Prepared:
    """Read, hash and resize every sample (the resize :func:`odbench.models.build.to_batch`
    applies at evaluation) into ``folder``.  With ``image_rows``, only those rows' images are
    stored (the others stay unwritten, a sparse file): a rank that trains from cached features
    needs the images of its own share only."""
    import torch
    import torch.nn.functional as F

    from odbench.data.base import DatasetError
    from odbench.imageio import to_unit
    from odbench.models.build import to_batch

    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    r = resolution
    images = np.lib.format.open_memmap(folder / "images.npy", "w+", np.uint8, (len(ids), 3, r, r))
    masks = np.lib.format.open_memmap(folder / "masks.npy", "w+", np.uint8, (len(ids), r, r))
    image_hashes, rows = [], []
    for i, sample_id in enumerate(ids):
        sample = dataset.load(sample_id)
        if sample.mask is None:
            raise DatasetError(f"sample {sample_id!r} of the training data has no GT mask")
        image_hashes.append(content_hash(sample.image))
        rows.append([sample_id, image_hashes[-1], content_hash(sample.mask)])
        if image_rows is None or i in image_rows:
            images[i] = (to_batch([sample.image], r)[0] * 255.0).round().to(torch.uint8).numpy()
        m = torch.from_numpy(to_unit(sample.mask).astype(np.float32))[None, None]
        m = F.interpolate(m, size=(r, r), mode="bilinear", antialias=True, align_corners=False)
        masks[i] = (m[0, 0].clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()
        progress(1)
    images.flush()
    masks.flush()
    manifest = hashlib.sha256(json.dumps(rows).encode()).hexdigest()
    return Prepared(list(ids), images, masks, image_hashes, manifest)


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
