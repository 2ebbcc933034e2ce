"""The runs a report shows, read from the results store (nothing is recomputed).

For each requested method the run is the one every command shows (:func:`odbench.results.select`:
the card's settings before overrides, the full dataset before a subset, then the latest); its
per-image records give the IoU and Fβ columns, its ``cache`` folder the prediction maps -- or,
for saved maps scored by ``odbench score --config``, the prediction folder it recorded.  All
runs must cover the same images.

Per-image Fβ: the image's Fβ at the run's best dataset-wide threshold (``max_over="dataset"``,
the threshold of the leaderboard's maxFβ) or the image's own maximum (``"per_image"``), so the
mean of the column is the run's maxFβ in both cases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from odbench.metrics.catalog import METRICS
from odbench.metrics.protocols import DEFAULT_PROTOCOL
from odbench.results import ResultsError, RunResult


@dataclass(frozen=True)
class ReportRun:
    """One method's run: its results JSON (as read), per-image records and prediction cache."""

    label: str
    results: dict[str, Any]
    records: dict[str, np.ndarray]
    #: saved maps (``score --config``): id -> the map file scored, and id -> the GT file
    map_files: dict[str, Path] | None = None
    gt_files: dict[str, Path] | None = None

    @property
    def cache_folder(self) -> Path:
        return Path(self.results["cache"])

    @property
    def saliency(self) -> dict[str, Any]:
        return self.results["metrics"]["saliency"]  # type: ignore[no-any-return]


@dataclass(frozen=True)
class ReportData:
    """Runs of several methods on the same images of one dataset under one protocol."""

    dataset: str
    protocol: str
    ids: list[str]
    runs: list[ReportRun]
    iou: np.ndarray  # (methods, images)
    fbeta: np.ndarray  # (methods, images), see the module docstring
    #: per-image salient-object scores every run stored (``--metrics all``): key -> (M, N)
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        return [r.label for r in self.runs]


def per_image_fbeta(curves: np.ndarray, per_image_max: bool) -> np.ndarray:
    """(N, T) per-image Fβ curves -> (N,) Fβ at the best dataset-wide threshold (argmax of the
    mean curve; the first one on ties, as :class:`SaliencyMeter`) or each image's maximum."""
    if per_image_max:
        return curves.max(axis=1)  # type: ignore[no-any-return]
    return curves[:, int(np.argmax(curves.mean(axis=0)))]  # type: ignore[no-any-return]


def recorded_folder(run: RunResult, value: Any, what: str) -> Path:
    """A folder a ``score --config`` run recorded.  Runs scored before the paths were recorded
    absolute hold them relative to where the command ran, a folder holding its config: the
    config's folder or one above it."""
    if not isinstance(value, str):
        raise ResultsError(f"{run.path}: records no {what} folder; score it again")
    path = Path(value)
    if path.is_absolute():
        if not path.is_dir():
            raise ResultsError(
                f"{run.path}: its {what} folder {path} is gone; restore it or score the run again"
            )
        return path
    config = Path(str(run.info.get("config", "")))
    for base in config.parents if config.is_absolute() else ():
        if (base / path).is_dir():
            return base / path
    raise ResultsError(
        f"{run.path}: its {what} folder {value} (relative to where odbench score --config ran) "
        f"is not found beside its config {config}; score the run again"
    )


def saved_map_files(run: RunResult) -> tuple[dict[str, Path], dict[str, Path]]:
    """(id -> map file, id -> GT file) of a ``score --config`` run, from the folders and file
    naming (prefix + id + suffix) it recorded."""
    from odbench.scoring.config import Folder

    method, dataset = run.method, run.dataset
    maps = Folder(
        recorded_folder(run, method.get("predictions"), "prediction"),
        str(method.get("predictions_prefix", "")),
        str(method.get("predictions_suffix", "")),
    )
    gt = Folder(
        recorded_folder(run, dataset.get("gt"), "GT"),
        str(dataset.get("gt_prefix", "")),
        str(dataset.get("gt_suffix", "")),
    )
    return maps.ids(), gt.ids()


def _as_report_run(run: RunResult, name: str) -> ReportRun:
    """A results-store run as its JSON dict (``_path`` added), records arrays and, for saved
    maps, their files."""
    from odbench.leaderboard import run_label
    from odbench.results import is_saved_maps

    results = {**run.to_json(), "_path": str(run.path)}
    files = saved_map_files(run) if is_saved_maps(run) else (None, None)
    return ReportRun(run_label(name, run.overrides), results, run.records.arrays(), *files)


def _only_saved_maps_elsewhere(
    results: list[RunResult], name: str, dataset: str, protocol: str
) -> str | None:
    """The error line for a method known only by saved maps (``score --config``) scored on other
    datasets or protocols: ``odbench eval`` cannot make its run; None otherwise."""
    from odbench.results import is_saved_maps

    mine = [r for r in results if r.method_name == name]
    if not mine or not all(is_saved_maps(r) for r in mine):
        return None
    if any(r.dataset_name == dataset and r.protocol_name == protocol for r in mine):
        return None
    where = sorted({f"{r.dataset_name} ({r.protocol_name})" for r in mine})
    return (
        f"no results of method {name!r} on dataset {dataset!r} with protocol {protocol!r}: its "
        f"saved maps are scored on {', '.join(where)}; score its maps of {dataset} with "
        f"odbench score --config"
    )


def _unknown_method(results: list[RunResult], name: str, results_dir: Path) -> str | None:
    """The error line for a method name that has no run in the store and is not registered
    (a typo: ``wctrr``), naming the closest name; None for a known name."""
    import difflib

    from odbench.registry import METHODS

    stored = sorted({r.method_name for r in results})
    if name in stored or name in METHODS:
        return None
    close = difflib.get_close_matches(name, sorted({*stored, *METHODS.names()}), n=1)
    return (
        f"--methods: unknown method {name!r} (no run of it in {results_dir}, and not a "
        f"registered method)"
        + (f"; did you mean {close[0]!r}?" if close else "")
        + (f" Methods with results: {', '.join(stored)}" if stored else "")
    )


def _check_reproduces(run: ReportRun, columns: dict[str, np.ndarray]) -> None:
    """The table's columns must average to the run's own metrics (catches records that do not
    belong to the results file); NaN matches NaN (the empty/empty IoU rule)."""
    for metric, values in columns.items():
        stored = run.saliency.get(metric)
        mean = float(np.mean(values))
        stored = math.nan if stored is None else float(stored)
        same = (math.isnan(mean) and math.isnan(stored)) or math.isclose(
            mean, stored, rel_tol=1e-9, abs_tol=1e-9
        )
        if not same:
            raise ResultsError(
                f"{run.results['_path']}: {metric} = {stored} but its records give {mean}; the "
                f"records file does not belong to this run (re-run odbench eval)"
            )


def load_report_data(
    results_dir: Path, dataset: str, methods: list[str], protocol: str = DEFAULT_PROTOCOL
) -> ReportData:
    """The run of each method on ``dataset`` / ``protocol`` (see the module
    docstring); raises :class:`ResultsError` naming the file or the command to run."""
    from odbench.cards import dataset_card
    from odbench.results import load_all_results, select

    if not methods:
        raise ResultsError("--methods: give at least one method name")
    if len(set(methods)) != len(methods):
        raise ResultsError(f"--methods {','.join(methods)}: a method is named twice")
    card = dataset_card(dataset)
    dataset = card.name if card is not None else dataset
    results = load_all_results(results_dir)
    if dataset == "folder" and not any(r.dataset_name == dataset for r in results):
        # eval stores a folder's runs as folder:<the folder's name>
        named = sorted({r.dataset_name for r in results if r.dataset_name.startswith("folder:")})
        raise ResultsError(
            "--dataset folder: give the folder dataset by the name its runs have, folder:NAME"
            + (f" (the results hold {', '.join(named)})" if named else "")
        )
    for name in methods:
        unknown = _unknown_method(results, name, results_dir) or _only_saved_maps_elsewhere(
            results, name, dataset, protocol
        )
        if unknown:
            raise ResultsError(unknown)
    runs = []
    for name in methods:
        chosen = select(results, name, dataset, protocol, results_dir=results_dir)
        path = chosen.path
        if "saliency" not in chosen.metrics:
            raise ResultsError(
                f"{path}: no saliency metrics (the report shows masks; "
                f"dataset {dataset!r} has no GT masks)"
            )
        run = _as_report_run(chosen, name)
        for key in ("ids", "iou", "fbeta"):
            if key not in run.records:
                raise ResultsError(f"{path}: its records lack {key!r}; re-run odbench eval")
        if run.map_files is None and not isinstance(run.results.get("cache"), str):
            raise ResultsError(f"{path}: no prediction cache recorded; re-run odbench eval")
        runs.append(run)
    ids = [str(i) for i in runs[0].records["ids"]]
    iou, fbeta = [], []
    # more columns: the per-image metrics of the other meters (the page shows IoU and Fβ)
    extra_keys = [
        m.key
        for m in METRICS.values()
        if m.per_image and m.task == "saliency" and m.meter != "saliency"
        if all(m.key in r.records for r in runs)
    ]
    extra: dict[str, list[np.ndarray]] = {k: [] for k in extra_keys}
    per_image_max = (runs[0].results["protocol"].get("definition") or {}).get("max_over") == (
        "per_image"
    )
    for each in runs:
        run_ids = [str(i) for i in each.records["ids"]]
        if sorted(run_ids) != sorted(ids):
            raise ResultsError(
                f"{each.results['_path']} covers {len(run_ids)} images, "
                f"{runs[0].results['_path']} {len(ids)} (different images); evaluate every "
                f"method on the same dataset and --limit"
            )
        order = {i: k for k, i in enumerate(run_ids)}
        index = np.array([order[i] for i in ids], dtype=np.intp)
        iou.append(np.asarray(each.records["iou"], dtype=np.float64)[index])
        curves = np.asarray(each.records["fbeta"], dtype=np.float64)[index]
        fbeta.append(per_image_fbeta(curves, per_image_max))
        _check_reproduces(each, {"iou": iou[-1], "max_fbeta": fbeta[-1]})
        for key in extra_keys:
            extra[key].append(np.asarray(each.records[key], dtype=np.float64)[index])
    stacked = {k: np.stack(v) for k, v in extra.items()}
    return ReportData(dataset, protocol, ids, runs, np.stack(iou), np.stack(fbeta), stacked)
