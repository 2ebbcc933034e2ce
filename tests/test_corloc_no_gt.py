"""Issue 26 item 5: an image without a (non-crowd) GT box is left out of CorLoc's denominator,
counted and printed, as LOST and TokenCut do (it was silently a miss); and item 2's acceptance:
``odbench eval --method wctr --dataset coco`` over a folder holding a heavily textured photo
finishes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from odbench.cli import main
from odbench.compare import corloc_statistic, weighted_mean
from odbench.imageio import write_png
from odbench.metrics.boxes import CorLocMeter
from odbench.results import Records


def test_corloc_meter_leaves_out_an_image_without_gt_boxes() -> None:
    meter = CorLocMeter()
    assert meter.update([0, 0, 10, 10], [[0, 0, 10, 10]], "hit")
    assert not meter.update([0, 0, 10, 10], [[50, 50, 60, 60]], "miss")
    assert meter.update([0, 0, 10, 10], np.zeros((0, 4)), "crowd only") is None
    assert meter.compute() == {"corloc": 50.0, "hits": 1, "n_images": 2, "n_no_gt": 1}
    other = CorLocMeter()
    other.add(other.score(None, [], "crowd only too"))
    assert meter.merge(other).compute()["n_no_gt"] == 2  # a declared state: shards add up
    alone = CorLocMeter()
    alone.update(None, [], "crowd only")
    with pytest.raises(ValueError, match="none of the 1 image"):
        alone.compute()


def test_compare_resamples_corloc_over_the_images_with_gt() -> None:
    hits = np.array([1.0, 0.0, 0.0, 1.0])
    has_gt = np.array([True, True, False, True])
    weights = np.array([[1.0, 1.0, 1.0, 1.0], [2.0, 0.0, 1.0, 1.0], [0.0, 1.0, 3.0, 0.0]])
    np.testing.assert_allclose(corloc_statistic(has_gt)(hits, weights), [2 / 3, 1.0, 0.0])
    full = np.ones(4, bool)
    np.testing.assert_array_equal(
        corloc_statistic(full)(hits, weights), weighted_mean(hits, weights)
    )


def test_records_written_before_n_boxes_still_load() -> None:
    old = {"ids": np.array(["a", "b"]), "hit": np.array([True, False])}
    old["pred_box"] = np.zeros((2, 4))
    records = Records.from_arrays(old)
    assert records.localization is not None
    assert records.localization.n_boxes.tolist() == [1, 1]  # every image counted, as then


def _coco_folder(root: Path) -> None:
    """Three photos: a plain one, a heavily textured one (grass, sigma 30: the old SLIC clean-up
    left thousands of superpixels on such an image) and one whose only annotation is a crowd."""
    rng = np.random.default_rng(0)
    (root / "val2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    plain = np.full((240, 320, 3), (90, 140, 200), dtype=np.float64)
    plain[60:180, 100:220] = (200, 60, 40)
    grass = rng.normal((60, 130, 40), 30, (480, 640, 3))
    grass[150:330, 200:440] = rng.normal((200, 60, 40), 30, (180, 240, 3))
    crowd = plain[::-1].copy()
    images, annotations = [], []
    for k, (name, image, box, iscrowd) in enumerate(
        [
            ("plain", plain, [100, 60, 120, 120], 0),
            ("grass", grass, [200, 150, 240, 180], 0),
            ("crowd", crowd, [100, 60, 120, 120], 1),
        ]
    ):
        pixels = np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)
        write_png(root / "val2017" / f"{name}.png", pixels)
        h, w = pixels.shape[:2]
        images.append({"id": k + 1, "file_name": f"{name}.png", "height": h, "width": w})
        annotations.append(
            {"id": k + 1, "image_id": k + 1, "category_id": 1, "bbox": box, "iscrowd": iscrowd}
            | {"area": float(box[2] * box[3])}
        )
    ann = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "x"}]}
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(ann))


@pytest.mark.slow
def test_wctr_on_coco_with_a_textured_photo_and_a_crowd_only_image(tmp_path: Path) -> None:
    root = tmp_path / "coco"
    _coco_folder(root)
    args = ["eval", "--method", "wctr", "--dataset", "coco", "--data-root", str(root)]
    args += ["--results-dir", str(tmp_path / "res"), "--cache-dir", str(tmp_path / "cache")]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "(3 images," in r.output
    assert "1 image(s) without a (non-crowd) GT box left out, as LOST and TokenCut do" in r.output
    (path,) = (tmp_path / "res").glob("wctr__*.json")
    loc: dict[str, Any] = json.loads(path.read_text())["metrics"]["localization"]
    assert loc["n_images"] == 2 and loc["n_no_gt"] == 1
    assert loc["corloc"] == pytest.approx(100.0 * loc["hits"] / 2)
    (npz,) = (tmp_path / "res").glob("wctr__*.records.npz")
    with np.load(npz) as records:
        by_id = dict(zip(records["ids"].tolist(), records["n_boxes"].tolist()))
    assert by_id == {"plain": 1, "grass": 1, "crowd": 0}


def test_score_boxes_with_no_gt_box_at_all_is_one_error_line(tmp_path: Path) -> None:
    """score-boxes over images none of which has a GT box ended in a ValueError traceback; it is
    one ``error:`` line, exit 2."""
    (tmp_path / "pred.json").write_text(json.dumps({"a": [0, 0, 4, 4], "b": None}))
    (tmp_path / "gt.json").write_text(json.dumps({"a": [], "b": []}))
    args = ["--pred", str(tmp_path / "pred.json"), "--gt", str(tmp_path / "gt.json")]
    out = CliRunner().invoke(main, ["score-boxes", *args])
    assert out.exit_code == 2, out.output
    assert "error: none of the 2 image(s) has a GT box: no CorLoc" in out.output
