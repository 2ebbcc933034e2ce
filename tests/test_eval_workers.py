"""CPU-only methods predicted in eval's worker processes (``Method.in_workers``), and the
one-pass quantizer every prediction goes through."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import odbench
from odbench.cache import _quantize_numpy, quantize
from odbench.data.base import Dataset, Sample
from odbench.methods.base import Method
from odbench.metrics.protocols import get_protocol
from odbench.phases import EvalError
from odbench.runner import run

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork: Linux")


def test_quantize_rounds_half_to_even_and_clips_like_numpy() -> None:
    k = np.arange(65536, dtype=np.float64)
    ties = (k + 0.5) / 65535
    values = np.concatenate(
        [ties, np.nextafter(ties, 0), np.nextafter(ties, 1), k / 65535, [-1e-3, -0.0, 1.0005]]
    )
    rng = np.random.default_rng(0)
    for dtype in (np.float64, np.float32):
        for shape in [(1, -1), (-1, 1), (-1, 3), (-1, 4)]:  # OpenCV reads (n, 3) as one channel
            a = values[: len(values) // 12 * 12].astype(dtype).reshape(shape)
            np.testing.assert_array_equal(quantize(a), _quantize_numpy(a))
        smooth = (rng.random((97, 131)) * 1.002 - 0.001).astype(dtype)
        np.testing.assert_array_equal(quantize(smooth), _quantize_numpy(smooth))
        np.testing.assert_array_equal(
            quantize(smooth[::2, ::-1]), _quantize_numpy(smooth[::2, ::-1])
        )
    assert quantize(np.array([[0.5 / 65535, 1.5 / 65535, 2.5 / 65535]])).tolist() == [[0, 2, 2]]
    assert quantize(np.zeros((0, 4))).shape == (0, 4)


class Blobs(Dataset):
    """``n`` small random images with a mask of their bright pixels."""

    name = "blobs"

    def __init__(self, n: int) -> None:
        self.n = n

    def ids(self) -> list[str]:
        return [f"b{i:03d}" for i in range(self.n)]

    def load(self, sample_id: str) -> Sample:
        rng = np.random.default_rng(int(sample_id[1:]))
        image = rng.integers(0, 256, (20 + int(sample_id[1:]) % 5, 30, 3), dtype=np.uint8)
        return Sample(sample_id, image, (image[..., 0] > 127).astype(np.uint8) * 255)


class Brightness(Method):
    """A CPU method (the map: red channel / 255) that notes which process predicted each image
    in ``log`` and fails on the images named in ``fail``."""

    name = "brightness"
    in_workers = True

    def __init__(self, log: Path, fail: tuple[str, ...] = ()) -> None:
        super().__init__(None)
        self.log, self.fail = log, fail

    def predict(self, images: list[np.ndarray]) -> list[np.ndarray]:
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()} {len(images)}\n")
        for im in images:
            if f"{int(im[0, 0, 0])}" in self.fail:
                raise MemoryError("out of memory on this one")
        return [im[..., 0].astype(np.float32) / 255 for im in images]


def _eval(method: Method, tmp_path: Path, workers: int, **kw: object) -> odbench.RunResult:
    kw.setdefault("cache_dir", tmp_path / "cache")
    return run(
        method,
        Blobs(24),
        get_protocol("odbench"),
        dataset_name="blobs",
        workers=workers,
        results_dir=None,
        **kw,  # type: ignore[arg-type]
    )


@linux
def test_a_cpu_method_predicts_in_every_worker_one_image_at_a_time(tmp_path: Path) -> None:
    log = tmp_path / "pids.txt"
    two = _eval(Brightness(log), tmp_path, workers=2)
    lines = [line.split() for line in log.read_text().splitlines()]
    assert {n for _, n in lines} == {"1"}  # one image per call
    assert len(lines) == 24  # each image once
    assert len({pid for pid, _ in lines}) == 2, "the forked worker predicted nothing"
    assert two.info["n_predicted"] == 24

    log.unlink()
    main = _eval(InMain(log), tmp_path, workers=2, use_cache=False)
    assert {pid for pid, _ in (line.split() for line in log.read_text().splitlines())} == {
        str(os.getpid())
    }
    assert two.metrics == main.metrics
    for key, value in two.records.arrays().items():
        np.testing.assert_array_equal(value, main.records.arrays()[key])
    again = _eval(Brightness(log), tmp_path, workers=1)  # all from the cache now
    assert again.info["n_cached"] == 24 and again.metrics == two.metrics


def _first_pixel_of(sample_id: str) -> str:
    return str(int(Blobs(1).load(sample_id).image[0, 0, 0]))


class InMain(Brightness):
    in_workers = False


@linux
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("kind", [Brightness, InMain])
def test_a_failure_stops_the_run_naming_the_image_or_is_skipped(
    tmp_path: Path, workers: int, kind: type[Brightness]
) -> None:
    """In a worker (``in_workers``) or in the main process: the run stops at the image with
    one line, leaves no claim behind (the workers' claims of images loaded ahead included:
    another process would wait on them while this one lives), and resumes from the cache."""
    bad = "b013"
    method = kind(tmp_path / "log.txt", fail=(_first_pixel_of(bad),))
    with pytest.raises(EvalError, match=f"failed on image '{bad}': MemoryError"):
        _eval(method, tmp_path, workers)
    claims = [p for p in (tmp_path / "cache").rglob("*.claim")]
    # (an empty claim file: a worker stopped while creating it; others take it over in 5 s)
    assert not [p for p in claims if p.stat().st_size], "a claim of ours was left behind"
    resumed = _eval(method, tmp_path, workers, on_error="skip")
    assert resumed.dataset["failed_ids"] == {bad: "MemoryError: out of memory on this one"}
    assert resumed.records.ids == tuple(i for i in Blobs(24).ids() if i != bad)
    assert resumed.info["n_cached"] >= 13  # the images before it were stored


@pytest.mark.parametrize(
    ("value", "dtype", "why"),
    [
        (np.nan, np.float32, "non-finite or non-float"),
        (np.inf, np.float64, "non-finite or non-float"),
        (-np.inf, np.float32, "non-finite or non-float"),
        (1, np.int64, "non-finite or non-float"),
        (255.0, np.float32, r"values in \[0.25, 255\]"),
    ],
)
def test_a_map_with_a_bad_pixel_stops_the_run_in_one_line(
    tmp_path: Path, value: float, dtype: type, why: str
) -> None:
    def one_bad_pixel(images: list[np.ndarray]) -> list[np.ndarray]:
        maps = [np.full(im.shape[:2], 0.25).astype(dtype) for im in images]
        for m in maps:
            m[3, 5] = value
        return maps

    with pytest.raises(EvalError, match=why) as caught:
        odbench.evaluate(one_bad_pixel, Blobs(3), results_dir=None)
    assert "'b000'" in str(caught.value) and "\n" not in str(caught.value)


def test_the_model_s_process_writes_its_entries_from_a_thread_claims_released_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entries of the process running the model are written by the cache's thread (the model
    never waits on the disk), each while its image is still claimed; all are written, and
    no claim is left, when the run returns."""
    import threading

    real = os.pwritev
    writes: list[tuple[str, bool]] = []

    def pwritev(fd: int, buffers: list[bytes], offset: int) -> int:
        meta = bytes(buffers[1])
        sample_id = meta.split(b'"id": "')[1].split(b'"')[0].decode()
        claimed = any(p.name == f"{sample_id}.claim" for p in (tmp_path / "cache").rglob("*"))
        writes.append((threading.current_thread().name, claimed))
        return real(fd, buffers, offset)

    monkeypatch.setattr(os, "pwritev", pwritev)
    result = _eval(InMain(tmp_path / "log.txt"), tmp_path, workers=1)
    assert len(writes) == 24 and result.info["n_predicted"] == 24
    assert {name for name, _ in writes} == {"odbench-cache"}
    assert all(claimed for _, claimed in writes), "a claim was released before its entry"
    assert not list((tmp_path / "cache").rglob("*.claim"))
    again = _eval(InMain(tmp_path / "log.txt"), tmp_path, workers=1)
    assert again.info["n_cached"] == 24
    # no model in the main process (in_workers): written inline, cheaper in CPU
    writes.clear()
    _eval(Brightness(tmp_path / "log.txt"), tmp_path, workers=1, cache_dir=tmp_path / "c2")
    assert len(writes) == 24 and {name for name, _ in writes} == {"MainThread"}


@pytest.mark.parametrize("fail_at", [5, 24])
def test_a_failed_write_behind_stops_the_run_and_it_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_at: int
) -> None:
    """The disk fills while the thread writes entry ``fail_at`` (the last one: the error comes
    when the run ends, not lost): one error, no claim left, the entries before it kept."""
    import errno

    real, count = os.pwritev, {"n": 0}

    def pwritev(fd: int, buffers: list[bytes], offset: int) -> int:
        count["n"] += 1
        if count["n"] == fail_at:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, buffers, offset)

    monkeypatch.setattr(os, "pwritev", pwritev)
    with pytest.raises(Exception, match="(?i)no space left"):
        _eval(InMain(tmp_path / "log.txt"), tmp_path, workers=1)
    assert not list((tmp_path / "cache").rglob("*.claim"))
    monkeypatch.setattr(os, "pwritev", real)
    resumed = _eval(InMain(tmp_path / "log.txt"), tmp_path, workers=1)
    assert resumed.info["n_cached"] == fail_at - 1


@pytest.mark.parametrize("workers", [1, 2])
def test_opencv_runs_single_threaded_during_a_run_and_as_before_after(
    tmp_path: Path, workers: int
) -> None:
    """One thread per process (workers=1 too): OpenCV's idle worker spun on sched_yield after
    every call of a run's per-image work."""
    import cv2

    seen: list[int] = []

    def threads(images: list[np.ndarray]) -> list[np.ndarray]:
        seen.append(cv2.getNumThreads())
        return [np.zeros(im.shape[:2], np.float32) for im in images]

    before = cv2.getNumThreads()
    cv2.setNumThreads(2)
    try:
        odbench.evaluate(threads, Blobs(6), results_dir=None, workers=workers)
        assert seen and set(seen) == {1}
        assert cv2.getNumThreads() == 2
    finally:
        cv2.setNumThreads(before)


class Replaced(Blobs):
    """Blobs whose image ``b005`` was replaced by another of the same size (a file re-exported
    or copied again), its GT mask as before."""

    def load(self, sample_id: str) -> Sample:
        sample = super().load(sample_id)
        if sample_id != "b005":
            return sample
        return Sample(sample_id, np.ascontiguousarray(sample.image[::-1]), sample.mask)


@linux
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("kind", [Brightness, InMain])
def test_an_image_replaced_by_another_of_its_size_is_predicted_again(
    tmp_path: Path, workers: int, kind: type[Brightness]
) -> None:
    """The cache key names the data by its folders, not its pixels: an image replaced by
    another of its size was served the old image's map (a silently wrong number)."""
    method = kind(tmp_path / "log.txt")
    first = _eval(method, tmp_path, workers)
    kw: dict[str, Any] = {"dataset_name": "blobs", "workers": workers, "results_dir": None}
    replaced = run(
        method, Replaced(24), get_protocol("odbench"), cache_dir=tmp_path / "cache", **kw
    )
    assert (replaced.info["n_predicted"], replaced.info["n_cached"]) == (1, 23)
    fresh = run(method, Replaced(24), get_protocol("odbench"), use_cache=False, **kw)
    assert replaced.metrics == fresh.metrics != first.metrics
    again = run(method, Replaced(24), get_protocol("odbench"), cache_dir=tmp_path / "cache", **kw)
    assert again.info["n_cached"] == 24 and again.metrics == fresh.metrics
