"""``odbench bench NAME``'s bad options: one line and exit code 2 before any work (no traceback,
no benchmark run on a count of zero, no long run ending in an error about its own options).

The benchmarks themselves are not run here: every case below is refused up front.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from odbench.cli import main


def bench(*args: str) -> Result:
    return CliRunner().invoke(main, ["bench", *args])


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["attentioncut", "--repeats", "0"], "--repeats"),
        (["wctr", "--toy", "--n", "0"], "--n"),
        (["wctr", "--n", "0"], "--n"),
        (["tokencut", "--planted-only", "--n", "0"], "--n"),
        (["dsm", "--solvers-only", "--n", "-1"], "--n"),
        (["discovery", "--images", "0"], "--images"),
        (["discovery", "--dets", "-1"], "--dets"),
        (["discovery", "--bootstrap", "-1"], "--bootstrap"),
    ],
)
def test_counts_below_their_minimum_are_refused(args: list[str], option: str) -> None:
    r = bench(*args)
    assert r.exit_code == 2, r.output
    assert f"Invalid value for '{option}'" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("name", ["tokencut", "dsm"])
def test_an_unknown_backbone_is_refused_before_the_solver_part(name: str) -> None:
    r = bench(name, "--planted-only", "--n", "1", "--backbone", "nosuch")
    assert r.exit_code == 2, r.output
    assert r.output.startswith("error: unknown feature extractor 'nosuch'"), r.output
    assert "ms CPU/image" not in r.output  # nothing was timed first


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["decoder", "--rows", "0"], "--rows"),
        (["decoder", "--steps", "0"], "--steps"),
        (["decoder", "--threads", "0"], "--threads"),
        (["decoder", "--resolution", "-64"], "--resolution"),
        (["decoder", "--rows", "4", "--batch-size", "8"], "--batch-size"),
        (["decoder", "--features", "dino-tiny", "--resolution", "8"], "--resolution"),
        (["features", "--repeats", "0"], "--repeats"),
        (["features", "--batch-size", "0"], "--batch-size"),
        (["features", "--resolution", "0"], "--resolution"),
        (["features", "--features", "dino-tiny", "--resolution", "8"], "--resolution"),
        (["features", "--features", "sd-tiny", "--steps", "0"], "--steps"),
        (["features", "--threads", "0"], "--threads"),
        (["synth", "--n", "0"], "--n"),
        (["synth", "--steps", "0"], "--steps"),
        (["synth", "--repeats", "0"], "--repeats"),
        (["synth", "--resolution", "100"], "--resolution"),
        (["synth", "--dtype", "fp8"], "--dtype"),
        (["backbone", "--batches", "1,,4"], "--batches"),
        (["backbone", "--batches", "0"], "--batches"),
        (["backbone", "--repeats", "0"], "--repeats"),
        (["backbone", "--resolution", "0"], "--resolution"),
        (["backbone", "--dtype", "fp8"], "--dtype"),
        (["learn", "--threads", "0"], "--threads"),
        (["learn", "--limit", "0"], "--limit"),
        (["learn", "--minutes", "0"], "--minutes"),
        (["metrics", "--synthetic", "--n", "0"], "--n"),
        (["metrics", "--synthetic", "--n-files", "0"], "--n-files"),
        (["metrics", "--synthetic", "--repeat", "0"], "--repeat"),
        (["metrics", "--synthetic", "--methods", "0"], "--methods"),
        (["metrics", "--synthetic", "--workers", "0"], "--workers"),
        (["report", "--images", "0"], "--images"),
        (["report", "--methods", "0"], "--methods"),
        (["report", "-n", "-1"], "-n"),
    ],
)
def test_sizes_below_their_minimum_are_refused(args: list[str], option: str) -> None:
    r = bench(*args)
    assert r.exit_code == 2, r.output
    assert f"Invalid value for '{option}'" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("name", ["synth", "backbone"])
def test_an_unknown_device_is_one_line(name: str) -> None:
    r = bench(name, "--device", "nosuch")
    assert r.exit_code == 2 and r.output.startswith("error: --device 'nosuch'"), r.output


def test_backbone_json_out_under_a_file_is_refused_before_the_run(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    r = bench("backbone", "--json-out", str(tmp_path / "afile" / "r.json"))
    assert r.exit_code == 2, r.output
    assert "--json-out" in r.output and "is a file, not a folder" in r.output


def test_report_keep_under_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    r = bench("report", "--images", "2", "--keep", str(tmp_path / "afile" / "run"))
    assert r.exit_code == 2 and "--keep" in r.output and "is a file, not a folder" in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_metrics_end_to_end_when_the_cpu_clock_measures_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """CPU time comes in 10 ms ticks: a tiny run may measure none (was: ZeroDivisionError)."""
    from odbench.bench import metrics as bm

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(bm, "cpu_seconds", lambda: 0.0)
    bm.end_to_end(bm.random_pairs(2, (30, 40), 0), 1, 1)
    lines = capsys.readouterr().out.splitlines()
    assert sum("odbench score --metrics" in ln and "max |difference|" in ln for ln in lines) == 2


def test_metrics_end_to_end_counts_the_masks_there_are(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """--n-files beyond the GT masks: the line says how many pairs are scored, not --n-files."""
    import numpy as np

    from odbench.bench import metrics as bm
    from odbench.imageio import write_png

    ecssd = tmp_path / "data" / "ECSSD"
    (ecssd / "images").mkdir(parents=True)
    (ecssd / "images" / "0001.jpg").write_bytes(b"")
    for i in range(2):
        write_png(ecssd / "ground_truth_mask" / f"{i:04d}.png", np.full((30, 40), 255, np.uint8))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(bm, "end_to_end", lambda *a: None)
    monkeypatch.setattr(bm, "shared_gt", lambda *a: None)
    r = bench("metrics", "--data-root", str(tmp_path / "data"), "--n", "1", "--n-files", "5")
    assert r.exit_code == 0, r.output
    assert "end to end on 2 PNG pairs" in r.output


def _ecssd_with_one_image(root: Path, data: bytes = b"", masks: bool = False) -> Path:
    images = root / "ECSSD" / "images"
    images.mkdir(parents=True)
    (images / "0001.jpg").write_bytes(data)
    if masks:
        (root / "ECSSD" / "ground_truth_mask").mkdir()
    return images / "0001.jpg"


@pytest.mark.parametrize("name", ["tokencut", "dsm"])
def test_an_unreadable_ecssd_image_is_one_line(name: str, tmp_path: Path) -> None:
    _ecssd_with_one_image(tmp_path, b"not a jpeg")
    r = bench(name, "--n", "1", "--data-root", str(tmp_path))
    assert r.exit_code == 2 and "0001.jpg: unreadable or corrupt image" in r.output, r.output


def test_metrics_without_gt_masks_is_refused_before_timing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    _ecssd_with_one_image(tmp_path / "data")
    r = bench("metrics", "--data-root", str(tmp_path / "data"), "--n", "1", "--n-files", "1")
    assert r.exit_code == 2, r.output
    assert "ground_truth_mask: no PNG masks" in r.output and "pairs" not in r.output


def test_learn_checks_ecssd_before_training(tmp_path: Path) -> None:
    """A broken ECSSD was found by the evaluation after the whole training budget."""
    import numpy as np

    from odbench.imageio import write_png

    duts = tmp_path / "data" / "DUTS-TR-1k"
    for i in range(4):
        write_png(duts / "DUTS-TR-Image" / f"{i}.png", np.zeros((32, 32, 3), np.uint8))
        write_png(duts / "DUTS-TR-Mask" / f"{i}.png", np.zeros((32, 32), np.uint8))
    _ecssd_with_one_image(tmp_path / "data", masks=True)
    r = bench("learn", "--data-root", str(tmp_path / "data"), "--out", str(tmp_path / "run"))
    assert r.exit_code == 2 and "0001.jpg: image has no GT mask" in r.output, r.output
    assert not (tmp_path / "run").exists()  # nothing trained
