"""eval's pipeline (odbench.phases.evaluate on odbench.forked.Pipeline): decoding overlaps the
model, batches of the card's size, memory that does not grow with the dataset."""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
import pytest

from odbench.cards import method_card
from odbench.data.base import Dataset, Sample
from odbench.methods.base import Method
from odbench.metrics.protocols import get_protocol
from odbench.runner import run

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork: Linux")

DECODE_S = 0.005  # per image
MODEL_S = 0.010  # per image


class SlowDecode(Dataset):
    """Images that take ``DECODE_S`` of CPU to "decode" (a busy loop holding the GIL)."""

    name = "slow"

    def __init__(self, n: int) -> None:
        self.n = n

    def ids(self) -> list[str]:
        return [f"im{i:04d}" for i in range(self.n)]

    def load(self, sample_id: str) -> Sample:
        start = time.perf_counter()
        while time.perf_counter() - start < DECODE_S:
            pass
        rng = np.random.default_rng(int(sample_id[2:]))
        image = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
        return Sample(sample_id, image, (image[..., 0] > 127).astype(np.uint8) * 255)


class SleepyModel(Method):
    """A model whose forward takes ``MODEL_S`` per image and releases the GIL (as torch does);
    records the batch sizes it was fed and the time it really slept (a busy machine wakes a
    sleeper late)."""

    name = "sleepy"

    def __init__(self) -> None:
        super().__init__(None)
        self.batches: list[int] = []
        self.slept = 0.0

    def predict(self, images: list[np.ndarray]) -> list[np.ndarray]:
        self.batches.append(len(images))
        start = time.perf_counter()
        time.sleep(MODEL_S * len(images))
        self.slept += time.perf_counter() - start
        return [np.full(im.shape[:2], 0.5, np.float32) for im in images]


def _timed(workers: int, n: int = 120) -> tuple[float, float]:
    """(wall seconds per image, of which outside the model) of eval over ``n`` images."""
    method = SleepyModel()
    start = time.perf_counter()
    kw: dict[str, Any] = {"use_cache": False, "results_dir": None, "batch_size": 4}
    run(method, SlowDecode(n), get_protocol("odbench"), dataset_name="slow", workers=workers, **kw)
    wall = time.perf_counter() - start
    return wall / n, (wall - method.slept) / n


def test_decoding_overlaps_the_model() -> None:
    """10 ms of model + 5 ms of decoding per image: ~10 ms per image with a worker decoding
    beside the model, not the 15 ms of doing both in turn.  The one timed test: best of two
    tries, generous bounds; on a loaded machine ``time.sleep`` itself overruns, so the bound is
    on the time outside the model (what the pipeline adds): < 4 ms per image overlapped, where
    decoding in turn adds its 5 ms."""
    per_image, outside = min(_timed(workers=2) for _ in range(2))
    assert outside < 0.004, (
        f"{1000 * per_image:.1f} ms per image, {1000 * outside:.1f} ms of it outside the model: "
        "decoding does not overlap the model"
    )
    assert per_image < 0.013 or per_image - outside > 0.0105  # else the model itself overran
    _, in_turn = _timed(workers=1)  # the bound can fail: one process decodes between batches
    assert in_turn > 0.0048, f"{1000 * in_turn:.1f} ms per image outside the model in turn"


def test_the_runner_feeds_the_card_s_batch_size() -> None:
    card = method_card("center-prior")
    assert card.batch_size > 1  # a cheap method: large batches
    method = SleepyModel()
    method.card = card
    run(
        method,
        SlowDecode(10),
        get_protocol("odbench"),
        dataset_name="slow",
        use_cache=False,
        results_dir=None,
    )
    assert method.batches == [card.batch_size] * (10 // card.batch_size) + (
        [10 % card.batch_size] if 10 % card.batch_size else []
    )
