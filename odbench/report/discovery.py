"""The discovery view of ``odbench report``: runs of the ``discovery`` task (class-agnostic
AP / AR), read from the results store, the runs' prediction caches and the dataset (nothing is
predicted or scored again; the match record of each image shown is recomputed by
:func:`~odbench.metrics.detection.match_image` and checked equal to the stored one,
:mod:`odbench.report.instances`).

Per image and method (the table, the choice of images for the grids): recall at IoU 0.50 (GT
matched / GT, all areas; NaN for an image without GT, never chosen for a grid), precision at IoU 0.50 (matched / scored
detections, crowd matches left out; NaN without any) and the number of detections scored (at
most the protocol's budget), all read from the run's match records (segm when it scored masks,
else bbox).  The precision-recall curves (:func:`pr_curves`) are COCO's interpolated precision
at the 101 recall points, at one IoU threshold, all areas, the protocol's budget: their mean
is the run's AP50 (IoU 0.50) or AP75 (0.75).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from odbench.data.base import Dataset
from odbench.metrics.detection import FP, TP, pr_curve
from odbench.report.instances import (
    STATE_NAMES,
    _records,
    iou_index,
    load_discovery_runs,
    recall_at_50,
    run_protocol,
)
from odbench.results import ResultsError, RunResult

#: The IoU thresholds of the precision-recall curves.
CURVE_IOUS = (0.5, 0.75)


@dataclass(frozen=True)
class DiscoveryData:
    """Discovery runs of several methods on the same images of one dataset."""

    dataset: str
    protocol: str
    ids: list[str]
    runs: list[RunResult]
    labels: list[str]
    iou_types: list[str]  # per run: what its per-image columns and overlays read (segm / bbox)
    recall: np.ndarray  # (M, N) recall at IoU 0.50
    precision: np.ndarray  # (M, N) precision at IoU 0.50 (NaN: no detection scored)
    n_det: np.ndarray  # (M, N) detections scored
    n_gt: np.ndarray  # (N,) GT instances (crowd regions not counted)


def has_task(results_dir: Path, dataset: str, methods: list[str], protocol: str, task: str) -> bool:
    """Whether every method has a run of ``task`` on ``dataset`` under ``protocol``."""
    from odbench.cards import dataset_card
    from odbench.results import load_all_results

    card = dataset_card(dataset)
    name = card.name if card is not None else dataset
    runs = load_all_results(results_dir) if Path(results_dir).is_dir() else []
    return all(
        any(
            r.method_name == m
            and r.dataset_name == name
            and r.protocol_name == protocol
            and task in r.metrics
            for r in runs
        )
        for m in methods
    )


def per_image(run: RunResult) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(recall, precision, detections scored, iou type) per image of a run, in its id order
    (see the module docstring)."""
    rec, iou_type = _records(run)
    t = iou_index(run_protocol(run))
    precision, n_det = [], []
    for m in rec.matches(iou_type):
        st = m.status[0, t]
        tp, fp = np.count_nonzero(st == TP), np.count_nonzero(st == FP)
        precision.append(tp / (tp + fp) if tp + fp else np.nan)
        n_det.append(len(m))
    recall = recall_at_50(rec, iou_type, run_protocol(run))
    return recall, np.array(precision), np.array(n_det), iou_type


def load_discovery_data(
    results_dir: Path, dataset: str, methods: list[str], protocol: str
) -> DiscoveryData:
    """The discovery run of each method (:func:`odbench.results.select`), aligned on the first
    run's ids; one-line errors for a method without one, or a run without its records."""
    from odbench.cards import dataset_card
    from odbench.leaderboard import run_label

    if not methods:
        raise ResultsError("--methods: give at least one method name")
    if len(set(methods)) != len(methods):
        raise ResultsError(f"--methods {','.join(methods)}: a method is named twice")
    card = dataset_card(dataset)
    dataset = card.name if card is not None else dataset
    runs = load_discovery_runs(results_dir, dataset, methods, protocol)
    ids = list(runs[0].records.ids)
    columns: list[tuple[np.ndarray, ...]] = []
    iou_types = []
    for run in runs:
        order = {i: k for k, i in enumerate(run.records.ids)}
        index = np.array([order[i] for i in ids], dtype=np.intp)
        recall, precision, n_det, iou_type = per_image(run)
        columns.append((recall[index], precision[index], n_det[index]))
        iou_types.append(iou_type)
    rec0 = runs[0].records.discovery
    assert rec0 is not None  # per_image checked it
    return DiscoveryData(
        dataset,
        protocol,
        ids,
        runs,
        [run_label(m, r.overrides) for m, r in zip(methods, runs)],
        iou_types,
        np.stack([c[0] for c in columns]),
        np.stack([c[1] for c in columns]),
        np.stack([c[2] for c in columns]),
        np.asarray(rec0.n_gt, dtype=np.int64),
    )


def scored_iou_types(run: RunResult) -> tuple[str, ...]:
    """The iou types a discovery run scored (bbox; segm too when it scored masks)."""
    return _records(run)[0].iou_types


def pr_curves(run: RunResult, iou_type: str, iou: float) -> tuple[np.ndarray, np.ndarray]:
    """(recall points, interpolated precision) of a run at IoU ``iou`` (see the module
    docstring), from its match records of ``iou_type``."""
    rec, _ = _records(run)
    if iou_type not in rec.iou_types:
        raise ResultsError(f"{run.path}: no {iou_type} records (the run scored bbox only)")
    return pr_curve(rec.matches(iou_type), run_protocol(run), iou)


def runs_to_plot(
    results_dir: Path, datasets: list[str], methods: list[str], protocol: str
) -> dict[str, list[RunResult]]:
    """dataset -> the discovery run of each method there (``methods``, or every method with
    one), for the datasets that have any; one-line errors for a missing folder, a named
    method without a discovery run on a dataset, or no discovery run at all."""
    from odbench.cards import dataset_card
    from odbench.results import load_all_results

    if not Path(results_dir).is_dir():
        raise ResultsError(
            f"{results_dir}: no such results folder (--results-dir: where odbench eval wrote "
            "its results)"
        )
    results = load_all_results(results_dir)
    out: dict[str, list[RunResult]] = {}
    for name in datasets:
        card = dataset_card(name)
        name = card.name if card is not None else name
        here = [r for r in results if r.dataset_name == name and r.protocol_name == protocol]
        wanted = methods or sorted({r.method_name for r in here if "discovery" in r.metrics})
        if wanted:
            out[name] = load_discovery_runs(results_dir, name, wanted, protocol)
    if not out:
        held = sorted({r.dataset_name for r in results if "discovery" in r.metrics})
        raise ResultsError(
            f"{results_dir}: no discovery results on {', '.join(datasets)} under protocol "
            f"{protocol}"
            + (f" (discovery results: {', '.join(held)})" if held else "")
            + "; run odbench eval on a dataset with instances (coco, coco20k, voc07, voc12, lvis)"
        )
    return out


@dataclass(frozen=True)
class Overlay:
    """One method's instances on one image as the page shows them: the thumbnail and, per
    instance drawn (best first), (index in the method's list, score, state name, colour)."""

    thumb: str
    shown: list[tuple[int, float, str, str]]


@dataclass(frozen=True)
class OverlayRow:
    """One image of a grid: its index, the image + GT thumbnail, the overlay of each run."""

    index: int
    gt: str
    overlays: list[Overlay]


def overlay_row(
    data: DiscoveryData, index: int, dataset: Dataset, thumbs: Any, max_shown: int = 20
) -> OverlayRow:
    """Draw (or reuse) the thumbnails of one image: image + GT, each run's instances."""
    from odbench.report.instances import (
        PALETTE,
        cached_instances,
        draw_gt,
        draw_instances,
        instance_states,
        shown_instances,
    )
    from odbench.report.thumbs import stat_key

    sid = data.ids[index]
    source = thumbs.source(sid)
    sample: Any = None

    def load() -> Any:
        nonlocal sample
        if sample is None:
            sample = dataset.load(sid)
            if sample.instances is None:
                raise ResultsError(f"dataset {dataset.name!r}: {sid!r} has no instances")
        return sample

    gt = thumbs.drawn("gtinst1", source, lambda: draw_gt(load().image, load().instances))
    overlays = []
    for run in data.runs:
        dets, entry = cached_instances(run, sid)
        states, _ = instance_states(run, load().instances, dets, sid)
        key = {**source, "cache": stat_key(entry), "run": str(run.path), "shown": max_shown}
        thumb = thumbs.drawn(
            "inst1",
            key,
            lambda d=dets, st=states: draw_instances(load().image, d, st, max_shown),
        )
        shown = [
            (int(k), float(dets.scores[k]), STATE_NAMES[int(states[k])], PALETTE[r % len(PALETTE)])
            for r, k in enumerate(shown_instances(dets, states, max_shown))
        ]
        overlays.append(
            Overlay(thumb, [(k, s, st, "#{:02x}{:02x}{:02x}".format(*c)) for k, s, st, c in shown])
        )
    return OverlayRow(index, gt, overlays)
