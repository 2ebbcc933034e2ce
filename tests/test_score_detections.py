"""``odbench score-detections`` (issue 22): its --json equals pycocotools on the same files, each
common mistake in a results file is one line naming it, and it never imports torch."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from odbench.bench.discovery import generate, pycocotools_summary
from odbench.cli import main


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    gt, results = generate(10, (0, 25), seed=2, crowd_rate=0.2, empty_rate=0.2)
    folder = tmp_path_factory.mktemp("dets")
    (folder / "gt.json").write_text(json.dumps(gt))
    (folder / "res.json").write_text(json.dumps(results))
    return folder, gt, results


def run(*args: str):
    return CliRunner().invoke(main, ["score-detections", *map(str, args)])


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_json_equals_pycocotools(case, iou_type):
    folder, gt, results = case
    r = run(
        "--pred", folder / "res.json", "--gt", folder / "gt.json", "--iou-type", iou_type, "--json"
    )
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    ref = pycocotools_summary(gt, results, iou_type)
    assert list(got) == list(ref)
    for key, value in ref.items():
        assert (got[key] is None) if math.isnan(value) else abs(got[key] - value) <= 1e-12, key
    table = run("--pred", folder / "res.json", "--gt", folder / "gt.json", "--iou-type", iou_type)
    assert table.exit_code == 0 and f"{ref['AP50']:6.3f}" in table.stdout


def test_category_ids_not_in_gt_are_mapped_to_one_with_a_note(case, tmp_path):
    folder, gt, results = case
    zero = [{**r, "category_id": 0} for r in results]  # MaskDistill's category_id 0
    (tmp_path / "zero.json").write_text(json.dumps(zero))
    a = run("--pred", tmp_path / "zero.json", "--gt", folder / "gt.json", "--json")
    b = run("--pred", folder / "res.json", "--gt", folder / "gt.json", "--json")
    assert a.exit_code == 0 and json.loads(a.stdout) == json.loads(b.stdout)
    assert json.loads(a.stdout)["AP"] > 0
    assert "note:" in a.stderr and "category ids not declared in the GT (0)" in a.stderr


def bad_files(results: list[dict]) -> dict[str, tuple[object, str, str]]:
    """name -> (results content, --iou-type, what the error line must say)."""
    first = results[0]
    xyxy = [
        {**r, "bbox": [b[0], b[1], b[0] + b[2], b[1] + b[3]]} for r in results for b in [r["bbox"]]
    ]
    return {
        "dict": ({"annotations": []}, "bbox", "JSON list of detections, got a dict"),
        "no score": ([{k: v for k, v in first.items() if k != "score"}], "bbox", "no 'score'"),
        "nan score": ([{**first, "score": "high"}], "bbox", "expected a finite number"),
        "unknown image": ([{**first, "image_id": 999}], "bbox", "1 detections refer to image ids not in the GT"),
        "polygons": ([{**first, "segmentation": [[1, 1, 5, 1, 5, 5]]}], "segm", "polygon segmentation"),
        "no mask": ([{k: v for k, v in first.items() if k != "segmentation"}], "segm", "no 'segmentation'"),
        "mask size": ([{**first, "segmentation": {"size": [3, 3], "counts": "9"}}], "segm", "mask of size [3, 3]"),
        "xyxy": (xyxy, "bbox", "boxes look like corners [x1, y1, x2, y2]"),
        "bad box": ([{**first, "bbox": [1, 2, 3]}], "bbox", "expected [x, y, w, h]"),
        # segm reads the file's boxes too (their w * h are the detections' areas, as loadRes)
        "segm xyxy": (xyxy, "segm", "boxes look like corners [x1, y1, x2, y2]"),
        "segm negative box": ([{**first, "bbox": [5, 5, -3, 4]}], "segm", "negative width or height"),
        # RLE counts covering fewer / more pixels than the image: pycocotools scores garbage
        # (or loops forever when the mask's box meets a GT's)
        "rle short": ([{**first, "segmentation": {**first["segmentation"], "counts": "0T3"}}], "segm", "counts cover 100 pixels"),
        "rle corrupt": ([{**first, "segmentation": {**first["segmentation"], "counts": "!!!garbage~~~"}}], "segm", "are not run lengths"),
        "rle list": ([{**first, "segmentation": {**first["segmentation"], "counts": [0, 100]}}], "segm", "uncompressed counts cover 100 pixels"),
    }  # fmt: skip


@pytest.mark.parametrize(
    "name",
    ["dict", "no score", "nan score", "unknown image", "polygons", "no mask", "mask size", "xyxy", "bad box",
     "segm xyxy", "segm negative box", "rle short", "rle corrupt", "rle list"],
)  # fmt: skip
def test_bad_results_files_give_one_line(case, tmp_path, name):
    folder, _, results = case
    content, iou_type, expected = bad_files(results)[name]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    r = run("--pred", path, "--gt", folder / "gt.json", "--iou-type", iou_type)
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], r.stderr
    assert str(path) in lines[0]


def test_unreadable_files_give_one_line(case, tmp_path):
    folder, _, _ = case
    (tmp_path / "broken.json").write_text("[{")
    for pred, gt, expected in (
        (tmp_path / "broken.json", folder / "gt.json", "not a JSON file"),
        (tmp_path / "missing.json", folder / "gt.json", "cannot read the results file"),
        (folder / "res.json", folder / "res.json", "not a COCO instances file"),
    ):
        r = run("--pred", pred, "--gt", gt)
        assert r.exit_code == 2 and r.stderr.count("\n") == 1 and expected in r.stderr, r.stderr


def test_rle_lengths_decode_counts_as_pycocotools():
    """rle_lengths sums the runs of compressed RLE strings (delta-coded, several characters per
    number) as pycocotools' rleFrString does: h * w for every encoded mask; -1 for strings cut
    inside a number or holding characters outside '0'..'o'."""
    from pycocotools import mask as mask_utils

    from odbench.scoring.detections import rle_lengths

    rng = np.random.default_rng(0)
    counts, sizes = [], []
    for t in range(60):
        h, w = (int(v) for v in rng.integers(1, 200, 2))
        m = (rng.random((h, w)) < rng.random() * 0.3).astype(np.uint8)
        if t % 3 == 0:  # long runs: numbers of several characters
            m[:] = 0
            m[rng.integers(0, h) :, rng.integers(0, w) :] = 1
        rle = mask_utils.encode(np.asfortranarray(m))["counts"]
        counts.append(rle.decode() if t % 2 else rle)
        sizes.append(h * w)
    assert rle_lengths(counts).tolist() == sizes
    ten = mask_utils.encode(np.asfortranarray(np.ones((10, 10), np.uint8)))["counts"]
    assert rle_lengths([ten, "", "!!", ten[:-1] + b"o"]).tolist() == [100, 0, -1, -1]


def test_results_rle_stopping_early_is_refused_not_a_hang(tmp_path):
    """An RLE whose counts stop at its last foreground pixel (no closing background run) over a
    GT: pycocotools' mask IoU loops forever on it; score-detections says so in one line."""
    from pycocotools import mask as mask_utils

    m = np.zeros((40, 50), np.uint8)
    m[10:30, 10:30] = 1
    full = mask_utils.encode(np.asfortranarray(m))
    gt = {
        "images": [{"id": 1, "height": 40, "width": 50}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400,
             "iscrowd": 0, "segmentation": {"size": [40, 50], "counts": full["counts"].decode()}}
        ],
        "categories": [{"id": 1, "name": "object"}],
    }  # fmt: skip
    runs = [10 + 40 * 10] + [20, 20] * 19 + [20]  # ends with the last foreground run
    short = mask_utils.frPyObjects({"size": [40, 50], "counts": runs}, 40, 50)
    res = [{"image_id": 1, "category_id": 1, "score": 0.9,
            "segmentation": {"size": [40, 50], "counts": short["counts"].decode()}}]  # fmt: skip
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(res))
    args = ["--pred", tmp_path / "res.json", "--gt", tmp_path / "gt.json", "--iou-type", "segm"]
    code = (
        "import sys\nfrom odbench.cli import main\n"
        f"sys.argv = ['odbench', 'score-detections', *{list(map(str, args))!r}]\nmain()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )  # without the check: a hang, stopped here by the timeout
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and "counts cover 1190 pixels, not its 40x50" in out.stderr


def test_gt_without_annotations_gives_one_line(case, tmp_path):
    """An instances file without annotations (e.g. a test split's image info) would make every
    number undefined: one line naming it, not 12 nulls and exit 0."""
    folder, gt, _ = case
    for name, content in (
        ("none.json", {k: v for k, v in gt.items() if k != "annotations"}),
        ("empty.json", {**gt, "annotations": []}),
    ):
        (tmp_path / name).write_text(json.dumps(content))
        r = run("--pred", folder / "res.json", "--gt", tmp_path / name, "--json")
        assert r.exit_code == 2, r.output
        assert r.stderr.count("\n") == 1 and f"{tmp_path / name}: no annotations" in r.stderr


def test_score_detections_does_not_import_torch(case):
    folder, _, _ = case
    code = (
        "import json, sys\n"
        "from click.testing import CliRunner\n"
        "from odbench.cli import main\n"
        f"r = CliRunner().invoke(main, ['score-detections', '--pred', {str(folder / 'res.json')!r}, "
        f"'--gt', {str(folder / 'gt.json')!r}, '--iou-type', 'segm', '--json'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'AP': json.loads(r.stdout)['AP'] > 0}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"torch": False, "AP": True}


def test_bench_discovery_quick_runs_and_agrees():
    args = ["bench", "discovery", "--images", "20", "--dets", "20", "--rounds", "2"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert r.output.count("= pycocotools") >= 4 and "DIFFERS" not in r.output
    assert r.output.count("(best of 2)") >= 4


def test_bench_discovery_refuses_rounds_that_differ(monkeypatch):
    import odbench.bench.discovery as bench

    real, calls = bench.odbench_summary, []

    def drifting(*args, **kwargs):  # the second round gives another AP
        calls.append(1)
        out = real(*args, **kwargs)
        return {**out, "AP": out["AP"] + 0.01} if len(calls) == 2 else out

    monkeypatch.setattr(bench, "odbench_summary", drifting)
    args = ["bench", "discovery", "--images", "10", "--dets", "10", "--iou-type", "bbox"]
    r = CliRunner().invoke(main, [*args, "--rounds", "2"])
    assert r.exit_code != 0 and "bbox odbench (rounds differ)" in r.output, r.output
