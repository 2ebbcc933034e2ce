"""``odbench bench gpu --dry-run``: every step of the GPU check runs on the CPU with tiny models
and writes its report (so the command cannot rot without a GPU)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner


@pytest.mark.slow
def test_dry_run_runs_every_step_and_writes_the_report(tmp_path: Path) -> None:
    from odbench.cli import main

    r = CliRunner().invoke(main, ["bench", "gpu", "--dry-run", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    (report,) = tmp_path.glob("cpu-*.md")
    text = report.read_text()
    for section in ("gpu-marked tests", "Inversion + capture", "Frozen extractors",
                    "AttentionCut end to end", "Training-free methods end to end"):  # fmt: skip
        assert f"## {section}" in text
    assert "| dsm | dino-tiny |" in text and text.count("| True |") >= 1
    for name in ("dino-tiny", "moco-tiny", "clip-tiny", "dinov2-tiny", "sd-tiny"):
        assert f"| {name} |" in text
    assert "| dinov2-tiny | 28²: " in text  # 32 rounded down to a multiple of 14
    for name in ("tokencut", "tokencut.bs", "lost", "lost.bs"):
        row = rf"\| {re.escape(name)} \| dinov2-tiny \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| True \|"
        assert re.search(row, text), name
    for name in ("maskcut", "promerge"):
        row = rf"\| {name} \| dino-tiny \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| True \|"
        assert re.search(row, text), name
    assert "maps valid: True" in text
    assert "| 1 |" in text and "| 2 |" in text  # both batch sizes measured


def test_without_cuda_the_real_run_is_one_line(tmp_path: Path) -> None:
    import torch

    from odbench.cli import main

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    r = CliRunner().invoke(main, ["bench", "gpu", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "no CUDA device" in r.output
    assert not list(tmp_path.iterdir())  # nothing written


def test_the_real_run_refuses_a_cpu_device(tmp_path: Path) -> None:
    """The full-size plan on a CPU would run for hours: --dry-run is the CPU run."""
    from odbench.cli import main

    r = CliRunner().invoke(main, ["bench", "gpu", "--device", "cpu", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "--device cpu" in r.output and "--dry-run" in r.output, r.output
    assert not list(tmp_path.iterdir())


def test_an_out_folder_under_a_file_is_one_line(tmp_path: Path) -> None:
    from odbench.cli import main

    (tmp_path / "afile").write_text("")
    r = CliRunner().invoke(
        main, ["bench", "gpu", "--dry-run", "--out", str(tmp_path / "afile" / "x")]
    )
    assert r.exit_code == 2 and "--out" in r.output and "is a file, not a folder" in r.output
