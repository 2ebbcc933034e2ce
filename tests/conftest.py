"""Shared test helpers: one torch thread (on a shared, loaded CPU two OpenMP threads spin and run
~10x slower; tiny models gain nothing from more), every odbench cache under pytest's temporary
folder, and the toy images."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")  # read by torch when it is first imported

#: Where odbench writes when no folder is given: ``$ODBENCH_CACHE`` (predictions, features),
#: ``$ODBENCH_DATA`` (datasets) and platformdirs' user cache (``$XDG_CACHE_HOME/odbench``: the
#: defaults of all three and the CLIP prior's text embeddings).
CACHE_VARIABLES = ("ODBENCH_CACHE", "ODBENCH_DATA", "XDG_CACHE_HOME")


@pytest.fixture(scope="session", autouse=True)
def caches_under_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point every odbench cache variable into pytest's temporary folder for the whole session,
    so no test writes into the user's ``~/.cache/odbench`` (a test that needs a variable unset
    or elsewhere uses monkeypatch, which restores this)."""
    root = tmp_path_factory.mktemp("user-cache")
    saved = {name: os.environ.get(name) for name in CACHE_VARIABLES}
    os.environ["ODBENCH_CACHE"] = str(root / "odbench-cache")
    os.environ["ODBENCH_DATA"] = str(root / "odbench-data")
    os.environ["XDG_CACHE_HOME"] = str(root / "xdg-cache")
    yield root
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def toy_images() -> list[np.ndarray]:
    """Two toy images of different sizes, (H, W, 3) uint8: the first toy image (96 x 128) and a
    crop of the second (72 x 100)."""
    from odbench.data.base import create_dataset

    ds = create_dataset("toy")
    first, second = (ds.load(i).image for i in ds.ids()[:2])
    return [first, np.ascontiguousarray(second[10:82, 14:114])]
