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


def test_many_rgb_predictions_are_one_warning_line(tmp_path):
    pred_dir, gt_dir = make_pairs(tmp_path, n=6)
    for i in range(5):
        gray = np.asarray(Image.open(pred_dir / f"img{i}.png"))
        Image.fromarray(np.stack([gray] * 3, axis=2)).save(pred_dir / f"img{i}.png")
    result = invoke("score", "--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir), "--json")
    assert result.exit_code == 0, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("warning: 5 colour (RGB or palette) file(s) were converted")
    assert f"{pred_dir / 'img0.png'}" in line and line.endswith("and 2 more")


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
    assert out == {"corloc": pytest.approx(100 / 3), "hits": 1, "n_images": 3, "n_no_gt": 0}
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


def test_metrics_all_matches_the_family_meter(tmp_path):
    from odbench.metrics.sod import SOD_KEYS, FamilyMeter

    pred_dir, gt_dir = make_pairs(tmp_path, n=7)
    one = score_json(pred_dir, gt_dir, "--metrics", "all", "--workers", "1")
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


class SlowFirst:
    """A meter whose earlier images take longer to score, so that with several worker threads
    they finish last; ``finished`` is the order in which they did (kept in the file ``log``,
    which worker processes share)."""

    def __init__(self, meter, n: int, log=None) -> None:
        self.meter, self.n, self.log = meter, n, log
        self.protocol = meter.protocol

    @property
    def finished(self) -> list[str]:
        return self.log.read_text().split() if self.log and self.log.exists() else []

    def score(self, pred, gt, image_id):
        import time

        time.sleep(0.03 * (self.n - int(image_id.removeprefix("img"))))
        record = self.meter.score(pred, gt, image_id)
        if self.log is not None:
            with open(self.log, "a") as f:
                f.write(f"{image_id}\n")
        return record

    def add(self, record) -> None:
        self.meter.add(record)

    def compute(self):
        return self.meter.compute()


def assert_same_records(got, ref) -> None:
    """Per-image records equal bit for bit, in the same order."""
    from dataclasses import fields

    assert [r[0].id for r in got] == [r[0].id for r in ref]
    for a_pair, b_pair in zip(got, ref):
        for a, b in zip(a_pair, b_pair):
            for f in fields(a):
                x, y = getattr(a, f.name), getattr(b, f.name)
                same = np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y
                assert same, (a.id, f.name, x, y)


def test_workers_give_the_records_of_one_worker_in_file_order(tmp_path):
    """Earlier images are scored slowest, so workers finish them last; the records (and so the
    per-image results store, compare, report) still come in file order with one worker's
    values, and the sums are the same to the bit."""
    from odbench.metrics.sod import FamilyMeter
    from odbench.scoring.folders import score_files

    pred_dir, gt_dir = make_pairs(tmp_path, n=7)
    pairs = [(p.stem, p, gt_dir / p.name) for p in sorted(pred_dir.iterdir())]
    ref_meter = FamilyMeter("odbench")
    ref = score_files(pairs, ref_meter, workers=1)
    assert [r[0].id for r in ref] == [f"img{i}" for i in range(7)]
    slow = SlowFirst(FamilyMeter("odbench"), len(pairs), tmp_path / "finished.log")
    got = score_files(pairs, slow, workers=4)
    assert sorted(slow.finished) == [f"img{i}" for i in range(7)]
    assert slow.finished != sorted(slow.finished)  # the workers did finish out of order
    assert_same_records(got, ref)
    assert json.dumps(slow.compute()) == json.dumps(ref_meter.compute())


def test_config_workers_store_the_records_in_file_order(tmp_path, monkeypatch):
    """score --config --workers 4 stores the per-image records of --workers 1, in id order."""
    import odbench.scoring.config as config_mod
    from odbench.results import load_all_results

    pred_dir, gt_dir = make_pairs(tmp_path, n=6)
    config = tmp_path / "runs.toml"
    config.write_text(f'[datasets.d]\ngt = "{gt_dir}"\n[methods.m]\nd = "{pred_dir}"\n')
    make = config_mod.make_meter
    monkeypatch.setattr(config_mod, "make_meter", lambda p, m: SlowFirst(make(p, m), 6))
    stores = {}
    for workers in ("1", "4"):
        res = tmp_path / f"res{workers}"
        out = invoke(
            "score", "--config", str(config), "--results-dir", str(res), "--workers", workers
        )
        assert out.exit_code == 0, out.output
        (stores[workers],) = load_all_results(res)
    one, four = stores["1"].records, stores["4"].records
    assert one.ids == four.ids == tuple(f"img{i}" for i in range(6))
    for key in ("acc", "iou", "mae", "fbeta"):
        assert np.array_equal(getattr(one.saliency, key), getattr(four.saliency, key)), key
    assert stores["1"].metrics == stores["4"].metrics


def test_workers_report_the_same_warnings_as_one_worker(tmp_path):
    """Warnings raised while reading in worker processes (RGB maps converted, 0/1 masks) reach
    the one summary line per kind exactly as with one worker."""
    pred_dir, gt_dir = make_pairs(tmp_path, n=12)
    rng = np.random.default_rng(3)
    for i in range(12):
        rgb = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(pred_dir / f"img{i}.png")
        Image.fromarray((rng.random((12, 16)) < 0.4).astype(np.uint8)).save(gt_dir / f"img{i}.png")
    args = ["score", "--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir), "--json"]
    one, two = (invoke(*args, "--workers", w) for w in ("1", "2"))
    assert one.exit_code == two.exit_code == 0, two.output
    assert json.loads(one.stdout) == json.loads(two.stdout)
    notes = one.stderr.splitlines()
    assert len(notes) == 2 and "12 colour" in notes[0] and "12 mask file(s)" in notes[1], notes
    assert two.stderr == one.stderr


def test_workers_report_the_first_bad_file_in_order(tmp_path):
    pred_dir, gt_dir = make_pairs(tmp_path, n=6)
    for name in ("img4.png", "img2.png"):
        (pred_dir / name).write_bytes(b"not a png")
    args = ["score", "--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir), "--workers", "4"]
    assert_one_line_error(invoke(*args), "img2.png", "corrupt", "re-export it")
    assert_one_line_error(invoke(*args[:-2], "--workers", "0"), "--workers")


def test_metrics_list_shows_only_the_names_given_with_the_values_of_all(tmp_path):
    from odbench.metrics.selection import SCORE_KEYS

    pred_dir, gt_dir = make_pairs(tmp_path, n=5)
    every = score_json(pred_dir, gt_dir, "--metrics", "all")
    some = score_json(pred_dir, gt_dir, "--metrics", "s_measure, weighted_fbeta,MAE")
    assert {k for k in some if k in SCORE_KEYS} == {"s_measure", "weighted_fbeta", "mae"}
    for key in ("s_measure", "weighted_fbeta", "mae"):
        assert some[key] == every[key], key
    assert some["n_images"] == 5 and some["protocol"] == "odbench"
    basic_only = score_json(pred_dir, gt_dir, "--metrics", "iou")
    assert {k for k in basic_only if k in SCORE_KEYS} == {"iou"} and "curves" not in basic_only
    assert "fbeta_curve" not in basic_only and "best_threshold" not in basic_only  # maxFβ's
    assert "curves" not in some and "fbeta_curve" not in some and "curves" in every
    table = invoke(
        "score", "--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir), "--metrics", "dice,ber"
    )
    assert table.exit_code == 0 and "Dice" in table.stdout and "BER" in table.stdout
    assert "S-measure" not in table.stdout and "max Fβ" not in table.stdout


def test_unknown_metric_is_one_line_listing_the_valid_names_before_reading(tmp_path):
    missing = tmp_path / "nowhere"
    out = invoke(
        "score", "--pred-dir", str(missing), "--gt-dir", str(missing), "--metrics", "s,mae"
    )
    assert_one_line_error(
        out, "--metrics s,mae: unknown metric s (did you mean s_measure?);", "basic, all", "auc_roc"
    )
    out = invoke("score", "--pred-dir", str(missing), "--gt-dir", str(missing), "--metrics", ",")
    assert_one_line_error(out, "no metric named")


class FailsOn(SlowFirst):
    """As SlowFirst, but img1 fails late (after 0.3 s) and img5 at once: in file order, img1's
    failure is the one to report."""

    def score(self, pred, gt, image_id):
        import time

        from odbench.metrics.protocols import MetricInputError

        if image_id in ("img1", "img5"):
            time.sleep(0.3 if image_id == "img1" else 0.0)
            raise MetricInputError(f"planted failure in {image_id}")
        return super().score(pred, gt, image_id)


def test_a_failing_image_is_reported_by_file_in_file_order_and_nothing_is_written(
    tmp_path, monkeypatch
):
    import odbench.scoring.config as config_mod
    import odbench.scoring.folders as folders_mod

    pred_dir, gt_dir = make_pairs(tmp_path, n=6)
    config = tmp_path / "runs.toml"
    config.write_text(f'[datasets.d]\ngt = "{gt_dir}"\n[methods.m]\nd = "{pred_dir}"\n')
    make = folders_mod.make_meter
    for module in (config_mod, folders_mod):
        monkeypatch.setattr(module, "make_meter", lambda p, m: FailsOn(make(p, m), 6))
    res = tmp_path / "res"
    out = invoke("score", "--config", str(config), "--results-dir", str(res), "--workers", "4")
    assert_one_line_error(out, f"{pred_dir / 'img1.png'}: planted failure in img1")
    assert not res.exists() or not list(res.iterdir())
    direct = invoke("score", "--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir), "--workers", "3")
    assert_one_line_error(direct, "img1.png: planted failure in img1")


def test_an_image_over_pillows_pixel_limit_is_one_line(tmp_path, monkeypatch):
    from PIL import Image as PILImage

    pred_dir, gt_dir = make_pairs(tmp_path, n=2)  # 12 x 16 = 192 pixels
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 50)  # over 2 x 50: a "decompression bomb"
    out = invoke("score", "--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir))
    assert_one_line_error(out, "img0.png: image too large to decode safely", "MAX_IMAGE_PIXELS")
    from odbench.imageio import ImageReadError, read_gray

    with pytest.raises(ImageReadError, match="too large"):
        read_gray(pred_dir / "img1.png")


def test_a_map_this_user_may_not_read_is_permission_denied_not_corrupt(tmp_path, monkeypatch):
    """Issue 26 item 14: a permission error on a map said "re-export it"; it says what is wrong
    (permission denied) and the fix.  (Simulated: the tests may run as root, who reads all.)"""
    import os

    from odbench.imageio import ImageReadError, read_gray

    pred_dir, gt_dir = make_pairs(tmp_path, n=3)
    locked = pred_dir / "img1.png"
    real_open, real_read = os.open, Path.read_bytes

    def os_open(path, *args, **kwargs):
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    def read_bytes(self):
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self)

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    out = invoke("score", "--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir))
    assert_one_line_error(out, f"{locked}: permission denied", "chmod a+r")
    assert "re-export" not in out.stderr and "corrupt" not in out.stderr
    with pytest.raises(ImageReadError, match="permission denied.*chmod a\\+r") as e:
        read_gray(locked)
    assert "re-export" not in str(e.value)
    with pytest.raises(ImageReadError, match="a folder, not an image file"):
        read_gray(pred_dir)


def test_results_dir_without_config_is_refused_not_silently_ignored(tmp_path):
    """``score --pred-dir P --gt-dir G --results-dir R`` exited 0 with nothing written to R (the
    store is --config's): a user who asked for stored results found none.  Now one line."""
    pred_dir, gt_dir = make_pairs(tmp_path)
    store = tmp_path / "store"
    args = ("score", "--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir))
    result = invoke(*args, "--results-dir", str(store))
    assert_one_line_error(result, "--results-dir", "--config", "--json")
    assert not store.exists()
    assert invoke(*args).exit_code == 0  # the default store, not given: nothing to refuse


@pytest.mark.parametrize("kind", ["folder", "broken link"])
def test_a_map_that_is_a_folder_or_a_broken_link_is_named_not_a_missing_prediction(tmp_path, kind):
    """A prediction named like an image that is a folder or a broken link was skipped while
    listing: the error named its GT as having no prediction and offered --subset-of-gt, which
    then scored without it.  Now one line naming the entry, with or without --subset-of-gt."""
    pred_dir, gt_dir = make_pairs(tmp_path, n=3)
    odd = pred_dir / "img1.png"
    odd.unlink()
    if kind == "folder":
        odd.mkdir()
    else:
        odd.symlink_to(tmp_path / "moved" / "img1.png")
    args = ("score", "--pred-dir", str(pred_dir), "--gt-dir", str(gt_dir))
    for extra in ((), ("--subset-of-gt",)):
        assert_one_line_error(invoke(*args, *extra), f"{odd}: {kind}")
