"""``odbench score`` / ``odbench score-boxes`` on temporary files: results, errors, no torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from odbench.cli import main
from odbench.imageio import write_png
from odbench.metrics.saliency import SaliencyMeter


def make_pairs(root: Path, n: int = 4, seed: int = 0, bits: int = 8) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    pred_dir, gt_dir = root / "pred", root / "gt"
    pred_dir.mkdir(parents=True)
    gt_dir.mkdir(parents=True)
    for i in range(n):
        pred = rng.integers(0, 256, (12, 16), dtype=np.uint8)
        if bits == 16:
            pred = pred.astype(np.uint16) * 257  # same values on the 16-bit scale
        write_png(pred_dir / f"img{i}.png", pred)
        write_png(gt_dir / f"img{i}.png", ((rng.random((12, 16)) < 0.4) * 255).astype(np.uint8))
    return pred_dir, gt_dir


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def score_json(pred_dir: Path, gt_dir: Path, *extra: str) -> dict:
    result = invoke("score", "--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir), "--json", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def assert_one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_score_json_matches_meter_and_16bit_equals_8bit(tmp_path):
    p8, g8 = make_pairs(tmp_path / "a", bits=8)
    p16, g16 = make_pairs(tmp_path / "b", bits=16)
    out8 = score_json(p8, g8)
    out16 = score_json(p16, g16)
    for key in ("acc", "iou", "max_fbeta", "mae", "n_images", "protocol"):
        assert key in out8
        assert out8[key] == pytest.approx(out16[key], abs=1e-12), key
    meter = SaliencyMeter("odbench")
    for path in sorted(p8.iterdir()):
        meter.update(np.asarray(Image.open(path)), np.asarray(Image.open(g8 / path.name)))
    ref = meter.compute()
    assert out8["max_fbeta"] == pytest.approx(ref["max_fbeta"], abs=1e-12)
    assert out8["n_images"] == 4 and out8["protocol"] == "odbench"


def test_score_table_and_protocol_option(tmp_path):
    pred_dir, gt_dir = make_pairs(tmp_path)
    result = invoke("score", "--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir))
    assert result.exit_code == 0 and "max Fβ" in result.stdout
    assert score_json(pred_dir, gt_dir, "--protocol", "selfmask")["protocol"] == "selfmask"
    bad = invoke("score", "--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir), "--protocol", "x")
    assert_one_line_error(bad, "unknown protocol", "odbench")


def test_nan_iou_is_null_in_json(tmp_path):
    pred_dir, gt_dir = make_pairs(tmp_path, n=1)
    write_png(pred_dir / "img0.png", np.zeros((12, 16), np.uint8))
    write_png(gt_dir / "img0.png", np.zeros((12, 16), np.uint8))
    assert score_json(pred_dir, gt_dir, "--protocol", "tokencut")["iou"] is None


def test_rgb_prediction_is_converted_with_a_one_line_warning(tmp_path):
    pred_dir, gt_dir = make_pairs(tmp_path)
    gray = np.asarray(Image.open(pred_dir / "img2.png"))
    Image.fromarray(np.stack([gray] * 3, axis=2)).save(pred_dir / "img2.png")
    result = invoke("score", "--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir), "--json")
    assert result.exit_code == 0
    assert result.stderr.strip().splitlines() == [
        f"warning: {pred_dir / 'img2.png'}: prediction stored as RGB, converted to grayscale"
    ]


def test_mismatched_stems_name_the_files(tmp_path):
    pred_dir, gt_dir = make_pairs(tmp_path)
    (pred_dir / "img0.png").rename(pred_dir / "extra.png")
    result = invoke("score", "--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir))
    assert_one_line_error(result, "without a GT", "extra.png")
    (pred_dir / "extra.png").unlink()
    result = invoke("score", "--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir))
    assert_one_line_error(result, "without a prediction", "img0.png")


def test_corrupt_rgba_and_size_mismatch(tmp_path):
    pred_dir, gt_dir = make_pairs(tmp_path)
    (pred_dir / "img1.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    result = invoke("score", "--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir))
    assert_one_line_error(result, "img1.png", "corrupt")
    Image.new("RGBA", (16, 12)).save(pred_dir / "img1.png")
    result = invoke("score", "--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir))
    assert_one_line_error(result, "img1.png", "alpha")
    write_png(pred_dir / "img1.png", np.zeros((6, 8), np.uint8))
    result = invoke(
        "score", "--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir), "--protocol", "tokencut"
    )
    assert_one_line_error(result, "img1 (8x6 vs 16x12, size)", "differ in size")
    # the default protocol resizes bilinearly instead
    assert score_json(pred_dir, gt_dir)["n_images"] == 4
    result = invoke("score", "--pred-dir", str(tmp_path / "nope"), "--gt-dir", str(gt_dir))
    assert_one_line_error(result, "nope", "not found")


def test_score_boxes(tmp_path):
    gt = {"a": [[0, 0, 10, 10]], "b": [[0, 0, 10, 10], [20, 20, 30, 30]], "c": [[0, 0, 5, 5]]}
    pred = {"a": [0, 0, 10, 20], "b": [40, 40, 50, 50]}  # a: IoU 0.5 hit, b: miss, c: missing
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(pred))
    args = ["score-boxes", "--pred", str(tmp_path / "pred.json"), "--gt", str(tmp_path / "gt.json")]
    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out == {"corloc": pytest.approx(100 / 3), "hits": 1, "n_images": 3}
    assert "CorLoc" in invoke(*args).stdout

    (tmp_path / "pred.json").write_text(json.dumps({"a": [0, 0, 10]}))
    assert_one_line_error(invoke(*args), "pred.json", "a:", "4 finite numbers")
    (tmp_path / "pred.json").write_text(json.dumps({"zzz": [0, 0, 1, 1]}))
    assert_one_line_error(invoke(*args), "pred.json", "zzz")
    (tmp_path / "pred.json").write_text("{not json")
    assert_one_line_error(invoke(*args), "pred.json", "not valid JSON")
    folder = ["score-boxes", "--pred", str(tmp_path), "--gt", str(tmp_path / "gt.json")]
    assert_one_line_error(invoke(*folder), str(tmp_path), "cannot read")


def test_score_does_not_import_torch(tmp_path):
    pred_dir, gt_dir = make_pairs(tmp_path, n=2)
    code = (
        "import sys, json\n"
        "from click.testing import CliRunner\n"
        "from odbench.cli import main\n"
        f"r = CliRunner().invoke(main, ['score', '--pred-dir', {str(pred_dir)!r}, "
        f"'--gt-dir', {str(gt_dir)!r}, '--json'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'n': json.loads(r.stdout)['n_images']}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"torch": False, "n": 2}


def test_metrics_all_matches_the_family_meter_and_workers_do_not_change_it(tmp_path):
    from odbench.metrics.sod import SOD_KEYS, FamilyMeter

    pred_dir, gt_dir = make_pairs(tmp_path, n=7)
    one = score_json(pred_dir, gt_dir, "--metrics", "all", "--workers", "1")
    three = score_json(pred_dir, gt_dir, "--metrics", "all", "--workers", "3")
    assert one == three  # records are added in file order whatever the thread count
    meter = FamilyMeter("odbench")
    for path in sorted(pred_dir.iterdir()):
        meter.update(np.asarray(Image.open(path)), np.asarray(Image.open(gt_dir / path.name)))
    ref = meter.compute()
    for key in (*SOD_KEYS, "max_fbeta", "mae"):
        assert one[key] == pytest.approx(ref[key], abs=1e-12), key
    assert set(one["curves"]) == {"thresholds", "precision", "recall", "fpr", "e_measure", "fbeta"}
    assert len(one["curves"]["e_measure"]) == 255
    basic = score_json(pred_dir, gt_dir, "--workers", "2")
    assert "s_measure" not in basic and basic["max_fbeta"] == one["max_fbeta"]
    table = invoke(
        "score", "--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir), "--metrics", "all"
    )
    assert table.exit_code == 0 and "S-measure" in table.stdout and "AUC" in table.stdout


def test_workers_report_the_first_bad_file_in_order(tmp_path):
    pred_dir, gt_dir = make_pairs(tmp_path, n=6)
    for name in ("img4.png", "img2.png"):
        (pred_dir / name).write_bytes(b"not a png")
    args = ["score", "--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir), "--workers", "4"]
    assert_one_line_error(invoke(*args), "img2.png", "corrupt")
    assert_one_line_error(invoke(*args[:-2], "--workers", "0"), "--workers")
