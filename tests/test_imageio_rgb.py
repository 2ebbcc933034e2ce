"""``read_rgb``: every colour mode it accepts gives Pillow's RGB conversion, (H, W, 3) uint8."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from odbench.imageio import read_rgb


@pytest.mark.parametrize(
    ("mode", "suffix"),
    [
        ("RGB", ".jpg"),
        ("RGB", ".png"),
        ("L", ".jpg"),
        ("L", ".png"),
        ("P", ".png"),
        ("CMYK", ".jpg"),
        ("1", ".png"),
    ],
)
def test_read_rgb_is_pillows_rgb_conversion(tmp_path: Path, mode: str, suffix: str) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    img = Image.fromarray(pixels, "RGB")
    img = img.convert(mode) if mode != "P" else img.quantize(17)
    path = tmp_path / f"x{suffix}"
    img.save(path)
    out = read_rgb(path)
    with Image.open(path) as stored:
        expected = np.asarray(stored.convert("RGB"))
    assert out.dtype == np.uint8 and out.shape == (37, 53, 3)
    assert np.array_equal(out, expected)
