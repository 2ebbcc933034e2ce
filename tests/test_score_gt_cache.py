"""Several methods scored on one dataset share each GT's reading and GT-only quantities
(``score_methods``, used by ``score --config``): the same records as scoring each method alone,
weighted Fβ's distance transform computed once per GT (not once per method), and a prepared GT
refused by a protocol that reads masks another way."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from odbench.imageio import read_gray, write_png
from odbench.metrics import sod
from odbench.metrics.protocols import get_protocol
from odbench.metrics.saliency import prepare_gt
from odbench.scoring.folders import score_methods
from odbench.scoring.meters import make_meter

N_IMAGES, N_METHODS = 5, 3


def make_dataset(root: Path) -> tuple[list[Path], list[list[Path]]]:
    """GT masks of one size but different objects (a GT-only quantity served for the wrong
    image would show), and N_METHODS soft maps of each."""
    rng = np.random.default_rng(41)
    gts, preds = [], [[] for _ in range(N_METHODS)]
    for i in range(N_IMAGES):
        gt = np.zeros((30, 44), np.uint8)
        y, x = (int(v) for v in rng.integers(2, 18, 2))
        gt[y : y + 10 + i, x : x + 12 + 2 * i] = 255
        gt[y, x] = 128  # foreground under >= 128, background under > 128
        gts.append(root / "gt" / f"{i}.png")
        write_png(gts[-1], gt)
        for m in range(N_METHODS):
            pred = np.clip(gt * 0.5 + rng.normal(60 + 20 * m, 40, gt.shape), 0, 255)
            preds[m].append(root / f"m{m}" / f"{i}.png")
            write_png(preds[m][-1], pred.astype(np.uint8))
    return gts, preds


def assert_same(a, b) -> None:
    if isinstance(a, tuple):
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
        return
    for f in fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y, err_msg=f.name)
        else:
            assert x == y or (x != x and y != y), f.name  # equal, or both NaN


@pytest.mark.parametrize("protocol", ["odbench", "pysodmetrics"])
def test_shared_gt_gives_each_methods_own_records(tmp_path, protocol, monkeypatch):
    gts, preds = make_dataset(tmp_path)
    alone = []  # no sharing: each method's map against the GT array, read again
    for m in range(N_METHODS):
        meter = make_meter(protocol, "all")
        alone.append(
            [
                meter.score(read_gray(p), read_gray(g), str(i))
                for i, (p, g) in enumerate(zip(preds[m], gts))
            ]
        )
    calls = tmp_path / "calls.log"  # a file: worker processes count in it too
    real = sod.weighted_f_mask

    def counted(gt):
        with open(calls, "a") as f:
            f.write("1\n")
        return real(gt)

    monkeypatch.setattr(sod, "weighted_f_mask", counted)
    meters = [make_meter(protocol, "all") for _ in range(N_METHODS)]
    items = [(str(i), [preds[m][i] for m in range(N_METHODS)], g) for i, g in enumerate(gts)]
    together = score_methods(items, meters, workers=2)
    assert calls.read_text().count("1") == N_IMAGES  # once per GT, not once per (method, GT)
    for records, reference in zip(together, alone, strict=True):
        assert len(records) == N_IMAGES
        for got, ref in zip(records, reference, strict=True):
            assert_same(got, ref)


def test_prepared_gt_is_keyed_by_the_protocols_gt_rule():
    gt = np.zeros((12, 16), np.uint8)
    gt[3:9, 4:12] = 255
    gt[3, 4:12] = 128  # object under odbench (>= 128), background under pysodmetrics (> 128)
    pred = np.random.default_rng(42).integers(0, 256, gt.shape, dtype=np.uint8)
    for name in ("odbench", "pysodmetrics"):
        protocol = get_protocol(name)
        prepared = prepare_gt(gt, protocol)
        assert_same(
            sod.score_image_all(pred, prepared, protocol, "a"),
            sod.score_image_all(pred, gt, protocol, "a"),
        )
    with pytest.raises(ValueError, match="prepare it under this protocol"):
        sod.score_image_all(pred, prepare_gt(gt, "odbench"), get_protocol("pysodmetrics"), "a")
