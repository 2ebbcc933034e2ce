"""eval's memory does not grow with the dataset (issue 25): per-image records are streamed to
temporary files and summarized as they come, not held (``odbench bench runner --memory-n``
measures the peak RSS; this checks the Python heap, without timing)."""

from __future__ import annotations

import hashlib
import io
import tracemalloc
from pathlib import Path

import numpy as np

from odbench.cards import method_card
from odbench.data.base import create_dataset
from odbench.methods.center_prior import CenterPrior
from odbench.metrics.protocols import get_protocol
from odbench.results import Records, RunResult, SaliencyRecords, read_results, write_results
from odbench.runner import run
from odbench.summarize import summarize


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


def _memmapped_run(folder: Path, n: int) -> RunResult:
    """A run of ``n`` images whose records are read-only memory maps of files (as a run's)."""
    rng = np.random.default_rng(n)
    folder.mkdir()
    arrays = {"acc": (n,), "iou": (n,), "mae": (n,), "fbeta": (n, 256)}
    for key, shape in arrays.items():
        out = np.lib.format.open_memmap(folder / f"{key}.npy", "w+", np.float64, shape)
        out[:] = rng.random(shape)
        out.flush()
        del out
    parts = {key: np.load(folder / f"{key}.npy", mmap_mode="r") for key in arrays}
    records = Records(tuple(f"img{i:05d}" for i in range(n)), SaliencyRecords(**parts))
    return RunResult(
        method={"name": "center-prior"},
        dataset={"name": "toy", "n_evaluated": n},
        protocol={"name": "odbench"},
        tasks=["saliency"],
        metrics={"saliency": {"acc": 0.5}},
        date="2026-01-01T00:00:00+00:00",
        _records=records,
    )


def _mapped_mib() -> float:
    """MiB of files mapped into this process's memory (``RssFile``; 0 where /proc has none)."""
    status = Path("/proc/self/status")
    lines = status.read_text().splitlines() if status.exists() else []
    return next((int(line.split()[1]) / 1024 for line in lines if line.startswith("RssFile")), 0)


def test_records_are_written_a_block_at_a_time(tmp_path: Path) -> None:
    """write_results writes memory-mapped records a block at a time: the heap's peak while
    writing 3,000 images' records is within 1 MiB of that for 300 (written whole: +22 MiB), the
    pages of the maps read are dropped again (the 6 MiB of Fβ curves do not stay mapped), and
    the file is np.savez_compressed's, byte for byte, with its sha256 in the JSON."""
    peaks, mapped = {}, 0.0
    for n in (300, 3000):  # the first also imports what writing needs
        run = _memmapped_run(tmp_path / f"in{n}", n)
        start = _mapped_mib()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            path = write_results(run, tmp_path / f"out{n}")
            peaks[n] = tracemalloc.get_traced_memory()[1] - before
        finally:
            tracemalloc.stop()
        mapped = _mapped_mib() - start
    more = peaks[3000] - peaks[300]
    assert more < 1 << 20, f"{more / 2**20:.2f} MiB more to write 2,700 more images' records"
    assert mapped < 2, f"{mapped:.1f} MiB of the records' maps stayed in memory"
    written = (path.parent / str(run.records_file)).read_bytes()
    whole = io.BytesIO()
    np.savez_compressed(whole, allow_pickle=False, **run.records.arrays())
    assert written == whole.getvalue()
    assert run.records_sha256 == hashlib.sha256(written).hexdigest()
    again = read_results(path).records
    np.testing.assert_array_equal(again.saliency.fbeta, run.records.saliency.fbeta)
