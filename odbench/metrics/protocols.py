"""Evaluation protocols: every choice that changes a saliency number, written down as data.

The field's repositories compute "maxFβ", IoU, Acc and MAE in incompatible ways.  A
:class:`Protocol` names each of those choices explicitly; :class:`odbench.metrics.saliency.SaliencyMeter`
interprets it.  The built-in protocols reproduce the evaluation code of the repositories named
in their ``sources`` (read, not copied; file paths below), quirks included:

``odbench`` (default)
    GT foreground = 8-bit value >= 128; prediction scaled to [0, 1] by its dtype's maximum;
    resized bilinearly to the GT size when sizes differ (OpenCV ``cv2.resize`` with
    ``INTER_LINEAR`` on float32: half-pixel centres, no antialiasing, the same sampling as
    ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``).  Acc and IoU at
    prediction > 0.5, empty prediction vs empty GT has IoU 1.  Fβ curve over t_k = k/255,
    k = 0..254, foreground = prediction > t_k; P = 1 when nothing is predicted, R = 1 when the
    GT is empty, F = 0 when P = R = 0, β² = 0.3; dataset curve = mean over images, maxFβ = its
    maximum (one threshold for the whole dataset).  MAE between the soft [0, 1] prediction and
    the binary GT.

``tokencut`` -- YangtaoWANG95/TokenCut, ``unsupervised_saliency_detection/metric.py`` and
    ``get_saliency.py``.  GT is read with ``Image.open(...).convert('L')`` as uint8 and compared
    as ``gt > 0.5`` (IoU, Acc) or ``gt.to(bool)`` (precision/recall): foreground = ANY non-zero
    pixel.  Thresholds ``np.arange(0, 1, 1/255)`` with strict ``>``, P/R guarded to 1 exactly as
    in ``odbench``, NaN F set to 0, curve averaged over images then maximised.  Float maps are
    compared as torch compares them: ``tensor > numpy.float64`` casts the threshold to the
    tensor's dtype, so a float32 map meets ``float32(t_k)`` (``float32(k/255)`` rounds UP for 254
    of the 255 k: a float32 v/255 is NOT above threshold v) and a float64 map meets the
    ``np.arange`` values (24 of which lie one ulp below k/255: a float64 v/255 IS above them).  IoU is
    ``intersection / union`` with no guard: empty vs empty is 0/0 = NaN, and the per-image
    values are *summed* (``avg_values[...] += ...``), so one such image makes the dataset IoU
    NaN (we propagate NaN the same way).  No resize (predictions must have the GT size).
    TokenCut's code has no MAE; ``mae`` is odbench's soft MAE.

``voynov`` -- anvoynov/BigGANsAreWatching, ``data.py`` (``SegmentationDataset``,
    ``central_crop``), ``metrics.py``, ``postprocessing.py`` (``Threshold``).  Image and GT are
    centre-cropped to a square of the shorter side (torchvision ``CenterCrop`` offsets
    ``top = int(round((h - s) / 2))``, Python rounding, reimplemented in numpy), GT foreground =
    ``ToTensor(mask) >= 0.5`` (8-bit value >= 128; their loader takes the R channel of an RGB
    conversion, we take luminance: identical for grayscale masks).  Acc/IoU use
    ``Threshold``: prediction ``>= 0.5`` (not ``>``).  Fβ as TokenCut; IoU NaN rule as TokenCut.
    Float maps meet the thresholds as in TokenCut (``np.arange`` values in the map's precision).
    Note: the default of ``SegmentationDataset`` is ``crop=True`` (what this protocol follows);
    ``train_segmentation.evaluate`` passes ``crop=False``.

``selfmask`` -- NoelShin/selfmask, ``metrics/f_measure.py``, ``metrics/iou.py``,
    ``metrics/mae.py``, ``metrics/pixel_acc.py``, ``evaluator.py``, ``datasets/base_dataset.py``.
    GT ``m > 0`` when its max exceeds 1: foreground = non-zero.  ``beta_square = 0.3`` is squared
    again (``self.beta_square ** 2``): effective β² = 0.09.  P = TP / (TP+FP + 1e-7),
    R = TP / (TP+FN + 1e-7), F = (1+β²)PR / (β²P + R + 1e-7): an empty prediction has P = 0 and
    an empty GT R = 0.  Thresholds ``torch.arange(0, 1, 1/255)`` with ``>``: float32 values
    ``float32(k/255)``, so a float32 map equal to v/255 is not above threshold v (a float64 map is
    compared in float64 against those float32 values, torch's promotion); the max over
    thresholds is taken PER IMAGE, then averaged (optimistic).  IoU = I / (U + 1e-7) (empty vs
    empty = 0), Acc at ``> 0.5``, MAE on the soft prediction.  Predictions are bilinearly
    upsampled (``F.interpolate``, ``align_corners=False``): we resize like ``odbench``.

``found`` -- valeoai/FOUND, ``evaluation/saliency.py`` (``eval_batch``),
    ``evaluation/metrics/*.py`` (SelfMask's code), ``datasets/datasets.py``.  As ``selfmask``
    except GT foreground = ``mask_gt == 255`` and MAE computed on the BINARISED prediction
    (``compute_mae(binary_pred, gt)`` with ``binary_pred = pred > 0.5``), i.e. MAE = 1 - Acc.

``pysodmetrics`` -- lartpang/PySODMetrics, ``py_sod_metrics/utils.py`` (``prepare_data``) and
    ``py_sod_metrics/sod_metrics.py`` (``Fmeasure.cal_pr``, ``MAE``).  GT foreground = value > 128;
    prediction ``pred / 255`` then min-max normalised per image (unless constant), quantised
    with ``(pred * 255).astype(np.uint8)`` (floor), 256 thresholds 0..255 with ``>=``;
    P = TP / max(TP+FP, 1) (0 when nothing is predicted), R = TP / max(|GT|, 1) (0 for an empty
    GT), F = 0 when its numerator is 0, ``beta = 0.3`` used as β²; curve = mean over images
    (their curve is ordered from threshold 255 down to 0; ours ascends), maxFβ = its max.  MAE on
    the min-max normalised prediction.  No resize (pysodmetrics raises on a shape mismatch).
    pysodmetrics has no Acc/IoU at 0.5: odbench's rule is applied to the normalised prediction.
    The salient-object family (:mod:`odbench.metrics.sod`) follows ``Smeasure``, ``Emeasure``,
    ``WeightedFmeasure`` and ``FmeasureV2``'s binary Dice / BER: the S-measure centroid is
    rounded half to even (``numpy.round``; MATLAB rounds half away from zero) and a region of
    zero area makes S NaN (as in the MATLAB code); odbench rounds half away and gives such a
    region weight 0.

Dataset-level vs per-image max: with ``max_over="dataset"`` one threshold serves every image
(the protocol's ``best_threshold``); with ``"per_image"`` each image picks its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal, get_args

import numpy as np

from odbench.errors import OdbenchError
from odbench.registry import Registry

GtRule = Literal["ge128", "gt128", "nonzero", "eq255"]
PredNorm = Literal["dtype_max", "minmax"]
Resize = Literal["bilinear", "none"]
Grid = Literal["gt_k255", "ge_q256"]
MaxOver = Literal["dataset", "per_image"]
BinarizeOp = Literal[">", ">="]
ThresholdValues = Literal["exact", "numpy_arange", "torch_arange"]
MaeOn = Literal["soft", "binary"]
CentroidRound = Literal["half_away", "half_even"]
EmptyQuadrant = Literal["skip", "nan"]


class MetricInputError(OdbenchError, ValueError):
    """A prediction / GT pair the protocol cannot score (shape, dtype, non-finite values)."""


@dataclass(frozen=True)
class Protocol:
    """One saliency evaluation protocol (see the module docstring for the built-ins).

    Fields:
        gt_rule: GT foreground on the 8-bit value (16-bit GT is scaled to 8 bits by
            ``round(v * 255 / 65535)``, bool GT is 0/255): ``ge128`` (>= 128), ``gt128`` (> 128),
            ``nonzero`` (!= 0), ``eq255`` (== 255).
        pred_norm: ``dtype_max`` (÷255, ÷65535, float clipped to [0, 1]) or ``minmax``
            (``dtype_max`` then per-image min-max unless the map is constant; pysodmetrics).
        resize: ``bilinear`` (prediction resized to the GT size with cv2 ``INTER_LINEAR`` on
            float32) or ``none`` (a size mismatch is an error).
        center_crop: crop GT (and a prediction of the same size) to the centred square of the
            shorter side, torchvision ``CenterCrop`` offsets.
        grid: ``gt_k255``: thresholds k/255, k = 0..254, foreground = prediction > k/255 (exact
            for any input dtype); ``ge_q256``: q = floor(255 * prediction) as uint8, thresholds
            k = 0..255, foreground = q >= k (pysodmetrics).
        beta2, square_beta2: β² and whether the code squares it again (effective β² = beta2²).
        max_over: ``dataset`` (mean curve, then max) or ``per_image`` (max per image, then mean).
        threshold_values: how FLOAT maps meet t_k (integer maps are exact in every mode, as
            their float32 v/255 meets float32(k/255) exactly when v = k): ``exact`` (p > k/255
            decided exactly), ``numpy_arange`` (t_k = ``np.arange(0, 1, 1/255)`` cast to the
            map's precision: float32 or float64), ``torch_arange`` (t_k = ``float32(k/255)``, the
            values of ``torch.arange(0, 1, 1/255)``, compared in the map's precision).
        binarize_op, binarize_at: prediction binarisation for Acc, IoU (and binary MAE).
        empty_pred_precision, empty_gt_recall: P when nothing is predicted, R when the GT is
            empty (used when ``eps == 0``).
        eps: if > 0, P = TP/(TP+FP+eps), R = TP/(|GT|+eps), F = (1+β²)PR/(β²P+R+eps) and
            IoU = I/(U+eps) (SelfMask/FOUND); if 0, exact ratios with the guards above and
            F = 0 when its numerator is 0.
        empty_iou: IoU when prediction and GT are both empty (1, NaN or 0); NaN propagates
            through the dataset mean.
        mae_on: ``soft`` (normalised prediction) or ``binary`` (binarised prediction).
        s_centroid_round: how the S-measure rounds the GT centroid that splits the image into
            four regions: ``half_away`` (MATLAB ``round``, Fan et al.'s code) or ``half_even``
            (``numpy.round``, pysodmetrics): they differ when the centroid is exactly x.5.
        s_empty_quadrant: a region of zero area (GT centroid in the last row or column):
            ``skip`` (its weight is 0, so it adds 0) or ``nan`` (its SSIM is 0/0 = NaN and
            0 * NaN poisons the score, as in the MATLAB code and pysodmetrics).
        sources: repositories and files this protocol reproduces.
    """

    name: str
    description: str
    gt_rule: GtRule = "ge128"
    pred_norm: PredNorm = "dtype_max"
    resize: Resize = "bilinear"
    center_crop: bool = False
    grid: Grid = "gt_k255"
    beta2: float = 0.3
    square_beta2: bool = False
    max_over: MaxOver = "dataset"
    threshold_values: ThresholdValues = "exact"
    binarize_op: BinarizeOp = ">"
    binarize_at: float = 0.5
    empty_pred_precision: float = 1.0
    empty_gt_recall: float = 1.0
    eps: float = 0.0
    empty_iou: float = 1.0
    mae_on: MaeOn = "soft"
    s_centroid_round: CentroidRound = "half_away"
    s_empty_quadrant: EmptyQuadrant = "skip"
    sources: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        choices = {
            "gt_rule": get_args(GtRule),
            "pred_norm": get_args(PredNorm),
            "resize": get_args(Resize),
            "grid": get_args(Grid),
            "max_over": get_args(MaxOver),
            "binarize_op": get_args(BinarizeOp),
            "threshold_values": get_args(ThresholdValues),
            "mae_on": get_args(MaeOn),
            "s_centroid_round": get_args(CentroidRound),
            "s_empty_quadrant": get_args(EmptyQuadrant),
        }
        for key, valid in choices.items():
            if getattr(self, key) not in valid:
                raise ValueError(
                    f"protocol {self.name!r}: {key} must be one of {', '.join(valid)}, "
                    f"got {getattr(self, key)!r}"
                )
        if not self.beta2 > 0 or self.eps < 0 or not 0 <= self.binarize_at <= 1:
            raise ValueError(
                f"protocol {self.name!r}: need beta2 > 0, eps >= 0, 0 <= binarize_at <= 1"
            )

    @property
    def effective_beta2(self) -> float:
        """β² as it enters the F formula (0.09 for SelfMask/FOUND's squared 0.3)."""
        return self.beta2**2 if self.square_beta2 else self.beta2

    @property
    def n_thresholds(self) -> int:
        return 255 if self.grid == "gt_k255" else 256

    def float_thresholds(self, dtype: np.dtype) -> np.ndarray | None:
        """The threshold values a float map of ``dtype`` is compared with (``threshold_values``),
        in that precision; None for ``exact``."""
        if self.threshold_values == "exact":
            return None
        ftype = np.float32 if dtype == np.float32 else np.float64
        if self.threshold_values == "numpy_arange":
            return np.arange(0.0, 1.0, 1.0 / 255).astype(ftype)
        return (np.arange(255) / 255.0).astype(np.float32).astype(ftype)

    @property
    def thresholds(self) -> np.ndarray:
        """Threshold values in [0, 1], ascending, one per point of the Fβ curve."""
        return np.arange(self.n_thresholds, dtype=np.float64) / 255.0

    def as_dict(self) -> dict[str, object]:
        """JSON-ready description (NaN written as the string "nan")."""
        out: dict[str, object] = {}
        for key in self.__dataclass_fields__:
            value = getattr(self, key)
            if isinstance(value, float) and math.isnan(value):
                value = "nan"
            elif isinstance(value, tuple):
                value = list(value)
            out[key] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Protocol:
        """The protocol :meth:`as_dict` describes (keys it does not know are ignored); a
        TypeError or ValueError for a description that is not one."""
        fields = cls.__dataclass_fields__
        values = {
            k: float("nan")
            if v == "nan" and isinstance(fields[k].default, float)  # not a "nan" choice
            else tuple(v)
            if isinstance(v, list)
            else v
            for k, v in data.items()
            if k in fields
        }
        return cls(**values)  # type: ignore[arg-type]


ODBENCH = Protocol(
    name="odbench",
    description="Default: GT>=128, pred>k/255 (k=0..254), beta2=0.3, dataset-level maxF, "
    "empty/empty IoU=1, soft MAE.",
    sources=("DiffusionSeg (Ma et al. 2023) benchmark protocol, odbench issue 3",),
)
#: The protocol every command and function scores under unless told otherwise.
DEFAULT_PROTOCOL = ODBENCH.name

TOKENCUT = Protocol(
    name="tokencut",
    description="TokenCut metric.py: GT non-zero, pred>k/255, dataset-level maxF, "
    "empty/empty IoU NaN (propagates), no resize.",
    gt_rule="nonzero",
    resize="none",
    threshold_values="numpy_arange",
    empty_iou=math.nan,
    sources=(
        "YangtaoWANG95/TokenCut unsupervised_saliency_detection/metric.py",
        "YangtaoWANG95/TokenCut unsupervised_saliency_detection/get_saliency.py",
    ),
)

VOYNOV = Protocol(
    name="voynov",
    description="BigGANsAreWatching: centre square crop, GT>=128, Acc/IoU at pred>=0.5, "
    "otherwise TokenCut's metric.",
    gt_rule="ge128",
    resize="none",
    center_crop=True,
    threshold_values="numpy_arange",
    binarize_op=">=",
    empty_iou=math.nan,
    sources=(
        "anvoynov/BigGANsAreWatching data.py",
        "anvoynov/BigGANsAreWatching metrics.py",
        "anvoynov/BigGANsAreWatching postprocessing.py",
    ),
)

SELFMASK = Protocol(
    name="selfmask",
    description="SelfMask: GT non-zero, beta2 0.3 squared again (0.09), per-image maxF, "
    "eps 1e-7 (empty/empty IoU 0).",
    gt_rule="nonzero",
    square_beta2=True,
    max_over="per_image",
    threshold_values="torch_arange",
    empty_pred_precision=0.0,
    empty_gt_recall=0.0,
    eps=1e-7,
    empty_iou=0.0,
    sources=(
        "NoelShin/selfmask metrics/f_measure.py",
        "NoelShin/selfmask metrics/iou.py",
        "NoelShin/selfmask evaluator.py",
        "NoelShin/selfmask datasets/base_dataset.py",
    ),
)

FOUND = replace(
    SELFMASK,
    name="found",
    description="FOUND: as selfmask but GT==255 and MAE on the prediction binarised at 0.5.",
    gt_rule="eq255",
    mae_on="binary",
    sources=(
        "valeoai/FOUND evaluation/saliency.py",
        "valeoai/FOUND evaluation/metrics/f_measure.py",
        "valeoai/FOUND datasets/datasets.py",
    ),
)

PYSODMETRICS = Protocol(
    name="pysodmetrics",
    description="PySODMetrics Fmeasure/MAE: GT>128, min-max normalised pred, uint8, "
    "256 thresholds >=, dataset-level maxF, no resize.",
    gt_rule="gt128",
    pred_norm="minmax",
    resize="none",
    grid="ge_q256",
    empty_pred_precision=0.0,
    empty_gt_recall=0.0,
    s_centroid_round="half_even",
    s_empty_quadrant="nan",
    sources=(
        "lartpang/PySODMetrics py_sod_metrics/utils.py",
        "lartpang/PySODMetrics py_sod_metrics/sod_metrics.py",
    ),
)

BUILTIN_PROTOCOLS: tuple[Protocol, ...] = (ODBENCH, TOKENCUT, VOYNOV, SELFMASK, FOUND, PYSODMETRICS)


#: Evaluation protocols by name: the built-in ones; ``PROTOCOLS.add(proto.name, obj=proto)``
#: registers another (``odbench list protocols``, ``--protocol NAME``).
PROTOCOLS: Registry[Protocol] = Registry("protocol")
for _proto in BUILTIN_PROTOCOLS:
    PROTOCOLS.add(_proto.name, obj=_proto, description=_proto.description)


def get_protocol(name: str | Protocol) -> Protocol:
    """Look a protocol up by name (unknown names list the valid ones); a Protocol passes through."""
    if isinstance(name, Protocol):
        return name
    return PROTOCOLS.get(name)
