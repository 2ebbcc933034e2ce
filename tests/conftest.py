"""Shared test helpers: one torch thread (on a shared, loaded CPU two OpenMP threads spin and run
~10x slower; tiny models gain nothing from more), and the toy images."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")  # read by torch when it is first imported


@pytest.fixture(scope="session")
def toy_images() -> list[np.ndarray]:
    """Two toy images of different sizes, (H, W, 3) uint8: the first toy image (96 x 128) and a
    crop of the second (72 x 100)."""
    from odbench.data.base import create_dataset

    ds = create_dataset("toy")
    first, second = (ds.load(i).image for i in ds.ids()[:2])
    return [first, np.ascontiguousarray(second[10:82, 14:114])]
