"""Counting uint16 predictions (what ``eval`` stores: ``round(p · 65535)``) without a float map.

Every per-pixel quantity of the saliency metrics (the threshold code, the 0.5 binarisation, the
soft error) is a function of the pixel's level q, so one histogram over (GT, level class) gives
the counts.  :mod:`odbench.metrics.saliency` computes the per-level tables with the same float
operations as its per-pixel path and hands them here; this module only counts:

* ``dtype_max`` (the default): the level's *class* ``round(2 q / 257 + 3/2 - 1/514)`` splits the
  levels at every threshold (257 k | 257 k + 1) and at 0.5 (32767 | 32768), so one
  ``cv2.addWeighted`` and one 1024-bin histogram count everything (:func:`counts_classes`);
* ``minmax``: the per-level codes depend on the map's range, so a table over its levels
  (cached by the caller) is looked up per pixel, then one 2048-bin histogram
  (:func:`counts_lut`).

Histograms are OpenCV's uint16 ``calcHist`` with bins of width 1 (exact; float32 counts, so
below 2²⁴ pixels).  The soft MAE is the exact value rounded once (:func:`soft_mae`).
"""

from __future__ import annotations

import numpy as np

# (code histogram of background pixels, of foreground pixels, TP and FP at the binarisation,
#  soft MAE)
Counts = tuple[np.ndarray, np.ndarray, int, int, float]

# The class of a uint16 level q: round(2 q / 257 + 3/2 - 1/514), 1..511, i.e. a boundary at
# every 257 j / 2 + 1/4: between 257 k and 257 k + 1 (the thresholds k/255: code ceil(q / 257)
# = cls // 2, classes 2c and 2c + 1 for code c) and between 257 k + 128 and 257 k + 129
# (q/65535 > 1/2 is q >= 32768 = 257 * 127 + 129).  2 q / 257 + 3/2 - 1/514 is at least 1/514
# from a half-integer, far above float32's error (OpenCV's arithmetic); every level is checked
# (:func:`class_split`).
CLASS_SCALE = (2.0 / 257, 1.5 - 1.0 / 514)
# a level-table entry: code + POSITIVE [foreground at the binarisation]; + 2 POSITIVE on the GT
POSITIVE = 512


def class_index(pred: np.ndarray, gt16: np.ndarray) -> np.ndarray:
    """Per pixel of a uint16 map, ``cls + 512 g`` (uint16) with the level's class (above) and
    the GT g (uint16 0 / 1): one ``cv2.addWeighted``."""
    import cv2

    alpha, gamma = CLASS_SCALE
    return cv2.addWeighted(pred, alpha, gt16, 512.0, gamma)


def class_split(code: np.ndarray, positive: np.ndarray) -> int | None:
    """The class c0 from which on every level is positive, given the 65536 levels' threshold
    codes and binarisation (as the per-pixel path computes them), when both are functions of
    the class that :func:`class_index` computes (checked on every level and both GT values);
    None otherwise (a binarisation level that is no class boundary, another code grid)."""
    square = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    cls = class_index(square, np.zeros(square.shape, np.uint16)).ravel().astype(np.int64)
    with_gt = class_index(square, np.ones(square.shape, np.uint16)).ravel()
    c0 = int(cls[np.argmax(positive)]) if positive.any() else 512
    if (
        np.array_equal(with_gt, cls + 512)
        and np.array_equal(np.asarray(code, np.int64), cls // 2)
        and np.array_equal(positive, cls >= c0)
    ):
        return c0
    return None


def counts_classes(pred: np.ndarray, gt_fg: np.ndarray, c0: int, soft: bool) -> Counts:
    """Counts of a uint16 map under ``dtype_max`` (``c0`` from :func:`class_split`): one
    1024-bin histogram of (GT, class).  ``soft``: compute the soft MAE (else 0.0)."""
    import cv2

    index = class_index(pred, gt_fg.astype(np.uint16))
    hist = cv2.calcHist([index], [0], None, [1024], [0, 1024]).reshape(2, 512)  # [g, class]
    # float32 sums of counts below 2^24: exact
    hist_bg, hist_fg = hist.reshape(2, 256, 2).sum(axis=2).astype(np.int64)
    fp05, tp05 = (int(n) for n in hist[:, c0:].sum(axis=1))
    mae = soft_mae(pred, gt_fg, int(hist_fg.sum()), 0, 65535) if soft else 0.0
    return hist_bg, hist_fg, tp05, fp05, mae


def level_range(pred: np.ndarray) -> tuple[int, int]:
    """(min, max) level of a uint16 map."""
    import cv2

    lo, hi, _, _ = cv2.minMaxLoc(pred)
    return int(lo), int(hi)


def level_lut(lo: int, code: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """The table :func:`counts_lut` looks levels up in: ``code + 512 [positive]`` for the levels
    ``lo .. lo + len(code) - 1`` (the entries below ``lo`` are never read); read-only."""
    lut = np.zeros(lo + len(code), np.uint16)
    lut[lo:] = code
    lut[lo:] += POSITIVE * positive.astype(np.uint16)
    lut.flags.writeable = False
    return lut


def counts_lut(
    pred: np.ndarray,
    gt_fg: np.ndarray,
    lut: np.ndarray,
    n_codes: int,
    soft: tuple[int, int] | None,
) -> Counts:
    """Counts of a uint16 map from its levels' table (:func:`level_lut`, codes < 512): one
    look-up per pixel and one 2048-bin histogram of (GT, positive, code).  ``soft``: the
    normalisation ``unit = (q - offset) / scale`` for the soft MAE (None: 0.0)."""
    import cv2

    index = np.take(lut, pred)
    index |= np.left_shift(gt_fg, 10, dtype=np.uint16)  # + 1024 on the GT
    hist = cv2.calcHist([index], [0], None, [2048], [0, 2048]).reshape(2, 2, 512)
    hist_bg, hist_fg = hist.sum(axis=1)[:, :n_codes].astype(np.int64)  # [g, pos, code]
    fp05, tp05 = (int(n) for n in hist[:, 1].sum(axis=1))
    mae = 0.0 if soft is None else soft_mae(pred, gt_fg, int(hist_fg.sum()), *soft)
    return hist_bg, hist_fg, tp05, fp05, mae


def soft_mae(pred: np.ndarray, gt_fg: np.ndarray, n_fg: int, offset: int, scale: int) -> float:
    """Mean |unit - g| for ``unit = (q - offset) / scale`` in [0, 1], exact and rounded once:
    the integer S = Σ_background (q - offset) + Σ_object (offset + scale - q) divided by
    scale · (pixels).  (The per-pixel path sums the rounded float64 terms: at most an ulp or
    two away.)  Σ_object q comes from ``cv2.mean`` over the object: OpenCV sums integer maps
    exactly, and the mean times the object's pixel count is within 2⁻⁵⁰ Σ of Σ, so it rounds
    back to Σ."""
    import cv2

    total = int(cv2.sumElems(pred)[0])
    on_fg = 0
    if n_fg:
        on_fg = round(cv2.mean(pred, mask=np.ascontiguousarray(gt_fg).view(np.uint8))[0] * n_fg)
    n = pred.size
    s = total - 2 * on_fg - offset * (n - n_fg) + (offset + scale) * n_fg
    return s / (scale * n)
