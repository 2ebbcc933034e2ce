"""On-disk cache of frozen features for decoder training: one fp16 file per image, never stale.

An extractor at a resolution owns a folder ``<cache>/features/<key>/`` (``key`` hashes the cache
version, the extractor's :attr:`FeatureExtractor.identity` — its name, weights revision and
options — and the resolution), holding one ``<image sha256>.npy`` per image: every feature level
``[C_i, R/s_i, R/s_i]`` flattened and concatenated, float16, keyed by the content hash of the
image's pixels.  So an entry can only ever be the features of exactly that image by exactly that
extractor, and a subset, a superset or another order of the same images reuses what is there.
``meta.json`` names what the folder holds.  Size: ``2 · Σ_i C_i (R/s_i)²`` bytes per image
(SD-1.4 at 512²: ≈ 9.2 MB; DINO ViT-S/16 at 224²: ≈ 0.15 MB).

Filling is split across processes the way ``odbench eval``'s prediction cache is
(:mod:`odbench.claims`): each file is written atomically (temp file + rename), and a process
claims an image before extracting it, so processes sharing the cache (the ranks of a launch, the
tasks of a SLURM array with ``--shard``, two users) never compute an image twice; a process
finding an image claimed by a live process waits for its file instead.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from odbench.claims import Claims
from odbench.errors import OdbenchError
from odbench.imageio import atomic_write_bytes

CACHE_VERSION = 2


class FeatureCacheError(OdbenchError, ValueError):
    """A cache folder that holds something else; one line naming it."""


def default_cache_root() -> Path:
    """``$ODBENCH_CACHE`` or the user cache folder (platformdirs)."""
    env = os.environ.get("ODBENCH_CACHE")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("odbench"))


def cache_key(identity: str, resolution: int) -> str:
    blob = json.dumps([CACHE_VERSION, identity, resolution]).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


class FeatureCache:
    """The feature folders under a cache root (``--cache-dir``, ``$ODBENCH_CACHE``)."""

    def __init__(self, root: Path | None = None) -> None:
        self.folder = (Path(root) if root is not None else default_cache_root()) / "features"

    def entry(self, extractor: Any, resolution: int) -> FeatureEntry:
        shapes = [
            (int(c), resolution // int(s), resolution // int(s))
            for c, s in zip(extractor.channels, extractor.strides)
        ]
        key = cache_key(extractor.identity, resolution)
        return FeatureEntry(self.folder / key, extractor.identity, resolution, shapes)


class FeatureEntry:
    """The cached features of one extractor at one resolution, one file per image."""

    def __init__(
        self, folder: Path, identity: str, resolution: int, shapes: list[tuple[int, int, int]]
    ) -> None:
        self.folder = folder
        self.identity = identity
        self.resolution = resolution
        self.shapes = shapes
        self.size = sum(c * h * w for c, h, w in shapes)

    def path(self, image_hash: str) -> Path:
        return self.folder / f"{image_hash}.npy"

    def has(self, image_hash: str) -> bool:
        """Whether the image's file is there with the shape this extractor gives."""
        try:
            arr = np.load(self.path(image_hash), mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError):
            return False
        return bool(arr.shape == (self.size,) and arr.dtype == np.float16)

    def missing(self, hashes: Sequence[str]) -> list[int]:
        """Positions in ``hashes`` whose features are not cached."""
        return [i for i, h in enumerate(hashes) if not self.has(h)]

    def _check_meta(self) -> None:
        """Write ``meta.json`` once; a folder whose ``meta.json`` names another extractor (a key
        collision, or a foreign folder) is an error rather than silently read."""
        meta = {
            "version": CACHE_VERSION,
            "identity": self.identity,
            "resolution": self.resolution,
            "shapes": [list(s) for s in self.shapes],
        }
        path = self.folder / "meta.json"
        if not path.is_file():
            atomic_write_bytes(path, json.dumps(meta).encode())
            return
        try:
            found = json.loads(path.read_text())
        except (OSError, ValueError):
            found = None
        if found != meta:
            raise FeatureCacheError(
                f"{self.folder}: holds features of something other than {self.identity} at "
                f"{self.resolution}²; remove the folder"
            )

    def fill(
        self,
        extractor: Any,
        hashes: Sequence[str],
        images: Callable[[list[int]], np.ndarray],
        batch_size: int,
        progress: Callable[[int], None],
        device: str = "cpu",
    ) -> int:
        """Compute and store the features of every image of ``hashes`` not cached yet, in batches
        of ``batch_size``; ``images(positions)`` gives those images as ``[B, 3, R, R]`` uint8.
        Returns the number of images this process extracted (each image once: an image another
        process claimed is waited for, not computed)."""
        import torch

        self._check_meta()
        claims = Claims(self.folder)
        first: dict[str, int] = {}
        for i, h in enumerate(hashes):
            first.setdefault(h, i)  # the same pixels twice: computed once
        progress(len(hashes) - len(first))
        held: list[str] = []
        computed = 0

        def extract(todo: list[int]) -> None:
            nonlocal computed
            if not todo:
                return
            x = torch.from_numpy(np.asarray(images(todo), dtype=np.float32) / 255.0).to(device)
            with torch.no_grad():
                out = extractor.extract(x)
            if len(out) != len(self.shapes):
                raise RuntimeError(
                    f"extractor {extractor.name} returned {len(out)} levels, "
                    f"declared {len(self.shapes)}"
                )
            for f, shape in zip(out, self.shapes):
                if tuple(f.shape[1:]) != shape:
                    raise RuntimeError(
                        f"extractor {extractor.name} returned {tuple(f.shape)}, "
                        f"declared {(len(todo), *shape)}"
                    )
            flat = torch.cat([f.detach().float().flatten(1) for f in out], dim=1).cpu().numpy()
            rows = np.clip(flat, -65504.0, 65504.0).astype(np.float16)
            for k, row in zip(todo, rows):
                self.store(hashes[k], row)
                claims.release(hashes[k])
                held.remove(hashes[k])
            computed += len(todo)
            progress(len(todo))

        try:
            pending: list[int] = []
            deferred: list[int] = []
            for i in first.values():
                h = hashes[i]
                if self.has(h):
                    progress(1)
                elif claims.acquire(h):
                    held.append(h)
                    if self.has(h):  # stored by another process since we looked
                        claims.release(h)
                        held.remove(h)
                        progress(1)
                        continue
                    pending.append(i)
                    if len(pending) == batch_size:
                        extract(pending)
                        pending = []
                else:
                    deferred.append(i)  # another live process is computing it
            extract(pending)
            pending = []
            for i in deferred:
                h = hashes[i]
                if claims.wait(h, partial(self.has, h)):  # its holder died: ours now
                    held.append(h)
                    pending.append(i)
                    if len(pending) == batch_size:
                        extract(pending)
                        pending = []
                else:
                    progress(1)
            extract(pending)
        finally:
            for h in held:
                claims.release(h)
            claims.close()
        return computed

    def store(self, image_hash: str, row: np.ndarray) -> None:
        import io

        buf = io.BytesIO()
        np.save(buf, row, allow_pickle=False)
        atomic_write_bytes(self.path(image_hash), buf.getvalue())

    def rows(self, hashes: Sequence[str]) -> FeatureRows:
        """The cached features of ``hashes`` (all must be cached)."""
        return FeatureRows(self, list(hashes))


class FeatureRows:
    """Feature levels of a list of images, read from the cache batch by batch."""

    def __init__(self, entry: FeatureEntry, hashes: list[str]) -> None:
        self.entry = entry
        self.hashes = hashes

    def __len__(self) -> int:
        return len(self.hashes)

    def take(self, rows: Sequence[int] | np.ndarray) -> list[np.ndarray]:
        """Per level ``[len(rows), C, h, w]`` float16."""
        flat = np.stack([self._load(self.hashes[int(r)]) for r in rows])
        levels, start = [], 0
        for c, h, w in self.entry.shapes:
            levels.append(flat[:, start : start + c * h * w].reshape(len(rows), c, h, w))
            start += c * h * w
        return levels

    def _load(self, image_hash: str) -> np.ndarray:
        """One image's row; a file damaged since it was checked (truncated, replaced) is one
        line naming it."""
        path = self.entry.path(image_hash)
        try:
            row = np.load(path, allow_pickle=False)
            why = "" if row.shape == (self.entry.size,) else f"shape {row.shape}"
        except (OSError, ValueError) as e:
            why = str(e)
        if why:
            raise FeatureCacheError(
                f"{path}: cached features damaged while in use ({why}); delete it and run the "
                f"same command again (with --resume if a checkpoint exists): it is computed again"
            )
        return row  # type: ignore[no-any-return]
