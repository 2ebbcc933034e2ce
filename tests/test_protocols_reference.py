"""The tokencut, voynov, selfmask and found protocols against independent re-implementations of
the ORIGINAL repositories' metric code (read, then rewritten here in torch with the same
operations, dtypes and order; nothing pasted).

How a prediction reaches the original code: float arrays go in as they are (``torch.from_numpy``
keeps float32 / float64, as TokenCut's ``metric.metrics`` does with its numpy maps); uint8 maps go
in as ``ToTensor`` would make them (float32 v / 255), uint16 maps (odbench's prediction cache) as
float32 w / 65535.  GT masks go through each repository's own
loading rule (written out below).  The originals compute in float32 (``torch.tensor`` of Python
floats, float32 division of counts, float32 means, AverageMeter sums of float32 values): that
costs at most a few float32 ulps (~1e-7) on values in [0, 1], hence the 1e-6 tolerance.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tv_transforms = pytest.importorskip("torchvision.transforms")
Image = pytest.importorskip("PIL.Image")

from odbench.metrics.protocols import get_protocol  # noqa: E402
from odbench.metrics.saliency import SaliencyMeter  # noqa: E402

TOL = 1e-6

# --------------------------------------------------------------------------- references


def _as_original_tensor(pred: np.ndarray) -> torch.Tensor:
    """The map as the original code holds it: floats unchanged, uint8 as ToTensor (float32 / 255),
    uint16 likewise in float32 (w / 65535)."""
    if pred.dtype == np.uint8:
        return torch.from_numpy(pred.copy()).float().div(255)
    if pred.dtype == np.uint16:
        return torch.from_numpy(pred.astype(np.float32)).div(65535)
    return torch.from_numpy(pred.copy())


def _tokencut_style_fmax(precisions: list[list[float]], recalls: list[list[float]]) -> float:
    """``F_max`` of TokenCut / BigGANsAreWatching: P, R as float32 tensors (images x thresholds),
    F = 1.3 P R / (0.3 P + R) with NaN -> 0, mean over images, then max."""
    p = torch.tensor(precisions)
    r = torch.tensor(recalls)
    f = ((1 + 0.3) * p * r) / (0.3 * p + r)
    f[f != f] = 0.0
    return f.mean(dim=0).max().item()


def _tokencut_style_pr(
    gt_fg: torch.Tensor, pred: torch.Tensor, split: float
) -> tuple[float, float]:
    """``precision_recall(mask_gt, prediction > split)``: count ratios in float32, P = 1 when nothing
    is predicted, R = 1 when the GT is empty.  ``tensor > numpy.float64`` compares in the tensor's
    dtype (the scalar is cast to it)."""
    fg = pred > split
    tp = torch.sum(gt_fg * (gt_fg == fg))
    n_pred = torch.sum(fg).to(torch.float)
    n_gt = torch.sum(gt_fg).to(torch.float)
    prec = (tp / n_pred).reshape(1)
    prec[n_pred.reshape(1) == 0.0] = 1.0
    rec = (tp / n_gt).reshape(1)
    rec[n_gt.reshape(1) == 0.0] = 1.0
    return prec.item(), rec.item()


def tokencut_reference(preds: list[np.ndarray], gts: list[np.ndarray]) -> dict[str, float]:
    """YangtaoWANG95/TokenCut ``unsupervised_saliency_detection/metric.py``: ``metrics(pred, gt)``
    with its ``IoU``, ``accuracy``, ``precision_recall``, ``F_max`` (GT as ``get_saliency.py``
    loads it: ``Image.open(...).convert('L')`` as uint8).  IoU and Acc take ``> 0.5`` of both
    arguments (uint8 GT: any non-zero value), P/R take ``gt.to(bool)``; thresholds
    ``np.arange(0, 1, 1/255)``; per-image IoU/Acc summed in Python floats, divided by N."""
    iou_sum = acc_sum = 0.0
    precisions, recalls = [], []
    for pred, gt in zip(preds, gts):
        p = _as_original_tensor(pred)
        g = torch.from_numpy(gt.copy())
        g05, p05 = g > 0.5, p > 0.5
        inter = torch.sum(g05 * (g05 == p05))
        union = torch.sum(g05 + p05)
        iou_sum += (inter.to(torch.float) / union).item()
        acc_sum += torch.mean((g05 == p05).to(torch.float)).item()
        pr = [_tokencut_style_pr(g.to(torch.bool), p, t) for t in np.arange(0.0, 1.0, 1.0 / 255)]
        precisions.append([x[0] for x in pr])
        recalls.append([x[1] for x in pr])
    n = len(preds)
    return {
        "acc": acc_sum / n,
        "iou": iou_sum / n,
        "max_fbeta": _tokencut_style_fmax(precisions, recalls),
    }


def voynov_reference(preds: list[np.ndarray], gts: list[np.ndarray]) -> dict[str, float]:
    """anvoynov/BigGANsAreWatching: ``data.py`` ``SegmentationDataset`` (default ``crop=True``:
    ``central_crop`` = torchvision ``CenterCrop(min(W, H))`` on the PIL mask converted to RGB,
    ``ToTensor() >= 0.5``, channel 0), ``metrics.py`` ``model_metrics`` with batch size 1: IoU and
    accuracy on ``postprocessing.Threshold`` (prediction ``>= 0.5``), F_max on the soft map as
    TokenCut.  The prediction is the model's output on the cropped image: here the full map,
    centre-cropped by the same torchvision transform."""
    iou_sum = acc_sum = 0.0
    precisions, recalls = [], []
    for pred, gt in zip(preds, gts):
        pil = Image.fromarray(gt).convert("RGB")
        crop = tv_transforms.CenterCrop(min(pil.size))
        g = (tv_transforms.ToTensor()(crop(pil)) >= 0.5)[0]
        p = _as_original_tensor(pred)
        if p.shape != g.shape:
            p = tv_transforms.CenterCrop(min(p.shape))(p[None])[0]
        thr = p >= 0.5
        inter = torch.sum(g * (g == thr))
        union = torch.sum(g + thr)
        iou_sum += (inter.to(torch.float) / union).item()
        acc_sum += torch.mean((g == thr).to(torch.float)).item()
        pr = [_tokencut_style_pr(g, p, t) for t in np.arange(0.0, 1.0, 1.0 / 255)]
        precisions.append([x[0] for x in pr])
        recalls.append([x[1] for x in pr])
    n = len(preds)
    return {
        "acc": acc_sum / n,
        "iou": iou_sum / n,
        "max_fbeta": _tokencut_style_fmax(precisions, recalls),
    }


def _selfmask_fmax(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """``FMeasure._compute_f_max`` (NoelShin/selfmask ``metrics/f_measure.py``; FOUND's copy in
    ``evaluation/metrics/f_measure.py``): thresholds ``torch.arange(0, 1, 1/255)`` (float32),
    ``pred > thresholds`` broadcast over 255 copies, P = TP/(TP+FP+1e-7), R = TP/(|GT|+1e-7),
    F = (1 + 0.3**2) P R / (0.3**2 P + R + 1e-7), max over thresholds."""
    eps, b2 = 1e-7, 0.3**2
    thresholds = torch.arange(0, 1, 1 / 255).view(255, 1, 1)
    fg = pred.unsqueeze(0).repeat(255, 1, 1) > thresholds
    gts = gt.unsqueeze(0).repeat(255, 1, 1)
    tp = torch.logical_and(fg, gts).sum(dim=(-1, -2))
    prec = tp / (fg.sum(dim=(-1, -2)) + eps)
    rec = tp / (gts.sum(dim=(-1, -2)) + eps)
    return torch.max(((1 + b2) * prec * rec) / (b2 * prec + rec + eps))


def _selfmask_iou(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """``compute_iou`` (selfmask ``metrics/iou.py``, FOUND ``evaluation/metrics/iou.py``)."""
    fg = pred > 0.5
    inter = torch.logical_and(fg, gt).sum(dim=(-1, -2))
    union = torch.logical_or(fg, gt).sum(dim=(-1, -2))
    return inter / (union + 1e-7)


def _average(values: list[torch.Tensor]) -> float:
    """``AverageMeter`` fed ``val=tensor.numpy(), n=1``: a numpy float32 running sum / count."""
    total, count = 0, 0
    for v in values:
        total += v.numpy() * 1
        count += 1
    return float(total / count)


def selfmask_reference(preds: list[np.ndarray], gts: list[np.ndarray]) -> dict[str, float]:
    """NoelShin/selfmask ``evaluator.py`` ``Evaluator._update_meters`` with ``compute_iou``,
    ``FMeasure()["f_max"]``, ``compute_mae`` (``metrics/mae.py``), ``compute_pixel_accuracy``
    (``metrics/pixel_acc.py``); GT as ``datasets/base_dataset.py`` ``__getitem__``: L image as
    int64, ``m > 0`` when its max exceeds 1, then a long tensor."""
    acc, iou, fmax, mae = [], [], [], []
    for pred, gt in zip(preds, gts):
        p = _as_original_tensor(pred)
        m = np.asarray(gt, np.int64)
        if m.max() > 1.0:
            m = m > 0
        g = torch.tensor(m, dtype=torch.long)
        iou.append(_selfmask_iou(p, g))
        fmax.append(_selfmask_fmax(p, g))
        mae.append(torch.mean(torch.abs(p - g.to(torch.float32)), dim=(-1, -2)))
        acc.append(((p > 0.5) == g).to(torch.float32).mean(dim=(-1, -2)))
    return {
        "acc": _average(acc),
        "iou": _average(iou),
        "max_fbeta": _average(fmax),
        "mae": _average(mae),
    }


def found_reference(preds: list[np.ndarray], gts: list[np.ndarray]) -> dict[str, float]:
    """valeoai/FOUND ``evaluation/saliency.py`` ``eval_batch`` (``evaluation_mode="multi"``: the
    soft map is passed): ``binary_pred = (pred > 0.5).float()`` feeds ``compute_iou``,
    ``compute_mae`` and ``compute_pixel_accuracy``; ``FMeasure`` gets the soft map; GT from
    ``datasets/datasets.py`` ``FoundDataset.__getitem__`` (``for_eval``): ``mask_gt == 255``, then
    ``.float()`` in ``evaluate_saliency``."""
    acc, iou, fmax, mae = [], [], [], []
    for pred, gt in zip(preds, gts):
        p = _as_original_tensor(pred)
        g = torch.tensor(np.array(gt) == 255).float()
        binary = (p > 0.5).float()
        iou.append(_selfmask_iou(binary, g))
        fmax.append(_selfmask_fmax(p, g))
        mae.append(torch.mean(torch.abs(binary - g.to(torch.float32)), dim=(-1, -2)))
        acc.append(((binary > 0.5) == g).to(torch.float32).mean(dim=(-1, -2)))
    return {
        "acc": _average(acc),
        "iou": _average(iou),
        "max_fbeta": _average(fmax),
        "mae": _average(mae),
    }


REFERENCES = {
    "tokencut": tokencut_reference,
    "voynov": voynov_reference,
    "selfmask": selfmask_reference,
    "found": found_reference,
}

# --------------------------------------------------------------------------- inputs


def soft_gt(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A blob with an anti-aliased rim (values 1..254) plus a few stray soft pixels."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
    r = np.hypot((yy - cy) / (rng.uniform(0.15, 0.4) * h), (xx - cx) / (rng.uniform(0.15, 0.4) * w))
    gt = np.clip((1.2 - r) * 5 * 255, 0, 255).astype(np.uint8)
    stray = rng.random(shape) < 0.02
    gt[stray] = rng.integers(0, 256, int(stray.sum()))
    return gt


def soft_pred(rng: np.random.Generator, gt: np.ndarray, dtype: str) -> np.ndarray:
    """A noisy soft map correlated with the GT; float maps mix continuous values with values ON
    the threshold grid (v/255 in the map's precision, the grid's own float64 values, 0.5)."""
    base = np.clip(gt / 255.0 * 0.7 + rng.normal(0.15, 0.25, gt.shape), 0, 1)
    if dtype == "uint8":
        return np.round(base * 255).astype(np.uint8)
    if dtype == "uint16":  # odbench's prediction cache: round(p * 65535), with exact 257 k values
        out16 = np.round(base * 65535).astype(np.uint16)
        on_grid = rng.random(gt.shape) < 0.3
        out16[on_grid] = 257 * rng.integers(0, 256, int(on_grid.sum()))
        return out16
    out = base.astype(dtype)
    on_grid = rng.random(gt.shape) < 0.4
    levels = rng.integers(0, 256, int(on_grid.sum()))
    out[on_grid] = (levels / np.array(255.0, dtype)).astype(dtype)
    grid64 = rng.random(gt.shape) < 0.1
    out[grid64] = np.arange(0.0, 1.0, 1.0 / 255)[rng.integers(0, 255, int(grid64.sum()))]
    out[rng.random(gt.shape) < 0.02] = 0.5
    return out


def make_dataset(
    seed: int, dtype: str, both_empty: bool
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Varied sizes (portrait, landscape, square, odd), plus an empty GT, an empty prediction, a
    full prediction and, when ``both_empty``, an empty prediction on an empty GT."""
    rng = np.random.default_rng(seed)
    shapes = [(23, 37), (40, 29), (32, 32), (17, 50), (45, 31), (28, 41)]
    gts = [soft_gt(rng, s) for s in shapes]
    preds = [soft_pred(rng, g, dtype) for g in gts]
    gts[1][:] = 0  # empty GT, soft prediction
    zero, one = {"uint8": (0, 255), "uint16": (0, 65535)}.get(dtype, (0.0, 1.0))
    preds[2][:] = zero  # empty prediction
    preds[3][:] = one  # full prediction
    if both_empty:
        gts[4][:] = 0
        preds[4][:] = zero
    return preds, gts


def odbench_scores(name: str, preds: list[np.ndarray], gts: list[np.ndarray]) -> dict[str, object]:
    meter = SaliencyMeter(get_protocol(name))
    for i, (p, g) in enumerate(zip(preds, gts)):
        meter.update(p, g, str(i))
    return meter.compute()


def assert_close(ours: dict[str, object], ref: dict[str, float]) -> None:
    for key, expected in ref.items():
        got = ours[key]
        assert isinstance(got, float)
        if math.isnan(expected):
            assert math.isnan(got), f"{key}: reference NaN, ours {got}"
        else:
            assert abs(got - expected) <= TOL, f"{key}: ours {got!r}, reference {expected!r}"


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32", "float64"])
@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_protocol_matches_original_code(name: str, dtype: str) -> None:
    for seed in (0, 1) if dtype != "uint16" else (0,):
        preds, gts = make_dataset(seed, dtype, both_empty=False)
        assert_close(odbench_scores(name, preds, gts), REFERENCES[name](preds, gts))


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_empty_prediction_on_empty_gt_matches_original_code(name: str) -> None:
    """TokenCut/Voynov: 0/0 IoU is NaN and poisons the dataset mean; SelfMask/FOUND: eps -> 0."""
    preds, gts = make_dataset(2, "float32", both_empty=True)
    ref = REFERENCES[name](preds, gts)
    assert math.isnan(ref["iou"]) == (name in ("tokencut", "voynov"))
    assert_close(odbench_scores(name, preds, gts), ref)


def test_voynov_crop_of_a_prediction_made_on_the_cropped_image() -> None:
    """BigGANsAreWatching's model predicts on the centre crop: a crop-sized map scores the same."""
    preds, gts = make_dataset(3, "float32", both_empty=False)
    cropped = [
        tv_transforms.CenterCrop(min(p.shape))(torch.from_numpy(p)[None])[0].numpy() for p in preds
    ]
    ref = voynov_reference(preds, gts)
    assert_close(odbench_scores("voynov", cropped, gts), ref)
    assert_close(odbench_scores("voynov", preds, gts), ref)


def test_references_see_the_quirks() -> None:
    """The references are not vacuous: each disagrees with odbench's default protocol here."""
    preds, gts = make_dataset(4, "float32", both_empty=False)
    default = odbench_scores("odbench", preds, gts)
    for name, ref in REFERENCES.items():
        r = ref(preds, gts)
        assert any(abs(float(default[k]) - v) > 1e-3 for k, v in r.items()), name  # type: ignore[arg-type]


def test_float_threshold_values_are_the_originals_grids() -> None:
    """``numpy_arange`` / ``torch_arange`` hold exactly the arrays the originals build."""
    np_grid = np.arange(0.0, 1.0, 1.0 / 255)
    torch_grid = torch.arange(0, 1, 1 / 255)
    tokencut, selfmask = get_protocol("tokencut"), get_protocol("selfmask")
    assert np.array_equal(tokencut.float_thresholds(np.dtype(np.float64)), np_grid)
    assert np.array_equal(
        tokencut.float_thresholds(np.dtype(np.float32)), torch.tensor(np_grid).float().numpy()
    )
    assert np.array_equal(selfmask.float_thresholds(np.dtype(np.float32)), torch_grid.numpy())
    assert get_protocol("odbench").float_thresholds(np.dtype(np.float32)) is None


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_float32_map_of_v_over_255_scores_as_the_uint8_map(name: str) -> None:
    """In the originals a float32 v/255 is never above threshold v (float32 comparison), so an
    8-bit map and its float32 ToTensor image give identical numbers."""
    preds, gts = make_dataset(5, "uint8", both_empty=False)
    as_float = [p.astype(np.float32) / np.float32(255) for p in preds]
    a, b = odbench_scores(name, preds, gts), odbench_scores(name, as_float, gts)
    for key in ("acc", "iou", "max_fbeta"):
        assert abs(float(a[key]) - float(b[key])) <= TOL  # type: ignore[arg-type]
    assert a["fbeta_curve"] == pytest.approx(b["fbeta_curve"], abs=1e-12)
