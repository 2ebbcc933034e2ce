"""On-disk cache of frozen features for decoder training: memory-mapped fp16, never stale.

One entry per (extractor identity, resolution, ordered list of image content hashes): a folder
``<cache>/features/<key>/`` with one ``level<i>.npy`` array ``[N, C_i, R/s_i, R/s_i]`` float16 per
feature level and a ``meta.json`` naming what it holds.  The key changes when the extractor
(its name, weights revision or options: :attr:`FeatureExtractor.identity`), the resolution or any
image's pixels change, so a cached entry can only ever be the features of exactly these images.
An entry is written into a temporary sibling folder and renamed into place when complete, so an
interrupted build leaves nothing that looks finished.  Size: ``2 · Σ_i C_i (R/s_i)²`` bytes per
image (SD-1.4 at 512²: ≈ 9.2 MB; DINO ViT-S/16 at 224²: ≈ 0.15 MB).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from odbench.imageio import atomic_write_bytes

CACHE_VERSION = 1


def default_cache_root() -> Path:
    """``$ODBENCH_CACHE`` or the user cache folder (platformdirs)."""
    env = os.environ.get("ODBENCH_CACHE")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("odbench"))


def cache_key(identity: str, resolution: int, image_hashes: list[str]) -> str:
    blob = json.dumps([CACHE_VERSION, identity, resolution, image_hashes]).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


class FeatureCache:
    """``get`` returns the cached levels of a prepared image set, computing them once."""

    def __init__(self, root: Path | None = None) -> None:
        self.folder = (Path(root) if root is not None else default_cache_root()) / "features"

    def get(
        self,
        extractor: Any,
        prepared: Any,
        resolution: int,
        batch_size: int,
        progress: Callable[[int], None],
        device: str = "cpu",
    ) -> tuple[list[np.ndarray], int]:
        """(levels as read-only memmaps, number of ``extract`` calls made: 0 on a hit); images
        go to the extractor on ``device``."""
        key = cache_key(extractor.identity, resolution, prepared.image_hashes)
        entry = self.folder / key
        levels = self._open(entry, extractor, len(prepared.ids), resolution)
        if levels is not None:
            progress(len(prepared.ids))
            return levels, 0
        shutil.rmtree(entry, ignore_errors=True)  # a foreign or damaged folder under our key
        calls = self._build(entry, extractor, prepared, resolution, batch_size, progress, device)
        levels = self._open(entry, extractor, len(prepared.ids), resolution)
        assert levels is not None
        return levels, calls

    @staticmethod
    def _shapes(extractor: Any, n: int, resolution: int) -> list[tuple[int, ...]]:
        return [
            (n, int(c), resolution // int(s), resolution // int(s))
            for c, s in zip(extractor.channels, extractor.strides)
        ]

    def _open(
        self, entry: Path, extractor: Any, n: int, resolution: int
    ) -> list[np.ndarray] | None:
        meta_path = entry / "meta.json"
        if not meta_path.is_file():
            return None
        meta = json.loads(meta_path.read_text())
        shapes = self._shapes(extractor, n, resolution)
        if meta.get("identity") != extractor.identity or meta.get("shapes") != [
            list(s) for s in shapes
        ]:
            shutil.rmtree(entry, ignore_errors=True)  # a key collision or a foreign folder
            return None
        levels = [np.load(entry / f"level{i}.npy", mmap_mode="r") for i in range(len(shapes))]
        if [tuple(a.shape) for a in levels] != shapes:
            shutil.rmtree(entry, ignore_errors=True)
            return None
        return levels

    def _build(
        self,
        entry: Path,
        extractor: Any,
        prepared: Any,
        resolution: int,
        batch_size: int,
        progress: Callable[[int], None],
        device: str,
    ) -> int:
        import torch

        n = len(prepared.ids)
        shapes = self._shapes(extractor, n, resolution)
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.folder, prefix=f".{entry.name}-"))
        calls = 0
        try:
            arrays = [
                np.lib.format.open_memmap(tmp / f"level{i}.npy", "w+", np.float16, shape)
                for i, shape in enumerate(shapes)
            ]
            with torch.no_grad():
                for start in range(0, n, batch_size):
                    stop = min(start + batch_size, n)
                    x = torch.from_numpy(
                        np.asarray(prepared.images[start:stop], dtype=np.float32) / 255.0
                    ).to(device)
                    out = extractor.extract(x)
                    calls += 1
                    if len(out) != len(shapes):
                        raise RuntimeError(
                            f"extractor {extractor.name} returned {len(out)} levels, "
                            f"declared {len(shapes)}"
                        )
                    for arr, f, shape in zip(arrays, out, shapes):
                        if tuple(f.shape[1:]) != shape[1:]:
                            raise RuntimeError(
                                f"extractor {extractor.name} returned {tuple(f.shape)}, "
                                f"declared {(stop - start, *shape[1:])}"
                            )
                        f32 = f.detach().float().cpu().numpy()
                        arr[start:stop] = np.clip(f32, -65504.0, 65504.0).astype(np.float16)
                    progress(stop - start)
            for arr in arrays:
                arr.flush()
            meta = {
                "version": CACHE_VERSION,
                "identity": extractor.identity,
                "resolution": resolution,
                "shapes": [list(s) for s in shapes],
                "image_hashes": prepared.image_hashes,
            }
            atomic_write_bytes(tmp / "meta.json", json.dumps(meta).encode())
            try:
                os.replace(tmp, entry)
            except OSError:  # another process finished the same entry first: keep theirs
                pass
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return calls
