"""``odbench bench runner``'s pipeline part on a small ECSSD-shaped folder: every row printed, the
per-step times adding up to the plain loop's time, metrics identical across worker counts."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from odbench.bench.runner import STEPS, cli


def _ecssd(root: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    (root / "ECSSD" / "images").mkdir(parents=True)
    (root / "ECSSD" / "ground_truth_mask").mkdir()
    for i in range(1, n + 1):
        h, w = (48, 64) if i % 2 else (64, 40)
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / "ECSSD" / "images" / f"{i:04d}.jpg")
        mask = np.zeros((h, w), np.uint8)
        mask[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 255
        Image.fromarray(mask).save(root / "ECSSD" / "ground_truth_mask" / f"{i:04d}.png")


def test_pipeline_rows_and_the_steps_breakdown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # its caches: under tmp_path
    _ecssd(tmp_path, 12)
    args = ["--n", "12", "--rounds", "2", "--memory-n", "0", "--method-images", "0"]
    result = CliRunner().invoke(cli, [*args, "--data-root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "pipeline: 12 ECSSD images" in out
    rows = dict(re.findall(r"^  (.+?)\s+[\d.]+ s wall\s+([\d.]+) ms/image", out, re.M))
    assert set(rows) == {
        "plain decode (1 process)",
        "eval's steps, plain loop",
        "the loop in 2 processes",
        "eval, 1 worker",
        "eval, 2 workers",
    }
    line = next(x for x in out.splitlines() if "eval's steps, per image" in x)
    found = re.findall(r"([a-z +]+) ([\d.]+) ms", line.split(": ", 1)[1])
    step_ms = {k.strip(): v for k, v in found}
    assert list(step_ms) == list(STEPS)
    # the steps of the round of least time: their sum is at most the loop's best time (each
    # printed to 0.01 ms)
    total = sum(float(v) for v in step_ms.values())
    assert 0 < total <= float(rows["eval's steps, plain loop"]) + 0.03
    assert float(step_ms["decode"]) > 0 and float(step_ms["score"]) > 0
    # the floor without storing: the other steps over the decode (each step printed to 0.01 ms)
    match = re.search(r"the steps but storing, per image, are ([\d.]+)x", out)
    assert match is not None
    floor = float(match[1])
    others = sum(float(v) for k, v in step_ms.items() if k != "store")
    decode = float(step_ms["decode"])
    low = (others - 0.005 * 4) / (decode + 0.005)
    high = (others + 0.005 * 4) / (decode - 0.005)
    assert low - 0.005 <= floor <= high + 0.005
    # the plain loop in two processes: its ratio to the one-process loop, from the printed times
    match = re.search(r"the plain loop in 2 processes vs 1: ([\d.]+)x faster", out)
    assert match is not None
    one, two = float(rows["eval's steps, plain loop"]), float(rows["the loop in 2 processes"])
    assert (one - 0.005) / (two + 0.005) - 0.005 <= float(match[1])
    assert float(match[1]) <= (one + 0.005) / (two - 0.005) + 0.005
    assert "metrics and records identical across worker counts: yes" in out


@pytest.mark.parametrize("option", ["--rounds 0", "--n -3", "--memory-n -1", "--method-images -2"])
def test_counts_out_of_range_are_one_line(tmp_path: Path, option: str) -> None:
    _ecssd(tmp_path, 2)
    args = [*option.split(), "--dry-run", "--data-root", str(tmp_path)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and result.exception is not None
    assert f"Invalid value for '{option.split()[0]}'" in result.output


def test_the_plan_never_counts_more_images_than_there_are(tmp_path: Path) -> None:
    _ecssd(tmp_path, 12)
    args = ["--n", "50", "--method-images", "20", "--methods", "lost", "--memory-n", "0"]
    result = CliRunner().invoke(cli, [*args, "--dry-run", "--data-root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert f"only 12 ECSSD images under {tmp_path}" in result.output
    assert "pipeline: 12 ECSSD images, 3 rounds" in result.output
    assert "lost on dino-vits16-random: reference loop + eval (1/2 workers), 12 images" in (
        result.output
    )
