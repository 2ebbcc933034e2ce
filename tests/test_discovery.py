"""The ``discovery`` task through eval (issue 22): a generated dataset with known instances and
methods whose instances are known, so AP / AR can be checked by hand; cache, shards + merge,
the single-object default of ``predict_instances``, and one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from pycocotools import mask as mask_utils
from realdata import REAL_DATA
from test_discovery_data import _voc

from odbench.cache import PredictionCache, image_digest
from odbench.cli import main
from odbench.data.base import Dataset, Sample
from odbench.discovery import DiscoveryError
from odbench.distributed import Shard
from odbench.merge import Part, merge
from odbench.methods.base import Method
from odbench.metrics.catalog import METRICS
from odbench.metrics.instances import InstanceGT, Instances
from odbench.metrics.protocols import get_protocol
from odbench.results import RunResult, jsonable
from odbench.runner import run

SIZE = 80


def _rle(mask: np.ndarray) -> dict[str, Any]:
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))


def _box_mask(box: list[float]) -> np.ndarray:
    m = np.zeros((SIZE, SIZE), bool)
    x1, y1, x2, y2 = (int(v) for v in box)
    m[y1:y2, x1:x2] = True
    return m


class Planted(Dataset):
    """``n`` images, image ``k`` with ``1 + k % 3`` axis-aligned 20×20 objects (masks = boxes);
    pixel (0, 0) holds the image's index, so a test method knows which image it sees."""

    name = "planted"
    task = ("discovery",)

    def __init__(self, n: int = 6, masks: bool = True) -> None:
        self.n, self.instance_masks = n, masks
        self.gt = {f"im{k}": self._boxes(k) for k in range(n)}

    @staticmethod
    def _boxes(k: int) -> list[list[float]]:
        return [[2.0 + 21 * j, 4.0 + k, 22.0 + 21 * j, 24.0 + k] for j in range(1 + k % 3)]

    def ids(self) -> list[str]:
        return sorted(self.gt)

    def load(self, sample_id: str) -> Sample:
        k = int(sample_id[2:])
        image = np.full((SIZE, SIZE, 3), 40, np.uint8)
        boxes = np.array(self.gt[sample_id])
        for b in boxes:
            image[_box_mask(list(b))] = 200
        image[0, 0] = k
        gt = InstanceGT(
            SIZE,
            SIZE,
            boxes,
            area=(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]),
            iscrowd=np.zeros(len(boxes), bool),
            masks=[_rle(_box_mask(list(b))) for b in boxes] if self.instance_masks else None,
        )
        return Sample(sample_id, image, boxes=boxes, instances=gt)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "masks": self.instance_masks}


class Oracle(Method):
    """The GT instances, every box shifted right by ``shift`` pixels (masks likewise); scores
    distinct across all instances."""

    name = "oracle"

    def __init__(self, shift: float = 0.0) -> None:
        super().__init__(None)
        self.shift = shift
        self.calls = 0

    def predict(self, images: list[np.ndarray]) -> list[np.ndarray]:
        return [(im[..., 0] > 100).astype(np.float32) for im in images]

    def predict_instances(
        self, images: list[np.ndarray], maps: list[np.ndarray]
    ) -> list[Instances]:
        self.calls += len(images)
        out = []
        for im in images:
            k = int(im[0, 0, 0])
            boxes = np.array(Planted._boxes(k)) + [self.shift, 0, self.shift, 0]
            scores = 0.9 - 0.01 * k - 0.001 * np.arange(len(boxes))
            out.append(Instances(scores, boxes, [_rle(_box_mask(list(b))) for b in boxes]))
        return out


def _run(tmp_path: Path, method: Method, data: Dataset, **kw: Any) -> RunResult:
    return run(
        method,
        data,
        get_protocol("odbench"),
        dataset_name="planted",
        cache_dir=tmp_path / "cache",
        results_dir=tmp_path / "res",
        **kw,
    )


def test_exact_instances_give_ap_one(tmp_path: Path) -> None:
    out = _run(tmp_path, Oracle(), Planted())
    m = out.metrics["discovery"]
    for p in ("box", "mask"):
        for k in ("AP", "AP50", "AP75", "AR1", "AR10", "AR100"):
            if k == "AR1":  # one detection per image: 6 of the 12 objects (recall over all)
                assert m[f"{p}_AR1"] == 0.5, p
            else:
                assert m[f"{p}_{k}"] == 1.0, (p, k)
    assert m["n_images"] == 6 and m["n_instances"] == 12
    stored = json.loads(out.path.read_text())  # type: ignore[union-attr]
    assert stored["protocol"]["discovery"]["name"] == "coco-agnostic"
    assert stored["protocol"]["discovery"]["definition"]["max_dets_list"] == [1, 10, 100]


def test_shifted_boxes_give_the_hand_computed_ap(tmp_path: Path) -> None:
    """A 20-px box shifted by 4 px: IoU 16·20 / (24·20) = 2/3, a match at thresholds 0.50 to
    0.65 only (4 of 10), with precision 1: AP = AR100 = 0.4, AP50 = 1, AP75 = 0."""
    out = _run(tmp_path, Oracle(shift=4.0), Planted())
    m = out.metrics["discovery"]
    for p in ("box", "mask"):
        assert m[f"{p}_AP"] == pytest.approx(0.4, abs=1e-12)
        assert m[f"{p}_AR100"] == pytest.approx(0.4, abs=1e-12)
        assert (m[f"{p}_AP50"], m[f"{p}_AP75"]) == (1.0, 0.0)


def test_cache_resume_gives_identical_numbers_and_no_stale_entry(tmp_path: Path) -> None:
    data = Planted()
    first = _run(tmp_path, Oracle(shift=3.0), data)
    method = Oracle(shift=3.0)
    again = _run(tmp_path, method, data)
    assert again.info["n_cached"] == 6 and method.calls == 0
    assert again.metrics == first.metrics
    # An entry stored without instances (another task's run) is predicted again, not used.
    cache = PredictionCache(Path(first.info["cache"]))
    pred, box = cache.get("im2")
    cache.put("im2", pred, box, source=image_digest(data.load("im2").image))
    third = _run(tmp_path, method, data)
    assert third.info["n_predicted"] == 1 and method.calls == 1
    assert third.metrics == first.metrics
    assert cache.get_instances("im2") is not None


def test_shards_merged_equal_one_run(tmp_path: Path) -> None:
    data = Planted(n=7)
    whole = _run(tmp_path / "a", Oracle(shift=4.0), data)
    parts = []
    for i in range(3):
        out = _run(tmp_path / f"s{i}", Oracle(shift=4.0), data, shard=Shard(i, 3))
        parts.append(Part(out.to_json(), out.records.arrays(), f"shard {i}"))
    merged, records = merge(parts)
    assert jsonable(merged["metrics"]) == whole.to_json()["metrics"]  # NaN (no GT) as null
    for key in ("ids", "disc_box", "disc_mask", "disc_n_gt"):
        np.testing.assert_array_equal(records[key], whole.records.arrays()[key])


def test_boxes_only_data_scores_bbox_and_refuses_segm(tmp_path: Path) -> None:
    out = _run(tmp_path, Oracle(), Planted(masks=False))
    assert out.metrics["discovery"]["box_AP"] == 1.0
    assert not any(k.startswith("mask_") for k in out.metrics["discovery"])
    with pytest.raises(DiscoveryError, match="boxes only .* segm AP cannot be scored") as e:
        _run(tmp_path, Oracle(), Planted(masks=False), iou_type="segm")
    assert "\n" not in str(e.value)


def test_voc_segm_is_refused_in_one_line(tmp_path: Path) -> None:
    root = _voc(tmp_path / "VOC2007")
    args = ["eval", "--method", "center-prior", "--dataset", "voc07", "--data-root", str(root)]
    args += ["--results-dir", str(tmp_path / "res"), "--cache-dir", str(tmp_path / "cache")]
    res = CliRunner().invoke(main, [*args, "--iou-type", "segm"])
    assert res.exit_code != 0
    (line,) = res.output.strip().splitlines()
    assert "voc07 has boxes only" in line and "--iou-type bbox" in line
    assert not (tmp_path / "res").exists()
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    (path,) = (tmp_path / "res").glob("*.json")
    metrics = json.loads(path.read_text())["metrics"]["discovery"]
    assert "box_AP" in metrics and "mask_AP" not in metrics


def test_discovery_options_on_a_dataset_without_instances_are_refused(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        main, ["eval", "--method", "center-prior", "--dataset", "toy", "--max-dets", "300"]
    )
    assert res.exit_code != 0
    (line,) = res.output.strip().splitlines()
    assert "--max-dets: dataset toy has no discovery task" in line


class Broken(Oracle):
    def predict_instances(
        self, images: list[np.ndarray], maps: list[np.ndarray]
    ) -> list[Instances]:
        found = super().predict_instances(images, maps)
        return [Instances(f.scores, f.boxes, [{"size": [3, 3], "counts": b""}]) for f in found]


def test_instances_of_the_wrong_size_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(DiscoveryError, match=r"mask of size \[3, 3\] for 'im0' of size \[80, 80\]"):
        _run(tmp_path, Broken(), Planted(n=1))


class HalfShifted(Oracle):
    """Exact instances on even images, shifted by 4 px (IoU 2/3) on odd ones."""

    name = "halfshift"

    def predict_instances(
        self, images: list[np.ndarray], maps: list[np.ndarray]
    ) -> list[Instances]:
        out = []
        for im, found in zip(images, super().predict_instances(images, maps)):
            shift = 4.0 * (int(im[0, 0, 0]) % 2)
            out.append(Instances(found.scores, found.boxes + [shift, 0, shift, 0], found.masks))
        return out


def _two_runs(tmp_path: Path) -> Path:
    data = Planted(n=8)
    _run(tmp_path, Oracle(), data)
    _run(tmp_path, HalfShifted(), data)
    return tmp_path / "res"


def test_leaderboard_shows_discovery_ap_columns(tmp_path: Path) -> None:
    res = _two_runs(tmp_path)
    runner = CliRunner()
    out = runner.invoke(main, ["leaderboard", "--task", "discovery", "--results-dir", str(res)])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    header = next(line for line in lines if line.startswith("| method"))
    for key in ("box_AP50", "box_AP", "box_AR100", "mask_AP50", "mask_AP"):
        assert f"planted {METRICS[key].label} |" in header
    cells = dict(
        (line.split("|")[1].strip(), line.split("|")[2:-1]) for line in lines if "| oracle" in line
    )
    row = [c.strip() for c in cells["oracle"]]  # reported rows add datasets: planted is last
    assert row[0] == "coco-agnostic" and row[-5:] == ["100.0"] * 5
    box_ap50 = METRICS["box_AP50"]
    for fmt, needle in (("csv", "box_AP50"), ("latex", box_ap50.latex), ("md", box_ap50.label)):
        out = runner.invoke(main, ["leaderboard", "--format", fmt, "--results-dir", str(res)])
        assert out.exit_code == 0, out.output
        assert needle in out.output and "halfshift" in out.output


def test_compare_bootstraps_discovery_ap_over_images(tmp_path: Path) -> None:
    from odbench.compare import compare_runs

    res = _two_runs(tmp_path)
    runs, rows = compare_runs(res, ("oracle", "halfshift"), "planted", n_resamples=200)
    by = {r.metric: r for r in rows}
    assert {"box_AP50", "box_AR100", "mask_AP50", "mask_AR100", "box_AP"} <= set(by)
    ap = by["box_AP"]
    assert ap.a == 1.0 and ap.a_ci == (1.0, 1.0)  # exact everywhere: every resample is 1
    assert ap.b == pytest.approx(runs[1].metrics["discovery"]["box_AP"])
    lo, hi = ap.b_ci
    assert lo < ap.b < hi and lo >= 0.4 - 1e-12 and hi <= 1.0  # images of AP 1 or 0.4 mixed
    assert ap.better == "a" and ap.diff_ci[1] < 0
    assert by["box_AP50"].diff == 0.0 and by["box_AP50"].better is None  # IoU 2/3 > 0.5
    out = CliRunner().invoke(
        main,
        ["compare", "--methods", "oracle,halfshift", "--dataset", "planted", "--results-dir",
         str(res), "--resamples", "100"],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "| box_AP50 ↑ |" in out.output and "| mask_AR100 ↑ |" in out.output


TINY = REAL_DATA / "tiny_coco"


@pytest.mark.skipif(not TINY.is_dir(), reason=f"real data absent: {TINY}")
def test_tiny_coco_eval_equals_pycocotools_on_the_cached_instances(tmp_path: Path) -> None:
    """eval on a real COCO folder: the 12 numbers for bbox and segm equal pycocotools' COCOeval
    (class-agnostic: useCats 0) run on the instances eval cached, against the original file
    (crowd regions, polygons and RLE as COCO reads them)."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    args = ["eval", "--method", "center-prior", "--dataset", "coco", "--data-root", str(TINY)]
    args += ["--split", "val2017", "--limit", "12", "--results-dir", str(tmp_path / "res")]
    res = CliRunner().invoke(main, [*args, "--cache-dir", str(tmp_path / "cache")])
    assert res.exit_code == 0, res.output
    (path,) = (tmp_path / "res").glob("*.json")
    data = json.loads(path.read_text())
    metrics = data["metrics"]["discovery"]
    cache = PredictionCache(Path(data["cache"]))
    ann = TINY / "annotations" / "instances_val2017.json"
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann))
    by_stem = {Path(im["file_name"]).stem: i for i, im in gt.imgs.items()}
    ids = sorted(by_stem)[:12]
    dets = []
    for stem in ids:
        found = cache.get_instances(stem)
        assert found is not None and found.masks is not None
        for score, (x1, y1, x2, y2), rle in zip(found.scores, found.boxes, found.masks):
            seg = {"size": rle["size"], "counts": rle["counts"].decode()}
            box = [x1, y1, x2 - x1, y2 - y1]
            dets.append({"image_id": by_stem[stem], "category_id": 1, "score": float(score),
                         "bbox": box, "segmentation": seg})  # fmt: skip
    names = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
    for iou_type, prefix in (("bbox", "box"), ("segm", "mask")):
        with contextlib.redirect_stdout(io.StringIO()):
            ev = COCOeval(gt, gt.loadRes([dict(d) for d in dets]), iou_type)
            ev.params.useCats = 0
            ev.params.imgIds = [by_stem[s] for s in ids]
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        for name, want in zip(names, ev.stats):
            got = metrics[f"{prefix}_{name}"]
            if want == -1:
                assert got is None, (prefix, name)
            else:
                assert got == pytest.approx(want, abs=1e-12), (prefix, name)


def test_mixed_case_metric_keys_are_selectable(tmp_path: Path) -> None:
    """box_AP and friends keep COCO's case: --metrics finds them however they are typed."""
    res = _two_runs(tmp_path)
    for spec in ("box_AP,mask_AP50", "BOX_ap,mask_ap50"):
        out = CliRunner().invoke(
            main, ["leaderboard", "--format", "csv", "--metrics", spec, "--results-dir", str(res)]
        )
        assert out.exit_code == 0, out.output
        assert out.output.splitlines()[0].endswith(",box_AP,mask_AP50")


class Mixed(Oracle):
    """Image k's instances listed worst score first; the best one shifted 12 px (IoU 0.25:
    unmatched), the others exact."""

    name = "mixed"

    def predict_instances(
        self, images: list[np.ndarray], maps: list[np.ndarray]
    ) -> list[Instances]:
        out = []
        for found in super().predict_instances(images, maps):
            boxes = found.boxes.copy()
            boxes[0] += [12, 0, 12, 0]  # the highest score (Oracle's scores descend)
            masks = [_rle(_box_mask(list(b))) for b in boxes]
            rev = slice(None, None, -1)
            out.append(Instances(found.scores[rev], boxes[rev], masks[rev]))
        return out


def test_instance_overlays_mark_the_matched_instances(tmp_path: Path) -> None:
    from odbench.metrics.detection import TP
    from odbench.report.instances import draw_instances, instance_panels, run_protocol, states_of

    data = Planted(n=3)
    run = _run(tmp_path, Mixed(), data)
    cache = PredictionCache(Path(run.info["cache"]))
    rec = run.records.discovery
    assert rec is not None
    for k, sid in enumerate(run.records.ids):
        dets = cache.get_instances(sid)
        assert dets is not None
        record = rec.take(np.array([k])).matches("segm")[0]
        # listed worst first: the last one is the shifted best, unmatched
        want = [True] * (len(dets) - 1) + [False]
        assert (states_of(record, dets, run_protocol(run)) == TP).tolist() == want
    (image, drawn) = instance_panels([run], data, "im2")
    assert image.shape == drawn.shape == (SIZE, SIZE, 3)
    dets = cache.get_instances("im2")
    assert dets is not None
    thick = draw_instances(data.load("im2").image, dets, np.ones(len(dets), bool))
    thin = draw_instances(data.load("im2").image, dets, np.zeros(len(dets), bool))
    assert np.count_nonzero(np.any(thick != thin, axis=2)) > 0  # outlines differ


@pytest.mark.skipif(not TINY.is_dir(), reason=f"real data absent: {TINY}")
def test_report_grid_of_instances_on_tiny_coco(tmp_path: Path) -> None:
    from PIL import Image

    base = ["--dataset", "coco", "--data-root", str(TINY), "--split", "val2017", "--limit", "6"]
    base += ["--results-dir", str(tmp_path / "res"), "--cache-dir", str(tmp_path / "cache")]
    for method in ("center-prior", "wctr"):
        res = CliRunner().invoke(main, ["eval", "--method", method, *base])
        assert res.exit_code == 0, res.output
    args = ["report", "--methods", "center-prior,wctr", "--dataset", "coco", "--grid", "3"]
    args += ["--panel", "instances", "--results-dir", str(tmp_path / "res")]
    res = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "fig.png")])
    assert res.exit_code == 0, res.output
    with Image.open(tmp_path / "fig.png") as fig:
        assert fig.width == 3 * (192 + 4) + 4  # image + GT, two methods
