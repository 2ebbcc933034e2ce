"""The uint16 fast path of the saliency metrics (what ``eval`` stores and scores): the same
counts as the per-pixel path on every input and protocol, and the exact soft MAE."""

from __future__ import annotations

import math
from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest

from odbench.metrics import levels16, saliency
from odbench.metrics.protocols import ODBENCH, PROTOCOLS, Protocol, get_protocol
from odbench.metrics.sod import score_image_all

DTYPE_MAX = ("odbench", "tokencut", "voynov", "selfmask", "found")
CUSTOM = (
    replace(ODBENCH, name="ge_0.3", binarize_op=">=", binarize_at=0.3),
    replace(ODBENCH, name="gt_1/65535", binarize_at=1 / 65535),
    replace(ODBENCH, name="ge_1", binarize_op=">=", binarize_at=1.0),
    replace(ODBENCH, name="q256_grid", grid="ge_q256"),
    replace(ODBENCH, name="gt_1", binarize_at=1.0),  # nothing positive
    replace(ODBENCH, name="minmax_k255", pred_norm="minmax"),
    replace(ODBENCH, name="minmax_ge_half", pred_norm="minmax", binarize_op=">="),
)


def all_protocols() -> list[Protocol]:
    return [get_protocol(name) for name in PROTOCOLS.names()] + list(CUSTOM)


def per_pixel(monkeypatch: pytest.MonkeyPatch, fn, *args):
    """``fn(*args)`` with the uint16 fast path switched off."""
    with monkeypatch.context() as m:
        m.setattr(saliency, "_counts_uint16", lambda *a: None)
        return fn(*args)


def cases() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, uint16 prediction, bool GT) pairs: every level, ties at 0.5 and at the
    thresholds 257 k, constant maps, empty / full GT, odd sizes, non-contiguous arrays."""
    rng = np.random.default_rng(25)
    every = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    ties = rng.choice(
        np.array([32767, 32768, 0, 65535, 256, 257, 258, 65278, 65279], np.uint16), (37, 41)
    )
    k = rng.integers(0, 256, (29, 31))
    on_thresholds = (257 * k + rng.integers(-1, 2, k.shape)).clip(0, 65535).astype(np.uint16)
    wide = rng.integers(0, 65536, (40, 2 * 57 + 1), dtype=np.uint16)
    out = [
        ("every_level", every, rng.random(every.shape) < 0.5),
        ("every_level_empty_gt", every, np.zeros(every.shape, bool)),
        ("every_level_full_gt", every, np.ones(every.shape, bool)),
        ("ties_at_half", ties, rng.random(ties.shape) < 0.3),
        ("on_thresholds", on_thresholds, rng.random(k.shape) < 0.6),
        ("constant_half", np.full((9, 13), 32768, np.uint16), rng.random((9, 13)) < 0.5),
        ("constant_below_half", np.full((9, 13), 32767, np.uint16), rng.random((9, 13)) < 0.5),
        ("constant_zero_empty_gt", np.zeros((5, 3), np.uint16), np.zeros((5, 3), bool)),
        ("constant_max_full_gt", np.full((3, 5), 65535, np.uint16), np.ones((3, 5), bool)),
        ("one_pixel", np.array([[40000]], np.uint16), np.array([[True]])),
        ("tiny_1x4", np.array([[0, 32767, 32768, 65535]], np.uint16), np.array([[1, 0, 1, 0]]) > 0),
        (
            "tiny_4x1",
            np.array([[0, 32768, 40000, 65535]], np.uint16).T,
            np.array([[1, 1, 0, 0]]).T > 0,
        ),
        ("tiny_4x4", rng.integers(0, 65536, (4, 4), dtype=np.uint16), rng.random((4, 4)) < 0.5),
        ("tiny_2x8", rng.integers(0, 65536, (2, 8), dtype=np.uint16), rng.random((2, 8)) < 0.5),
        ("odd_1x7", rng.integers(0, 65536, (1, 7), dtype=np.uint16), rng.random((1, 7)) < 0.5),
        ("strided", wide[:, ::2], rng.random((40, 58)) < 0.5),
        ("transposed", wide.T, (rng.random((40, 115)) < 0.5).T),
        ("cropped", wide[3:31, 5:90], rng.random((40, 115))[3:31, 5:90] < 0.5),
    ]
    return out


def gt_255(fg: np.ndarray) -> np.ndarray:
    return fg.astype(np.uint8) * 255


def assert_records_equal(fast: saliency.ImageRecord, slow: saliency.ImageRecord) -> None:
    np.testing.assert_array_equal(fast.fbeta, slow.fbeta)
    assert fast.acc == slow.acc
    assert fast.iou == slow.iou or (math.isnan(fast.iou) and math.isnan(slow.iou))


def exact_soft_mae(pred: np.ndarray, fg: np.ndarray, minmax: bool = False) -> float:
    """Mean |(q - lo) / (hi - lo) - g| (min-max, unless constant) or |q / 65535 - g|, exactly,
    correctly rounded."""
    q = pred.astype(np.int64)
    lo, scale = (
        (int(q.min()), int(q.max() - q.min())) if minmax and q.max() > q.min() else (0, 65535)
    )
    err = int((q[~fg] - lo).sum()) + int((lo + scale - q[fg]).sum())
    return float(Fraction(err, scale * q.size))


def test_fast_path_applies_to_every_dtype_max_protocol():
    for name in DTYPE_MAX:  # the binarisation > 0.5 (>= 0.5 for voynov): q >= 32768
        assert saliency._uint16_split(get_protocol(name)) == 257, name
    assert saliency._uint16_split(get_protocol("pysodmetrics")) is None  # min-max: a table
    # >= 0.3: q >= 19661 = 257 * 76 + 129, class 155; nothing positive: class 512 (none);
    # q >= 2 and q >= 65535 are no class boundaries, the ge_q256 grid no function of the class
    assert [saliency._uint16_split(p) for p in CUSTOM] == [155, None, None, None, 512, None, None]


def test_uint16_index_on_every_level():
    """class + 512 GT, the class splitting the levels at every threshold 257 k | 257 k + 1 and
    at 32767 | 32768; in OpenCV's vector loop and its scalar tail."""
    every = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    q = every.astype(np.int64)
    cls = np.floor((q - 0.25) / 128.5 + 2).astype(np.int64)  # boundaries at 128.5 j + 0.25
    np.testing.assert_array_equal(cls // 2, (q + 256) // 257)
    np.testing.assert_array_equal(cls >= 257, q >= 32768)
    for g in (0, 1):
        gt16 = np.full(every.shape, g, np.uint16)
        for w in (1, 3, 17, 31, 256):
            index = levels16.class_index(every[:, :w], gt16[:, :w])
            np.testing.assert_array_equal(index, cls[:, :w] + 512 * g)


@pytest.mark.parametrize("protocol", all_protocols(), ids=lambda p: p.name)
def test_uint16_counts_equal_the_per_pixel_path(protocol, monkeypatch):
    used = []
    fast_counts = saliency._counts_uint16

    def spy(pred, *args):
        out = fast_counts(pred, *args)
        used.append((pred.size >= 16, out is not None))  # tiny maps: per pixel
        return out

    monkeypatch.setattr(saliency, "_counts_uint16", spy)
    monkeypatch.setattr(saliency, "MINMAX_TABLE_LEVELS_PER_PIXEL", 65536)  # every map
    for name, pred, fg in cases():
        gt = gt_255(fg)
        fast, fast_pair = saliency.score_image_counts(pred, gt, protocol, name)
        with monkeypatch.context() as m:
            m.setattr(saliency, "_counts_uint16", lambda *a: None)
            slow, slow_pair = saliency.score_image_counts(pred, gt, protocol, name)
        assert_records_equal(fast, slow)
        np.testing.assert_array_equal(fast_pair.tp, slow_pair.tp)
        np.testing.assert_array_equal(fast_pair.fp, slow_pair.fp)
        assert (fast_pair.tp05, fast_pair.fp05, fast_pair.n_gt) == (
            slow_pair.tp05,
            slow_pair.fp05,
            slow_pair.n_gt,
        ), name
        if protocol.mae_on == "binary":
            assert fast.mae == slow.mae
        else:
            assert fast.mae == pytest.approx(slow.mae, rel=1e-14, abs=1e-15), name
    fast_path = protocol.pred_norm == "minmax" or saliency._uint16_split(protocol) is not None
    assert len(used) == len(cases()) and all(u == (big and fast_path) for big, u in used)


def test_uint16_soft_mae_is_the_exact_value_rounded_once(monkeypatch):
    protocol = get_protocol("odbench")
    for name, pred, fg in cases():
        record = saliency.score_image(pred, gt_255(fg), protocol, name)
        if pred.size >= 16:
            assert record.mae == exact_soft_mae(pred, fg), name
        float_sum = per_pixel(monkeypatch, saliency.score_image, pred, gt_255(fg), protocol, name)
        # the float64 per-pixel sum: each |q / 65535 - g| within 2^-53, then pairwise summation
        assert abs(record.mae - float_sum.mae) <= 1e-15 * float_sum.mae + 2**-52, name


@pytest.mark.parametrize("name", ["pysodmetrics", "minmax_k255"])
def test_uint16_minmax_soft_mae_is_the_exact_value_rounded_once(name, monkeypatch):
    protocol = get_protocol(name) if name in PROTOCOLS else CUSTOM[-2]
    monkeypatch.setattr(saliency, "MINMAX_TABLE_LEVELS_PER_PIXEL", 65536)  # every map
    for case, pred, fg in cases():
        record = saliency.score_image(pred, gt_255(fg), protocol, case)
        if pred.size >= 16:
            assert record.mae == exact_soft_mae(pred, fg, minmax=True), case
        slow = per_pixel(monkeypatch, saliency.score_image, pred, gt_255(fg), protocol, case)
        assert abs(record.mae - slow.mae) <= 1e-15 * slow.mae + 2**-52, case


def test_minmax_level_tables_are_cached_per_range_and_used_when_they_pay(monkeypatch):
    saliency._uint16_lut.cache_clear()
    rng = np.random.default_rng(5)
    fg = rng.random((20, 30)) < 0.5
    protocol = get_protocol("pysodmetrics")
    for lo, hi in [(0, 65535), (0, 65535), (100, 699), (100, 700), (0, 65535)]:
        pred = rng.integers(lo, hi + 1, (20, 30), dtype=np.uint16)
        pred[0, :2] = lo, hi
        saliency.score_image(pred, gt_255(fg), protocol, "x")
    # 600 pixels: the table for 600 levels (100..699) only; 601 levels and 65536: per pixel
    info = saliency._uint16_lut.cache_info()
    assert (info.misses, info.hits) == (1, 0)
    monkeypatch.setattr(saliency, "MINMAX_TABLE_LEVELS_PER_PIXEL", 200)
    for _ in range(2):
        saliency.score_image(pred, gt_255(fg), protocol, "x")
    info = saliency._uint16_lut.cache_info()
    assert (info.misses, info.hits) == (2, 1)


def test_uint16_soft_mae_on_smooth_maps_within_1e15_of_the_float_sum(monkeypatch):
    import cv2

    from odbench.cache import quantize

    rng = np.random.default_rng(7)
    for shape in [(267, 400), (300, 400), (201, 133)]:
        noise = cv2.GaussianBlur(rng.random(shape).astype(np.float32), (0, 0), 6)
        pred = quantize((noise - noise.min()) / (noise.max() - noise.min()))
        fg = cv2.GaussianBlur(rng.random(shape).astype(np.float32), (0, 0), 10) > 0.5
        record = saliency.score_image(pred, gt_255(fg), ODBENCH, "x")
        slow = per_pixel(monkeypatch, saliency.score_image, pred, gt_255(fg), ODBENCH, "x")
        assert record.mae == exact_soft_mae(pred, fg)
        assert abs(record.mae - slow.mae) <= 1e-15 * slow.mae


def test_center_crop_protocol_crops_uint16_before_the_fast_path(monkeypatch):
    rng = np.random.default_rng(3)
    pred = rng.integers(0, 65536, (31, 44), dtype=np.uint16)
    fg = rng.random((31, 44)) < 0.5
    voynov = get_protocol("voynov")
    fast = saliency.score_image(pred, gt_255(fg), voynov, "x")
    slow = per_pixel(monkeypatch, saliency.score_image, pred, gt_255(fg), voynov, "x")
    assert_records_equal(fast, slow)
    assert fast.mae == exact_soft_mae(
        saliency.center_crop_square(pred), saliency.center_crop_square(fg)
    )


@pytest.mark.parametrize("name", ["odbench", "selfmask", "found", "pysodmetrics"])
def test_uint16_family_numbers_unchanged(name, monkeypatch):
    """``metrics_set="all"`` reads the fast path's counts (PR / ROC / E curves, Dice, BER)."""
    protocol = get_protocol(name)
    monkeypatch.setattr(saliency, "MINMAX_TABLE_LEVELS_PER_PIXEL", 65536)  # every map
    for case, pred, fg in cases()[:6]:
        fast_record, fast = score_image_all(pred, gt_255(fg), protocol, case)
        slow_record, slow = per_pixel(
            monkeypatch, score_image_all, pred, gt_255(fg), protocol, case
        )
        assert_records_equal(fast_record, slow_record)
        for key in (
            "s_measure",
            "e_measure_adaptive",
            "weighted_fbeta",
            "adaptive_fbeta",
            "dice",
            "ber",
        ):
            a, b = getattr(fast, key), getattr(slow, key)
            assert a == b or (math.isnan(a) and math.isnan(b)), (case, key)
        np.testing.assert_array_equal(fast.tp, slow.tp)
        np.testing.assert_array_equal(fast.fp, slow.fp)


def test_large_uint16_maps_fall_back_to_the_per_pixel_path(monkeypatch):
    rng = np.random.default_rng(4)
    pred = rng.integers(0, 65536, (20, 30), dtype=np.uint16)
    fg = rng.random((20, 30)) < 0.5
    slow = per_pixel(monkeypatch, saliency.score_image, pred, gt_255(fg), ODBENCH, "x")
    monkeypatch.setattr(saliency, "CALCHIST_MAX_PIXELS", 600)  # float32 counts no longer exact
    assert saliency._counts_uint16(pred, fg, ODBENCH) is None
    record = saliency.score_image(pred, gt_255(fg), ODBENCH, "x")
    assert_records_equal(record, slow)
    assert record.mae == slow.mae  # the per-pixel float sum itself
    monkeypatch.setattr(saliency, "CALCHIST_MAX_PIXELS", 601)
    assert saliency._counts_uint16(pred, fg, ODBENCH) is not None
