"""Weighted accumulation (``odbench compare``'s discovery bootstrap): every resample's AP / AR
equals duplicating the drawn images' records and running ``accumulate`` on them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from odbench.bench.discovery import generate
from odbench.data.instances import instances_from_coco
from odbench.metrics.detection import SUMMARY_KEYS, ImageMatches, accumulate, match_images
from odbench.metrics.detection_resample import accumulate_resampled
from odbench.metrics.instances import Instances
from odbench.scoring.detections import read_results


def records(seed: int, n_images: int, iou_type: str = "bbox", decimals: int | None = None):
    """Match records of a generated set: crowd regions, images without GT, images without
    detections, some with more than 100; distinct scores unless rounded to ``decimals``."""
    gt, results = generate(
        n_images, (0, 110), seed=seed, masks=iou_type == "segm", crowd_rate=0.2, empty_rate=0.2
    )
    results = [r for r in results if r["image_id"] != 2]  # an image without detections
    if decimals is not None:
        for r in results:
            r["score"] = round(r["score"], decimals)
    gts, _, cats = instances_from_coco(gt, masks=iou_type == "segm")
    dets, _ = read_results(results, gts, cats, iou_type)
    empty = Instances(np.zeros(0), np.zeros((0, 4)), [] if iou_type == "segm" else None)
    items = [(i, g, dets.get(i, empty)) for i, g in gts.items()]
    assert any(len(d) == 0 for _, _, d in items) and any(len(g) == 0 for _, g, _ in items)
    return match_images(items, iou_type)  # type: ignore[arg-type]


def explicit(matches: list[ImageMatches], row: np.ndarray) -> dict[str, float]:
    """The resample built out: each record as often as it is drawn (in a shuffled order:
    accumulate sorts by image id)."""
    drawn = [m for m, c in zip(matches, row) for _ in range(int(c))]
    rng = np.random.default_rng(len(drawn))
    return accumulate([drawn[i] for i in rng.permutation(len(drawn))])


def resamples(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = [
        np.ones(n),  # the records themselves
        rng.multinomial(n, np.full(n, 1 / n), size=4)[0],
        *rng.multinomial(n, np.full(n, 1 / n), size=5),  # bootstrap rows: many 0s and >1s
        rng.integers(0, 4, n),  # not summing to n
        np.where(np.arange(n) == 3, 7, 0),  # one image drawn 7 times, the rest never
        np.zeros(n),  # nothing drawn: no GT, COCO's -1 (NaN)
    ]
    return np.array(rows, dtype=np.float64)


def assert_rows_equal(got: dict[str, np.ndarray], matches, counts) -> None:
    for b, row in enumerate(counts):
        want = explicit(matches, row)
        for key in SUMMARY_KEYS:
            if math.isnan(want[key]):
                assert math.isnan(got[key][b]), (b, key, got[key][b])
            else:
                assert abs(got[key][b] - want[key]) <= 1e-12, (b, key, got[key][b], want[key])


@pytest.mark.parametrize("seed", range(3))
def test_weighted_equals_explicit_resampling_distinct_scores(seed):
    matches = records(seed, 30)
    scores = np.concatenate([m.scores for m in matches])
    assert len(np.unique(scores)) == len(scores)
    counts = resamples(len(matches), seed)
    assert (counts == 0).any() and (counts > 1).any()
    got = accumulate_resampled(matches, counts)
    assert_rows_equal(got, matches, counts)
    assert 0 < got["AP50"][0] < 1 and len(set(got["AP"][1:8])) > 1  # resamples differ


def test_weighted_equals_explicit_resampling_segm():
    matches = records(7, 16, "segm")
    counts = resamples(len(matches), 7)
    assert_rows_equal(accumulate_resampled(matches, counts), matches, counts)


@pytest.mark.parametrize("decimals", [1, 2])
def test_weighted_equals_explicit_resampling_with_tied_scores(decimals):
    # equal scores within an image: the copies of a drawn image interleave their tied
    # detections (copy 1's by rank, then copy 2's), which a single weighted entry would not
    matches = records(11, 25, decimals=decimals)
    tied = [m for m in matches if len(np.unique(m.scores)) < len(m.scores)]
    assert tied
    counts = resamples(len(matches), 11)
    shuffled = np.random.default_rng(0).permutation(len(matches))  # any record order
    got = accumulate_resampled([matches[i] for i in shuffled], counts[:, shuffled])
    assert_rows_equal(got, matches, counts)


def test_weighted_keys_and_bad_counts():
    matches = records(3, 8)
    counts = resamples(len(matches), 3)
    some = accumulate_resampled(matches, counts, keys=("AP50", "AR100"))
    full = accumulate_resampled(matches, counts)
    assert list(some) == ["AP50", "AR100"]
    np.testing.assert_array_equal(some["AP50"], full["AP50"])
    with pytest.raises(ValueError, match="non-negative integers"):
        accumulate_resampled(matches, counts * 0.5 + 0.25)
    with pytest.raises(ValueError, match="resamples"):
        accumulate_resampled(matches, counts[:, 1:])
    with pytest.raises(ValueError, match="unknown summary keys"):
        accumulate_resampled(matches, counts, keys=("AP40",))


def test_bench_discovery_bootstrap_agrees():
    from click.testing import CliRunner

    from odbench.cli import main

    args = ["bench", "discovery", "--images", "30", "--dets", "20", "--bootstrap", "6"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "identical numbers" in r.output and "resamples/s" in r.output
