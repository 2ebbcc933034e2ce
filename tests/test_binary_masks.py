"""Masks stored as 0/1 (issue 16 item 2): read as binary masks, with ONE warning line saying how
many files, in ``score``, ``eval`` and ``stats`` alike (not as an almost black map)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from odbench.cli import main
from odbench.imageio import BinaryMaskWarning, read_gray, write_png


def write_set(root: Path, n: int = 5, scale: int = 255, seed: int = 0) -> Path:
    """``images/``, ``masks/`` (GT times ``scale``: 255 or 1) and ``pred/`` (soft 8-bit)."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        image = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
        gt = np.zeros((20, 24), np.uint8)
        gt[3 + i : 14, 4 : 18 - i] = 1
        pred = np.clip(gt * 180 + rng.integers(0, 120, (20, 24)), 0, 255).astype(np.uint8)
        write_png(root / "images" / f"{i}.png", image)
        write_png(root / "masks" / f"{i}.png", gt * np.uint8(scale))
        write_png(root / "pred" / f"{i}.png", pred)
    return root


def test_read_gray_scales_01_masks_with_a_warning(tmp_path: Path) -> None:
    write_png(tmp_path / "m8.png", np.array([[0, 1], [1, 0]], np.uint8))
    write_png(tmp_path / "m16.png", np.array([[0, 1], [1, 1]], np.uint16))
    write_png(tmp_path / "soft.png", np.array([[0, 2], [1, 0]], np.uint8))
    with pytest.warns(BinaryMaskWarning, match="m8.png"):
        assert read_gray(tmp_path / "m8.png").tolist() == [[0, 255], [255, 0]]
    with pytest.warns(BinaryMaskWarning, match="m16.png"):
        assert read_gray(tmp_path / "m16.png").tolist() == [[0, 65535], [65535, 65535]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_gray(tmp_path / "soft.png").tolist() == [[0, 2], [1, 0]]  # not 0/1 only


def _warning_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning:")]


def test_score_01_gt_equals_0_255(tmp_path: Path) -> None:
    a = write_set(tmp_path / "a", scale=255)
    b = write_set(tmp_path / "b", scale=1)
    runner = CliRunner()
    args = ["score", "--json", "--pred-dir"]
    ra = runner.invoke(main, [*args, str(a / "pred"), "--gt-dir", str(a / "masks")])
    rb = runner.invoke(main, [*args, str(b / "pred"), "--gt-dir", str(b / "masks")])
    assert ra.exit_code == 0 and rb.exit_code == 0, rb.output
    assert json.loads(rb.stdout) == json.loads(ra.stdout)
    lines = _warning_lines(rb.stderr)
    assert len(lines) == 1 and "5 mask file(s) store only the values 0 and 1" in lines[0]
    assert "and 2 more" in lines[0]
    assert _warning_lines(ra.stderr) == []


def test_eval_01_gt_equals_0_255(tmp_path: Path) -> None:
    a = write_set(tmp_path / "a", scale=255)
    b = write_set(tmp_path / "b", scale=1)
    out = {}
    for name, root in (("a", a), ("b", b)):
        res = CliRunner().invoke(
            main,
            [
                "eval",
                "--method",
                "center-prior",
                "--dataset",
                "folder",
                "--data-root",
                str(root),
                "--results-dir",
                str(tmp_path / f"res-{name}"),
                "--cache-dir",
                str(tmp_path / "c"),
            ],
        )
        assert res.exit_code == 0, res.output
        (path,) = (tmp_path / f"res-{name}").glob("*.json")
        out[name] = (json.loads(path.read_text())["metrics"], _warning_lines(res.stderr))
    assert out["b"][0] == out["a"][0]
    assert out["a"][1] == [] and len(out["b"][1]) == 1
    assert "5 mask file(s) store only the values 0 and 1" in out["b"][1][0]


def test_stats_01_masks_and_clean_stdout(tmp_path: Path) -> None:
    a = write_set(tmp_path / "a", scale=255)
    b = write_set(tmp_path / "b", scale=1)
    ra = CliRunner().invoke(main, ["stats", str(a)])
    rb = CliRunner().invoke(main, ["stats", str(b)])
    assert ra.exit_code == 0 and rb.exit_code == 0, rb.output
    same = rb.stdout.replace("| b |", "| a |").replace("statistics: b", "statistics: a")
    assert same == ra.stdout  # the same statistics
    assert rb.stdout.startswith("# Dataset statistics")  # no blank lines first (item 12)
    lines = _warning_lines(rb.stderr)
    assert len(lines) == 1 and "5 mask file(s)" in lines[0]


def test_8bit_values_in_16bit_files_are_read_on_the_8bit_scale_with_one_line(
    tmp_path: Path,
) -> None:
    """A uint8 map cast to uint16 before saving (values 0..255 in a 16-bit PNG) read on its
    16-bit scale is nearly black (a GT: empty, maxFβ 0); it scores as the 8-bit files do."""
    a = write_set(tmp_path / "a")
    b = write_set(tmp_path / "b")
    for folder in ("pred", "masks"):
        for path in (b / folder).iterdir():
            write_png(path, read_gray(path).astype(np.uint16))
    assert read_gray(tmp_path / "a" / "pred" / "0.png").dtype == np.uint8
    with pytest.warns(UserWarning, match="0.png"):
        wide = read_gray(b / "pred" / "0.png")
    assert wide.dtype == np.uint16 and wide.max() > 255
    assert np.array_equal(wide, read_gray(a / "pred" / "0.png").astype(np.uint16) * 257)
    runner = CliRunner()
    args = ["score", "--json", "--metrics", "all", "--pred-dir"]
    ra = runner.invoke(main, [*args, str(a / "pred"), "--gt-dir", str(a / "masks")])
    rb = runner.invoke(main, [*args, str(b / "pred"), "--gt-dir", str(b / "masks")])
    assert ra.exit_code == 0 and rb.exit_code == 0, rb.output
    assert json.loads(rb.stdout) == json.loads(ra.stdout)  # bit for bit: v / 255 == 257 v / 65535
    lines = _warning_lines(rb.stderr)
    assert len(lines) == 1 and "10 16-bit file(s) hold only the values 0..255" in lines[0]
