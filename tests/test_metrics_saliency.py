"""Saliency metrics and protocols against independent references (brute force, pysodmetrics,
hand-computed cases) and one test per documented protocol quirk."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from odbench.metrics.protocols import (
    BUILTIN_PROTOCOLS,
    MetricInputError,
    Protocol,
    get_protocol,
)
from odbench.metrics.saliency import SaliencyMeter, center_crop_square, codes_k255
from odbench.registry import UnknownNameError

# --------------------------------------------------------------------------- references


def brute_force_odbench(preds: list[np.ndarray], gts: list[np.ndarray]) -> dict[str, float]:
    """The odbench protocol written as plainly as possible: preds are [0, 1] floats, gts bool,
    one explicit loop over the 255 thresholds per image."""
    curves, accs, ious, maes = [], [], [], []
    for p, g in zip(preds, gts):
        curve = []
        for k in range(255):
            fg = p > k / 255
            tp = np.sum(fg & g)
            n_pred, n_gt = np.sum(fg), np.sum(g)
            prec = tp / n_pred if n_pred > 0 else 1.0
            rec = tp / n_gt if n_gt > 0 else 1.0
            f = 0.0 if prec == 0 and rec == 0 else 1.3 * prec * rec / (0.3 * prec + rec)
            curve.append(f)
        curves.append(curve)
        b = p > 0.5
        accs.append(np.mean(b == g))
        union = np.sum(b | g)
        ious.append(1.0 if union == 0 else np.sum(b & g) / union)
        maes.append(np.mean(np.abs(p - g)))
    mean_curve = np.mean(curves, axis=0)
    return {
        "acc": float(np.mean(accs)),
        "iou": float(np.mean(ious)),
        "mae": float(np.mean(maes)),
        "max_fbeta": float(mean_curve.max()),
        "best_threshold": int(np.argmax(mean_curve)) / 255,
        "curve": mean_curve,
    }


def random_gt(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """uint8 GT with soft edges: values all over 0..255, so the >=128 rule matters."""
    gt = np.where(rng.random(shape) < 0.35, 255, 0).astype(np.uint8)
    noisy = rng.random(shape) < 0.2
    gt[noisy] = rng.integers(0, 256, noisy.sum())
    return gt


def run(protocol: str | Protocol, preds, gts) -> tuple[dict, list]:
    meter = SaliencyMeter(protocol)
    records = [meter.update(p, g, str(i)) for i, (p, g) in enumerate(zip(preds, gts))]
    return meter.compute(), records


def assert_matches(result: dict, ref: dict) -> None:
    for key in ("acc", "iou", "mae", "max_fbeta", "best_threshold"):
        assert result[key] == pytest.approx(ref[key], abs=1e-12), key
    np.testing.assert_allclose(result["fbeta_curve"], ref["curve"], atol=1e-12)


# --------------------------------------------------------------------------- odbench protocol


def test_odbench_uint8_matches_brute_force():
    rng = np.random.default_rng(1)
    preds = [rng.integers(0, 256, (17, 23), dtype=np.uint8) for _ in range(6)]
    preds.append(np.zeros((17, 23), np.uint8))  # nothing predicted
    gts = [random_gt(rng, (17, 23)) for _ in range(6)] + [np.zeros((17, 23), np.uint8)]
    result, _ = run("odbench", preds, gts)
    ref = brute_force_odbench([p / 255 for p in preds], [g >= 128 for g in gts])
    assert_matches(result, ref)
    assert result["n_images"] == 7 and result["protocol"] == "odbench"


def test_odbench_uint16_matches_brute_force():
    rng = np.random.default_rng(2)
    preds = [rng.integers(0, 65536, (15, 21), dtype=np.uint16) for _ in range(4)]
    # values exactly on thresholds 257 k and their neighbours
    k = rng.integers(0, 255, (15, 21))
    preds.append((257 * k + rng.integers(-1, 2, k.shape)).clip(0, 65535).astype(np.uint16))
    gts = [random_gt(rng, (15, 21)) for _ in range(5)]
    result, _ = run("odbench", preds, gts)
    ref = brute_force_odbench([p / 65535 for p in preds], [g >= 128 for g in gts])
    assert_matches(result, ref)


def test_odbench_float_exact_at_threshold_boundaries():
    rng = np.random.default_rng(3)
    shape = (19, 13)
    k = rng.integers(0, 256, shape)
    on = k / 255.0
    preds = [
        rng.random(shape),
        on,  # exactly on thresholds: p > k/255 is false
        np.nextafter(on, 2.0).clip(0, 1),  # one ulp above: true
        np.nextafter(on, -1.0).clip(0, 1),  # one ulp below
        rng.random(shape).astype(np.float32),
    ]
    gts = [random_gt(rng, shape) for _ in preds]
    result, _ = run("odbench", preds, gts)
    ref = brute_force_odbench([np.asarray(p, np.float64) for p in preds], [g >= 128 for g in gts])
    assert_matches(result, ref)


def test_codes_agree_with_float_comparison():
    rng = np.random.default_rng(4)
    p = np.concatenate([rng.random(2000), np.arange(256) / 255.0])
    p = np.concatenate([p, np.nextafter(p, 2).clip(0, 1), np.nextafter(p, -1).clip(0, 1)])
    code = codes_k255(p).astype(int)
    # the rounding fact codes_k255 relies on
    k = np.arange(256)
    assert np.all((k / 255.0) * 255.0 == k)
    for k in range(255):
        np.testing.assert_array_equal(code > k, p > k / 255)


def test_hand_computed_2x2():
    gt = np.array([[255, 255], [0, 0]], np.uint8)
    pred = np.array([[255, 0], [255, 0]], np.uint8)
    result, _ = run("odbench", [pred], [gt])
    # TP=1, FP=1, FN=1 at every threshold: P = R = 0.5 -> F = 1.3*0.25/(0.15+0.5) = 0.5
    assert result["max_fbeta"] == pytest.approx(0.5)
    assert result["acc"] == pytest.approx(0.5)
    assert result["iou"] == pytest.approx(1 / 3)
    assert result["mae"] == pytest.approx(0.5)
    # P=1, R=0.5 -> F = 1.3*0.5/(0.3+0.5)
    pred2 = np.array([[255, 0], [0, 0]], np.uint8)
    result2, _ = run("odbench", [pred2], [gt])
    assert result2["max_fbeta"] == pytest.approx(1.3 * 0.5 / 0.8)


def test_empty_gt_precision_and_recall_guards():
    # GT empty: R = 1; thresholds where nothing is predicted: P = 1 -> F = 1;
    # where something is predicted: TP = 0 -> P = 0 -> F = 0.
    gt = np.zeros((3, 3), np.uint8)
    pred = np.zeros((3, 3), np.uint8)
    pred[1, 1] = 100
    _, (rec,) = run("odbench", [pred], [gt])
    expected = np.where(np.arange(255) >= 100, 1.0, 0.0)
    np.testing.assert_array_equal(rec.fbeta, expected)


def test_f_is_zero_not_nan_when_p_and_r_are_zero():
    gt = np.array([[255, 0]], np.uint8)
    pred = np.array([[0, 255]], np.uint8)
    _, (rec,) = run("odbench", [pred], [gt])
    assert np.all(rec.fbeta == 0.0) and not np.any(np.isnan(rec.fbeta))


def test_empty_empty_iou_is_one():
    empty = np.zeros((4, 4), np.uint8)
    result, (rec,) = run("odbench", [empty], [empty])
    assert rec.iou == 1.0 and rec.acc == 1.0 and result["max_fbeta"] == 1.0


def test_16bit_gt_scaled_to_8bit():
    gt = np.array([[32768, 32767]], np.uint16)  # round(v*255/65535) = 128, 127
    pred = np.array([[255, 255]], np.uint8)
    _, (rec,) = run("odbench", [pred], [gt])
    assert rec.acc == 0.5 and rec.iou == 0.5


def test_bilinear_resize_to_gt_size():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(5)
    pred = rng.integers(0, 256, (10, 14), dtype=np.uint8)
    gt = random_gt(rng, (20, 28))
    result, _ = run("odbench", [pred], [gt])
    up = cv2.resize((pred / 255).astype(np.float32), (28, 20), interpolation=cv2.INTER_LINEAR)
    ref = brute_force_odbench([up.astype(np.float64)], [gt >= 128])
    assert_matches(result, ref)


def test_streaming_merge_and_records():
    rng = np.random.default_rng(6)
    preds = [rng.random((9, 11)) for _ in range(6)]
    gts = [random_gt(rng, (9, 11)) for _ in range(6)]
    for name in ("odbench", "selfmask"):
        full, records = run(name, preds, gts)
        a, _ = SaliencyMeter(name), None
        b = SaliencyMeter(name)
        for i in range(3):
            a.update(preds[i], gts[i], str(i))
        for i in range(3, 6):
            b.update(preds[i], gts[i], str(i))
        merged = a.merge(b).compute()
        rebuilt = SaliencyMeter.from_records(name, records).compute()
        for other in (merged, rebuilt):
            for key in ("acc", "iou", "mae", "max_fbeta"):
                assert other[key] == pytest.approx(full[key], abs=1e-12)
    with pytest.raises(ValueError):
        SaliencyMeter("odbench").merge(SaliencyMeter("selfmask"))


def test_bad_inputs():
    meter = SaliencyMeter("tokencut")
    with pytest.raises(MetricInputError, match="does not resize"):
        meter.update(np.zeros((4, 4), np.uint8), np.zeros((5, 4), np.uint8))
    with pytest.raises(MetricInputError, match="NaN"):
        meter.update(np.full((2, 2), np.nan), np.zeros((2, 2), np.uint8))
    with pytest.raises(MetricInputError, match="2-D"):
        meter.update(np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2), np.uint8))
    with pytest.raises(MetricInputError, match="GT"):
        meter.update(np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="no images"):
        SaliencyMeter().compute()


def test_protocol_registry():
    names = {p.name for p in BUILTIN_PROTOCOLS}
    assert names == {"odbench", "tokencut", "voynov", "selfmask", "found", "pysodmetrics"}
    for name in names:
        proto = get_protocol(name)
        assert proto.name == name and proto.description and proto.sources
    with pytest.raises(UnknownNameError, match="Valid: found"):
        get_protocol("tokencutt")
    assert get_protocol("selfmask").effective_beta2 == pytest.approx(0.09)
    with pytest.raises(ValueError, match="gt_rule"):
        Protocol(name="typo", description="", gt_rule="ge_128")  # type: ignore[arg-type]
    custom = Protocol(name="custom", description="odbench with GT > 128", gt_rule="gt128")
    assert SaliencyMeter(custom).protocol is custom


# --------------------------------------------------------------------------- pysodmetrics


def test_pysodmetrics_protocol_matches_package():
    psm = pytest.importorskip("py_sod_metrics")
    rng = np.random.default_rng(7)
    shape = (31, 37)
    preds = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(8)]
    preds.append(rng.integers(40, 90, shape, dtype=np.uint8))  # min-max stretches it
    preds.append(np.full(shape, 77, np.uint8))  # constant: no min-max
    gts = [random_gt(rng, shape) for _ in range(len(preds))]
    gts[1][:] = 128  # exactly 128: background under > 128
    gts[2][:] = 0  # empty GT
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fm, mae = psm.Fmeasure(), psm.MAE()
    for p, g in zip(preds, gts):
        fm.step(pred=p, gt=g)
        mae.step(pred=p, gt=g)
    their_curve = fm.get_results()["fm"]["curve"][::-1]  # theirs: threshold 255 .. 0
    result, _ = run("pysodmetrics", preds, gts)
    np.testing.assert_allclose(result["fbeta_curve"], their_curve, atol=1e-6)
    assert result["max_fbeta"] == pytest.approx(their_curve.max(), abs=1e-6)
    assert result["mae"] == pytest.approx(mae.get_results()["mae"], abs=1e-6)


# --------------------------------------------------------------------------- protocol quirks


def test_tokencut_gt_is_any_nonzero_pixel():
    gt = np.array([[1, 0]], np.uint8)  # value 1: foreground for TokenCut, not for odbench
    pred = np.array([[255, 0]], np.uint8)
    tc, _ = run("tokencut", [pred], [gt])
    od, _ = run("odbench", [pred], [gt])
    assert tc["acc"] == 1.0 and tc["max_fbeta"] == pytest.approx(1.0)
    assert od["acc"] == 0.5 and od["max_fbeta"] == 0.0


def test_tokencut_empty_empty_iou_is_nan_and_propagates():
    empty = np.zeros((3, 3), np.uint8)
    full = np.full((3, 3), 255, np.uint8)
    tc, records = run("tokencut", [empty, full], [empty, full])
    assert math.isnan(records[0].iou) and records[1].iou == 1.0
    assert math.isnan(tc["iou"])
    od, _ = run("odbench", [empty, full], [empty, full])
    assert od["iou"] == 1.0


def test_tokencut_does_not_resize():
    with pytest.raises(MetricInputError):
        run("tokencut", [np.zeros((2, 2), np.uint8)], [np.zeros((4, 4), np.uint8)])


@pytest.mark.parametrize(
    ("shape", "top", "left"),
    [((4, 7), 0, 2), ((4, 9), 0, 2), ((4, 5), 0, 0), ((4, 6), 0, 1), ((9, 4), 2, 0)],
)
def test_center_crop_offsets_follow_torchvision(shape, top, left):
    # torchvision CenterCrop: int(round((w - s) / 2.0)), Python round-half-to-even
    arr = np.arange(shape[0] * shape[1]).reshape(shape)
    s = min(shape)
    np.testing.assert_array_equal(center_crop_square(arr), arr[top : top + s, left : left + s])


def test_voynov_center_crop_and_ge_half():
    gt = np.zeros((4, 8), np.uint8)
    gt[:, :2] = 255  # outside the centred 4x4 square (columns 2..5)
    gt[1:3, 3:5] = 255
    pred = np.zeros((4, 8))
    pred[1:3, 3:5] = 0.5  # exactly 0.5: foreground only with >=
    vo, _ = run("voynov", [pred], [gt])
    od, _ = run("odbench", [pred], [gt])
    assert vo["acc"] == 1.0 and vo["iou"] == 1.0
    assert od["acc"] == pytest.approx(1 - 12 / 32) and od["iou"] == 0.0


def test_voynov_accepts_a_prediction_made_on_the_cropped_image():
    rng = np.random.default_rng(8)
    gt = random_gt(rng, (6, 9))
    full = rng.integers(0, 256, (6, 9), dtype=np.uint8)
    cropped = full[:, 2:8]  # (9 - 6) / 2 = 1.5 -> round -> 2
    a, _ = run("voynov", [full], [gt])
    b, _ = run("voynov", [cropped], [gt])
    assert a == b


def test_selfmask_squares_beta2_again():
    gt = np.array([[255, 255, 0, 0]], np.uint8)
    pred = np.array([[255, 0, 0, 0]], np.uint8)  # P = 1, R = 0.5 at every threshold
    sm, _ = run("selfmask", [pred], [gt])
    od, _ = run("odbench", [pred], [gt])
    eps = 1e-7
    p, r = 1 / (1 + eps), 1 / (2 + eps)
    assert sm["max_fbeta"] == pytest.approx(1.09 * p * r / (0.09 * p + r + eps), abs=1e-12)
    assert od["max_fbeta"] == pytest.approx(1.3 * 0.5 / 0.8, abs=1e-12)


def test_selfmask_max_is_per_image():
    # image A is best at low thresholds, image B at high ones: per-image max > dataset max
    gt = np.array([[255, 255, 0, 0]], np.uint8)
    a = np.array([[60, 60, 30, 30]], np.uint8)
    b = np.array([[250, 250, 200, 200]], np.uint8)
    sm, records = run("selfmask", [a, b], [gt, gt])
    assert sm["max_fbeta"] == pytest.approx(np.mean([r.fbeta.max() for r in records]))
    assert sm["max_fbeta"] > max(sm["fbeta_curve"]) + 0.1
    assert sm["best_threshold"] is None
    od, _ = run("odbench", [a, b], [gt, gt])
    assert od["max_fbeta"] == pytest.approx(max(od["fbeta_curve"]))


def test_selfmask_empty_prediction_and_empty_iou_are_zero():
    empty = np.zeros((3, 3), np.uint8)
    sm, (rec,) = run("selfmask", [empty], [empty])
    assert rec.iou == 0.0 and sm["max_fbeta"] == 0.0
    od, _ = run("odbench", [empty], [empty])
    assert od["max_fbeta"] == 1.0


def test_found_gt_eq255_and_binary_mae():
    gt = np.array([[200, 255, 0, 0]], np.uint8)  # 200: background for FOUND only
    pred = np.array([[0.9, 0.9, 0.3, 0.0]])
    fo, _ = run("found", [pred], [gt])
    sm, _ = run("selfmask", [pred], [gt])
    # FOUND: binarised pred [1,1,0,0] vs GT [0,1,0,0] -> MAE 1/4 (= 1 - Acc)
    assert fo["mae"] == pytest.approx(0.25) and fo["acc"] == pytest.approx(0.75)
    # SelfMask: soft pred vs GT [1,1,0,0] -> (0.1 + 0.1 + 0.3 + 0) / 4
    assert sm["mae"] == pytest.approx(0.125) and sm["acc"] == 1.0


def test_pysodmetrics_gt_128_is_background_and_minmax():
    gt = np.array([[128, 0]], np.uint8)
    pred = np.array([[100, 50]], np.uint8)  # min-max -> [1, 0]
    ps, _ = run("pysodmetrics", [pred], [gt])
    od, _ = run("odbench", [pred], [gt])
    assert ps["acc"] == 0.5 and ps["mae"] == pytest.approx(0.5)  # GT empty, pred [1, 0]
    assert od["acc"] == 0.5 and od["mae"] == pytest.approx((1 - 100 / 255 + 50 / 255) / 2)


def test_level_histogram_opencv_and_numpy_paths_agree(monkeypatch):
    from odbench.metrics import saliency

    rng = np.random.default_rng(31)
    big = rng.integers(0, 256, (60, 90), dtype=np.uint8)
    mask = rng.random((60, 90)) < 0.4
    cases = [(big, mask), (big[5:50:2, 3:70], mask[5:50:2, 3:70]), (big[:1, :1], mask[:1, :1])]
    for pred, gt in cases:
        expected = np.zeros((2, 256), np.int64)
        np.add.at(expected, (gt.astype(int), pred.astype(int)), 1)
        np.testing.assert_array_equal(saliency.level_histogram(pred, gt), expected)
        with monkeypatch.context() as m:
            m.setattr(saliency, "CALCHIST_MAX_PIXELS", 0)  # the numpy path
            np.testing.assert_array_equal(saliency.level_histogram(pred, gt), expected)
