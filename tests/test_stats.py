"""Dataset statistics: each quantity against an independent computation, and the command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from realdata import REAL_DATA

from odbench.cli import main
from odbench.data.stats import (
    binarise,
    box_center,
    chi_square,
    collect,
    colour_contrast,
    mask_stats,
)

RNG = np.random.default_rng(7)
SHARED = REAL_DATA


def chi_square_loop(p: list[float], q: list[float]) -> float:
    total = 0.0
    for a, b in zip(p, q):
        if a + b > 0:
            total += (a - b) ** 2 / (a + b)
    return total / 2


def test_chi_square_matches_definition() -> None:
    for _ in range(5):
        p = RNG.random(512) * (RNG.random(512) > 0.3)
        q = RNG.random(512) * (RNG.random(512) > 0.3)
        p, q = p / p.sum(), q / q.sum()
        assert chi_square(p, q) == pytest.approx(chi_square_loop(p.tolist(), q.tolist()), abs=1e-12)
    p = np.zeros(512)
    p[3] = 1
    q = np.zeros(512)
    q[9] = 1
    assert chi_square(p, q) == pytest.approx(1.0) and chi_square(p, p) == 0.0


def test_colour_contrast_against_histogramdd() -> None:
    image = RNG.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    fg = np.zeros((30, 40), bool)
    fg[5:20, 10:35] = True
    image[fg] //= 2  # darker object
    edges = [np.arange(0, 257, 32)] * 3
    h_fg = np.histogramdd(image[fg].astype(float), bins=edges)[0].ravel()
    h_bg = np.histogramdd(image[~fg].astype(float), bins=edges)[0].ravel()
    expected = chi_square_loop((h_fg / h_fg.sum()).tolist(), (h_bg / h_bg.sum()).tolist())
    assert colour_contrast(image, fg) == pytest.approx(expected, abs=1e-12)
    # two flat colours in different bins: disjoint histograms
    flat = np.zeros((8, 8, 3), np.uint8)
    flat[..., 0] = 200
    flat[:4, :, 0] = 10
    assert colour_contrast(flat, np.arange(8)[:, None].repeat(8, 1) < 4) == pytest.approx(1.0)
    assert math.isnan(colour_contrast(flat, np.zeros((8, 8), bool)))
    assert math.isnan(colour_contrast(flat, np.ones((8, 8), bool)))


def test_size_centre_and_binarisation() -> None:
    mask = np.zeros((10, 20), np.uint8)
    mask[1:3, 2:6] = 255
    mask[8, 19] = 127  # below the threshold: background
    record, polygon = mask_stats("m", np.zeros((10, 20, 3), np.uint8), mask)
    assert record.size == pytest.approx(8 / 200)
    assert (record.center_x, record.center_y) == pytest.approx(((2 + 6) / 2 / 20, (1 + 3) / 2 / 10))
    assert record.sc == len(polygon) == 4  # a rectangle
    assert record.pl == pytest.approx(4.0)  # unit square after normalisation
    deep = np.zeros((4, 4), np.uint16)
    deep[0, 0], deep[1, 1] = 32768, 32767
    assert binarise(deep).sum() == 1
    assert all(math.isnan(v) for v in box_center(np.zeros((3, 3), bool)))


def test_summary_counts_undefined() -> None:
    class S:
        def __init__(self, sid: str, mask: np.ndarray) -> None:
            self.id, self.mask = sid, mask
            self.image = RNG.integers(0, 256, (*mask.shape, 3), dtype=np.uint8)

    a = np.zeros((12, 12), np.uint8)
    a[2:8, 3:9] = 255
    b = np.tril(np.full((12, 12), 255, np.uint8))  # a triangle: a different normalised shape
    stats = collect("x", [S("a", a), S("b", b), S("empty", np.zeros((12, 12), np.uint8))])
    summary = stats.summary()
    assert summary["n_masks"] == 3
    assert summary["center_x"]["n_undefined"] == 1 and summary["contrast"]["n_undefined"] == 1
    assert summary["size"]["mean"] == pytest.approx((36 + 78 + 0) / 144 / 3)
    assert summary["sd_shapes"] == 2 and summary["sd"] > 0  # (two rectangles would give 0)


def write_folder(root: Path, n: int) -> None:
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for i in range(n):
        Image.fromarray(RNG.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(
            root / "images" / f"{i}.png"
        )
        m = np.zeros((24, 32), np.uint8)
        m[2 + i : 12 + i, 3:20] = 255
        Image.fromarray(m).save(root / "masks" / f"{i}.png")


def test_stats_command_writes_report_and_plots(tmp_path: Path) -> None:
    write_folder(tmp_path / "mine", 4)
    out = tmp_path / "out"
    res = CliRunner().invoke(
        main, ["stats", "toy", "--vs", str(tmp_path / "mine"), "--out", str(out), "--limit", "6"]
    )
    assert res.exit_code == 0, res.output
    report = (out / "report.md").read_text()
    assert "| statistic | toy | mine |" in report and "Liu et al." in report
    for png in ("size_hist.png", "contrast_hist.png", "center_scatter.png"):
        with Image.open(out / png) as im:
            assert im.format == "PNG" and im.size[0] > 300
        assert f"![{png}]({png})" in report
    data = json.loads((out / "stats.json").read_text())
    assert [s["name"] for s in data["summaries"]] == ["toy", "mine"]
    assert data["summaries"][0]["n_masks"] == 6 and data["summaries"][1]["n_masks"] == 4
    rows = (out / "mine_per_mask.csv").read_text().splitlines()
    assert rows[0].startswith("id,size,center_x") and len(rows) == 5
    res = CliRunner().invoke(main, ["stats", "no-such-set"])
    assert res.exit_code == 2 and "unknown dataset 'no-such-set'" in res.output


def test_stats_ecssd_vs_toy_real(tmp_path: Path) -> None:
    if not (SHARED / "ECSSD").is_dir():
        pytest.skip(f"real data not available: {SHARED / 'ECSSD'} is absent")
    out = tmp_path / "st"
    args = ["stats", "ecssd", "--vs", "toy", "--data-root", str(SHARED), "--out", str(out)]
    res = CliRunner().invoke(main, [*args, "--limit", "60", "--sd-shapes", "60"])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "stats.json").read_text())
    ecssd = data["summaries"][0]
    assert ecssd["name"] == "ecssd" and ecssd["n_masks"] == 60
    assert 0.05 < ecssd["size"]["mean"] < 0.6 and 0.3 < ecssd["center_x"]["mean"] < 0.7
    assert (out / "center_scatter.png").is_file()
