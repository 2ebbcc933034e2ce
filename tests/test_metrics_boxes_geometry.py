"""mask -> box, box IoU, CorLoc and shape geometry (SC, PL, SD) on hand-computed cases."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from odbench.metrics.boxes import CorLocMeter, box_iou, mask_to_box
from odbench.metrics.geometry import (
    chamfer_distance,
    contour_polygon,
    shape_complexity,
    shape_diversity,
)


def test_mask_to_box_continuous_coordinates():
    mask = np.zeros((20, 30), bool)
    mask[3:7, 0:10] = True  # rows 3..6, columns 0..9
    np.testing.assert_array_equal(mask_to_box(mask), [0, 3, 10, 7])


def test_mask_to_box_largest_8_connected_component():
    mask = np.zeros((20, 20), bool)
    mask[0:3, 0:3] = True  # 9 pixels
    # diagonal staircase of 12 pixels: one component only with 8-connectivity
    for i in range(12):
        mask[5 + i % 12, 5 + i] = True
    np.testing.assert_array_equal(mask_to_box(mask), [5, 5, 17, 17])
    assert mask_to_box(np.zeros((4, 4), bool)).tolist() == [0, 0, 0, 0]


def test_box_iou_hand_cases():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[5, 0, 15, 10], [0, 0, 10, 10], [20, 20, 30, 30], [3, 3, 3, 8]])
    np.testing.assert_allclose(box_iou(a, b), [[1 / 3, 1.0, 0.0, 0.0]])
    assert box_iou(b, a).shape == (4, 1)
    zero = np.zeros((1, 4))
    assert box_iou(zero, zero)[0, 0] == 0.0


def test_corloc_with_misses_and_ge_threshold():
    meter = CorLocMeter()
    assert meter.update([0, 0, 10, 10], [[0, 0, 10, 20]], "half")  # IoU exactly 0.5: hit
    assert not meter.update([0, 0, 10, 10], [[0, 0, 10, 26]], "low")  # IoU 10/26
    assert meter.update([0, 0, 10, 10], [[50, 50, 60, 60], [1, 1, 10, 10]], "any")
    assert not meter.update(None, [[0, 0, 5, 5]], "missing")
    assert not meter.update(mask_to_box(np.zeros((3, 3))), [[0, 0, 0, 0]], "empty")
    result = meter.compute()
    assert result == {"corloc": pytest.approx(40.0), "hits": 2, "n_images": 5, "n_no_gt": 0}
    with pytest.raises(ValueError):
        CorLocMeter().compute()


def test_square_and_rectangle_normalise_to_unit_square():
    for h, w in ((10, 10), (7, 30)):
        mask = np.zeros((40, 50), np.uint8)
        mask[5 : 5 + h, 8 : 8 + w] = 255
        poly = contour_polygon(mask)
        assert sorted(map(tuple, poly.tolist())) == [(0, 0), (0, 1), (1, 0), (1, 1)]
        sc, pl = shape_complexity(mask)
        assert sc == 4 and pl == pytest.approx(4.0)


def test_triangle_and_largest_contour():
    cv2 = pytest.importorskip("cv2")
    mask = np.zeros((120, 120), np.uint8)
    cv2.fillPoly(mask, [np.array([[10, 90], [90, 90], [50, 10]], np.int32)], 1)
    mask[100:103, 100:103] = 1  # small second component, ignored
    sc, pl = shape_complexity(mask)
    assert sc == 3
    assert pl == pytest.approx(1 + 2 * np.hypot(0.5, 1.0), abs=1e-6)
    assert shape_complexity(np.zeros((5, 5))) == (0, 0.0)


def test_chamfer_and_shape_diversity():
    a, b = np.array([[0.0, 0.0]]), np.array([[1.0, 0.0]])
    assert chamfer_distance(a, b) == pytest.approx(2.0)
    c = np.array([[0.0, 0.0], [0.0, 2.0]])
    # a->c: 0; c->a: 0 + 4
    assert chamfer_distance(a, c) == pytest.approx(4.0)
    assert shape_diversity([a, b, c]) == pytest.approx((2.0 + 4.0 + (1 + 1 + 5)) / 3)
    assert shape_diversity([c, c]) == 0.0
    with pytest.raises(ValueError):
        shape_diversity([a, np.zeros((0, 2))])


def test_shape_diversity_matches_pairwise_and_samples_reproducibly():
    rng = np.random.default_rng(0)
    polys = [rng.random((rng.integers(3, 9), 2)) for _ in range(9)]
    ref = np.mean([chamfer_distance(p, q) for p, q in itertools.combinations(polys, 2)])
    assert shape_diversity(polys) == pytest.approx(ref, rel=1e-12)
    sampled = shape_diversity(polys, max_shapes=3, seed=1)
    assert sampled == shape_diversity(polys, max_shapes=3, seed=1)
    subsets = [
        np.mean([chamfer_distance(p, q) for p, q in itertools.combinations(trio, 2)])
        for trio in itertools.combinations(polys, 3)
    ]
    assert min(abs(sampled - s) for s in subsets) < 1e-12
