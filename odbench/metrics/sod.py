"""The salient-object family: S-measure, E-measure, weighted Fβ, adaptive / mean Fβ, Dice, BER,
PR and ROC curves with AUC -- pure functions plus one streaming accumulator.

Sources (read, not copied): the papers' own MATLAB code as described in the papers, and
lartpang/PySODMetrics ``py_sod_metrics/sod_metrics.py`` (``Smeasure``, ``Emeasure``,
``WeightedFmeasure``, ``Fmeasure.cal_adaptive_fm``) and ``fmeasurev2.py`` (``DICEHandler``,
``BERHandler``, ``TPRHandler``, ``FPRHandler``).

Conventions (every protocol):

* Inputs come from the protocol (:mod:`odbench.metrics.protocols`): GT foreground rule,
  prediction normalisation (``dtype_max`` or per-image ``minmax``), resize, threshold grid
  (``odbench``: foreground = p > k/255, k = 0..254; ``pysodmetrics``: q = floor(255 p) >= k,
  k = 0..255) and the P/R guards for empty predictions and empty GT.
* S-measure (Fan et al., ICCV 2017), α = 0.5: S = max(0, α S_o + (1 - α) S_r); GT empty:
  1 - mean(p); GT full: mean(p).  Object score with ``std`` over n - 1 and eps = 2.2e-16 in the
  denominator; region score: four regions split at the rounded GT centroid (1-based, MATLAB),
  area-weighted SSIM with the N - 1 + eps normalisation.  Rounding and empty-region rules are
  the protocol's ``s_centroid_round`` / ``s_empty_quadrant``.
* E-measure (Fan et al., IJCAI 2018): per threshold, the enhanced alignment
  φ = (2 a b / (a² + b² + eps) + 1)² / 4 of the demeaned binary prediction a and GT b, summed
  over the four (pred, GT) cases and divided by N - 1 + eps; GT empty: #(pred background) /
  (N - 1 + eps); GT full: #(pred foreground) / (N - 1 + eps).  ``e_measure_mean`` /
  ``e_measure_max`` are the mean / max of the dataset curve (max per image then mean when the
  protocol's ``max_over`` is ``per_image``); ``e_measure_adaptive`` binarises at
  p >= min(2 mean(p), 1).
* Weighted Fβ (Margolin et al., CVPR 2014), β² = 1: E = |p - G|; background pixels take the
  error of their nearest foreground pixel (Euclidean distance transform, scipy's ties);
  E_A = E convolved with a 7×7 Gaussian, σ = 5 (MATLAB ``fspecial``, zero padding); on the
  foreground min(E, E_A); background weights B = 2 - exp(ln(0.5) / 5 · d); R = 1 - mean(E_w
  over G), P = TP_w / (TP_w + FP_w + eps); empty GT: 0.
* Adaptive Fβ (Achanta et al., CVPR 2009): F at p >= min(2 mean(p), 1), β² of the protocol,
  P/R guards of the protocol.  Mean Fβ: the mean of the dataset Fβ curve over its thresholds.
* Dice and BER at the protocol's binarisation (``binarize_op`` ``binarize_at``; 0.5): Dice is
  F with β² = 1 and the protocol's P/R guards (= 2 TP / (2 TP + FP + FN) where defined);
  BER = 1 - (TPR + TNR) / 2 where an empty class's rate is ``empty_gt_recall``.
* Curves: precision, recall (= TPR) and FPR per threshold, averaged over images
  (sample-based, as PySODMetrics); FPR = 0 when the GT has no background.  ``auc_roc`` is the
  trapezoid area under the dataset ROC curve (mean FPR, mean TPR) with the end points (0, 0)
  and (1, 1) added.
* Every score is a per-image value averaged over the images (never pixels pooled).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache

import numpy as np

from odbench.metrics.catalog import keys
from odbench.metrics.meter import Meter
from odbench.metrics.protocols import DEFAULT_PROTOCOL, Protocol, get_protocol
from odbench.metrics.saliency import (
    ImageRecord,
    PairCounts,
    PreparedGt,
    SaliencyMeter,
    fbeta_from_counts,
    precision_recall,
    score_image_counts,
    unit_map,
)

EPS = float(np.spacing(1))  # MATLAB's eps, as in the reference code
S_ALPHA = 0.5
WF_BETA2 = 1.0

#: Result keys added by the family (beside acc, iou, max_fbeta, mae): the catalog's ``sod``
#: metrics, in its order.
SOD_KEYS = keys(meter="sod")


# --------------------------------------------------------------------------- S-measure


def _s_object(x: np.ndarray) -> float:
    """Fan et al. 2017 Eq. 5: 2 x̄ / (x̄² + 1 + σ_x + eps), σ over n - 1 (0 for one pixel)."""
    mean = float(np.mean(x))
    std = float(np.std(x, ddof=1)) if x.size > 1 else 0.0
    return 2 * mean / (mean * mean + 1 + std + EPS)


def _s_object_levels(values: np.ndarray, counts: np.ndarray) -> float:
    """:func:`_s_object` of a map given as its distinct values and their pixel counts (an 8-bit
    map's 256 levels): the same mean and n - 1 standard deviation, summed per level."""
    n = int(counts.sum())
    mean = float(counts @ values) / n
    std = float(np.sqrt(counts @ (values - mean) ** 2 / (n - 1))) if n > 1 else 0.0
    return 2 * mean / (mean * mean + 1 + std + EPS)


def _ssim_binary(x: np.ndarray, y: np.ndarray) -> float:
    """Fan et al. 2017 Eq. 3 (SSIM without constants) of a map region ``x`` against a binary GT
    region ``y``, with the reference code's N - 1 + eps normalisation; 1 when both α and β
    vanish, 0 when only α does.

    The GT's terms come from its counts (its values are 0 and 1: y - ȳ takes two values), the
    map's mean and variance are computed as the reference code does (numpy's mean of the
    region, then the squares of x - x̄), so that α = 0 and β = 0 fall exactly where its do."""
    n = x.size
    n1 = int(np.count_nonzero(y))
    mx = float(np.mean(x))
    my = n1 / n
    dx = x - mx
    sx = float(np.einsum("ij,ij->", dx, dx)) / (n - 1 + EPS)
    sy = (n1 * (1 - my) ** 2 + (n - n1) * my * my) / (n - 1 + EPS)
    if n1 in (0, n):
        sxy = 0.0  # y - ȳ is 0 everywhere
    else:
        # sum (x - x̄)(y - ȳ) = sum over y = 1 of (x - x̄) - ȳ sum of (x - x̄)
        sxy = (float(np.sum(dx, where=y)) - my * float(np.sum(dx))) / (n - 1 + EPS)
    a = 4 * mx * my * sxy
    b = (mx * mx + my * my) * (sx + sy)
    if a != 0:
        return a / (b + EPS)
    return 1.0 if b == 0 else 0.0


def _round(value: float, rule: str) -> int:
    return int(np.round(value)) if rule == "half_even" else int(np.floor(value + 0.5))


def s_measure(
    pred: np.ndarray,
    gt: np.ndarray,
    alpha: float = S_ALPHA,
    centroid_round: str = "half_away",
    empty_quadrant: str = "skip",
    levels: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> float:
    """Structure measure S = max(0, α S_o + (1 - α) S_r) (Fan et al., ICCV 2017, Eq. 7).

    ``pred``: float map in [0, 1]; ``gt``: bool mask of the same shape.  ``levels``: when the
    map takes few values (an 8-bit map), (values, pixel counts on the object, pixel counts on
    the background), from which the object score is computed without touching the pixels."""
    n_fg = int(np.count_nonzero(gt))
    y = n_fg / gt.size
    if y == 0:
        return 1.0 - float(np.mean(pred))
    if y == 1:
        return float(np.mean(pred))
    if levels is not None:
        values, on_fg, on_bg = levels
        keep_fg, keep_bg = on_fg > 0, on_bg > 0
        s_fg = _s_object_levels(values[keep_fg], on_fg[keep_fg])
        s_bg = _s_object_levels(1 - values[keep_bg], on_bg[keep_bg])
    else:
        s_fg, s_bg = _s_object(pred[gt]), _s_object(1 - pred[~gt])
    object_score = y * s_fg + (1 - y) * s_bg
    h, w = gt.shape
    # centroid from the row and column counts (exact integer sums, as np.nonzero's)
    row_counts = np.count_nonzero(gt, axis=1)
    col_counts = np.count_nonzero(gt, axis=0)
    cy = _round(int(row_counts @ np.arange(h)) / n_fg, centroid_round) + 1  # 1-based, MATLAB
    cx = _round(int(col_counts @ np.arange(w)) / n_fg, centroid_round) + 1
    area = h * w
    w_lt = cx * cy / area
    w_rt = cy * (w - cx) / area
    w_lb = (h - cy) * cx / area
    weights = (w_lt, w_rt, w_lb, 1 - w_lt - w_rt - w_lb)
    top, bottom, left, right = slice(0, cy), slice(cy, h), slice(0, cx), slice(cx, w)
    regions = [(top, left), (top, right), (bottom, left), (bottom, right)]
    region_score = 0.0
    for weight, (rs, cs) in zip(weights, regions):
        x = pred[rs, cs]
        if x.size == 0:
            if empty_quadrant == "nan":
                region_score = float("nan")
            continue
        region_score += _ssim_binary(x, gt[rs, cs]) * weight
    score = alpha * object_score + (1 - alpha) * region_score
    return float(np.maximum(0.0, score))


# --------------------------------------------------------------------------- E-measure


def e_measure_from_counts(
    tp: np.ndarray | int, fp: np.ndarray | int, n_gt: int, n_pix: int
) -> np.ndarray:
    """Enhanced-alignment measure (Fan et al., IJCAI 2018, Eqs. 3-6) of binary predictions
    given only their counts: TP and FP per threshold, |G| and N.  The alignment matrix takes
    four values (one per (prediction, GT) case), so E is a weighted sum of four terms."""
    tp = np.asarray(tp, dtype=np.float64)
    n_pred = tp + np.asarray(fp, dtype=np.float64)
    if n_gt == 0:
        total = n_pix - n_pred
    elif n_gt == n_pix:
        total = n_pred
    else:
        mean_pred = n_pred / n_pix
        mean_gt = n_gt / n_pix
        fn = n_gt - tp
        counts = (tp, n_pred - tp, fn, n_pix - n_pred - fn)
        cases = [(1 - mean_pred, 1 - mean_gt), (1 - mean_pred, -mean_gt)]
        cases += [(-mean_pred, 1 - mean_gt), (-mean_pred, -mean_gt)]
        total = np.zeros_like(tp)
        for count, (a, b) in zip(counts, cases):
            align = 2 * (a * b) / (a * a + b * b + EPS)
            total = total + (align + 1) ** 2 / 4 * count
    return np.asarray(total / (n_pix - 1 + EPS), dtype=np.float64)


# --------------------------------------------------------------------------- weighted F


@cache
def _gauss_1d(size: int = 7, sigma: float = 5.0) -> np.ndarray:
    """1-D factor of MATLAB ``fspecial('gaussian', size, sigma)`` (the 2-D kernel is its outer
    product; no entry is below eps · max, so none is zeroed)."""
    r = (size - 1) / 2
    g = np.exp(-(np.arange(-r, r + 1) ** 2) / (2 * sigma * sigma))
    return g / g.sum()


_BAND = 3  # (7 - 1) / 2: how far the Gaussian reaches
_REACH = _BAND + 1  # a background pixel within Chebyshev distance 3 has its nearest object
#                     pixel within d² <= 18, i.e. at most 4 rows or columns away
_LN_HALF_5 = np.log(0.5) / 5


@cache
def _offsets_by_distance() -> tuple[np.ndarray, np.ndarray]:
    """(dy, dx) tables indexed by a squared distance d² <= 2 · 3²: row d² lists the offsets at
    exactly that distance in the order scipy's feature transform prefers among equidistant
    features -- the smallest column, then the smallest row (checked against
    ``distance_transform_edt(return_indices=True)`` in the tests) -- padded by repeating the
    last one (rows of distances no offset has are never used)."""
    reach = 2 * _BAND**2
    span = range(-_REACH, _REACH + 1)
    groups: dict[int, list[tuple[int, int]]] = {}
    for dx in span:
        for dy in span:
            if 0 < dy * dy + dx * dx <= reach:
                groups.setdefault(dy * dy + dx * dx, []).append((dy, dx))
    width = max(len(g) for g in groups.values())
    dy_t = np.zeros((reach + 1, width), dtype=np.intp)
    dx_t = np.zeros((reach + 1, width), dtype=np.intp)
    for dist2, offsets in groups.items():
        offsets = offsets + [offsets[-1]] * (width - len(offsets))
        dy_t[dist2], dx_t[dist2] = zip(*offsets)
    return dy_t, dx_t


def nearest_object_pixel(
    gt: np.ndarray, ys: np.ndarray, xs: np.ndarray, d2: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest foreground pixel of background pixels (ys, xs) whose squared distance to the
    foreground ``d2`` is at most 18 (Chebyshev distance <= 3), ties broken as scipy's
    ``distance_transform_edt`` does.  Only the offsets at exactly that distance are tried: the
    first of them (in :func:`_offsets_by_distance`'s order) that lands on the foreground."""
    h, w = gt.shape
    wp = w + 2 * _REACH
    padded = np.zeros((h + 2 * _REACH, wp), bool)
    padded[_REACH : _REACH + h, _REACH : _REACH + w] = gt
    dy_t, dx_t = _offsets_by_distance()
    flat_offsets = dy_t * wp + dx_t  # in the padded image, per d² and preference
    candidates = ((ys + _REACH) * wp + (xs + _REACH))[:, None] + flat_offsets[d2]
    first = np.argmax(padded.ravel()[candidates], axis=1)
    ny, nx = np.divmod(candidates[np.arange(candidates.shape[0]), first], wp)
    return ny - _REACH, nx - _REACH


def squared_distance_to_object(gt: np.ndarray) -> np.ndarray:
    """Squared Euclidean distance of every pixel to the nearest foreground pixel (0 on it), as
    exact integers; ``np.sqrt`` of it equals scipy's ``distance_transform_edt(~gt)`` bit for
    bit.  OpenCV's exact transform (``DIST_MASK_PRECISE``, Felzenszwalb-Huttenlocher) gives d in
    float32, and d² rounds back to the exact integer while it is below 2²²."""
    import cv2

    if gt.shape[0] ** 2 + gt.shape[1] ** 2 >= 2**22:  # float32 d² might not round back
        from scipy.ndimage import distance_transform_edt

        d = np.asarray(distance_transform_edt(~gt), dtype=np.float64)
        return np.rint(d * d).astype(np.int64)
    d = cv2.distanceTransform((~gt).view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    d2 = np.square(d, dtype=np.float64)
    d2 += 0.5  # d² is within 1e-5 of an integer: truncating d² + 0.5 rounds it
    return d2.astype(np.int32)


@cache
def _background_weights() -> np.ndarray:
    """Margolin et al.'s pixel importance B = 2 - exp(ln(0.5) / 5 · d) (Eq. 12) per squared
    distance d² = k, for k up to the first where it rounds to 2.0 (d ~ 270: exp(-37) is below
    half an ulp of 2, and stays so beyond), with B = 0 at k = 0 (object pixels, which weigh
    nothing in FP_w).  Indexing it gives the values computed per pixel, float for float."""
    k = np.arange(300**2, dtype=np.float64)
    table = 2.0 - np.exp(_LN_HALF_5 * np.sqrt(k))
    last = int(np.argmax(table == 2.0))
    assert last > 0 and np.all(table[last:] == 2.0)
    table = table[: last + 1].copy()
    table[0] = 0.0
    return table


@dataclass(frozen=True)
class WeightedFMask:
    """What weighted Fβ needs of a GT mask alone, computed once per mask
    (:func:`weighted_f_mask`) and shared by every prediction scored against it.

    ``crop``: the object's bounding box grown by the Gaussian's reach (clipped to the image),
    the only part where the smoothed error E_A is needed; ``fg``: the mask in it; ``band_dst``
    / ``band_src``: flat indices in the crop of the background pixels within reach of the
    object and of their nearest object pixel (Eq. 9's dependency); ``bg_weight``: the whole
    image's pixel importance B = 2 - exp(ln(0.5) / 5 · d) on the background, 0 on the object
    (Eq. 12)."""

    n_fg: int
    crop: tuple[slice, slice]
    fg: np.ndarray
    band_dst: np.ndarray
    band_src: np.ndarray
    bg_weight: np.ndarray


def weighted_f_mask(gt: np.ndarray) -> WeightedFMask | None:
    """:class:`WeightedFMask` of a bool mask; None for an empty one (weighted Fβ is 0)."""
    import cv2

    rows, cols = np.flatnonzero(gt.any(axis=1)), np.flatnonzero(gt.any(axis=0))
    if rows.size == 0:
        return None
    h, w = gt.shape
    crop = (
        slice(max(int(rows[0]) - _BAND, 0), min(int(rows[-1]) + _BAND + 1, h)),
        slice(max(int(cols[0]) - _BAND, 0), min(int(cols[-1]) + _BAND + 1, w)),
    )
    fg = gt[crop]
    n_fg = int(np.count_nonzero(fg))
    if n_fg == gt.size:  # no background: no band, nothing to weigh, no distance transform
        none = np.zeros(0, dtype=np.intp)
        return WeightedFMask(n_fg, crop, fg, none, none, np.zeros(gt.shape))
    g8 = fg.view(np.uint8)
    near = cv2.dilate(g8, np.ones((2 * _BAND + 1, 2 * _BAND + 1), np.uint8))
    ys, xs = np.nonzero(near > g8)
    d2 = squared_distance_to_object(gt)
    ny, nx = nearest_object_pixel(fg, ys, xs, d2[crop][ys, xs])
    wc = fg.shape[1]
    table = _background_weights()
    weight = table[np.minimum(d2, table.size - 1)]
    return WeightedFMask(
        n_fg=n_fg,
        crop=crop,
        fg=fg,
        band_dst=ys * wc + xs,
        band_src=ny * wc + nx,
        bg_weight=weight,
    )


def weighted_fbeta(
    pred: np.ndarray,
    gt: np.ndarray,
    beta2: float = WF_BETA2,
    mask: WeightedFMask | None = None,
) -> float:
    """Weighted Fβ (Margolin, Zelnik-Manor and Tal, CVPR 2014, Eqs. 9-13 and their code).

    ``pred``: float map in [0, 1]; ``gt``: bool mask.  0 for an empty GT.  ``mask``: the GT's
    :func:`weighted_f_mask`, when it was computed already (e.g. for another method's map).

    The smoothed error E_A is only used on the foreground, where the 7×7 kernel reaches
    background pixels at most 3 away: only those need their nearest object pixel, and only the
    object's bounding box (grown by 3) is filtered.  On the background E = p, weighted by B."""
    import cv2

    if mask is None:
        mask = weighted_f_mask(gt)
        if mask is None:
            return 0.0
    fg = mask.fg
    # E = |p - G| on the object (1 - p = |p - 1| exactly); 0 on background pixels out of
    # reach, which never reach the object's E_A
    err_t = np.zeros(fg.shape)
    np.subtract(1.0, pred[mask.crop], out=err_t, where=fg)
    # Pixel dependency: a background pixel takes the error of its nearest GT pixel.
    err_t.flat[mask.band_dst] = err_t.flat[mask.band_src]
    g = _gauss_1d()
    err_a = cv2.sepFilter2D(err_t, cv2.CV_64F, g, g, borderType=cv2.BORDER_CONSTANT)
    sum_fg = float(np.sum(np.minimum(err_a, err_t), where=fg))  # min(E, E_A) on the object
    # Pixel importance: background errors weigh more the further they are from the object.
    fp_w = float(np.einsum("ij,ij->", pred, mask.bg_weight))
    tp_w = mask.n_fg - sum_fg
    recall = 1 - sum_fg / mask.n_fg
    precision = tp_w / (tp_w + fp_w + EPS)
    return (1 + beta2) * recall * precision / (recall + beta2 * precision + EPS)


# --------------------------------------------------------------------------- small helpers


def adaptive_threshold(pred: np.ndarray) -> float:
    """Achanta et al. 2009: twice the mean saliency, at most 1 (foreground = p >= it)."""
    return min(2 * float(np.mean(pred)), 1.0)


def balanced_error_rate(tp: int, fp: int, n_gt: int, n_pix: int, empty_rate: float) -> float:
    """BER = 1 - (TPR + TNR) / 2; the rate of an empty class is ``empty_rate``."""
    n_bg = n_pix - n_gt
    tpr = tp / n_gt if n_gt else empty_rate
    tnr = (n_bg - fp) / n_bg if n_bg else empty_rate
    return 1 - 0.5 * (tpr + tnr)


def roc_auc(fpr: np.ndarray, tpr: np.ndarray) -> np.ndarray:
    """Trapezoid area under ROC curves (..., T) given at any threshold order; (0, 0) and (1, 1)
    are added and points are sorted by (FPR, TPR).  Leading axes are kept (one area per curve:
    a 0-d array for one curve, (B,) for the bootstrap resamples of :mod:`odbench.compare`)."""
    fpr, tpr = np.asarray(fpr, np.float64), np.asarray(tpr, np.float64)
    zeros, ones = np.zeros(fpr.shape[:-1] + (1,)), np.ones(fpr.shape[:-1] + (1,))
    x = np.concatenate([zeros, fpr, ones], axis=-1)
    y = np.concatenate([zeros, tpr, ones], axis=-1)
    order = np.lexsort((y, x), axis=-1)
    x, y = np.take_along_axis(x, order, -1), np.take_along_axis(y, order, -1)
    return np.sum((x[..., 1:] - x[..., :-1]) * (y[..., 1:] + y[..., :-1]) / 2, axis=-1)


def reduce_family_curves(
    e_curve: np.ndarray,
    mean_max_e: np.ndarray | float,
    fpr: np.ndarray,
    tpr: np.ndarray,
    fbeta_curve: np.ndarray | None,
    max_over: str,
) -> dict[str, np.ndarray]:
    """``e_measure_mean``, ``e_measure_max``, ``auc_roc`` (and ``mean_fbeta`` when the mean Fβ
    curve is given) of a dataset -- or of each bootstrap resample: leading axes are kept -- from
    its mean curves (..., T) and its mean of per-image E maxima (...).

    E mean: the mean of the E curve over thresholds; E max: its maximum (``max_over="dataset"``)
    or the mean of per-image maxima (``"per_image"``); AUC: :func:`roc_auc` of (mean FPR, mean
    TPR); mean Fβ: the mean of the Fβ curve over thresholds.  The one reduction behind
    :meth:`SodMeter.compute` and ``odbench compare`` (as
    :func:`~odbench.metrics.saliency.reduce_max_fbeta` is for maxFβ)."""
    e_curve = np.asarray(e_curve, np.float64)
    if max_over == "dataset":
        e_max = np.max(e_curve, axis=-1)
    elif max_over == "per_image":
        e_max = np.asarray(mean_max_e, dtype=np.float64)
    else:
        raise ValueError(f"unknown max_over {max_over!r}")
    out = {
        "e_measure_mean": np.mean(e_curve, axis=-1),
        "e_measure_max": e_max,
        "auc_roc": roc_auc(fpr, tpr),
    }
    if fbeta_curve is not None:
        out["mean_fbeta"] = np.mean(np.asarray(fbeta_curve, np.float64), axis=-1)
    return out


# --------------------------------------------------------------------------- per image


@dataclass
class SodRecord:
    """Per-image scores of the family.  ``tp`` / ``fp`` are the foreground / background pixels
    predicted foreground at each of the protocol's thresholds (with ``n_gt`` = |G| and
    ``n_pix`` = N they determine every curve: :func:`family_curves`); the curves are kept
    computed beside them."""

    id: str
    s_measure: float
    e_measure_adaptive: float
    weighted_fbeta: float
    adaptive_fbeta: float
    dice: float
    ber: float
    tp: np.ndarray = field(repr=False)
    fp: np.ndarray = field(repr=False)
    n_gt: int = 0
    n_pix: int = 0
    e_curve: np.ndarray = field(init=False, repr=False)
    precision: np.ndarray = field(init=False, repr=False)
    recall: np.ndarray = field(init=False, repr=False)
    fpr: np.ndarray = field(init=False, repr=False)
    protocol: Protocol | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        proto = get_protocol(self.protocol or DEFAULT_PROTOCOL)
        curves = family_curves(self.tp, self.fp, self.n_gt, self.n_pix, proto)
        self.e_curve, self.precision, self.recall, self.fpr = curves


def family_curves(
    tp: np.ndarray, fp: np.ndarray, n_gt: int, n_pix: int, protocol: Protocol
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """E-measure, precision, recall (= TPR) and FPR per threshold from the TP / FP counts (the
    one histogram pass); FPR = 0 when the GT has no background."""
    e_curve = e_measure_from_counts(tp, fp, n_gt, n_pix)
    precision, recall = precision_recall(tp, fp, n_gt, protocol)
    n_bg = n_pix - n_gt
    fpr = fp / n_bg if n_bg else np.zeros(np.shape(fp), np.float64)
    return e_curve, precision, recall, np.asarray(fpr, dtype=np.float64)


def sod_from_counts(
    counts: PairCounts, protocol: Protocol, image_id: str, wf_mask: WeightedFMask | None = None
) -> SodRecord:
    """The family for one image from the shared histogram counts (one pass for F, E, PR,
    ROC) plus one float map for S, weighted F and the adaptive threshold.  ``wf_mask``: the
    GT's :func:`weighted_f_mask` when it was computed already (None: computed here)."""
    n_gt, n_pix = counts.n_gt, counts.n_pix
    gt = counts.gt_fg
    if counts.levels is not None and counts.level_counts is not None:
        import cv2

        levels, hist = counts.levels, counts.level_counts
        x = cv2.LUT(counts.pred, levels)  # = levels[pred] = unit_map(counts.pred, protocol)
        above = levels >= adaptive_threshold(x)  # per level: the pixels' comparison
        tp_a, fp_a = int(hist[1] @ above), int(hist[0] @ above)
        s_levels: tuple[np.ndarray, np.ndarray, np.ndarray] | None = (levels, hist[1], hist[0])
    else:
        x = unit_map(counts.pred, protocol)
        fg = x >= adaptive_threshold(x)
        tp_a = int(np.count_nonzero(fg & gt))
        fp_a = int(np.count_nonzero(fg)) - tp_a
        s_levels = None
    e_adp = float(e_measure_from_counts(tp_a, fp_a, n_gt, n_pix))
    f_adp = float(fbeta_from_counts(np.array([tp_a]), np.array([fp_a]), n_gt, protocol)[0])
    tp05, fp05 = counts.tp05, counts.fp05
    dice = float(fbeta_from_counts(np.array([tp05]), np.array([fp05]), n_gt, protocol, 1.0)[0])
    ber = balanced_error_rate(tp05, fp05, n_gt, n_pix, protocol.empty_gt_recall)
    s = s_measure(
        x,
        gt,
        centroid_round=protocol.s_centroid_round,
        empty_quadrant=protocol.s_empty_quadrant,
        levels=s_levels,
    )
    wf = 0.0 if n_gt == 0 else weighted_fbeta(x, gt, mask=wf_mask)
    return SodRecord(
        id=image_id,
        s_measure=s,
        e_measure_adaptive=e_adp,
        weighted_fbeta=wf,
        adaptive_fbeta=f_adp,
        dice=dice,
        ber=ber,
        tp=counts.tp,
        fp=counts.fp,
        n_gt=n_gt,
        n_pix=n_pix,
        protocol=protocol,
    )


def score_image_all(
    pred: np.ndarray, gt: np.ndarray | PreparedGt, protocol: Protocol, image_id: str
) -> tuple[ImageRecord, SodRecord]:
    """Acc / IoU / MAE / Fβ curve and the whole family for one image, one histogram pass.

    ``gt``: the stored mask, or its :func:`~odbench.metrics.saliency.prepare_gt`, whose
    weighted-Fβ quantities are then computed once for every map scored against it."""
    record, counts = score_image_counts(pred, gt, protocol, image_id)
    wf_mask = None
    if isinstance(gt, PreparedGt) and counts.n_gt > 0:
        cached = gt.derived.get("weighted_f")
        wf_mask = cached if isinstance(cached, WeightedFMask) else weighted_f_mask(gt.fg)
        gt.derived["weighted_f"] = wf_mask
    return record, sod_from_counts(counts, protocol, image_id, wf_mask)


# --------------------------------------------------------------------------- accumulator

#: The family's per-image means (:class:`SodRecord` fields); the rest come from mean curves.
_SCALARS = keys(meter="sod", per_image=True)
_CURVES = ("e_curve", "precision", "recall", "fpr")


class SodMeter(Meter):
    """Streaming accumulator of the family (sums only: memory independent of the dataset size;
    the meters' interface: :mod:`odbench.metrics.meter`).

    To score Acc / IoU / MAE / Fβ too, call :func:`score_image_all` once per image and ``add``
    its two records to a :class:`~odbench.metrics.saliency.SaliencyMeter` and to this meter
    (one histogram pass serves both)."""

    states = ("n", "sums", "curves", "sum_max_e")

    def __init__(self, protocol: Protocol | str = DEFAULT_PROTOCOL) -> None:
        self.protocol = get_protocol(protocol)
        self.n = 0
        self.sums = dict.fromkeys(_SCALARS, 0.0)
        t = self.protocol.n_thresholds
        self.curves = {name: np.zeros(t, dtype=np.float64) for name in _CURVES}
        self.sum_max_e = 0.0

    def add(self, record: SodRecord) -> None:
        if record.e_curve.shape != self.curves["e_curve"].shape:
            raise ValueError(
                f"record {record.id!r} has {record.e_curve.shape[0]} thresholds, protocol "
                f"{self.protocol.name!r} has {self.curves['e_curve'].shape[0]}"
            )
        self.n += 1
        for name in _SCALARS:
            self.sums[name] += getattr(record, name)
        for name in _CURVES:
            self.curves[name] += getattr(record, name)
        self.sum_max_e += float(record.e_curve.max())

    def update(self, pred: np.ndarray, gt: np.ndarray, image_id: str = "") -> SodRecord:
        """Score one image (family only), add it and return its record."""
        _, record = score_image_all(pred, gt, self.protocol, image_id)
        self.add(record)
        return record

    @classmethod
    def from_records(cls, protocol: Protocol | str, records: Iterable[SodRecord]) -> SodMeter:
        meter = cls(protocol)
        for record in records:
            meter.add(record)
        return meter

    def compute(self, fbeta_curve: Iterable[float] | None = None) -> dict[str, object]:
        """The family's keys (:data:`SOD_KEYS` but ``mean_fbeta``, which needs the Fβ curve of
        the :class:`SaliencyMeter`: pass ``fbeta_curve`` to get it) and ``curves``: the mean
        curves per threshold (``thresholds`` ascending, ``precision``, ``recall``, ``fpr``,
        ``e_measure``; ``tpr`` is ``recall``)."""
        if self.n == 0:
            raise ValueError("no images were scored")
        mean = {name: value / self.n for name, value in self.sums.items()}
        curves = {name: c / self.n for name, c in self.curves.items()}
        e_curve = curves["e_curve"]
        reduced = reduce_family_curves(
            e_curve,
            self.sum_max_e / self.n,
            curves["fpr"],
            curves["recall"],
            None if fbeta_curve is None else np.asarray(list(fbeta_curve), np.float64),
            self.protocol.max_over,
        )
        values = mean | {name: float(v) for name, v in reduced.items()}
        out: dict[str, object] = {k: values[k] for k in SOD_KEYS if k in values}
        out["curves"] = {
            "thresholds": [float(t) for t in self.protocol.thresholds],
            "precision": [float(v) for v in curves["precision"]],
            "recall": [float(v) for v in curves["recall"]],
            "fpr": [float(v) for v in curves["fpr"]],
            "e_measure": [float(v) for v in e_curve],
        }
        return out


class FamilyMeter(Meter):
    """Acc / IoU / MAE / Fβ (a :class:`~odbench.metrics.saliency.SaliencyMeter`) and the whole
    family (a :class:`SodMeter`) from one histogram pass per image.

    :meth:`score` is pure (safe to call from worker threads); :meth:`add` accumulates in the
    caller's order, so the sums do not depend on how many threads scored."""

    states = ("base", "family")

    def __init__(self, protocol: Protocol | str = DEFAULT_PROTOCOL) -> None:
        self.base = SaliencyMeter(protocol)
        self.protocol = self.base.protocol
        self.family = SodMeter(self.protocol)

    def score(
        self, pred: np.ndarray, gt: np.ndarray | PreparedGt, image_id: str = ""
    ) -> tuple[ImageRecord, SodRecord]:
        return score_image_all(pred, gt, self.protocol, image_id)

    def add(self, records: tuple[ImageRecord, SodRecord]) -> None:
        self.base.add(records[0])
        self.family.add(records[1])

    def update(
        self, pred: np.ndarray, gt: np.ndarray, image_id: str = ""
    ) -> tuple[ImageRecord, SodRecord]:
        records = self.score(pred, gt, image_id)
        self.add(records)
        return records

    def compute(self) -> dict[str, object]:
        """:meth:`SaliencyMeter.compute`'s keys, :data:`SOD_KEYS` and ``curves`` (with the mean
        ``fbeta`` curve beside precision, recall, FPR and E)."""
        out = self.base.compute()
        family = self.family.compute(out["fbeta_curve"])  # type: ignore[arg-type]
        curves = family.pop("curves")
        out.update(family)
        out["curves"] = {**curves, "fbeta": out["fbeta_curve"]}  # type: ignore[dict-item]
        return out
