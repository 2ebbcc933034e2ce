"""Streaming saliency metrics: Acc, IoU, MAE and the full Fβ curve (DiffusionSeg Table 1).

One histogram pass per image: every pixel gets an integer *code* such that the prediction is
foreground at threshold index k exactly when ``code > k``; ``np.bincount`` over
``code + n_codes * gt`` and a suffix sum then give TP and FP for every threshold at once (no
Python loop over thresholds).  For 8-bit predictions the pass is a 512-bin histogram of
(GT, value) and the codes, the 0.5 binarisation and the MAE terms are evaluated on the 256
levels only; uint16 predictions (what ``eval`` stores) are counted by level class or level table
without a float map (:mod:`odbench.metrics.levels16`; their soft MAE is the exact value, rounded
once).  Codes are exact for every input type:

* uint8 v with thresholds k/255 and ``>``: code = v (v/255 > k/255 ⟺ v > k);
* uint16 v: code = ceil(v / 257) (v/65535 > k/255 ⟺ v > 257 k, as 65535 = 255 · 257);
* float p: code = floor(255 p) + [p > floor(255 p) / 255], which agrees with the float
  comparison ``p > k / 255`` bit for bit (see :func:`codes_k255`);
* pysodmetrics' grid: q = ``(p * 255).astype(uint8)``, foreground = q >= k, code = q + 1;
* float maps under a protocol whose ``threshold_values`` is not ``exact`` (the torch-based
  originals compare in the map's own precision): code = #{k : t_k < p} by ``np.searchsorted``
  over the protocol's threshold values in that precision.

The meter keeps only sums (memory independent of the number of images); the per-image
:class:`ImageRecord` returned by :meth:`SaliencyMeter.update` can be kept by the caller
(bootstrap CIs, paired tests) and turned back into a meter with :meth:`SaliencyMeter.from_records`.

Fβ = (1 + β²) P R / (β² P + R), β² = 0.3 (Achanta et al. 2009; DiffusionSeg §4.1).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from odbench.metrics import levels16
from odbench.metrics.meter import Meter
from odbench.metrics.protocols import DEFAULT_PROTOCOL, MetricInputError, Protocol, get_protocol


@dataclass
class ImageRecord:
    """Per-image scores under one protocol; ``fbeta`` is the curve over the protocol's thresholds."""

    id: str
    acc: float
    iou: float
    mae: float
    fbeta: np.ndarray = field(repr=False)


# --------------------------------------------------------------------------- input handling


def gt_to_8bit(gt: np.ndarray) -> np.ndarray:
    """GT as stored -> 8-bit values: uint8 as is, uint16 ``round(v * 255 / 65535)``, bool 0/255."""
    if gt.dtype == np.uint8:
        return gt
    if gt.dtype == np.uint16:
        # round(v / 257) without ties: v/257 is never k + 1/2 for integer v.
        return ((gt.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if gt.dtype == np.bool_:
        return gt.astype(np.uint8) * 255
    raise MetricInputError(f"GT mask must be uint8, uint16 or bool, got {gt.dtype}")


def binarize_gt(gt: np.ndarray, rule: str) -> np.ndarray:
    """Foreground mask of a stored GT under the protocol's ``gt_rule`` (on 8-bit values)."""
    g8 = gt_to_8bit(gt)
    if rule == "ge128":
        return g8 >= 128
    if rule == "gt128":
        return g8 > 128
    if rule == "nonzero":
        return g8 != 0
    if rule == "eq255":
        return g8 == 255
    raise ValueError(f"unknown GT rule {rule!r}")


def center_crop_square(arr: np.ndarray) -> np.ndarray:
    """Centred square of the shorter side, with torchvision ``CenterCrop``'s offsets
    ``top = int(round((h - s) / 2.0))`` (Python's round-half-to-even)."""
    h, w = arr.shape[:2]
    s = min(h, w)
    top = int(round((h - s) / 2.0))
    left = int(round((w - s) / 2.0))
    return arr[top : top + s, left : left + s]


def to_unit(pred: np.ndarray) -> np.ndarray:
    """Prediction -> float64 in [0, 1] by its dtype's maximum (÷255, ÷65535; bool 0/1; float
    clipped), as :func:`odbench.imageio.to_unit`."""
    from odbench.imageio import to_unit as _to_unit

    try:
        return _to_unit(pred)
    except TypeError as e:
        raise MetricInputError(f"prediction must be uint8, uint16, bool or float: {e}") from e


def resize_bilinear(x: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a [0, 1] map with ``cv2.resize(..., INTER_LINEAR)`` on float32
    (half-pixel centres, no antialiasing), returned as float64."""
    import cv2

    out = cv2.resize(x.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return np.clip(out.astype(np.float64), 0.0, 1.0)


def codes_k255(pred: np.ndarray) -> np.ndarray:
    """Codes for thresholds k/255 (k = 0..254) with ``>``: ``code > k`` ⟺ ``p > k/255``."""
    if pred.dtype == np.uint8:
        return pred
    if pred.dtype == np.uint16:
        return ((pred.astype(np.uint32) + 256) // 257).astype(np.uint16)
    if pred.dtype == np.bool_:
        return pred.astype(np.uint8) * 255
    p = pred.astype(np.float64)
    # fl(fl(k/255) * 255) == k for every k (checked in the tests), so by monotonicity of
    # rounding, f = floor(fl(255 p)) satisfies p <= fl((f+1)/255) and p > fl((f-1)/255): the
    # count of thresholds below p is f or f + 1, decided by the float comparison itself.
    code = (p * 255.0).astype(np.uint16)  # truncation = floor, as 255 p >= 0
    code += p > code / 255.0
    return code


# --------------------------------------------------------------------------- per-image scores


def precision_recall(
    tp: np.ndarray, fp: np.ndarray, n_gt: int, proto: Protocol
) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall for every threshold from TP/FP counts, with the protocol's guards
    (``eps``, or P = ``empty_pred_precision`` when nothing is predicted and R =
    ``empty_gt_recall`` when the GT is empty)."""
    tp = np.asarray(tp, dtype=np.float64)
    n_pred = tp + fp
    if proto.eps > 0:
        return tp / (n_pred + proto.eps), tp / (n_gt + proto.eps)
    p = np.where(n_pred > 0, tp / np.maximum(n_pred, 1), proto.empty_pred_precision)
    r = tp / n_gt if n_gt > 0 else np.full_like(tp, proto.empty_gt_recall)
    return p, r


def fbeta_from_counts(
    tp: np.ndarray, fp: np.ndarray, n_gt: int, proto: Protocol, beta2: float | None = None
) -> np.ndarray:
    """F_k = (1 + β²) P R / (β² P + R) for every threshold (Achanta et al. 2009) with the
    protocol's guards; F = 0 when its numerator is 0.  ``beta2`` defaults to the protocol's
    effective β² (Dice is ``beta2=1``)."""
    b2 = proto.effective_beta2 if beta2 is None else beta2
    p, r = precision_recall(tp, fp, n_gt, proto)
    if proto.eps > 0:
        return (1 + b2) * p * r / (b2 * p + r + proto.eps)
    num = (1 + b2) * p * r
    den = b2 * p + r
    return np.where(num > 0, num / np.where(den > 0, den, 1.0), 0.0)


@dataclass
class PairCounts:
    """What one histogram pass gives for one image, shared by every metric that needs it
    (:mod:`odbench.metrics.sod` builds its E-curve, PR and ROC curves from these counts).

    ``pred`` is the prediction as scored (cropped / resized, original dtype for uint8),
    ``gt_fg`` the binarised GT; ``tp[k]`` and ``fp[k]`` are the foreground / background pixels
    predicted foreground at threshold k; ``tp05`` / ``fp05`` the same at the protocol's
    binarisation (``binarize_op`` ``binarize_at``).  For an 8-bit prediction, ``levels`` are its
    256 values as the protocol's metrics see them (:func:`unit_map`'s table) and
    ``level_counts[g, v]`` the pixels of value v on the background (g = 0) and the object
    (g = 1); None otherwise."""

    pred: np.ndarray
    gt_fg: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    n_gt: int
    tp05: int
    fp05: int
    levels: np.ndarray | None = None
    level_counts: np.ndarray | None = None

    @property
    def n_pix(self) -> int:
        return int(self.gt_fg.size)


@dataclass(eq=False)
class PreparedGt:
    """A stored GT mask brought to a protocol's form once, to score several predictions against
    it (several methods' maps of one image: ``score --config``): ``fg`` is its foreground under
    the protocol's ``gt_rule`` (centre-cropped where the protocol crops) and ``derived`` holds
    what other metrics compute from the mask alone (weighted Fβ's distance transform and
    nearest pixels: :func:`odbench.metrics.sod.weighted_f_mask`), filled on first use.

    It lives as long as its caller keeps it (one image's work in ``score --config``), so it
    never outlives the file it was read from; ``key`` (the protocol's GT rule and crop) is
    checked by every scoring call, so a protocol that reads the mask differently refuses it."""

    shape: tuple[int, int]  # as stored
    key: tuple[str, bool]
    fg: np.ndarray
    derived: dict[str, object] = field(default_factory=dict)


def _gt_key(protocol: Protocol) -> tuple[str, bool]:
    return (protocol.gt_rule, protocol.center_crop)


def prepare_gt(gt: np.ndarray, protocol: Protocol | str) -> PreparedGt:
    """:class:`PreparedGt` of a stored (H, W) uint8 / uint16 / bool mask under ``protocol``."""
    protocol = get_protocol(protocol)
    gt = np.asarray(gt)
    if gt.ndim != 2:
        raise MetricInputError(f"GT must be a 2-D mask, got shape {gt.shape}")
    fg = binarize_gt(gt, protocol.gt_rule)
    if protocol.center_crop:
        fg = center_crop_square(fg)
    return PreparedGt((int(gt.shape[0]), int(gt.shape[1])), _gt_key(protocol), fg)


def prepare_pair(
    pred: np.ndarray, gt: np.ndarray | PreparedGt, protocol: Protocol
) -> tuple[np.ndarray, np.ndarray]:
    """Check a pair and bring it to the protocol's form: (prediction, GT foreground mask) of one
    size (centre crop, bilinear resize to the GT size where the protocol says so).  ``gt``: the
    stored mask, or its :func:`prepare_gt` under a protocol with the same GT rule and crop."""
    pred = np.asarray(pred)
    if not isinstance(gt, PreparedGt):
        gt = np.asarray(gt)
    if pred.ndim != 2 or len(gt.shape) != 2:
        raise MetricInputError(
            f"prediction and GT must be 2-D maps, got shapes {pred.shape} and {gt.shape}"
        )
    if np.issubdtype(pred.dtype, np.floating) and not np.all(np.isfinite(pred)):
        raise MetricInputError("prediction contains NaN or infinite values")
    if isinstance(gt, PreparedGt):
        if gt.key != _gt_key(protocol):
            raise ValueError(
                f"GT prepared under GT rule / crop {gt.key}, protocol {protocol.name!r} "
                f"reads masks with {_gt_key(protocol)}: prepare it under this protocol"
            )
        gt_fg = gt.fg
        if protocol.center_crop and pred.shape == gt.shape:
            pred = center_crop_square(pred)
    else:
        gt_fg = binarize_gt(gt, protocol.gt_rule)
        if protocol.center_crop:
            if pred.shape == gt.shape:
                pred = center_crop_square(pred)
            gt_fg = center_crop_square(gt_fg)
    if pred.shape != gt_fg.shape:
        if protocol.resize == "none":
            raise MetricInputError(
                f"prediction size {pred.shape} differs from GT size {gt_fg.shape} and protocol "
                f"{protocol.name!r} does not resize"
            )
        pred = resize_bilinear(to_unit(pred), gt_fg.shape)
    return pred, gt_fg


def unit_map(pred: np.ndarray, protocol: Protocol) -> np.ndarray:
    """The prediction as the protocol's metrics see it: float64 in [0, 1] (``pred_norm``).

    Equal, value for value, to what the histogram pass uses (8-bit maps go through the same
    256-level table)."""
    if pred.dtype == np.uint8:
        levels = to_unit(np.arange(256, dtype=np.uint8))
        lo, hi = levels[int(pred.min())], levels[int(pred.max())]
        return _normalise(levels, protocol, lo, hi)[pred]
    unit = to_unit(pred)
    return _normalise(unit, protocol, unit.min(), unit.max())


def score_image(
    pred: np.ndarray, gt: np.ndarray | PreparedGt, protocol: Protocol, image_id: str
) -> ImageRecord:
    """Score one prediction against one stored GT mask under ``protocol``.

    ``pred``: (H, W) uint8 / uint16 / bool / float map; ``gt``: (H', W') uint8 / uint16 / bool
    mask as stored (or its :func:`prepare_gt`).  Raises :class:`MetricInputError` for what the protocol cannot resolve."""
    return score_image_counts(pred, gt, protocol, image_id)[0]


def score_image_counts(
    pred: np.ndarray, gt: np.ndarray | PreparedGt, protocol: Protocol, image_id: str
) -> tuple[ImageRecord, PairCounts]:
    """:func:`score_image` plus the counts of its histogram pass (for the other metrics)."""
    pred, gt_fg = prepare_pair(pred, gt, protocol)
    levels = level_counts = None
    counts: _Counts | None = None
    if pred.dtype == np.uint8:
        counts, levels, level_counts = _counts_uint8(pred, gt_fg, protocol)
    elif pred.dtype == np.uint16:
        counts = _counts_uint16(pred, gt_fg, protocol)
    if counts is None:
        counts = _counts_pixels(pred, gt_fg, protocol)
    hist_bg, hist_fg, tp05, fp05, soft_mae = counts
    above_bg = np.cumsum(hist_bg[::-1])[::-1][1:]  # above[k] = #{code > k}
    above_fg = np.cumsum(hist_fg[::-1])[::-1][1:]
    n_gt = int(hist_fg.sum())
    n_pix = gt_fg.size
    fbeta = fbeta_from_counts(above_fg, above_bg, n_gt, protocol)
    fn05 = n_gt - tp05
    acc = 1.0 - (fp05 + fn05) / n_pix
    union = tp05 + fp05 + fn05
    if protocol.eps > 0:
        iou = tp05 / (union + protocol.eps)
    elif union == 0:
        iou = protocol.empty_iou
    else:
        iou = tp05 / union
    mae = soft_mae if protocol.mae_on == "soft" else (fp05 + fn05) / n_pix
    record = ImageRecord(id=image_id, acc=acc, iou=float(iou), mae=mae, fbeta=fbeta)
    pair = PairCounts(pred, gt_fg, above_fg, above_bg, n_gt, tp05, fp05, levels, level_counts)
    return record, pair


# (code histogram of background pixels, of foreground pixels, TP and FP at the 0.5 binarisation,
#  soft MAE: mean of |soft prediction - GT|)
_Counts = tuple[np.ndarray, np.ndarray, int, int, float]


def _normalise(unit: np.ndarray, protocol: Protocol, lo: float, hi: float) -> np.ndarray:
    """``minmax``: (x - min) / (max - min) unless the map is constant (pysodmetrics)."""
    if protocol.pred_norm == "minmax" and hi != lo:
        return (unit - lo) / (hi - lo)
    return unit


def _codes(unit: np.ndarray, raw: np.ndarray, protocol: Protocol) -> np.ndarray:
    """Threshold codes of the normalised prediction (``raw`` when it is unnormalised)."""
    if protocol.grid == "ge_q256":
        return (unit * 255).astype(np.uint8).astype(np.uint16) + 1
    if np.issubdtype(raw.dtype, np.floating) and protocol.pred_norm == "dtype_max":
        thresholds = protocol.float_thresholds(raw.dtype)
        if thresholds is not None:
            codes = np.searchsorted(thresholds, raw.astype(thresholds.dtype), side="left")
            return codes.astype(np.uint16)
    return codes_k255(raw if protocol.pred_norm == "dtype_max" else unit)


def _positive(unit: np.ndarray, protocol: Protocol) -> np.ndarray:
    t = protocol.binarize_at
    return unit >= t if protocol.binarize_op == ">=" else unit > t


def binarize_prediction(pred: np.ndarray, protocol: Protocol | str) -> np.ndarray:
    """The foreground mask that Acc and IoU count, at the prediction's own size: the map scaled
    by its dtype (min-max normalised under ``pred_norm="minmax"``), then ``binarize_op``
    ``binarize_at`` (``> 0.5`` under ``odbench``)."""
    protocol = get_protocol(protocol)
    unit = to_unit(pred)
    return _positive(_normalise(unit, protocol, unit.min(), unit.max()), protocol)


CALCHIST_MAX_PIXELS = 2**24  # float32 counts are exact below


def level_histogram(pred: np.ndarray, gt_fg: np.ndarray) -> np.ndarray:
    """``hist[g, v]``: the pixels of 8-bit value v on the background (g = 0) and on the object
    (g = 1).  OpenCV's 2-D ``calcHist`` (float32 counts, exact below 2²⁴ pixels), else one
    ``np.bincount`` over ``256 g + v``."""
    if pred.size < CALCHIST_MAX_PIXELS:
        import cv2

        g8 = np.ascontiguousarray(gt_fg).view(np.uint8)
        counts = cv2.calcHist(
            [np.ascontiguousarray(pred), g8], [0, 1], None, [256, 2], [0, 256, 0, 2]
        )
        return counts.T.astype(np.int64)
    index = gt_fg.astype(np.uint16)
    index *= 256
    index += pred
    return np.bincount(index.ravel(), minlength=512).reshape(2, 256)


def _counts_uint8(
    pred: np.ndarray, gt_fg: np.ndarray, protocol: Protocol
) -> tuple[_Counts, np.ndarray, np.ndarray]:
    """8-bit predictions: one 512-bin histogram of (GT, value); every per-pixel quantity is a
    function of the value, so it is evaluated on the 256 levels only (the same float
    operations as per pixel, hence the same results).  Also returns the 256 normalised levels
    and the (2, 256) histogram."""
    hist = level_histogram(pred, gt_fg)
    lo = hi = 0  # the tables depend on the map's range only under min-max normalisation
    if protocol.pred_norm == "minmax":
        present = np.flatnonzero(hist[0] + hist[1])
        lo, hi = int(present[0]), int(present[-1])
    unit, code, pos = _level_tables(protocol, lo, hi)
    n_codes = protocol.n_thresholds + 1
    hist_bg = np.bincount(code, weights=hist[0], minlength=n_codes).astype(np.int64)
    hist_fg = np.bincount(code, weights=hist[1], minlength=n_codes).astype(np.int64)
    tp05, fp05 = int(hist[1] @ pos), int(hist[0] @ pos)
    abs_err = float(hist[0] @ unit + hist[1] @ (1.0 - unit))
    return (hist_bg, hist_fg, tp05, fp05, abs_err / gt_fg.size), unit, hist


@lru_cache(maxsize=4096)
def _level_tables(
    protocol: Protocol, lo: int, hi: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per 8-bit level v: the normalised value (the map's range being levels ``lo``..``hi``),
    its threshold code and whether it is foreground at the binarisation; the same for every
    map of that range, so computed once (read-only arrays)."""
    raw_levels = np.arange(256, dtype=np.uint8)
    levels = to_unit(raw_levels)
    unit = _normalise(levels, protocol, levels[lo], levels[hi])
    code = _codes(unit, raw_levels, protocol)
    pos = _positive(unit, protocol).astype(np.int64)
    for table in (unit, code, pos):
        table.flags.writeable = False
    return unit, code, pos


def _counts_pixels(pred: np.ndarray, gt_fg: np.ndarray, protocol: Protocol) -> _Counts:
    """Any other prediction (uint16, float, bool, resized): per-pixel codes, one bincount."""
    unit = to_unit(pred)
    unit = _normalise(unit, protocol, unit.min(), unit.max())
    code = _codes(unit, pred, protocol)
    n_codes = protocol.n_thresholds + 1
    if n_codes <= 256:  # 8-bit codes: OpenCV's histogram, ~4x np.bincount's speed
        hist = level_histogram(code.astype(np.uint8), gt_fg)
        hist_bg, hist_fg = hist[0, :n_codes], hist[1, :n_codes]
    else:
        index = gt_fg.astype(np.uint16)
        index *= n_codes
        index += code
        hist = np.bincount(index.ravel(), minlength=2 * n_codes)
        hist_bg, hist_fg = hist[:n_codes], hist[n_codes:]
    pos = _positive(unit, protocol)
    tp05 = int(np.count_nonzero(pos & gt_fg))
    fp05 = int(np.count_nonzero(pos)) - tp05
    err = unit - gt_fg
    abs_err = float(np.abs(err, out=err).sum())  # in place: the same values, one array less
    return hist_bg, hist_fg, tp05, fp05, abs_err / gt_fg.size


@lru_cache(maxsize=64)
def _uint16_split(protocol: Protocol) -> int | None:
    """:func:`~odbench.metrics.levels16.class_split` of the 65536 levels' codes and
    binarisation under a ``dtype_max`` protocol, computed with the per-pixel path's float
    operations; None where the class histogram does not apply."""
    if protocol.pred_norm != "dtype_max" or protocol.n_thresholds + 1 != 256:
        return None
    raw = np.arange(65536, dtype=np.uint16)
    unit = to_unit(raw)
    return levels16.class_split(_codes(unit, raw, protocol), _positive(unit, protocol))


#: a min-max uint16 map is counted through a table of its levels when it has fewer levels
#: than this many per pixel (a level of the table costs about a third of a pixel's float path)
MINMAX_TABLE_LEVELS_PER_PIXEL = 1


@lru_cache(maxsize=8)
def _uint16_lut(protocol: Protocol, lo: int, hi: int) -> np.ndarray:
    """The level table (:func:`~odbench.metrics.levels16.level_lut`) of a uint16 map with
    levels ``lo .. hi`` under a ``minmax`` protocol: normalised, coded and binarised with the
    per-pixel path's float operations (maps stretched to the full range share one)."""
    raw = np.arange(lo, hi + 1, dtype=np.uint16)
    unit = to_unit(raw)
    unit = _normalise(unit, protocol, unit[0], unit[-1])
    return levels16.level_lut(lo, _codes(unit, raw, protocol), _positive(unit, protocol))


def _counts_uint16(pred: np.ndarray, gt_fg: np.ndarray, protocol: Protocol) -> _Counts | None:
    """uint16 predictions (what ``eval`` stores) without a float map
    (:mod:`odbench.metrics.levels16`): the same counts as the per-pixel path, the soft MAE
    exact and rounded once (:func:`~odbench.metrics.levels16.soft_mae`; the per-pixel path's
    float64 sum is at most an ulp or two away).  None where it does not apply: a ``dtype_max``
    protocol whose binarisation level is no class boundary, a ``minmax`` map with more levels
    than pixels, 2²⁴ pixels or more (float32 counts), under 16 pixels (OpenCV's Python binding reads a 1 x 1 array as a scalar)."""
    if not 16 <= pred.size < CALCHIST_MAX_PIXELS:
        return None
    soft = protocol.mae_on == "soft"
    if protocol.pred_norm == "minmax":
        lo, hi = levels16.level_range(pred)
        if hi - lo >= MINMAX_TABLE_LEVELS_PER_PIXEL * pred.size:
            return None  # the table would cost more than the pixels
        norm = (lo, hi - lo) if hi > lo else (0, 65535)  # a constant map is not normalised
        lut = _uint16_lut(protocol, lo, hi)
        return levels16.counts_lut(
            pred, gt_fg, lut, protocol.n_thresholds + 1, norm if soft else None
        )
    c0 = _uint16_split(protocol)
    if c0 is None:
        return None
    return levels16.counts_classes(pred, gt_fg, c0, soft)


# --------------------------------------------------------------------------- maxFβ


def reduce_max_fbeta(
    mean_curve: np.ndarray, mean_of_maxima: np.ndarray | float, max_over: str
) -> np.ndarray:
    """maxFβ of a dataset (or of each bootstrap resample: leading axes are kept) from its mean
    Fβ curve (..., T) and its mean of per-image maxima (...).

    ``max_over="dataset"``: the maximum of the mean curve (ONE threshold for the dataset; the
    field's convention, DiffusionSeg §4.1); ``"per_image"``: the mean of per-image maxima
    (SelfMask / FOUND).  The one reduction behind ``eval``, ``compare`` and the leaderboard."""
    if max_over == "dataset":
        return np.max(mean_curve, axis=-1)
    if max_over == "per_image":
        return np.asarray(mean_of_maxima, dtype=np.float64)
    raise ValueError(f"unknown max_over {max_over!r}")


# --------------------------------------------------------------------------- streaming meter


class SaliencyMeter(Meter):
    """Streaming Acc / IoU / MAE / Fβ under one protocol (memory independent of dataset size);
    the meters' interface: :mod:`odbench.metrics.meter`."""

    states = ("n", "sum_acc", "sum_iou", "sum_mae", "sum_fbeta", "sum_max_fbeta")

    def __init__(self, protocol: Protocol | str = DEFAULT_PROTOCOL) -> None:
        self.protocol = get_protocol(protocol)
        self.n = 0
        self.sum_acc = 0.0
        self.sum_iou = 0.0
        self.sum_mae = 0.0
        self.sum_fbeta = np.zeros(self.protocol.n_thresholds, dtype=np.float64)
        self.sum_max_fbeta = 0.0

    def score(
        self, pred: np.ndarray, gt: np.ndarray | PreparedGt, image_id: str = ""
    ) -> ImageRecord:
        """Score one image without adding it (pure: safe from worker threads)."""
        return score_image(pred, gt, self.protocol, image_id)

    def update(self, pred: np.ndarray, gt: np.ndarray, image_id: str = "") -> ImageRecord:
        """Score one image, add it to the running sums and return its record."""
        record = score_image(pred, gt, self.protocol, image_id)
        self.add(record)
        return record

    def add(self, record: ImageRecord) -> None:
        """Add an already computed record (same protocol)."""
        if record.fbeta.shape != self.sum_fbeta.shape:
            raise ValueError(
                f"record {record.id!r} has {record.fbeta.shape[0]} thresholds, protocol "
                f"{self.protocol.name!r} has {self.sum_fbeta.shape[0]}"
            )
        self.n += 1
        self.sum_acc += record.acc
        self.sum_iou += record.iou  # NaN propagates (TokenCut/Voynov rule)
        self.sum_mae += record.mae
        self.sum_fbeta += record.fbeta
        self.sum_max_fbeta += float(record.fbeta.max())

    @classmethod
    def from_records(
        cls, protocol: Protocol | str, records: Iterable[ImageRecord]
    ) -> SaliencyMeter:
        meter = cls(protocol)
        for record in records:
            meter.add(record)
        return meter

    def compute(self) -> dict[str, object]:
        """Dataset metrics: ``acc, iou, max_fbeta, mae, n_images, protocol, best_threshold,
        fbeta_curve`` (the mean Fβ curve as a list, thresholds ascending).

        ``max_fbeta`` is the max of the mean curve (``max_over="dataset"``, ``best_threshold`` is
        that threshold) or the mean of per-image maxima (``"per_image"``, ``best_threshold`` None).
        ``iou`` is NaN when the protocol's empty/empty rule produced a NaN."""
        if self.n == 0:
            raise ValueError("no images were scored")
        curve = self.sum_fbeta / self.n
        max_over = self.protocol.max_over
        max_fbeta = float(reduce_max_fbeta(curve, self.sum_max_fbeta / self.n, max_over))
        best: float | None = None
        if max_over == "dataset":
            best = float(self.protocol.thresholds[int(np.argmax(curve))])
        return {
            "acc": self.sum_acc / self.n,
            "iou": self.sum_iou / self.n,
            "max_fbeta": max_fbeta,
            "mae": self.sum_mae / self.n,
            "n_images": self.n,
            "protocol": self.protocol.name,
            "best_threshold": best,
            "fbeta_curve": [float(f) for f in curve],
        }
