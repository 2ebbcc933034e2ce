"""``odbench bench discovery``: class-agnostic COCO AP / AR (``odbench score-detections``'
library path) against pycocotools' ``COCOeval`` and faster-coco-eval, on one generated
COCO-format set, in one process.

The set (:func:`generate`): ``--images`` images of 200-640 px, 0-15 GT instances each (polygon
masks, a few crowd regions as uncompressed RLE, ``area`` the polygon's own), and
``--dets`` detections per image with distinct scores (jittered GT boxes and polygons, some
duplicates, some random), so that the three must agree to the last digit.  Each tool starts
from the same parsed JSON (GT dict and results list) and ends with the 12 numbers: odbench
builds its GT and detections and matches and accumulates; pycocotools builds ``COCO`` and
``loadRes``, then ``evaluate`` + ``accumulate`` + ``summarize``; faster-coco-eval the same
through its own classes.  Each tool is timed ``--rounds`` times (default 3), the rounds
interleaved (odbench, faster-coco-eval, pycocotools, then again) so that a load spike on the
shared machine hits one round rather than one tool; the best round of each counts.  The
figures are the two ratios; the numbers must be identical (across rounds too).

Measured 7 Dec 2026 on the 2-core VM (benchmarks/README.md), best of 3, 2,000 images x 100
detections at load 4-7.5: bbox 15.9x pycocotools and 1.8x faster-coco-eval, segm 16.9x and
2.1x, numbers identical (one round on 5,000 images at load 2.4-3.1: 14.8x / 2.2x, 9.0x / 3.0x).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import click
import numpy as np

from odbench.errors import UserError

SUMMARY = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _uncompressed_rle(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE counts of a mask (column-major runs, starting with zeros)."""
    flat = mask.ravel(order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    return ([0] if flat.size and flat[0] else []) + runs


def generate(
    n_images: int,
    dets_per_image: int | tuple[int, int],
    seed: int = 0,
    masks: bool = True,
    crowd_rate: float = 0.05,
    empty_rate: float = 0.05,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A COCO-format GT dict (one category) and a results list with distinct scores.

    ``dets_per_image``: a count, or a (low, high) range drawn per image (high inclusive).
    ``empty_rate``: the share of images without GT (they still get detections).
    """
    rng = np.random.default_rng(seed)
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    used: set[float] = set()
    for image_id in range(1, n_images + 1):
        h, w = (int(v) for v in rng.integers(200, 641, 2))
        images.append(
            {"id": image_id, "file_name": f"{image_id:012d}.jpg", "height": h, "width": w}
        )
        n_gt = 0 if rng.random() < empty_rate else int(rng.integers(1, 16))
        gt_boxes = []
        for _ in range(n_gt):
            bw, bh = (float(v) for v in np.exp(rng.uniform(np.log(4), np.log(0.9 * min(h, w)), 2)))
            x, y = float(rng.uniform(0, w - bw)), float(rng.uniform(0, h - bh))
            gt_boxes.append((x, y, bw, bh))
            ann: dict[str, Any] = {
                "id": len(anns) + 1,
                "image_id": image_id,
                "category_id": 1,
                "bbox": [x, y, bw, bh],
                "iscrowd": 0,
            }
            if rng.random() < crowd_rate:
                mask = np.zeros((h, w), bool)
                mask[int(y) : int(np.ceil(y + bh)), int(x) : int(np.ceil(x + bw))] = True
                ann["iscrowd"] = 1
                if masks:
                    ann["segmentation"] = {"size": [h, w], "counts": _uncompressed_rle(mask)}
                ann["area"] = float(mask.sum())
            else:
                poly = _quad(rng, x, y, bw, bh)
                if masks:
                    ann["segmentation"] = [poly]
                ann["area"] = _poly_area(poly)
            anns.append(ann)
        lo, hi = (
            (dets_per_image, dets_per_image) if isinstance(dets_per_image, int) else dets_per_image
        )
        n_det = int(rng.integers(lo, hi + 1))
        det_boxes: list[tuple[float, ...]] = []
        for _ in range(n_det):
            u = rng.random()
            if det_boxes and u < 0.1:  # a duplicate of an earlier detection
                box = det_boxes[int(rng.integers(len(det_boxes)))]
            elif gt_boxes and u < 0.75:  # a jittered GT
                x, y, bw, bh = gt_boxes[int(rng.integers(len(gt_boxes)))]
                s = rng.normal(0, 0.15, 4)
                box = (x + s[0] * bw, y + s[1] * bh, bw * np.exp(s[2]), bh * np.exp(s[3]))
            else:
                bw, bh = (float(v) for v in np.exp(rng.uniform(np.log(4), np.log(min(h, w)), 2)))
                box = (float(rng.uniform(0, w - bw)), float(rng.uniform(0, h - bh)), bw, bh)
            box = tuple(float(v) for v in box)
            det_boxes.append(box)
            score = float(rng.random())
            while score in used:  # distinct scores: no ties for COCOeval to order by file
                score = float(rng.random())
            used.add(score)
            res: dict[str, Any] = {
                "image_id": image_id,
                "category_id": 1,
                "bbox": list(box),
                "score": score,
            }
            if masks:
                res["segmentation"] = [_quad(rng, *box)]
            results.append(res)
    gt = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "object"}]}
    if masks:
        _polygons_to_rle(gt, results)
    return gt, results


def _quad(rng: np.random.Generator, x: float, y: float, w: float, h: float) -> list[float]:
    """A quadrilateral inside the box, each corner moved inwards by up to 15 %."""
    e = rng.uniform(0, 0.15, 8) * np.array([w, h] * 4)
    return [
        x + e[0], y + e[1], x + w - e[2], y + e[3], x + w - e[4], y + h - e[5], x + e[6], y + h - e[7]
    ]  # fmt: skip


def _poly_area(poly: list[float]) -> float:
    xs, ys = np.asarray(poly[0::2]), np.asarray(poly[1::2])
    return float(0.5 * abs(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1))))


def _polygons_to_rle(gt: dict[str, Any], results: list[dict[str, Any]]) -> None:
    """Results' polygons as compressed RLE (a COCO results file holds RLE), per image."""
    from pycocotools import mask as mask_utils

    sizes = {img["id"]: (img["height"], img["width"]) for img in gt["images"]}
    for res in results:
        h, w = sizes[res["image_id"]]
        rle = mask_utils.frPyObjects(res["segmentation"], h, w)[0]
        rle["counts"] = rle["counts"].decode("ascii")
        res["segmentation"] = rle


def pycocotools_summary(
    gt: dict[str, Any], results: list[dict[str, Any]], iou_type: str, max_dets: int = 100
) -> dict[str, float]:
    """pycocotools' COCOeval run directly, every category id set to 1 (class-agnostic):
    the 12 numbers under COCO's names, NaN for its -1.  ``summarize`` reads AP at a hard-coded
    100 detections (-1 when 100 is not a budget): AP is then read from its precision array at
    ``max_dets``, as the other numbers are."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    return _run_cocoeval(COCO, COCOeval, gt, results, iou_type, max_dets)


def faster_coco_eval_summary(
    gt: dict[str, Any], results: list[dict[str, Any]], iou_type: str, max_dets: int = 100
) -> dict[str, float]:
    """As :func:`pycocotools_summary` through faster-coco-eval (a UserError saying how to
    install it when absent)."""
    try:
        from faster_coco_eval import COCO, COCOeval_faster
    except ImportError as e:
        raise UserError(
            "faster-coco-eval is not installed: pip install faster-coco-eval "
            "(or pip install 'odbench[bench]')"
        ) from e
    return _run_cocoeval(COCO, COCOeval_faster, gt, results, iou_type, max_dets)


def _run_cocoeval(
    coco_cls: Any,
    eval_cls: Any,
    gt: dict[str, Any],
    results: list[dict[str, Any]],
    iou_type: str,
    max_dets: int,
) -> dict[str, float]:
    gt = {**gt, "categories": [{"id": 1, "name": "object"}]}
    gt["annotations"] = [{**a, "category_id": 1} for a in gt["annotations"]]
    results = [{**r, "category_id": 1} for r in results]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = coco_cls()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results) if results else coco_cls()
        if not results:
            coco_dt.dataset = {
                "images": gt["images"],
                "annotations": [],
                "categories": gt["categories"],
            }
            coco_dt.createIndex()
        ev = eval_cls(coco_gt, coco_dt, iou_type)
        ev.params.maxDets = [1, 10, max_dets]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [float(v) for v in ev.stats[:12]]
    if max_dets != 100:  # summarize() reads AP at a hard-coded maxDets=100 (-1 without it)
        s = np.asarray(ev.eval["precision"])[:, :, :, 0, -1]
        stats[0] = float(np.mean(s[s > -1])) if (s > -1).any() else -1.0
    return {k: math.nan if v == -1 else v for k, v in zip(SUMMARY, stats)}


def _timed(fn: Callable[[], dict[str, float]]) -> tuple[float, dict[str, float]]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def odbench_summary(
    gt: dict[str, Any], results: list[dict[str, Any]], iou_type: str, max_dets: int = 100
) -> dict[str, float]:
    """``odbench score-detections``' library path on parsed JSON: GT, checks, match, summary."""
    from odbench.data.instances import instances_from_coco
    from odbench.scoring.detections import score_results

    gts, _, cats = instances_from_coco(gt, masks=iou_type == "segm")
    return score_results(results, (gts, cats), iou_type, max_dets).metrics  # type: ignore[arg-type]


def bootstrap_timing(
    gt: dict[str, Any], results: list[dict[str, Any]], resamples: int, explicit: int, seed: int = 0
) -> tuple[float, float, bool]:
    """``odbench compare``'s discovery bootstrap on one set (bbox): resamples/s of weighted
    accumulation (:func:`~odbench.metrics.detection_resample.accumulate_resampled`, the
    compared keys AP, AP50, AR100) over ``resamples`` bootstrap rows, and of accumulating the
    explicit resamples (each drawn record repeated, the way before) over the first
    ``explicit`` rows; and whether those rows' numbers are identical."""
    from odbench.data.instances import instances_from_coco
    from odbench.discovery import COMPARED
    from odbench.metrics.detection import accumulate, match_images
    from odbench.metrics.detection_resample import accumulate_resampled
    from odbench.metrics.instances import Instances
    from odbench.scoring.detections import read_results

    gts, _, cats = instances_from_coco(gt, masks=False)
    dets, _ = read_results(results, gts, cats, "bbox")
    empty = Instances(np.zeros(0), np.zeros((0, 4)), None)
    matches = match_images([(i, g, dets.get(i, empty)) for i, g in gts.items()], "bbox")
    n = len(matches)
    counts = np.random.default_rng(seed).multinomial(n, np.full(n, 1 / n), size=resamples)
    t0 = time.perf_counter()
    weighted = accumulate_resampled(matches, counts, keys=COMPARED)
    t_weighted = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows = [
        accumulate([m for m, c in zip(matches, row) for _ in range(c)]) for row in counts[:explicit]
    ]
    t_explicit = time.perf_counter() - t0
    same = all(
        (math.isnan(r[k]) and math.isnan(weighted[k][b])) or abs(r[k] - weighted[k][b]) <= 1e-12
        for b, r in enumerate(rows)
        for k in COMPARED
    )
    return resamples / t_weighted, len(rows) / t_explicit, same


def _same(a: dict[str, float], b: dict[str, float]) -> bool:
    return all(
        (math.isnan(a[k]) and math.isnan(b[k])) or abs(a[k] - b[k]) <= 1e-12 for k in SUMMARY
    )


@click.command("discovery")
@click.option(
    "--images",
    type=click.IntRange(min=1),
    default=5000,
    show_default=True,
    help="Generated images.",
)
@click.option(
    "--dets",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Detections per image.",
)
@click.option("--quick", is_flag=True, help="200 images: a check in seconds, not a figure.")
@click.option(
    "--iou-type",
    "iou_types",
    type=click.Choice(["bbox", "segm"]),
    multiple=True,
    default=("bbox", "segm"),
    show_default=True,
)
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--rounds",
    default=3,
    show_default=True,
    type=click.IntRange(min=1),
    help="Timed rounds per tool, interleaved (odbench, faster-coco-eval, pycocotools, then "
    "again); the best round of each is reported, every round's numbers must be identical.",
)
@click.option(
    "--bootstrap",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Instead: time odbench compare's discovery bootstrap (bbox AP, AP50, AR100) over this "
    "many resamples, weighted accumulation vs accumulating explicit resamples (on the first "
    "20), e.g. --images 1000 --bootstrap 500.",
)
def cli(
    images: int,
    dets: int,
    quick: bool,
    iou_types: tuple[str, ...],
    seed: int,
    rounds: int,
    bootstrap: int,
) -> None:
    """Class-agnostic COCO AP: odbench vs pycocotools COCOeval vs faster-coco-eval."""
    if quick:
        images = 200
    t0 = time.perf_counter()
    masks = "segm" in iou_types and not bootstrap
    gt, results = generate(images, dets, seed=seed, masks=masks)
    click.echo(
        f"{images} images, {len(gt['annotations'])} GT, {len(results)} detections "
        f"(generated in {time.perf_counter() - t0:.1f} s); one process, one thread; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    if bootstrap:
        fast, slow, same = bootstrap_timing(gt, results, bootstrap, min(bootstrap, 20), seed)
        click.echo(
            f"compare's bootstrap (bbox AP, AP50, AR100): weighted {fast:.1f} resamples/s, "
            f"explicit resamples {slow:.2f} resamples/s = {fast / slow:.1f}x; "
            f"{'identical numbers' if same else 'numbers DIFFER'}"
        )
        if not same:
            raise UserError("weighted accumulation differs from the explicit resamples")
        return
    try:
        import faster_coco_eval  # noqa: F401

        have_fast = True
    except ImportError:
        have_fast = False
        click.echo("faster-coco-eval not installed (pip install faster-coco-eval): not timed")
    failed = []
    for iou_type in iou_types:
        runs: dict[str, tuple[float, dict[str, float]]] = {}
        tools: dict[str, Callable[..., dict[str, float]]] = {"odbench": odbench_summary}
        if have_fast:
            tools["faster-coco-eval"] = faster_coco_eval_summary
        tools["pycocotools"] = pycocotools_summary
        for _ in range(rounds):  # interleaved: a load spike hits one round, not one tool
            for name, tool in tools.items():  # each on its own copy (COCO.loadRes adds keys)
                t, values = _timed(partial(tool, gt, _copy(results), iou_type))
                if name in runs and not _same(values, runs[name][1]):
                    failed.append(f"{iou_type} {name} (rounds differ)")
                if name not in runs or t < runs[name][0]:
                    runs[name] = (t, values)  # the best round
        ref = runs["pycocotools"][1]
        t_ours = runs["odbench"][0]
        for name, (t, values) in runs.items():
            same = _same(values, ref)
            if not same:
                failed.append(f"{iou_type} {name}")
            ratio = "" if name == "odbench" else f"  odbench {t / t_ours:5.2f}x faster"
            click.echo(
                f"{iou_type:4s} {name:17s} {t:8.2f} s (best of {rounds})  AP {values['AP']:.6f}  "
                f"{'= pycocotools' if same else 'DIFFERS from pycocotools'}{ratio}"
            )
    click.echo(f"load average {os.getloadavg()[0]:.1f} at the end")
    if failed:
        raise UserError(f"numbers differ from pycocotools: {', '.join(failed)}")


def _copy(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Shallow copies: COCO.loadRes adds keys to the results it is given."""
    return [dict(r) for r in results]
