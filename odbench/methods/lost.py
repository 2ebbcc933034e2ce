"""``lost``: Localizing Objects with Self-supervised Transformers (Siméoni et al., BMVC 2021).

Sec. 3 of the paper, on the last-layer keys ``f_p`` of the h × w patches of one image:

- Patch graph: ``a_pq = 1`` if ``f_p · f_q >= 0`` else 0; degree ``d_p = Σ_q a_pq`` (Eq. 1).
  Foreground patches correlate with fewer patches than background ones.
- Seed: ``p* = argmin_p d_p`` (Eq. 2).
- Expansion: among the ``k`` = 100 patches of lowest degree, keep those positively correlated
  with the seed, ``S`` (Eq. 3).
- Mask: ``m_q = 1`` if ``Σ_{s ∈ S} f_q · f_s >= 0`` (Eq. 4); the box is the tight box of the
  connected component of that mask holding the seed (LOST's ``detect_box``).

Saliency map (an odbench choice; LOST itself outputs boxes): the same seed component of the
Eq. 4 mask, upsampled to pixels — so the saliency mask and the box agree.  Ties in the degree
are broken by patch index (stable sort).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from odbench.methods.bilateral_solver import bilateral_refine
from odbench.methods.keyfeatures import KeyFeatureMethod, component_of, upsample_patch_mask


@dataclass(frozen=True)
class LostResult:
    """``mask`` (H, W) bool seed component in pixels, ``seed`` patch (row, col), ``box``
    [x1, y1, x2, y2] in pixels (continuous, clipped to the image)."""

    mask: np.ndarray
    seed: tuple[int, int]
    box: np.ndarray


def degrees(similarity: np.ndarray) -> np.ndarray:
    """Eq. 1: number of patches each patch correlates with non-negatively (itself included)."""
    return np.asarray((similarity >= 0).sum(axis=1))


def seed_and_expansion(similarity: np.ndarray, k: int) -> tuple[int, np.ndarray]:
    """Eq. 2-3: the seed (minimal degree) and the set ``S`` of the ``k`` lowest-degree patches
    that correlate positively with it (the seed itself included)."""
    order = np.argsort(degrees(similarity), kind="stable")
    seed = int(order[0])
    candidates = order[:k]
    return seed, candidates[similarity[seed, candidates] > 0]


def lost_patch_mask(
    keys: np.ndarray, grid: tuple[int, int], k: int
) -> tuple[np.ndarray, tuple[int, int]]:
    """(h, w) seed component of the Eq. 4 mask and the seed's (row, col)."""
    f = keys.astype(np.float64)
    similarity = f @ f.T
    seed, expansion = seed_and_expansion(similarity, k)
    mask = (similarity[expansion].sum(axis=0) >= 0).reshape(grid)
    seed_rc = (seed // grid[1], seed % grid[1])
    return component_of(mask, seed_rc), seed_rc


def patch_box(mask: np.ndarray, patch_size: int, size: tuple[int, int]) -> np.ndarray:
    """Tight box of a patch mask in pixels ``[x1, y1, x2, y2]``, clipped to ``size`` (H, W)."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return np.zeros(4)
    box = np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], float) * patch_size
    return np.minimum(box, [size[1], size[0], size[1], size[0]])


class Lost(KeyFeatureMethod):
    """LOST with a timm DINO backbone (hyperparameter ``backbone``); boxes from the seed's
    component, not from the saliency map."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cache: dict[str, LostResult] = {}

    def discover(self, image: np.ndarray) -> LostResult:
        """LOST on one image, remembered for the next :meth:`predict_boxes` of the same pixels."""
        h = hashlib.sha1(repr((image.shape, image.dtype.str)).encode())
        h.update(np.ascontiguousarray(image).tobytes())  # same bytes, other shape: other image
        digest = h.hexdigest()
        cache = self._cache
        if digest not in cache:
            keys = self.keys(image)
            mask, seed = lost_patch_mask(keys.keys, keys.grid, int(self.hparams["k_patches"]))
            box = patch_box(mask, keys.patch_size, image.shape[:2])
            up = upsample_patch_mask(mask, keys.patch_size, image.shape[:2])
            if len(cache) > 64:
                cache.clear()
            cache[digest] = LostResult(up, seed, box)
        return cache[digest]

    def predict(self, images: list[np.ndarray]) -> list[np.ndarray]:
        maps = [self.discover(im).mask.astype(np.float32) for im in images]
        if self.hparams["bilateral_solver"]:
            maps = [bilateral_refine(im, m).astype(np.float32) for im, m in zip(images, maps)]
        return maps

    def predict_boxes(self, images: list[np.ndarray], maps: list[np.ndarray]) -> list[np.ndarray]:
        return [self.discover(im).box for im in images]
