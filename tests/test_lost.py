"""LOST: seed and expansion on planted similarities (brute force), box, and the tiny-ViT real path."""

from __future__ import annotations

import numpy as np

from odbench.methods.base import create_method
from odbench.methods.lost import degrees, lost_patch_mask, patch_box, seed_and_expansion

TINY = "dino-tiny"


def test_seed_is_the_patch_of_minimal_degree_on_a_planted_similarity() -> None:
    rng = np.random.default_rng(0)
    n = 40
    s = rng.standard_normal((n, n))
    s = s + s.T
    np.fill_diagonal(s, 1.0)
    s[7, :] = s[:, 7] = -1.0  # patch 7 correlates with nobody but itself
    s[7, 7] = 1.0
    brute = [sum(s[p, q] >= 0 for q in range(n)) for p in range(n)]
    assert list(degrees(s)) == brute
    seed, expansion = seed_and_expansion(s, k=10)
    assert seed == 7 and int(np.argmin(brute)) == 7
    assert list(expansion) == [7]  # no other low-degree patch correlates with it


def test_expansion_keeps_low_degree_patches_correlated_with_the_seed() -> None:
    # 20 background patches (one direction), 6 object patches (another), one odd patch.
    rng = np.random.default_rng(1)
    e = np.linalg.qr(rng.standard_normal((16, 2)))[0].T
    bg, fg = e[0], e[1] - 0.3 * e[0]  # object keys anti-correlated with background
    odd = -e[0] - e[1]  # anti-correlated with both
    keys = np.vstack([np.tile(bg, (20, 1)), np.tile(fg, (6, 1)), odd[None]])
    keys += 0.01 * rng.standard_normal(keys.shape)
    s = keys @ keys.T
    seed, expansion = seed_and_expansion(s, k=8)
    assert seed == 26  # the odd patch: correlates with itself only
    assert set(expansion) == {26}
    seed, expansion = seed_and_expansion(s[:26, :26], k=8)
    assert 20 <= seed < 26 and set(expansion) == set(range(20, 26))


def test_lost_mask_and_box_on_planted_keys() -> None:
    rng = np.random.default_rng(2)
    grid = (10, 12)
    obj = np.zeros(grid, bool)
    obj[2:5, 6:10] = True
    bg, fg = rng.standard_normal((2, 32))
    fg -= fg @ bg / (bg @ bg) * bg + 0.3 * bg  # object keys anti-correlated with background
    keys = np.where(obj.ravel()[:, None], fg, bg) + 0.05 * rng.standard_normal((obj.size, 32))
    mask, seed = lost_patch_mask(keys, grid, k=100)
    assert obj[seed] and np.array_equal(mask, obj)
    box = patch_box(mask, 16, (150, 180))
    np.testing.assert_array_equal(box, [96, 32, 160, 80])
    # clipped to an image that ends inside the last patch
    np.testing.assert_array_equal(patch_box(mask, 16, (70, 150)), [96, 32, 150, 70])


def test_lost_real_path_on_tiny_vit_boxes_agree_with_masks() -> None:
    from odbench.metrics.boxes import mask_to_box

    method = create_method("lost", backbone=TINY)
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, s, dtype=np.uint8) for s in [(70, 90, 3), (64, 48, 3)]]
    maps = method.predict(images)
    boxes = method.predict_boxes(images, maps)
    for im, m, box in zip(images, maps, boxes):
        assert m.shape == im.shape[:2] and m.dtype == np.float32 and m.max() == 1.0
        np.testing.assert_allclose(box, mask_to_box(m > 0.5))
    from odbench.methods.bilateral_solver import bilateral_refine

    bs = create_method("lost", backbone=TINY, bilateral_solver=True)
    refined = bs.predict(images)  # the +BS maps are LOST's maps refined; the boxes stay LOST's
    for im, m, r in zip(images, maps, refined):
        assert np.abs(r - m).max() > 1e-3
        np.testing.assert_allclose(r, bilateral_refine(im, m), atol=1e-6)
    np.testing.assert_allclose(bs.predict_boxes(images, maps), boxes)


def test_images_with_the_same_bytes_but_other_shapes_are_not_confused() -> None:
    """Blank 48 x 64 and 64 x 48 images have identical bytes; each gets a map of its own size."""
    method = create_method("lost", backbone=TINY)
    images = [np.zeros((48, 64, 3), np.uint8), np.zeros((64, 48, 3), np.uint8)]
    maps = method.predict(images)
    assert [m.shape for m in maps] == [(48, 64), (64, 48)]
    for im, box in zip(images, method.predict_boxes(images, maps)):
        assert box[2] <= im.shape[1] and box[3] <= im.shape[0]
