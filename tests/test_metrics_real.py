"""Metrics on real masks (ECSSD, DUTS-TR-1k from ../shared/data): anti-aliased GT edges, an RGB
mask, real shapes.  Skipped when the data folder is absent."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from realdata import REAL_DATA
from test_metrics_saliency import brute_force_odbench  # tests/ is on sys.path (rootdir)

from odbench.imageio import read_gray
from odbench.metrics.geometry import chamfer_distance, contour_polygon, shape_diversity
from odbench.metrics.protocols import BUILTIN_PROTOCOLS
from odbench.metrics.saliency import SaliencyMeter

DATA = REAL_DATA


def masks(folder: str, n: int) -> list[np.ndarray]:
    root = DATA / folder
    if not root.is_dir():
        pytest.skip(f"real data not available at {root}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DUTS-TR ships one mask as RGB
        return [read_gray(p) for p in sorted(root.glob("*.png"))[:n]]


def soft_prediction(mask: np.ndarray, seed: int) -> np.ndarray:
    """A plausible saliency map: the mask shifted, blurred and noised."""
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(seed)
    shifted = np.roll(
        mask.astype(np.float32), (rng.integers(-15, 15), rng.integers(-15, 15)), (0, 1)
    )
    blurred = cv2.GaussianBlur(shifted, (0, 0), sigmaX=6)
    noisy = blurred + rng.normal(0, 20, mask.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def test_pysodmetrics_protocol_on_real_duts_masks():
    psm = pytest.importorskip("py_sod_metrics")
    gts = masks("DUTS-TR-1k/DUTS-TR-Mask", 12)
    preds = [soft_prediction(g, i) for i, g in enumerate(gts)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fm, mae = psm.Fmeasure(), psm.MAE()
    meter = SaliencyMeter("pysodmetrics")
    for i, (p, g) in enumerate(zip(preds, gts)):
        fm.step(pred=p, gt=g)
        mae.step(pred=p, gt=g)
        meter.update(p, g, str(i))
    result = meter.compute()
    np.testing.assert_allclose(
        result["fbeta_curve"], fm.get_results()["fm"]["curve"][::-1], atol=1e-6
    )
    assert result["mae"] == pytest.approx(mae.get_results()["mae"], abs=1e-6)


def test_odbench_protocol_on_real_masks_matches_brute_force():
    gts = masks("DUTS-TR-1k/DUTS-TR-Mask", 3)
    preds = [soft_prediction(g, 10 + i) for i, g in enumerate(gts)]
    preds[1] = preds[1].astype(np.uint16) * 257 + 100  # a 16-bit map, off the 8-bit grid
    meter = SaliencyMeter("odbench")
    for i, (p, g) in enumerate(zip(preds, gts)):
        meter.update(p, g, str(i))
    result = meter.compute()
    units = [p / (255.0 if p.dtype == np.uint8 else 65535.0) for p in preds]
    ref = brute_force_odbench(units, [g >= 128 for g in gts])
    for key in ("acc", "iou", "mae", "max_fbeta"):
        assert result[key] == pytest.approx(ref[key], abs=1e-12), key


def test_gt_scores_perfectly_against_itself_under_every_protocol():
    gts = masks("ECSSD/ground_truth_mask", 10)
    for proto in BUILTIN_PROTOCOLS:
        meter = SaliencyMeter(proto)
        for i, g in enumerate(gts):
            meter.update(g, g, str(i))
        result = meter.compute()
        assert result["acc"] == 1.0 and result["mae"] == 0.0, proto.name
        assert result["iou"] == pytest.approx(1.0, abs=1e-6), proto.name
        assert result["max_fbeta"] == pytest.approx(1.0, abs=1e-6), proto.name


def test_shape_diversity_on_real_polygons_matches_pairwise():
    polys = [contour_polygon(m >= 128) for m in masks("ECSSD/ground_truth_mask", 25)]
    assert all(len(p) >= 3 and p.min() == 0.0 and p.max() == 1.0 for p in polys)
    ref = np.mean([chamfer_distance(a, b) for a, b in itertools.combinations(polys, 2)])
    assert shape_diversity(polys) == pytest.approx(ref, rel=1e-9)
