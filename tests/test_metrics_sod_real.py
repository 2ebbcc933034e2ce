"""The salient-object family on real ECSSD masks with real predictions (center-prior and wCtr),
against PySODMetrics.  Skipped when ../shared/data is absent."""

from __future__ import annotations

import numpy as np
import pytest
from realdata import REAL_DATA
from test_metrics_sod import TOL, pysod_reference, score_all  # tests/ is on sys.path

from odbench.imageio import read_gray, read_rgb

ECSSD = REAL_DATA / "ECSSD"
N_IMAGES = 6


@pytest.mark.parametrize("method", ["center-prior", "wctr"])
def test_agrees_with_pysodmetrics_on_real_ecssd_maps(method):
    pytest.importorskip("py_sod_metrics")
    if not (ECSSD / "images").is_dir():
        pytest.skip(f"real ECSSD not found at {ECSSD}")
    from odbench.methods.base import create_method

    ids = sorted(p.stem for p in (ECSSD / "images").glob("*.jpg"))[:: 1000 // N_IMAGES][:N_IMAGES]
    images = [read_rgb(ECSSD / "images" / f"{i}.jpg") for i in ids]
    gts = [read_gray(ECSSD / "ground_truth_mask" / f"{i}.png") for i in ids]
    maps = create_method(method).predict(images)
    # 8-bit, as a prediction folder holds them (pysodmetrics reads uint8 only)
    pairs = [(np.round(m * 255).astype(np.uint8), g) for m, g in zip(maps, gts)]
    ref = pysod_reference(pairs)
    ours, _ = score_all("pysodmetrics", pairs)
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value, abs=TOL), key
    assert 0.2 < ours["s_measure"] < 0.9  # real maps: neither degenerate nor perfect
