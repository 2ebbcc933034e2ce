"""eval's memory does not grow with the dataset (issue 25): per-image records are streamed to
temporary files and summarized as they come, not held (``odbench bench runner --memory-n``
measures the peak RSS; this checks the Python heap, without timing)."""

from __future__ import annotations

import tracemalloc

import numpy as np

from odbench.cards import method_card
from odbench.data.base import create_dataset
from odbench.methods.center_prior import CenterPrior
from odbench.metrics.protocols import get_protocol
from odbench.phases import summarize
from odbench.runner import run


def _peak_heap(n: int) -> tuple[int, object]:
    """The traced heap's peak during a run on ``n`` tiny toy images (saliency, the family's
    curves and localization), above what it held before, and the run."""
    ds = create_dataset("toy", n=n, size=(24, 32))
    method = CenterPrior(method_card("center-prior"))
    method.name = "center-prior"
    proto = get_protocol("odbench")
    kw = dict(dataset_name="toy", use_cache=False, results_dir=None, metrics_set="all")
    run(method, ds, proto, **kw)  # imports and the protocol's tables, outside the measure
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = run(method, ds, proto, **kw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak - before, result


def test_eval_holds_no_per_image_records_in_memory() -> None:
    """450 more images raise the heap's peak by far less than their records (held, the Fβ
    curves and TP / FP counts alone are 6 KiB per image: 2.6 MiB); the run's records are still
    all there, read back from the files, and summarize to the run's metrics."""
    small, _ = _peak_heap(50)
    large, result = _peak_heap(500)
    assert large - small < 512 * 1024, f"{(large - small) / 2**20:.2f} MiB more for 450 images"
    records = result.records  # type: ignore[attr-defined]
    assert len(records) == 500 and records.sod is not None
    assert records.saliency.fbeta.shape == (500, get_protocol("odbench").n_thresholds)
    assert summarize(records, get_protocol("odbench")) == result.metrics  # type: ignore[attr-defined]
    assert np.isfinite(records.saliency.fbeta).all()
