"""The discovery view of ``odbench report`` and ``odbench plot discovery`` (issue 22 item 7):
instance overlays whose matched / unmatched state is ``match_image``'s at IoU .5, the page of a
discovery run (its 12 AP / AR numbers per iou type, nothing of saliency), the precision-recall
curves whose mean is AP50 / AP75, and one-line refusals of a discovery view of runs without
discovery records."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from pycocotools import mask as mask_utils

from odbench.cli import main
from odbench.data.base import Dataset, Sample
from odbench.methods.base import Method
from odbench.metrics.detection import FP, IGNORED, SUMMARY_KEYS, TP, match_image, tie_order
from odbench.metrics.detection_protocols import COCO_AGNOSTIC
from odbench.metrics.instances import InstanceGT, Instances
from odbench.metrics.protocols import get_protocol
from odbench.runner import run

SIZE = 96
NAMES = {TP: "matched", FP: "unmatched", IGNORED: "crowd"}


def _rle(box: list[float]) -> dict[str, Any]:
    m = np.zeros((SIZE, SIZE), np.uint8)
    x1, y1, x2, y2 = (int(v) for v in box)
    m[y1:y2, x1:x2] = 1
    return mask_utils.encode(np.asfortranarray(m))  # type: ignore[no-any-return]


def _gt_boxes(k: int) -> tuple[list[list[float]], list[bool]]:
    """Image k: two objects, a third on odd images, and a crowd region (last)."""
    boxes = [[4.0, 4.0 + k, 24.0, 24.0 + k], [40.0, 10.0, 60.0, 30.0]]
    if k % 2:
        boxes.append([10.0, 50.0, 30.0, 70.0])
    return [*boxes, [64.0, 60.0, 92.0, 92.0]], [False] * len(boxes) + [True]


class Scene(Dataset):
    """``n`` images with :func:`_gt_boxes` (masks = boxes); pixel (0, 0) holds the index."""

    name = "scene"
    task = ("discovery",)
    instance_masks = True

    def __init__(self, n: int = 4) -> None:
        self.n = n

    def ids(self) -> list[str]:
        return [f"im{k}" for k in range(self.n)]

    def load(self, sample_id: str) -> Sample:
        k = int(sample_id[2:])
        boxes, crowd = _gt_boxes(k)
        image = np.full((SIZE, SIZE, 3), 30, np.uint8)
        for x1, y1, x2, y2 in boxes:
            image[int(y1) : int(y2), int(x1) : int(x2)] = 190
        image[0, 0] = k
        b = np.array(boxes)
        gt = InstanceGT(
            SIZE, SIZE, b, (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), np.array(crowd),
            [_rle(x) for x in boxes],
        )  # fmt: skip
        return Sample(sample_id, image, boxes=b[~np.array(crowd)], instances=gt)


def planned(k: int) -> Instances:
    """Image k's detections, listed out of score order (two with equal scores): a background
    box with the highest score (unmatched: precision rises after it), GT 0 exactly, GT 1
    shifted by 6 px (IoU 0.54: matched at .5, not at .75), a box in the crowd region, and a
    duplicate of GT 0 (unmatched)."""
    boxes, _ = _gt_boxes(k)
    dets = [
        ([70.0, 4.0, 90.0, 24.0], 0.95 - 0.01 * k),  # background
        (boxes[0], 0.9 - 0.01 * k),
        ([46.0, 10.0, 66.0, 30.0], 0.8 - 0.01 * k),  # GT 1 shifted: IoU 14/26
        ([66.0, 62.0, 86.0, 82.0], 0.6),  # crowd region
        ([4.0, 4.0 + k, 24.0, 25.0 + k], 0.6),  # duplicate of GT 0, tied with the crowd box
    ]
    order = [3, 0, 4, 2, 1]
    return Instances(
        np.array([dets[i][1] for i in order]),
        np.array([dets[i][0] for i in order]),
        [_rle(dets[i][0]) for i in order],
    )


class Planned(Method):
    name = "planned"

    def __init__(self) -> None:
        super().__init__(None)

    def predict(self, images: list[np.ndarray]) -> list[np.ndarray]:
        return [(im[..., 0] > 100).astype(np.float32) for im in images]

    def predict_instances(
        self, images: list[np.ndarray], maps: list[np.ndarray]
    ) -> list[Instances]:
        return [planned(int(im[0, 0, 0])) for im in images]


class Exact(Planned):
    """GT 0 and GT 1 exactly."""

    name = "exact"

    def predict_instances(
        self, images: list[np.ndarray], maps: list[np.ndarray]
    ) -> list[Instances]:
        out = []
        for im in images:
            boxes = _gt_boxes(int(im[0, 0, 0]))[0][:2]
            out.append(Instances(np.array([0.7, 0.5]), np.array(boxes), [_rle(b) for b in boxes]))
        return out


@pytest.fixture(scope="module")
def scene_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("scene")
    for method in (Planned(), Exact()):
        run(
            method,
            Scene(),
            get_protocol("odbench"),
            dataset_name="scene",
            cache_dir=root / "cache",
            results_dir=root / "res",
        )
    return root


def _page_states(html: str) -> dict[tuple[str, int], list[tuple[int, str]]]:
    """(sample id, method) -> [(instance index, state)] of every overlay legend on the page."""
    out: dict[tuple[str, int], list[tuple[int, str]]] = {}
    for sid, row in re.findall(r"<tr id='g\d+-\d+' data-id='([^']+)'>(.*?)</tr>", html, re.S):
        for m, cell in re.findall(r"<td[^>]* data-method='(\d+)'>(.*?)</td>", row, re.S):
            items = re.findall(r"data-det='(\d+)' data-state='([^']+)'", cell)
            got = [(int(k), state) for k, state in items]
            assert out.setdefault((sid, int(m)), got) == got  # the same in every grid
    return out


def test_overlay_states_are_match_image_at_iou_50(scene_runs: Path, tmp_path: Path) -> None:
    """Every instance listed under an overlay has the state match_image gives it at IoU .5,
    all areas (segm), in the protocol's tie order; drawn best first."""
    from odbench.report.build_discovery import build_discovery_report

    data = Scene()
    outcome = build_discovery_report(
        scene_runs / "res", "scene", ["planned", "exact"], tmp_path / "rep",
        protocol="odbench", ids=data.ids(), dataset_obj=data, row_images=False,
    )  # fmt: skip
    shown = _page_states(outcome.path.read_text())
    t50 = list(COCO_AGNOSTIC.iou_thresholds).index(0.5)
    states_seen = set()
    for sid in data.ids():
        sample = data.load(sid)
        assert sample.instances is not None
        dets = planned(int(sid[2:]))
        record = match_image(sample.instances, dets, "segm", COCO_AGNOSTIC, image_id=sid)
        order = tie_order(dets)
        want = [(int(k), NAMES[int(s)]) for k, s in zip(order, record.status[0, t50])]
        assert shown[(sid, 0)] == want, sid
        states_seen |= {s for _, s in want}
        assert [s for _, s in shown[(sid, 1)]] == ["matched", "matched"]
    assert states_seen == {"matched", "unmatched", "crowd"}


def test_discovery_page_and_its_curves(scene_runs: Path, tmp_path: Path) -> None:
    """The page of discovery runs: the 12 numbers per iou type as stored (×100), per-image
    recall / precision at .5 in the table's data, precision-recall curves at .5 and .75 whose
    legend AP is the stored one, and no saliency metric anywhere."""
    from odbench.leaderboard import _fmt_ap
    from odbench.report.build_discovery import build_discovery_report

    out = build_discovery_report(
        scene_runs / "res", "scene", ["planned", "exact"], tmp_path / "rep",
        protocol="odbench", n=2, dataset_obj=Scene(),
    ).path  # fmt: skip
    html = out.read_text()
    stored = {
        p.name.split("__")[0]: json.loads(p.read_text())["metrics"]["discovery"]
        for p in (scene_runs / "res").glob("*.json")
    }
    for heading, prefix in (("boxes (bbox)", "box"), ("masks (segm)", "mask")):
        table = html.split(f"<h3>{heading}</h3>")[1].split("</table>")[0]
        assert re.findall(r"<th>([^<]+)</th>", table)[3:15] == list(SUMMARY_KEYS)
        for name, values in stored.items():
            row = re.search(rf">{name}</td>(.*?)</tr>", table, re.S)
            assert row is not None, name
            cells = re.findall(r"<td>([^<]*)</td>", row.group(1))[2:14]
            assert cells == [_fmt_ap(values[f"{prefix}_{k}"]) for k in SUMMARY_KEYS]
        for name, values in stored.items():
            for key in ("AP50", "AP75"):
                assert f"{name} (AP{key[2:]} {_fmt_ap(values[f'{prefix}_{key}'])})" in html
    payload = re.search(r'<script id="odb-data" type="application/json">(.*?)</script>', html)
    assert payload is not None
    data = json.loads(payload.group(1))
    assert data["methods"] == ["planned", "exact"]
    # planned: GT 0 and GT 1 matched at .5 of 2 or 3 GT; 3 of its 4 scored detections count
    # (the crowd match is ignored), 2 of them matched
    assert data["recall50"][0] == [1.0, 0.6667, 1.0, 0.6667]
    assert data["precision50"][0] == [0.5, 0.5, 0.5, 0.5]
    assert data["ngt"] == [2, 3, 2, 3] and data["ndet"][0] == [5, 5, 5, 5]
    for saliency in ("Fβ", "MAE", "maxF", ">IoU", "IoU histogram", "soft map"):
        assert saliency not in html, saliency
    assert (out.parent / "report.js").is_file()
    assert len(re.findall(r"<polyline", html)) == 8  # 2 iou types x 2 IoUs x 2 runs


def test_plotted_pr_curves_average_to_ap50_and_ap75(scene_runs: Path, tmp_path: Path) -> None:
    """The points odbench plot discovery draws (its CSV): the mean of the 101-point
    interpolated precision at IoU .5 is the run's AP50, at .75 its AP75 (they differ here, and
    precision rises after the top-scored unmatched box: the interpolation matters)."""
    args = ["plot", "discovery", "--dataset", "scene", "--results-dir", str(scene_runs / "res")]
    res = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "figs")])
    assert res.exit_code == 0, res.output
    for name in ("discovery_pr_bbox.png", "discovery_pr_segm.pdf", "discovery_pr.csv"):
        assert (tmp_path / "figs" / name).is_file()
    with (tmp_path / "figs" / "discovery_pr.csv").open() as f:
        rows = list(csv.DictReader(f))
    stored = {
        p.name.split("__")[0]: json.loads(p.read_text())["metrics"]["discovery"]
        for p in (scene_runs / "res").glob("*.json")
    }
    checked = 0
    for method, values in stored.items():
        for iou_type, prefix in (("bbox", "box"), ("segm", "mask")):
            for iou, key in (("0.5", "AP50"), ("0.75", "AP75")):
                pts = [
                    r
                    for r in rows
                    if (r["method"], r["iou_type"], r["iou"]) == (method, iou_type, iou)
                ]
                assert [float(r["recall"]) for r in pts] == [k / 100 for k in range(101)]
                mean = float(np.mean([float(r["precision"]) for r in pts]))
                assert mean == pytest.approx(values[f"{prefix}_{key}"], abs=1e-12)
                checked += 1
    assert checked == 8
    assert stored["planned"]["box_AP50"] != stored["planned"]["box_AP75"]


def _toy_runs(root: Path) -> Path:
    args = ["eval", "--method", "center-prior", "--dataset", "toy", "--limit", "4"]
    res = CliRunner().invoke(
        main, [*args, "--results-dir", str(root / "res"), "--cache-dir", str(root / "cache")]
    )
    assert res.exit_code == 0, res.output
    return root / "res"


def test_discovery_view_of_runs_without_discovery_is_one_line(tmp_path: Path) -> None:
    res_dir = _toy_runs(tmp_path)
    base = ["--dataset", "toy", "--results-dir", str(res_dir)]
    for args in (
        ["report", "--methods", "center-prior", "--task", "discovery", *base,
         "--out", str(tmp_path / "rep")],
        ["report", "--methods", "center-prior", "--task", "discovery", "--grid", "2", *base,
         "--out", str(tmp_path / "fig.png")],
        ["plot", "discovery", "--methods", "center-prior", *base, "--out", str(tmp_path / "f")],
        ["plot", "discovery", *base, "--out", str(tmp_path / "f")],
    ):  # fmt: skip
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 2, res.output
        (line,) = res.output.strip().splitlines()
        assert "no discovery results" in line and "toy" in line, line
    assert not any((tmp_path / n).exists() for n in ("rep", "fig.png", "f"))


def _coco_folder(root: Path) -> Path:
    """A COCO folder of 3 images (annotations/instances_val.json, val/): polygons, and a crowd
    region as RLE."""
    (root / "annotations").mkdir(parents=True)
    (root / "val").mkdir()
    images, anns = [], []
    rng = np.random.default_rng(0)
    for k in range(3):
        image = rng.integers(0, 60, (48, 64, 3), dtype=np.uint8)
        image[8 : 30 + k, 10:40] += 160
        Image.fromarray(image).save(root / "val" / f"{k:04d}.png")
        images.append({"id": k + 1, "file_name": f"{k:04d}.png", "height": 48, "width": 64})
        x, y, w, h = 10, 8, 30, 22 + k
        poly = [x, y, x + w, y, x + w, y + h, x, y + h]
        anns.append({"id": 2 * k + 1, "image_id": k + 1, "category_id": 1, "iscrowd": 0,
                     "bbox": [x, y, w, h], "area": w * h, "segmentation": [poly]})  # fmt: skip
        crowd = np.zeros((48, 64), np.uint8)
        crowd[34:46, 44:62] = 1
        flat = crowd.flatten(order="F")  # uncompressed RLE: runs from 0, column-major
        edges = np.flatnonzero(np.diff(flat)) + 1
        counts = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
        anns.append({"id": 2 * k + 2, "image_id": k + 1, "category_id": 2, "iscrowd": 1,
                     "bbox": [44, 34, 18, 12], "area": 216,
                     "segmentation": {"size": [48, 64], "counts": counts}})  # fmt: skip
    ann = {"images": images, "annotations": anns,
           "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}  # fmt: skip
    (root / "annotations" / "instances_val.json").write_text(json.dumps(ann))
    return root


def test_report_of_coco_discovery_runs_from_the_cli(tmp_path: Path) -> None:
    """Runs of a COCO folder (discovery, no saliency): the page is the discovery view without
    --task, the grid shows instances, and --task saliency is refused in one line."""
    root = _coco_folder(tmp_path / "coco")
    common = ["--results-dir", str(tmp_path / "res")]
    for method in ("center-prior", "wctr"):
        args = ["eval", "--method", method, "--dataset", "coco", "--data-root", str(root)]
        res = CliRunner().invoke(main, [*args, *common, "--cache-dir", str(tmp_path / "cache")])
        assert res.exit_code == 0, res.output
    base = ["report", "--dataset", "coco", "--methods", "center-prior,wctr", *common]
    res = CliRunner().invoke(main, [*base, "--out", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    html = (tmp_path / "rep" / "index.html").read_text()
    assert "Class-agnostic AP / AR" in html and "<h3>masks (segm)</h3>" in html
    assert "crowd" in html and "Fβ" not in html
    res = CliRunner().invoke(main, [*base, "--grid", "2", "--out", str(tmp_path / "g.png")])
    assert res.exit_code == 0, res.output
    with Image.open(tmp_path / "g.png") as fig:
        assert fig.width == 3 * (192 + 4) + 4
    res = CliRunner().invoke(main, [*base, "--task", "saliency", "--out", str(tmp_path / "s")])
    assert res.exit_code == 2
    (line,) = res.output.strip().splitlines()
    assert "no saliency metrics" in line


@pytest.mark.slow
def test_discovery_page_in_headless_chromium(scene_runs: Path, tmp_path: Path) -> None:
    """Opened from disk: the per-image table sorts by a method's recall at .5 (worst first),
    shows counts as integers, every image loads and nothing logs an error."""
    from test_report import _chromium

    from odbench.report.build_discovery import build_discovery_report

    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    executable = _chromium()
    if executable is None:
        pytest.skip("no chromium on PATH (apt-get install chromium, or set ODBENCH_CHROMIUM)")
    index = build_discovery_report(
        scene_runs / "res", "scene", ["planned", "exact"], tmp_path / "rep",
        protocol="odbench", n=2, dataset_obj=Scene(),
    ).path  # fmt: skip
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(index.as_uri())
        first = "#pi tbody tr:first-child td:nth-child(2)"
        assert page.locator("#pi tbody tr").count() == 4
        assert page.inner_text("#pi th[data-key=recall500]") == "recall@.5 planned"
        page.click("#pi th[data-key=recall500]")
        assert page.inner_text(first) == "im1"  # recall 2/3 (im1, im3: dataset order)
        assert page.inner_text("#pi tbody tr:first-child td:nth-child(3)") == "3"  # GT
        assert "recall@.5 exact − planned" in page.inner_text("#pi th[data-key=diff]")
        page.eval_on_selector_all("details", "els => els.forEach(e => e.open = true)")
        page.eval_on_selector_all("img", "els => els.forEach(e => e.loading = 'eager')")
        page.wait_for_function("[...document.images].every(i => i.complete)")
        broken = page.eval_on_selector_all(
            "img", "els => els.filter(i => !(i.naturalWidth > 0)).map(i => i.src)"
        )
        assert page.eval_on_selector_all("img", "els => els.length") > 10 and broken == []
        assert page.locator("#scatter circle").count() == 4
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert errors == []


def test_a_discovery_run_without_its_records_is_one_line(scene_runs: Path, tmp_path: Path) -> None:
    """A run whose metrics hold discovery numbers but whose records file lacks the match
    records (written by an older odbench): the page and the plot refuse it in one line."""
    import hashlib
    import shutil

    res = tmp_path / "res"
    shutil.copytree(scene_runs / "res", res)
    (path,) = res.glob("planned__*.json")
    run = json.loads(path.read_text())
    with np.load(res / run["records"], allow_pickle=False) as npz:
        kept = {k: npz[k] for k in npz.files if not k.startswith("disc_")}
    np.savez(res / run["records"], **kept)
    run["records_sha256"] = hashlib.sha256((res / run["records"]).read_bytes()).hexdigest()
    path.write_text(json.dumps(run))
    base = ["--dataset", "scene", "--methods", "planned", "--results-dir", str(res)]
    for args in (
        ["report", *base, "--out", str(tmp_path / "rep")],
        ["plot", "discovery", *base, "--out", str(tmp_path / "f")],
    ):
        out = CliRunner().invoke(main, args)
        assert out.exit_code == 2, out.output
        (line,) = out.output.strip().splitlines()
        assert str(path) in line and "no discovery records" in line, line
    assert not (tmp_path / "rep").exists()
