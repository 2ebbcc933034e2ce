"""The bilateral solver (Barron & Poole 2016) behind the "+BS" rows."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import binary_dilation

from odbench.methods.bilateral_solver import bilateral_solve


def _scene(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:96, 0:128]
    cy, cx = rng.uniform(35, 60), rng.uniform(45, 80)
    mask = (yy - cy) ** 2 / 30**2 + (xx - cx) ** 2 / 35**2 < 1
    fg, bg = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    while np.linalg.norm(fg - bg) < 100:  # a visible colour edge
        bg = rng.integers(0, 256, 3)
    img = np.where(mask[..., None], fg, bg) + rng.normal(0, 6, (96, 128, 3))
    return mask, np.clip(img, 0, 255).astype(np.uint8)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_constant_target_is_a_fixed_point() -> None:
    _, img = _scene(0)
    out = bilateral_solve(img, np.full((96, 128), 0.3), np.ones((96, 128)))
    np.testing.assert_allclose(out, 0.3, atol=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_snaps_a_dilated_noisy_mask_to_the_colour_edge(seed: int) -> None:
    mask, img = _scene(seed)
    rng = np.random.default_rng(seed + 10)
    target = binary_dilation(mask, iterations=5) + rng.normal(0, 0.2, mask.shape)
    out = bilateral_solve(img, target, np.ones_like(target))
    assert _iou(out > 0.5, mask) > _iou(target > 0.5, mask) + 0.15
    assert _iou(out > 0.5, mask) > 0.95


def test_zero_confidence_pixels_follow_their_neighbours() -> None:
    mask, img = _scene(1)
    target = mask.astype(float)
    conf = np.ones_like(target)
    conf[40:50, 50:70] = 0.0
    target[40:50, 50:70] = 1.0 - target[40:50, 50:70]  # wrong but unconfident
    out = bilateral_solve(img, target, conf)
    np.testing.assert_array_equal(out[40:50, 50:70] > 0.5, mask[40:50, 50:70])


def test_shape_mismatch_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match="same height and width"):
        bilateral_solve(np.zeros((4, 5, 3), np.uint8), np.zeros((4, 4)), np.ones((4, 4)))
