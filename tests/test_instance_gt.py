"""One class-agnostic GT builder (issue 22): the ``coco`` dataset (eval) and
``score-detections`` build identical instances from the same file, and annotations without
``area`` follow one documented policy (the box's ``w * h``, with a note)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from realdata import REAL_DATA

from odbench.bench.discovery import generate, pycocotools_summary
from odbench.cli import main
from odbench.data.base import DatasetError, create_dataset
from odbench.data.instances import read_instances
from odbench.imageio import write_png
from odbench.metrics.instances import InstanceGT

TINY = REAL_DATA / "tiny_coco"


def assert_same_gt(a: InstanceGT, b: InstanceGT) -> None:
    assert (a.height, a.width) == (b.height, b.width)
    for field in ("boxes", "area", "iscrowd"):
        x, y = getattr(a, field), getattr(b, field)
        assert x.dtype == y.dtype and np.array_equal(x, y), field
    assert (a.masks is None) == (b.masks is None)
    for m, n in zip(a.masks or [], b.masks or []):
        assert list(m["size"]) == list(n["size"]) and m["counts"] == n["counts"]


def _folder(root: Path, gt: dict) -> Path:
    (root / "val").mkdir(parents=True)
    for img in gt["images"]:
        img["file_name"] = img["file_name"].replace(".jpg", ".png")
        write_png(
            root / "val" / img["file_name"], np.zeros((img["height"], img["width"]), np.uint8)
        )
    (root / "annotations").mkdir()
    path = root / "annotations" / "instances_val.json"
    path.write_text(json.dumps(gt))
    return path


def test_dataset_and_score_detections_build_the_same_gt(tmp_path: Path) -> None:
    gt, _ = generate(6, 0, seed=4, crowd_rate=0.3, empty_rate=0.2)
    for k, ann in enumerate(gt["annotations"]):
        if k % 3 == 0:
            del ann["area"]  # the fallback: the box's w * h, in both
    path = _folder(tmp_path, gt)
    data = create_dataset("coco", data_root=tmp_path)
    read = read_instances(path, masks=True)
    by_stem = {Path(i.file_name).stem: image_id for image_id, i in read.images.items()}
    for sample_id in data.ids():
        assert_same_gt(data.load(sample_id).instances, read.gt[by_stem[sample_id]])
    per_image: dict[int, list[dict]] = {}
    for ann in gt["annotations"]:
        per_image.setdefault(ann["image_id"], []).append(ann)
    fallback = 0
    for image_id, anns in per_image.items():
        for k, ann in enumerate(anns):
            want = ann["area"] if "area" in ann else ann["bbox"][2] * ann["bbox"][3]
            fallback += "area" not in ann
            assert read.gt[image_id].area[k] == want
    assert fallback > 0


@pytest.mark.skipif(not TINY.is_dir(), reason=f"real data absent: {TINY}")
def test_tiny_coco_dataset_and_score_detections_build_the_same_gt() -> None:
    data = create_dataset("coco", data_root=TINY, split="val2017")
    read = read_instances(TINY / "annotations" / "instances_val2017.json", masks=True)
    by_stem = {Path(i.file_name).stem: image_id for image_id, i in read.images.items()}
    assert sum(int(g.iscrowd.sum()) for g in read.gt.values()) > 0
    for sample_id in data.ids():
        assert_same_gt(data.load(sample_id).instances, read.gt[by_stem[sample_id]])


def test_missing_area_is_the_box_area_with_a_note(tmp_path: Path) -> None:
    # COCOeval needs 'area' (it fails without it): odbench uses the box's w * h, says so, and
    # then equals pycocotools run on the file with that area written in
    gt, results = generate(12, (0, 30), seed=8, crowd_rate=0.2, masks=False)
    filled = json.loads(json.dumps(gt))
    for ann, full in zip(gt["annotations"][::2], filled["annotations"][::2]):
        del ann["area"]
        full["area"] = full["bbox"][2] * full["bbox"][3]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(results))
    args = [
        "score-detections",
        "--pred",
        str(tmp_path / "res.json"),
        "--gt",
        str(tmp_path / "gt.json"),
    ]
    r = CliRunner().invoke(main, [*args, "--json"])
    assert r.exit_code == 0, r.output
    n = len(gt["annotations"][::2])
    assert f"{n} of {len(gt['annotations'])} annotations have no 'area'" in r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    with contextlib.redirect_stdout(io.StringIO()):
        want = pycocotools_summary(filled, results, "bbox")
    for key, value in want.items():
        assert (got[key] is None) if value != value else abs(got[key] - value) <= 1e-12, key


def test_malformed_annotation_is_one_line_naming_file_and_annotation(tmp_path: Path) -> None:
    gt, _ = generate(3, 0, seed=1, masks=False)
    gt["annotations"][1]["area"] = "big"
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    with pytest.raises(DatasetError) as e:
        read_instances(tmp_path / "gt.json", masks=False)
    line = str(e.value)
    assert "gt.json" in line and f"annotation {gt['annotations'][1]['id']!r}" in line
