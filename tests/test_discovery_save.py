"""``odbench eval --save-preds`` on a discovery run writes a COCO-results file of the instances
that ``odbench score-detections`` scores to eval's own numbers (issue 22): a generated COCO
folder (crowd regions, images without GT, two worker processes) and the real tiny_coco."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from realdata import REAL_DATA

from odbench.bench.discovery import generate
from odbench.cli import main
from odbench.discovery import COCO_RESULTS
from odbench.imageio import write_png
from odbench.methods.base import create_method

NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _coco_folder(root: Path, n: int = 8) -> Path:
    """A COCO folder (``annotations/instances_val.json`` + ``val/*.png``): generated instances
    plus, per image, one jittered copy of center-prior's own box, so that AP is neither 0 nor 1."""
    gt, _ = generate(n, 0, seed=3, crowd_rate=0.3, empty_rate=0.25)
    method = create_method("center-prior")
    rng = np.random.default_rng(0)
    (root / "val").mkdir(parents=True)
    for k, img in enumerate(gt["images"]):
        img["file_name"] = img["file_name"].replace(".jpg", ".png")
        image = np.full((img["height"], img["width"], 3), 90, np.uint8)
        write_png(root / "val" / img["file_name"], image)
        (found,) = method.predict_instances([image], method.predict([image]))
        x1, y1, x2, y2 = found.boxes[0]
        w, h = (x2 - x1) * (1 + rng.uniform(-0.5, 0.5)), (y2 - y1) * (1 + rng.uniform(-0.5, 0.5))
        if k % 4 != 1:  # some images keep only the generated (random) GT
            gt["annotations"].append(
                {"id": 10_000 + k, "image_id": img["id"], "category_id": 1, "iscrowd": 0,
                 "bbox": [float(x1), float(y1), w, h], "area": w * h,
                 "segmentation": [[x1, y1, x1 + w, y1, x1 + w, y1 + h, x1, y1 + h]]}
            )  # fmt: skip
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_val.json").write_text(json.dumps(gt))
    return root / "annotations" / "instances_val.json"


def _round_trip(tmp_path: Path, root: Path, gt_file: Path, *extra: str) -> dict:
    """eval with --save-preds, then score-detections on its file: (eval's discovery metrics)."""
    save = tmp_path / "preds"
    args = ["eval", "--method", "center-prior", "--dataset", "coco", "--data-root", str(root)]
    args += ["--results-dir", str(tmp_path / "res"), "--cache-dir", str(tmp_path / "cache")]
    res = CliRunner().invoke(main, [*args, "--save-preds", str(save), *extra])
    assert res.exit_code == 0, res.output
    (path,) = (tmp_path / "res").glob("*.json")
    metrics = json.loads(path.read_text())["metrics"]["discovery"]
    results = save / COCO_RESULTS
    left = sorted(p.name for p in save.iterdir() if p.suffix != ".png")
    assert left == ["boxes.json", COCO_RESULTS]  # the per-image parts are gone
    entries = json.loads(results.read_text())
    gt_ids = {im["id"] for im in json.loads(gt_file.read_text())["images"]}
    assert entries and all(e["image_id"] in gt_ids and e["category_id"] == 1 for e in entries)
    for iou_type, prefix in (("bbox", "box"), ("segm", "mask")):
        cmd = ["score-detections", "--pred", str(results), "--gt", str(gt_file), "--json"]
        out = CliRunner().invoke(main, [*cmd, "--iou-type", iou_type])
        assert out.exit_code == 0, out.output
        scored = json.loads(out.output.strip().splitlines()[-1])
        for name in NAMES:
            want = metrics[f"{prefix}_{name}"]
            if want is None or (isinstance(want, float) and math.isnan(want)):
                assert scored[name] is None, (prefix, name, scored[name])
            else:
                assert scored[name] == want, (prefix, name, scored[name], want)  # exactly
    return metrics


def test_saved_instances_score_to_evals_numbers(tmp_path: Path) -> None:
    gt_file = _coco_folder(tmp_path / "coco")
    metrics = _round_trip(tmp_path, tmp_path / "coco", gt_file, "--workers", "2")
    assert 0 < metrics["box_AP50"] < 1 and 0 < metrics["mask_AP50"] < 1


TINY = REAL_DATA / "tiny_coco"


@pytest.mark.skipif(not TINY.is_dir(), reason=f"real data absent: {TINY}")
def test_saved_instances_score_to_evals_numbers_on_tiny_coco(tmp_path: Path) -> None:
    gt_file = TINY / "annotations" / "instances_val2017.json"
    metrics = _round_trip(tmp_path, TINY, gt_file, "--split", "val2017")
    assert metrics["box_AP50"] > 0 and metrics["n_images"] == 50
