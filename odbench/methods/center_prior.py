"""``center-prior``: an anisotropic Gaussian centred on the image — the weight-free floor row.

Photographers centre their subject (the centre bias the paper's section 4.3.1 measures), so a
map that ignores the pixels entirely already scores well above chance.  Any method worth
reporting must beat it by a clear margin.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from odbench.methods.base import Method


@lru_cache(maxsize=64)
def center_gaussian(height: int, width: int, sigma: float) -> np.ndarray:
    """exp(-(dx² + dy²) / (2 σ²)) with dx, dy the offsets from the centre in units of the image's
    width and height (so the Gaussian stretches with the aspect ratio); float32 in (0, 1].
    Read-only and shared: computed once per size (datasets have few sizes), so the method costs
    almost nothing and ``odbench bench runner`` times the pipeline around it."""
    y = (np.arange(height, dtype=np.float64) + 0.5) / height - 0.5
    x = (np.arange(width, dtype=np.float64) + 0.5) / width - 0.5
    # separable: exp(-dy²/2σ²) · exp(-dx²/2σ²), h + w exponentials instead of h·w; in float32
    # the same map as exp(-(dx² + dy²)/2σ²) on every size of ECSSD, DUTS and COCO (tested)
    gy, gx = np.exp(-(y**2) / (2.0 * sigma**2)), np.exp(-(x**2) / (2.0 * sigma**2))
    out = np.multiply.outer(gy, gx).astype(np.float32)
    out.flags.writeable = False
    return out


class CenterPrior(Method):
    """Anisotropic centred Gaussian; ``sigma`` in units of the image side."""

    in_workers = True

    def predict(self, images: list[np.ndarray]) -> list[np.ndarray]:
        sigma = float(self.hparams["sigma"])
        return [center_gaussian(im.shape[0], im.shape[1], sigma) for im in images]
