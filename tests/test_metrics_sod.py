"""The salient-object family (S, E, weighted F, adaptive / mean F, Dice, BER, ROC AUC) against
PySODMetrics on shared edge cases, against brute-force pixel formulas, and the protocol
differences (odbench vs pysodmetrics) it documents."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from odbench.metrics.protocols import get_protocol
from odbench.metrics.saliency import SaliencyMeter
from odbench.metrics.sod import (
    EPS,
    SOD_KEYS,
    SodMeter,
    e_measure_from_counts,
    roc_auc,
    s_measure,
    score_image_all,
    weighted_fbeta,
)

TOL = 1e-10


def score_all(protocol: str, pairs) -> tuple[dict, list]:
    """Run both meters over the pairs, as ``odbench score --metrics all`` does."""
    base, family = SaliencyMeter(protocol), SodMeter(protocol)
    records = []
    for i, (p, g) in enumerate(pairs):
        rec, sod = score_image_all(p, g, base.protocol, str(i))
        base.add(rec)
        family.add(sod)
        records.append(sod)
    out = base.compute()
    out.update(family.compute(out["fbeta_curve"]))
    return out, records


def pysod_reference(pairs) -> dict[str, float]:
    """The same numbers from PySODMetrics' own classes (AUC: trapezoid over its mean TPR/FPR
    curves with (0, 0) and (1, 1) added)."""
    psm = pytest.importorskip("py_sod_metrics")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Fmeasure deprecation, empty-slice warnings
        sm, em, wfm, fm, mae = (
            psm.Smeasure(),
            psm.Emeasure(),
            psm.WeightedFmeasure(),
            psm.Fmeasure(),
            psm.MAE(),
        )
        v2 = psm.FmeasureV2(
            {
                "dice": psm.DICEHandler(False, False, with_binary=True),
                "ber": psm.BERHandler(False, False, with_binary=True),
                "tpr": psm.TPRHandler(True, False),
                "fpr": psm.FPRHandler(True, False),
            }
        )
        for p, g in pairs:
            for m in (sm, em, wfm, fm, mae, v2):
                m.step(pred=p, gt=g)
        e, f, v = em.get_results()["em"], fm.get_results()["fm"], v2.get_results()
    tpr, fpr = v["tpr"]["dynamic"], v["fpr"]["dynamic"]  # thresholds 255 .. 0: FPR ascends
    x, y = np.r_[0.0, fpr, 1.0], np.r_[0.0, tpr, 1.0]
    return {
        "s_measure": float(sm.get_results()["sm"]),
        "e_measure_adaptive": float(e["adp"]),
        "e_measure_mean": float(e["curve"].mean()),
        "e_measure_max": float(e["curve"].max()),
        "weighted_fbeta": float(wfm.get_results()["wfm"]),
        "adaptive_fbeta": float(f["adp"]),
        "mean_fbeta": float(f["curve"].mean()),
        "max_fbeta": float(f["curve"].max()),
        "dice": float(v["dice"]["binary"]),
        "ber": float(v["ber"]["binary"]),
        "mae": float(mae.get_results()["mae"]),
        "auc_roc": float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2)),
    }


def blob(shape: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    g = np.zeros(shape, np.uint8)
    g[box[0] : box[1], box[2] : box[3]] = 255
    return g


def soft(rng: np.random.Generator, gt: np.ndarray) -> np.ndarray:
    """A plausible map: GT plus noise, values everywhere."""
    return np.clip(gt * 0.6 + rng.normal(60, 40, gt.shape), 0, 255).astype(np.uint8)


def edge_cases() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(11)
    shape = (37, 53)  # odd sizes
    g = blob(shape, (8, 30, 10, 41))
    anti_aliased = g.copy()
    anti_aliased[8, 10:41] = 128  # exactly 128: background under > 128
    anti_aliased[29, 10:41] = 129
    return {
        "random": (rng.integers(0, 256, shape, dtype=np.uint8), g),
        "soft": (soft(rng, g), anti_aliased),
        "narrow_range": (rng.integers(90, 140, shape, dtype=np.uint8), g),  # min-max stretches
        "empty_gt": (soft(rng, g), np.zeros(shape, np.uint8)),
        "full_gt": (rng.integers(0, 256, shape, dtype=np.uint8), np.full(shape, 255, np.uint8)),
        "empty_pred": (np.zeros(shape, np.uint8), g),
        "constant_pred": (np.full(shape, 77, np.uint8), g),
        "binary_pred": (blob(shape, (10, 33, 5, 38)), g),
        "perfect": (g.copy(), g),
        "one_pixel_gt": (soft(rng, g), blob(shape, (3, 4, 7, 8))),
        "tiny_1x5": (rng.integers(0, 256, (1, 5), dtype=np.uint8), blob((1, 5), (0, 1, 1, 3))),
        "odd_3x2": (rng.integers(0, 256, (3, 2), dtype=np.uint8), blob((3, 2), (0, 2, 0, 1))),
    }


@pytest.mark.parametrize("case", sorted(edge_cases()))
def test_agrees_with_pysodmetrics_per_case(case):
    pair = edge_cases()[case]
    ref = pysod_reference([pair])
    ours, _ = score_all("pysodmetrics", [pair])
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value, abs=TOL, nan_ok=True), key


def test_agrees_with_pysodmetrics_on_a_dataset_of_all_cases():
    # all but the 1-row case, whose S is NaN under pysodmetrics (empty region; tested below)
    pairs = [pair for name, pair in edge_cases().items() if name != "tiny_1x5"]
    rng = np.random.default_rng(12)
    for _ in range(6):
        shape = tuple(int(s) for s in rng.integers(20, 60, 2))
        g = np.where(rng.random(shape) < rng.random(), 255, 0).astype(np.uint8)
        pairs.append((rng.integers(0, 256, shape, dtype=np.uint8), g))
    ref = pysod_reference(pairs)
    ours, _ = score_all("pysodmetrics", pairs)
    assert set(SOD_KEYS) <= set(ours)
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value, abs=TOL), key


def test_16bit_maps_score_as_their_8bit_values():
    cases = edge_cases()
    pairs8 = [cases[k] for k in ("random", "soft", "narrow_range", "binary_pred")]
    pairs16 = [(p.astype(np.uint16) * 257, g.astype(np.uint16) * 257) for p, g in pairs8]
    for protocol in ("pysodmetrics", "odbench"):
        a, _ = score_all(protocol, pairs8)
        b, _ = score_all(protocol, pairs16)
        for key in (*SOD_KEYS, "mae", "max_fbeta"):
            assert b[key] == pytest.approx(a[key], abs=TOL), (protocol, key)


# --------------------------------------------------------------------------- brute force


def brute_e_measure(fm: np.ndarray, gt: np.ndarray) -> float:
    """Fan et al. 2018 written per pixel: demean, align, enhance, sum / (N - 1 + eps)."""
    if not gt.any():
        return float(np.sum(~fm)) / (gt.size - 1 + EPS)
    if gt.all():
        return float(np.sum(fm)) / (gt.size - 1 + EPS)
    a = fm.astype(float) - fm.mean()
    b = gt.astype(float) - gt.mean()
    align = 2 * a * b / (a * a + b * b + EPS)
    return float(np.sum((align + 1) ** 2 / 4)) / (gt.size - 1 + EPS)


def test_e_measure_counts_match_per_pixel_formula():
    rng = np.random.default_rng(13)
    for frac in (0.0, 0.2, 0.7, 1.0):
        gt = rng.random((23, 29)) < frac
        p = rng.random((23, 29))
        for t in (0.0, 0.3, 0.99, 1.1):
            fm = p > t
            tp, fp = np.sum(fm & gt), np.sum(fm & ~gt)
            ours = float(e_measure_from_counts(tp, fp, int(gt.sum()), gt.size))
            assert ours == pytest.approx(brute_e_measure(fm, gt), abs=1e-12), (frac, t)


def test_odbench_protocol_curves_match_explicit_thresholds():
    """Under odbench: GT >= 128, p = v/255 with no min-max, foreground = p > k/255."""
    rng = np.random.default_rng(14)
    g = blob((31, 41), (5, 20, 8, 30))
    g[5, 8:30] = 128  # foreground under >= 128
    p = soft(rng, g)
    out, (rec,) = score_all("odbench", [(p, g)])
    gt, x = g >= 128, p / 255.0
    e_curve = [brute_e_measure(x > k / 255, gt) for k in range(255)]
    np.testing.assert_allclose(rec.e_curve, e_curve, atol=1e-12)
    assert out["e_measure_max"] == pytest.approx(max(e_curve), abs=1e-12)
    assert out["e_measure_mean"] == pytest.approx(np.mean(e_curve), abs=1e-12)
    tpr = [np.sum((x > k / 255) & gt) / gt.sum() for k in range(255)]
    fpr = [np.sum((x > k / 255) & ~gt) / (~gt).sum() for k in range(255)]
    np.testing.assert_allclose(rec.recall, tpr, atol=1e-12)
    np.testing.assert_allclose(rec.fpr, fpr, atol=1e-12)
    thr = min(2 * x.mean(), 1.0)
    fg = x >= thr
    assert rec.e_measure_adaptive == pytest.approx(brute_e_measure(fg, gt), abs=1e-12)
    prec, recall = np.sum(fg & gt) / fg.sum(), np.sum(fg & gt) / gt.sum()
    f_adp = 1.3 * prec * recall / (0.3 * prec + recall)
    assert rec.adaptive_fbeta == pytest.approx(f_adp, abs=1e-12)
    b = x > 0.5
    tp, fp, fn = np.sum(b & gt), np.sum(b & ~gt), np.sum(~b & gt)
    assert rec.dice == pytest.approx(2 * tp / (2 * tp + fp + fn), abs=1e-12)
    tnr = np.sum(~b & ~gt) / (~gt).sum()
    assert rec.ber == pytest.approx(1 - (tp / gt.sum() + tnr) / 2, abs=1e-12)
    assert out["mean_fbeta"] == pytest.approx(np.mean(out["fbeta_curve"]), abs=1e-15)


def test_odbench_guards_for_empty_cases():
    empty = np.zeros((6, 7), np.uint8)
    full = np.full((6, 7), 255, np.uint8)
    _, (od,) = score_all("odbench", [(empty, empty)])
    _, (ps,) = score_all("pysodmetrics", [(empty, empty)])
    # nothing to find, nothing found: odbench's P = R = 1 guards; pysodmetrics' 0/0 -> 0
    assert od.dice == 1.0 and od.ber == 0.0
    assert ps.dice == 0.0 and ps.ber == 0.5
    # GT full, prediction full: every pixel right under both (TNR of an empty class)
    _, (od_full,) = score_all("odbench", [(full, full)])
    assert od_full.dice == 1.0 and od_full.ber == 0.0 and od_full.s_measure == 1.0
    assert od.s_measure == 1.0 and od.weighted_fbeta == 0.0  # wF of an empty GT is 0


def test_s_measure_hand_computed_and_bounds():
    gt = np.zeros((4, 4), bool)
    gt[:2, :2] = True
    assert s_measure(gt.astype(float), gt) == pytest.approx(1.0, abs=1e-9)
    # the inverse map: S_o = 0; the four regions are constant in both maps, and the reference
    # code's SSIM is 1 when α = β = 0 (even for 0 vs 1): S = 0.5 · 0 + 0.5 · 1
    assert s_measure(1.0 - gt, gt) == 0.5
    rng = np.random.default_rng(17)
    x = rng.random((4, 4))
    y, fg, bg = 0.25, x[gt], 1 - x[~gt]
    so = [2 * v.mean() / (v.mean() ** 2 + 1 + v.std(ddof=1) + EPS) for v in (fg, bg)]
    s_o = y * so[0] + (1 - y) * so[1]
    lt = x[:2, :2]  # centroid (0.5, 0.5) rounds to 1: regions are the four 2x2 blocks
    mx, sx = lt.mean(), np.sum((lt - lt.mean()) ** 2) / (3 + EPS)
    # lt: GT all 1 (σ_y = σ_xy = 0) -> α = 0, β > 0 -> 0; other blocks: GT all 0 -> α = 0,
    # β = x̄² σ_x > 0 -> 0; so S_r = 0
    assert mx > 0 and sx > 0
    assert s_measure(x, gt) == pytest.approx(max(0.0, 0.5 * s_o), abs=1e-12)
    assert s_measure(np.full((4, 4), 0.25), np.zeros((4, 4), bool)) == 0.75
    assert s_measure(np.full((4, 4), 0.25), np.ones((4, 4), bool)) == 0.25


def test_s_measure_centroid_rounding_is_the_protocols():
    # GT pixels in columns 0 and 5 (row 0 and 1): centroid column 2.5 -> MATLAB 3, numpy 2
    gt = np.zeros((6, 8), bool)
    gt[0:2, 0] = gt[0:2, 5] = True
    rng = np.random.default_rng(15)
    x = rng.random((6, 8))
    away = s_measure(x, gt, centroid_round="half_away")
    even = s_measure(x, gt, centroid_round="half_even")
    assert away != pytest.approx(even, abs=1e-6)
    g8 = gt.astype(np.uint8) * 255
    p8 = (x * 255).astype(np.uint8)
    _, (ps,) = score_all("pysodmetrics", [(p8, g8)])
    assert ps.s_measure == pytest.approx(pysod_reference([(p8, g8)])["s_measure"], abs=TOL)


def test_s_measure_empty_region_nan_only_under_pysodmetrics():
    # the only GT pixel is in the last row: the centroid row is h, two regions are empty
    g = np.zeros((5, 6), np.uint8)
    g[4, 2] = 255
    p = np.random.default_rng(16).integers(0, 256, (5, 6), dtype=np.uint8)
    _, (ps,) = score_all("pysodmetrics", [(p, g)])
    _, (od,) = score_all("odbench", [(p, g)])
    assert math.isnan(ps.s_measure)
    assert math.isnan(pysod_reference([(p, g)])["s_measure"])  # what pysodmetrics does
    assert 0.0 <= od.s_measure <= 1.0


def test_weighted_fbeta_limits():
    g = blob((30, 40), (5, 20, 8, 30)) > 0
    assert weighted_fbeta(g.astype(float), g) == pytest.approx(1.0, abs=1e-9)
    assert weighted_fbeta(1.0 - g, g) == pytest.approx(0.0, abs=1e-9)
    assert weighted_fbeta(np.zeros(g.shape), np.zeros(g.shape, bool)) == 0.0
    # an error far from the object costs more than the same error near it (pixel importance)
    near, far = g.astype(float), g.astype(float)
    near[21, 15] = far[29, 39] = 1.0
    assert weighted_fbeta(near, g) > weighted_fbeta(far, g)


def test_roc_auc():
    assert roc_auc(np.array([0.0]), np.array([1.0])) == 1.0  # perfect separation
    assert roc_auc(np.array([0.25, 0.5]), np.array([0.25, 0.5])) == 0.5  # chance
    assert roc_auc(np.array([0.5, 0.0]), np.array([1.0, 0.5])) == pytest.approx(0.875)
    g = blob((20, 20), (5, 15, 5, 15))
    out, _ = score_all("odbench", [(g, g)])
    assert out["auc_roc"] == 1.0
    out, _ = score_all("odbench", [(255 - g, g)])
    assert out["auc_roc"] == 0.0


def test_meter_merge_and_records():
    pairs = list(edge_cases().values())[:6]
    full, records = score_all("odbench", pairs)
    a, b = SodMeter("odbench"), SodMeter("odbench")
    for i, (p, g) in enumerate(pairs):
        (a if i < 3 else b).update(p, g, str(i))
    merged = a.merge(b).compute()
    rebuilt = SodMeter.from_records("odbench", records).compute()
    for other in (merged, rebuilt):
        for key in SOD_KEYS:
            if key != "mean_fbeta":
                assert other[key] == pytest.approx(full[key], abs=1e-14), key
    with pytest.raises(ValueError):
        SodMeter("odbench").merge(SodMeter("pysodmetrics"))
    with pytest.raises(ValueError, match="no images"):
        SodMeter().compute()
    assert get_protocol("pysodmetrics").s_centroid_round == "half_even"


def test_nearest_object_pixel_and_distances_equal_scipys_transform():
    from scipy.ndimage import distance_transform_edt

    from odbench.metrics.sod import nearest_object_pixel, squared_distance_to_object

    rng = np.random.default_rng(18)
    n_ties = 0
    for _ in range(40):
        shape = (int(rng.integers(3, 40)), int(rng.integers(3, 40)))
        gt = rng.random(shape) < rng.random() * 0.3
        if not gt.any():
            continue
        dist, (iy, ix) = distance_transform_edt(~gt, return_indices=True)
        d2 = squared_distance_to_object(gt)
        np.testing.assert_array_equal(np.sqrt(d2), dist)  # bit for bit
        ys, xs = np.nonzero(~gt & (d2 <= 18))
        ny, nx = nearest_object_pixel(gt, ys, xs, d2[ys, xs])
        np.testing.assert_array_equal(ny, iy[ys, xs])
        np.testing.assert_array_equal(nx, ix[ys, xs])
        fy, fx = np.nonzero(gt)
        for y, x in zip(ys[:50], xs[:50]):
            n_ties += np.sum((fy - y) ** 2 + (fx - x) ** 2 == d2[y, x]) > 1
    assert n_ties > 100  # the tie rule was exercised
