"""Class-agnostic COCO AP / AR (issue 22): equal to pycocotools' COCOeval run directly on
random and real cases without tied scores, independent of submission order with ties, and the
per-image records, protocol, meter and GT loader around it."""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest
from realdata import REAL_DATA

from odbench.bench.discovery import generate, pycocotools_summary
from odbench.data.instances import ann_to_rle, instances_from_coco, load_instance_gt
from odbench.metrics.detection import (
    SUMMARY_KEYS,
    ImageMatches,
    accumulate,
    coco_ap,
    match_image,
    match_images,
)
from odbench.metrics.detection_protocols import (
    DetectionProtocol,
    get_detection_protocol,
)
from odbench.metrics.discovery import DiscoveryMeter, DiscoveryRecord
from odbench.metrics.instances import InstanceGT, Instances
from odbench.scoring.detections import read_results, score_results

TINY_GT = REAL_DATA / "tiny_coco" / "annotations" / "instances_val2017.json"


def ours(gt: dict, results: list, iou_type: str, max_dets: int | None = None) -> dict:
    gts, _, cats = instances_from_coco(gt, masks=iou_type == "segm")
    return score_results(results, (gts, cats), iou_type, max_dets).metrics  # type: ignore[arg-type]


def assert_equal(a: dict, b: dict) -> None:
    assert list(a) == list(SUMMARY_KEYS)
    for key in SUMMARY_KEYS:
        if math.isnan(b[key]):
            assert math.isnan(a[key]), (key, a[key])
        else:
            assert abs(a[key] - b[key]) <= 1e-12, (key, a[key], b[key])


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("seed", range(4))
def test_equals_pycocotools_on_random_cases(iou_type, seed):
    # crowd regions, images without GT, images without detections, duplicate detections and
    # more than 100 detections in some images; every score distinct
    gt, results = generate(25, (0, 120), seed=seed, crowd_rate=0.2, empty_rate=0.2)
    assert len({r["score"] for r in results}) == len(results)
    assert sum(a["iscrowd"] for a in gt["annotations"]) > 0
    got = ours(gt, results, iou_type)
    assert_equal(got, pycocotools_summary(gt, results, iou_type))
    assert 0 < got["AP50"] < 1  # a case where matching matters


def test_equals_pycocotools_with_masks_without_boxes():
    # COCO.loadRes: without "bbox" a detection's area is its mask's (with one, its box's)
    gt, results = generate(20, (0, 40), seed=5, crowd_rate=0.2)
    for r in results:
        del r["bbox"]
    assert_equal(ours(gt, results, "segm"), pycocotools_summary(gt, results, "segm"))


def test_equals_pycocotools_at_300_detections():
    gt, results = generate(6, (250, 320), seed=6)
    got = ours(gt, results, "bbox", max_dets=300)
    assert_equal(got, pycocotools_summary(gt, results, "bbox", max_dets=300))
    assert got != ours(gt, results, "bbox")  # AR100 reads 300, not 100


def test_equals_pycocotools_on_edge_cases():
    # no detections at all; no GT of some sizes (COCO's -1: NaN here)
    gt, results = generate(8, (0, 6), seed=7, empty_rate=0.5)
    assert_equal(ours(gt, [], "bbox"), pycocotools_summary(gt, [], "bbox"))
    small = {**gt, "annotations": [a for a in gt["annotations"] if a["area"] > 96**2]}
    got = ours(small, results, "bbox")
    assert math.isnan(got["APs"]) and math.isnan(got["ARs"])
    assert_equal(got, pycocotools_summary(small, results, "bbox"))


def jittered_detections(gt: dict, seed: int, masks: bool) -> list[dict]:
    """Detections around the real GT (shifted, scaled, some random), distinct scores, RLE."""
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(seed)
    sizes = {i["id"]: (i["height"], i["width"]) for i in gt["images"]}
    out = []
    for ann in gt["annotations"]:
        for _ in range(int(rng.integers(0, 4))):
            x, y, w, h = ann["bbox"]
            s = rng.normal(0, 0.12, 4)
            box = [x + s[0] * w, y + s[1] * h, w * np.exp(s[2]), h * np.exp(s[3])]
            det = {"image_id": ann["image_id"], "category_id": 1, "bbox": box}
            if masks:
                hh, ww = sizes[ann["image_id"]]
                rle = mask_utils.frPyObjects([_box_poly(box)], hh, ww)[0]
                det["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode()}
            out.append(det)
    scores = rng.permutation(len(out)) / max(len(out), 1)
    for det, score in zip(out, scores):
        det["score"] = float(score)
    return out


def _box_poly(box: list[float]) -> list[float]:
    x, y, w, h = box
    return [x, y, x + w, y, x + w, y + h, x, y + h]


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_equals_pycocotools_on_tiny_coco(iou_type):
    if not TINY_GT.is_file():
        pytest.skip(f"no {TINY_GT} (real data absent)")
    gt = json.loads(TINY_GT.read_text())
    assert any(a["iscrowd"] for a in gt["annotations"])
    results = jittered_detections(gt, seed=1, masks=True)
    got = ours(gt, results, iou_type)
    assert_equal(got, pycocotools_summary(gt, results, iou_type))
    assert 0.01 < got["AP"] < 0.95


def test_gt_masks_are_pycocotools_annToRLE():
    if not TINY_GT.is_file():
        pytest.skip(f"no {TINY_GT} (real data absent)")
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(TINY_GT))
    gts = load_instance_gt(TINY_GT)
    assert set(gts) == set(coco.getImgIds())
    for image_id, gt in gts.items():
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        assert [coco.annToRLE(a) for a in anns] == gt.masks
        assert gt.area.tolist() == [a["area"] for a in anns]
        assert gt.iscrowd.tolist() == [bool(a["iscrowd"]) for a in anns]
        xywh = np.array([a["bbox"] for a in anns]).reshape(-1, 4)
        assert np.array_equal(gt.boxes[:, :2], xywh[:, :2])
        assert np.array_equal(gt.boxes[:, 2:], xywh[:, :2] + xywh[:, 2:])
    crowd = next(a for a in coco.dataset["annotations"] if a["iscrowd"])
    img = coco.imgs[crowd["image_id"]]
    assert ann_to_rle(crowd["segmentation"], img["height"], img["width"]) == coco.annToRLE(crowd)


# ---- tie policy ----------------------------------------------------------------------------


def tied_case() -> tuple[dict, list[dict]]:
    """Two GT objects; per image two detections with the SAME score, one on the object and one
    beside it (as MaskCut's unscored masks): COCOeval's AP depends on which is listed first."""
    gt, results = generate(6, (6, 6), seed=11, empty_rate=0.0, crowd_rate=0.0)
    for r in results:
        r["score"] = round(r["score"], 1)  # ties within images
    return gt, results


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_ties_never_depend_on_submission_order(iou_type):
    gt, results = tied_case()
    scores = [(r["image_id"], r["score"]) for r in results]
    assert len(set(scores)) < len(scores)
    rng = np.random.default_rng(0)
    orders = [results, results[::-1], [results[i] for i in rng.permutation(len(results))]]
    ours_all = [ours(gt, r, iou_type) for r in orders]
    assert ours_all[0] == ours_all[1] == ours_all[2]
    coco_all = [pycocotools_summary(gt, r, iou_type) for r in orders]
    assert coco_all[0] != coco_all[1]  # why the policy exists: COCOeval keeps file order


def test_tie_policy_orders_by_score_box_then_rle():
    from odbench.metrics.detection import tie_order

    masks = [{"size": [4, 4], "counts": c} for c in (b"b", b"a", b"c", b"0")]
    dets = Instances(
        np.array([0.5, 0.5, 0.5, 0.9]),
        np.array([[1, 0, 2, 2], [1, 0, 2, 2], [0, 5, 2, 2], [3, 3, 4, 4]], float),
        masks,
    )
    assert tie_order(dets).tolist() == [3, 2, 1, 0]


# ---- records, accumulate, meter, protocol --------------------------------------------------


def instances_case(seed: int) -> tuple[dict[int, InstanceGT], dict[int, Instances]]:
    gt, results = generate(12, (0, 30), seed=seed, crowd_rate=0.2, empty_rate=0.2)
    gts, _, cats = instances_from_coco(gt)
    dets, _ = read_results(results, gts, cats, "segm")
    return gts, dets


def test_records_round_trip_json_and_merge_in_any_order():
    gts, dets = instances_case(3)
    empty = Instances(np.zeros(0), np.zeros((0, 4)), [])
    items = [(i, g, dets.get(i, empty)) for i, g in gts.items()]
    records = match_images(items, "segm")
    assert records == [match_image(g, d, "segm", image_id=i) for i, g, d in items]
    again = [ImageMatches.from_dict(json.loads(json.dumps(r.to_dict()))) for r in records]
    assert again == records
    whole = accumulate(records)
    assert whole == coco_ap(gts, dets, "segm")
    assert accumulate(again[::-1]) == whole  # sorted by image id, whatever the order
    assert accumulate(records[5:] + records[:5]) == whole  # shards concatenated
    with pytest.raises(ValueError, match="max_dets"):
        accumulate(records, get_detection_protocol("lvis-agnostic"))


def test_discovery_meter_merges_shards_and_names_catalog_keys():
    from odbench.metrics.catalog import keys

    gts, dets = instances_case(4)
    empty = Instances(np.zeros(0), np.zeros((0, 4)), [])
    whole, a, b = DiscoveryMeter(), DiscoveryMeter(), DiscoveryMeter()
    for n, (i, gt) in enumerate(gts.items()):
        record = whole.update(gt, dets.get(i, empty), i)
        (a if n % 2 else b).add(DiscoveryRecord.from_dict(json.loads(json.dumps(record.to_dict()))))
    result = whole.compute()
    assert list(result) == list(keys(task="discovery"))
    assert a.merge(b).compute() == result
    assert {k[4:]: v for k, v in result.items() if k.startswith("box_")} == coco_ap(gts, dets)
    boxes_only = DiscoveryMeter()
    for i, gt in gts.items():
        boxes_only.update(gt, Instances(dets.get(i, empty).scores, dets.get(i, empty).boxes), i)
    assert list(boxes_only.compute()) == list(keys(task="discovery"))[:12]


def test_protocols_round_trip_and_max_dets():
    coco = get_detection_protocol("coco-agnostic")
    lvis = get_detection_protocol("lvis-agnostic")
    assert (coco.max_dets, lvis.max_dets) == (100, 300)
    assert DetectionProtocol.from_dict(json.loads(json.dumps(lvis.as_dict()))) == lvis
    wide = get_detection_protocol("coco-agnostic", max_dets=1000)
    assert (wide.name, wide.max_dets_list) == ("coco-agnostic@1000", (1, 10, 1000))
    from pycocotools.cocoeval import Params

    p = Params("bbox")
    assert np.array_equal(coco.iou_thresholds, p.iouThrs)
    assert np.array_equal(coco.recall_thresholds, p.recThrs)
    assert [list(r) for r in coco.area_ranges] == p.areaRng


def test_a_detection_takes_the_later_of_two_gt_of_equal_iou():
    # COCOeval.evaluateImg scans the GT in file order and keeps a later GT of equal IoU.  The
    # first detection meets GT A and GT B at exactly IoU 0.5; the second equals A.  COCO: the
    # first takes B, the second A (two hits at 0.5); taking the first GT of equal IoU would
    # leave the second detection a miss (IoU 1/3 with B).
    gt = {
        "images": [{"id": 1, "width": 40, "height": 40, "file_name": "a.jpg"}],
        "categories": [{"id": 1, "name": "object"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [0, 0, 10, 20],
                "area": 200.0,
                "iscrowd": 0,
            },
            {
                "id": 2,
                "image_id": 1,
                "category_id": 1,
                "bbox": [0, 0, 20, 10],
                "area": 200.0,
                "iscrowd": 0,
            },
        ],
    }
    results = [
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9},
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 20], "score": 0.8},
    ]
    got = ours(gt, results, "bbox")
    assert_equal(got, pycocotools_summary(gt, results, "bbox"))
    assert got["AP50"] == pytest.approx(1.0)
