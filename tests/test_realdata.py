"""Set-up promises (issue 16 item 14): real-data tests can be pointed at any copy of the data,
the README's set-up says what a fresh machine needs, and ``odbench bench`` never swaps real
data for toy images without being asked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import realdata
from click.testing import CliRunner

from odbench.cli import main
from odbench.imageio import write_png

REPO = Path(__file__).resolve().parents[1]


def test_real_data_root_honours_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ODBENCH_TEST_DATA", raising=False)
    monkeypatch.delenv("ODBENCH_DATA", raising=False)
    assert realdata.real_data_root() == realdata.BESIDE_CHECKOUT
    monkeypatch.setenv("ODBENCH_DATA", str(tmp_path / "data"))
    assert realdata.real_data_root() == tmp_path / "data"
    monkeypatch.setenv("ODBENCH_TEST_DATA", str(tmp_path / "copy"))
    assert realdata.real_data_root() == tmp_path / "copy"


def test_readme_setup_says_venv_and_compiler() -> None:
    readme = (REPO / "README.md").read_text()
    setup = readme.split("## Set up and run")[1].split("## Everyday commands")[0]
    assert "python -m venv" in setup
    assert "pydensecrf2" in setup and "C++ compiler" in setup
    assert "$ODBENCH_TEST_DATA" in setup


def test_bench_honours_odbench_data_and_refuses_silent_toy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16 item 12: ``bench`` reads ``$ODBENCH_DATA``; missing ECSSD is one loud line."""
    monkeypatch.setenv("ODBENCH_DATA", str(tmp_path / "empty"))
    res = CliRunner().invoke(main, ["bench", "wctr", "--n", "1"])
    assert res.exit_code != 0
    assert "ECSSD/images: no ECSSD images" in res.output and "--toy" in res.output
    assert "toy images" not in res.output
    folder = tmp_path / "root" / "ECSSD" / "images"
    rng = np.random.default_rng(0)
    write_png(folder / "0001.png", rng.integers(0, 255, (40, 50, 3), dtype=np.uint8))
    (folder / "0001.jpg").write_bytes((folder / "0001.png").read_bytes())  # Pillow sniffs
    monkeypatch.setenv("ODBENCH_DATA", str(tmp_path / "root"))
    res = CliRunner().invoke(main, ["bench", "wctr", "--n", "1"])
    assert res.exit_code == 0, res.output
    assert f"1 ECSSD images from {folder}" in res.output
