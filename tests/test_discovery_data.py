"""The discovery task's inputs (issue 22): the single-object default of
``Method.predict_instances``, instances in the prediction cache, and the class-agnostic GT of
the COCO and VOC loaders."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from realdata import REAL_DATA

from odbench.cache import PredictionCache
from odbench.data.base import create_dataset
from odbench.discovery import dataset_protocol
from odbench.methods.base import create_method
from odbench.metrics.instances import Instances

TINY = REAL_DATA / "tiny_coco"


def test_single_object_default_is_one_instance_from_the_map() -> None:
    """mask = map > 0.5, box = predict_boxes' box, score = mean of the map inside the mask;
    a map with no pixel above 0.5 gives no instance."""
    soft = np.zeros((10, 12), np.float32)
    soft[2:5, 3:9] = 0.8
    soft[3, 4] = 0.95
    soft[8, 0] = 0.7  # a second, smaller component: in the mask, not in the box
    method = create_method("center-prior")
    images = [np.zeros((10, 12, 3), np.uint8)] * 2
    found, empty = method.predict_instances(images, [soft, np.full((10, 12), 0.5)])
    assert len(found) == 1 and len(empty) == 0 and empty.masks == []
    np.testing.assert_array_equal(found.boxes, [[3, 2, 9, 5]])
    assert found.scores[0] == pytest.approx((17 * 0.8 + 0.95 + 0.7) / 19)
    assert found.masks is not None
    np.testing.assert_array_equal(mask_utils.decode(found.masks[0]), soft > 0.5)


def test_scores_differ_across_images() -> None:
    a, b = np.full((6, 6), 0.6), np.full((6, 6), 0.9)
    method = create_method("center-prior")
    (ia, ib) = method.predict_instances([np.zeros((6, 6, 3), np.uint8)] * 2, [a, b])
    assert ia.scores[0] == pytest.approx(0.6) and ib.scores[0] == pytest.approx(0.9)


def test_cache_keeps_instances_exactly(tmp_path: Path) -> None:
    cache = PredictionCache(tmp_path / "c")
    m = np.zeros((7, 9), np.uint8)
    m[1:4, 2:6] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    cases = {
        "masks": Instances(
            np.array([0.5, 0.25]), np.array([[2, 1, 6, 4], [0, 0, 1.5, 2]]), [rle, rle]
        ),
        "boxes": Instances(np.array([0.5]), np.array([[2.0, 1, 6, 4]]), None),
        "none": Instances(np.zeros(0), np.zeros((0, 4)), []),
    }
    pred = np.zeros((7, 9), np.uint16)
    for name, inst in cases.items():
        cache.put(name, pred, None, inst)
        back = cache.get_instances(name)
        assert back is not None
        np.testing.assert_array_equal(back.scores, inst.scores)
        np.testing.assert_array_equal(back.boxes, inst.boxes)
        if inst.masks is None:
            assert back.masks is None
        else:
            assert back.masks is not None and len(back.masks) == len(inst.masks)
            for x, y in zip(back.masks, inst.masks):
                np.testing.assert_array_equal(mask_utils.decode(x), mask_utils.decode(y))
    cache.put("plain", pred, None)
    assert cache.get_instances("plain") is None  # stored by another task: predicted again


def _voc(root: Path) -> Path:
    from PIL import Image

    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    (root / "ImageSets/Main/trainval.txt").write_text("000001\n")
    Image.new("RGB", (40, 30)).save(root / "JPEGImages/000001.jpg")
    (root / "Annotations/000001.xml").write_text(
        "<annotation><object><bndbox><xmin>3</xmin><ymin>4</ymin><xmax>20</xmax>"
        "<ymax>25</ymax></bndbox></object></annotation>"
    )
    return root


def test_voc_instances_are_its_boxes_without_masks(tmp_path: Path) -> None:
    data = create_dataset("voc07", path=_voc(tmp_path / "VOC2007"))
    assert "discovery" in data.task and data.instance_masks is False
    s = data.load("000001")
    assert s.instances is not None and s.instances.masks is None
    np.testing.assert_array_equal(s.instances.boxes, [[2, 3, 20, 25]])
    np.testing.assert_array_equal(s.instances.area, [18 * 22])
    assert not s.instances.iscrowd.any()


@pytest.mark.skipif(not TINY.is_dir(), reason=f"real data absent: {TINY}")
def test_coco_instances_are_every_annotation_crowd_flagged() -> None:
    from pycocotools.coco import COCO

    data = create_dataset("coco", data_root=TINY, split="val2017")
    assert data.instance_masks is True
    ann = json.loads((TINY / "annotations/instances_val2017.json").read_text())
    crowd_image = next(a["image_id"] for a in ann["annotations"] if a["iscrowd"])
    name = next(Path(im["file_name"]).stem for im in ann["images"] if im["id"] == crowd_image)
    coco = COCO(str(TINY / "annotations/instances_val2017.json"))
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[crowd_image]))
    s = data.load(name)
    gt = s.instances
    assert gt is not None and gt.masks is not None and len(gt) == len(anns)
    assert s.boxes is not None and len(s.boxes) == len(anns) - sum(a["iscrowd"] for a in anns)
    np.testing.assert_array_equal(gt.iscrowd, [bool(a["iscrowd"]) for a in anns])
    np.testing.assert_array_equal(gt.area, [a["area"] for a in anns])
    for rle, a in zip(gt.masks, anns):
        np.testing.assert_array_equal(mask_utils.decode(rle), coco.annToMask(a))


def test_coco_file_without_segmentation_is_boxes_only(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "annotations").mkdir()
    (tmp_path / "val").mkdir()
    Image.new("RGB", (20, 10)).save(tmp_path / "val" / "a.jpg")
    ann = {
        "images": [{"id": 1, "file_name": "a.jpg", "height": 10, "width": 20}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 2, 5, 4]}],
        "categories": [{"id": 3, "name": "x"}],
    }
    (tmp_path / "annotations" / "instances_val.json").write_text(json.dumps(ann))
    data = create_dataset("coco", data_root=tmp_path)
    gt = data.load("a").instances
    assert data.instance_masks is False and gt is not None and gt.masks is None
    np.testing.assert_array_equal(gt.boxes, [[1, 2, 6, 6]])
    np.testing.assert_array_equal(gt.area, [20.0])  # no area field: the box's


def _lvis(root: Path) -> Path:
    from PIL import Image

    for split in ("val2017", "train2017"):
        (root / split).mkdir(parents=True)
    Image.new("RGB", (20, 10)).save(root / "val2017" / "000000000001.jpg")
    Image.new("RGB", (16, 12)).save(root / "train2017" / "000000000002.jpg")
    url = "http://images.cocodataset.org/{}/{:012d}.jpg"
    ann = {
        "images": [
            {"id": 1, "coco_url": url.format("val2017", 1), "height": 10, "width": 20},
            {"id": 2, "coco_url": url.format("train2017", 2), "height": 12, "width": 16},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [2, 1, 6, 4], "area": 24.0,
             "segmentation": [[2, 1, 8, 1, 8, 5, 2, 5]]},
            {"id": 2, "image_id": 2, "category_id": 9, "bbox": [0, 0, 4, 4], "area": 16.0,
             "segmentation": [[0, 0, 4, 0, 4, 4, 0, 4]]},
        ],
        "categories": [{"id": 7, "name": "a"}, {"id": 9, "name": "b"}],
    }  # fmt: skip
    (root / "lvis_v1_val.json").write_text(json.dumps(ann))
    return root


def test_lvis_is_built_once_class_agnostic_at_300_detections(tmp_path: Path) -> None:
    root = _lvis(tmp_path / "LVIS")
    data = create_dataset("lvis", data_root=tmp_path)
    assert data.ids() == ["000000000001", "000000000002"]
    s = data.load("000000000002")  # a train2017 image
    assert s.image.shape == (12, 16, 3) and s.instances is not None
    np.testing.assert_array_equal(s.instances.boxes, [[0, 0, 4, 4]])
    assert not s.instances.iscrowd.any() and s.instances.masks is not None
    built = json.loads((root / "lvis_v1_val_odbench.json").read_text())
    source = (root / "lvis_v1_val.json").read_bytes()
    assert built["info"]["odbench"]["source_sha256"] == hashlib.sha256(source).hexdigest()
    assert dataset_protocol(data).name == "lvis-agnostic"
    assert dataset_protocol(data).max_dets == 300
    # the source changes: the built file follows
    ann = json.loads(source)
    ann["annotations"] = ann["annotations"][:1]
    (root / "lvis_v1_val.json").write_text(json.dumps(ann))
    again = create_dataset("lvis", data_root=tmp_path)
    assert again.load("000000000002").instances is not None
    assert len(again.load("000000000002").instances) == 0  # type: ignore[arg-type]
