"""The runner behind ``odbench eval``: predict -> cache -> per-image records -> metrics -> results.

Per-image predictions are the unit of caching and resuming (architecture note 3).  Each image's
map is stored as uint16 (``round(map · 65535)``) in ``<cache>/<method>/<key>/<id>.npz`` together
with the method's box, written atomically as soon as its batch is predicted.  The key hashes the
method name, its card's sha256, the resolved hyperparameters and the dataset's description; the
protocol and ``--limit`` are not part of it, so re-scoring under another protocol predicts nothing
and a full run reuses the maps of an earlier ``--limit`` run.  A run that stops (crash, Ctrl-C)
resumes where it stopped: cached images are not predicted again.  Scoring always reads the
uint16 map, so a resumed run and an uninterrupted one give identical numbers.

Saliency (dataset task "saliency", samples with masks): every map goes through
:class:`odbench.metrics.saliency.SaliencyMeter` under the chosen protocol.  Localization (task
"localization", samples with boxes): :meth:`Method.predict_boxes` -> :class:`CorLocMeter`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from odbench.data.base import Dataset, Sample
from odbench.imageio import atomic_write_bytes, write_png
from odbench.methods.base import Method
from odbench.results import (
    RESULTS_KIND,
    SCHEMA_VERSION,
    git_commit,
    jsonable,
    package_versions,
    results_stem,
    utc_now,
    write_results,
)

DEFAULT_RESULTS_DIR = Path("leaderboard/results")
_SAFE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


class EvalError(ValueError):
    """A run that cannot proceed (bad option, method output of the wrong shape); one line."""


def default_cache_dir() -> Path:
    """``$ODBENCH_CACHE`` or the user cache folder (platformdirs), ``/predictions``."""
    env = os.environ.get("ODBENCH_CACHE")
    if env:
        return Path(env) / "predictions"
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("odbench")) / "predictions"


def safe_name(sample_id: str) -> str:
    """A file name for a sample id: the id itself when it is a plain name, otherwise the id with
    odd characters replaced and a short hash appended (so distinct ids never collide)."""
    if _SAFE_ID.fullmatch(sample_id):
        return sample_id
    digest = hashlib.sha256(sample_id.encode()).hexdigest()[:10]
    return re.sub(r"[^A-Za-z0-9._-]", "_", sample_id).lstrip(".") + f"-{digest}"


def quantize(pred: np.ndarray) -> np.ndarray:
    """A [0, 1] float map as uint16, ``round(p · 65535)``: what is cached, scored and saved."""
    return np.round(np.clip(pred.astype(np.float64), 0.0, 1.0) * 65535.0).astype(np.uint16)


def cache_key(method: Method, dataset_info: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(sha256 in 16 hex digits, the hashed dict) of the method name, card sha256,
    hyperparameters and dataset description: everything that changes the predictions.  Maps
    are per image, so ``--limit`` is not part of it: a full run reuses a ``--limit`` run's maps."""
    key = {
        "method": method.name,
        "card_sha256": method.card.sha256 if method.card else None,
        "hyperparameters": jsonable(method.hparams),
        "dataset": jsonable(dataset_info),
    }
    checkpoint = method.describe().get("checkpoint")  # trained methods: the weights' sha256
    if checkpoint is not None:
        key["checkpoint_sha256"] = checkpoint["sha256"]
    blob = json.dumps(key, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16], key


@dataclass
class PredictionCache:
    """One folder per (method, card, hyperparameters, dataset) of per-image npz files."""

    folder: Path

    def path(self, sample_id: str) -> Path:
        return self.folder / f"{safe_name(sample_id)}.npz"

    def has(self, sample_id: str) -> bool:
        return self.path(sample_id).is_file()

    def put(self, sample_id: str, pred: np.ndarray, box: np.ndarray | None) -> None:
        arrays: dict[str, np.ndarray] = {"map": pred, "id": np.array(sample_id)}
        if box is not None:
            arrays["box"] = np.asarray(box, dtype=np.float64)
        buf = io.BytesIO()
        np.savez_compressed(buf, allow_pickle=False, **arrays)
        atomic_write_bytes(self.path(sample_id), buf.getvalue())

    def get(self, sample_id: str) -> tuple[np.ndarray, np.ndarray | None]:
        path = self.path(sample_id)
        try:
            with np.load(path, allow_pickle=False) as npz:
                stored_id = str(npz["id"])
                pred = npz["map"]
                box = npz["box"] if "box" in npz.files else None
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
            raise EvalError(f"{path}: corrupt cache entry ({e}); delete it and re-run") from e
        if stored_id != sample_id:
            raise EvalError(
                f"{path}: cache entry belongs to sample {stored_id!r}, not {sample_id!r}"
            )
        return pred, box


@dataclass
class EvalOutcome:
    results: dict[str, Any]
    path: Path | None
    n_predicted: int
    n_cached: int
    records: dict[str, np.ndarray] = field(default_factory=dict)


def _check_map(method: Method, sample: Sample, pred: Any) -> np.ndarray:
    arr = np.asarray(pred)
    if arr.shape != sample.image.shape[:2]:
        raise EvalError(
            f"method {method.name!r} returned a map of shape {arr.shape} for sample "
            f"{sample.id!r} of size {sample.image.shape[:2]}"
        )
    if not np.issubdtype(arr.dtype, np.floating) or not np.isfinite(arr).all():
        raise EvalError(
            f"method {method.name!r} returned a non-finite or non-float map for {sample.id!r}"
        )
    return arr


def _batches(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@contextmanager
def _progress(total: int, label: str, show: bool) -> Iterator[Any]:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), disable=not show) as progress:
        task = progress.add_task(label, total=total)
        yield lambda n: progress.advance(task, n)


def evaluate(
    method: Method,
    dataset: Dataset,
    protocol: Any,
    *,
    dataset_name: str,
    limit: int | None = None,
    batch_size: int = 4,
    cache_dir: Path | None = None,
    save_preds: Path | None = None,
    results_dir: Path | None = DEFAULT_RESULTS_DIR,
    overrides: dict[str, Any] | None = None,
    show_progress: bool = False,
) -> EvalOutcome:
    """Run ``method`` over (the first ``limit`` samples of) ``dataset``, score every image under
    ``protocol`` and write the results JSON + records to ``results_dir`` (``None``: write none).

    Predictions are cached per image (see the module docstring), so calling this again after an
    interruption predicts only the images that are not cached yet."""
    if batch_size < 1:
        raise EvalError(f"--batch-size must be >= 1, got {batch_size}")
    if limit is not None and limit < 1:
        raise EvalError(f"--limit must be >= 1, got {limit}")
    for option, folder in (("--results-dir", results_dir), ("--save-preds", save_preds)):
        if folder is not None and Path(folder).exists() and not Path(folder).is_dir():
            raise EvalError(f"{option} {folder}: exists and is not a folder")
    ids = dataset.ids()[:limit] if limit is not None else dataset.ids()
    if not ids:
        raise EvalError(f"dataset {dataset_name!r} has no samples")
    dataset_info = {
        **dataset.describe(),
        "name": dataset_name,
        "limit": limit,
        "n_evaluated": len(ids),
    }
    do_saliency = "saliency" in dataset.task
    do_boxes = "localization" in dataset.task
    digest, key = cache_key(method, {**dataset.describe(), "name": dataset_name})
    cache = PredictionCache((cache_dir or default_cache_dir()) / method.name / digest)
    if not (cache.folder / "key.json").is_file():  # what the folder holds, for humans
        atomic_write_bytes(cache.folder / "key.json", json.dumps(key, indent=2).encode())
    saliency, corloc = None, None
    if do_saliency:
        from odbench.metrics.saliency import SaliencyMeter

        saliency = SaliencyMeter(protocol)
    if do_boxes:
        from odbench.metrics.boxes import CorLocMeter

        corloc = CorLocMeter()
    sal_records: list[Any] = []
    hits: list[bool] = []
    pred_boxes: list[np.ndarray] = []
    n_predicted = 0
    start = time.perf_counter()
    label = f"{method.name} on {dataset_name}"
    with _progress(len(ids), label, show_progress) as advance:
        for batch_ids in _batches(ids, batch_size):
            samples = [dataset.load(i) for i in batch_ids]
            todo = [s for s in samples if not cache.has(s.id)]
            if todo:
                images = [s.image for s in todo]
                maps = [_check_map(method, s, m) for s, m in zip(todo, method.predict(images))]
                boxes = method.predict_boxes(images, maps) if do_boxes else [None] * len(todo)
                for s, m, b in zip(todo, maps, boxes):
                    cache.put(s.id, quantize(m), b)
                n_predicted += len(todo)
            for s in samples:
                pred, box = cache.get(s.id)
                if pred.shape != s.image.shape[:2]:
                    raise EvalError(
                        f"{cache.path(s.id)}: cached map of shape {pred.shape} for an image of "
                        f"size {s.image.shape[:2]}; delete {cache.folder} and re-run"
                    )
                if saliency is not None:
                    if s.mask is None:
                        raise EvalError(f"dataset {dataset_name!r}: sample {s.id!r} has no mask")
                    sal_records.append(saliency.update(pred, s.mask, s.id))
                if corloc is not None:
                    if s.boxes is None or box is None:
                        raise EvalError(f"dataset {dataset_name!r}: sample {s.id!r} has no boxes")
                    hits.append(bool(corloc.update(box, s.boxes, s.id)))
                    pred_boxes.append(np.asarray(box, dtype=np.float64))
                if save_preds is not None:
                    write_png(Path(save_preds) / f"{safe_name(s.id)}.png", pred)
            advance(len(samples))
    wall = time.perf_counter() - start

    metrics: dict[str, Any] = {}
    records: dict[str, np.ndarray] = {"ids": np.array(ids)}
    if saliency is not None:
        metrics["saliency"] = saliency.compute()
        records["acc"] = np.array([r.acc for r in sal_records], dtype=np.float64)
        records["iou"] = np.array([r.iou for r in sal_records], dtype=np.float64)
        records["mae"] = np.array([r.mae for r in sal_records], dtype=np.float64)
        records["fbeta"] = np.stack([np.asarray(r.fbeta, dtype=np.float64) for r in sal_records])
    if corloc is not None:
        metrics["localization"] = corloc.compute()
        records["hit"] = np.array(hits, dtype=bool)
        records["pred_box"] = np.stack(pred_boxes)
        if save_preds is not None:
            boxes_json = {i: b.tolist() for i, b in zip(ids, pred_boxes)}
            atomic_write_bytes(Path(save_preds) / "boxes.json", json.dumps(boxes_json).encode())

    when = utc_now()
    results = {
        "schema_version": SCHEMA_VERSION,
        "kind": RESULTS_KIND,
        "method": {**method.describe(), "overrides": overrides or {}},
        "dataset": dataset_info,
        "protocol": {"name": protocol.name, "definition": jsonable(protocol.as_dict())},
        "tasks": [t for t, on in (("saliency", do_saliency), ("localization", do_boxes)) if on],
        "metrics": metrics,
        "date": when.isoformat(timespec="seconds"),
        "device": _device_description(method.device),
        "wall_time_s": wall,
        "images_per_s": len(ids) / wall if wall > 0 else None,
        "n_predicted": n_predicted,
        "n_cached": len(ids) - n_predicted,
        "cache": str(cache.folder),
        "packages": package_versions(),
        "git_commit": git_commit(),
    }
    path = None
    if results_dir is not None:
        stem = results_stem(method.name, dataset_name, protocol.name, when)
        path = write_results(results, records, Path(results_dir), stem)
    return EvalOutcome(results, path, n_predicted, len(ids) - n_predicted, records)


def _device_description(device: str) -> str:
    """``cpu``, or ``cuda:0 (NVIDIA H100 ...)`` when torch names the GPU."""
    if device.startswith("cuda"):
        import torch

        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return device


def parse_set(items: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are TOML literals (``3``, ``0.5``, ``true``, ``"text"``,
    ``[1, 2]``), falling back to JSON, then to the raw text."""
    import tomllib

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise EvalError(f"--set {item!r}: expected key=value")
        try:
            value: Any = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
        out[key] = value
    return out


def _same_kind(default: Any, value: Any) -> bool:
    """Whether an override has the type of the card's default: bool, int, float (an int is
    fine too), str or list; other defaults accept anything."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) == isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, int | float)
    for kind in (int, str, list):
        if isinstance(default, kind):
            return isinstance(value, kind)
    return True


def run_eval(
    method_name: str,
    dataset_name: str,
    protocol_name: str = "odbench",
    *,
    device: str = "cpu",
    overrides: dict[str, Any] | None = None,
    backbone: str | None = None,
    checkpoint: Path | None = None,
    data_root: Path | None = None,
    **kwargs: Any,
) -> EvalOutcome:
    """Resolve names (unknown names list the valid ones), check the overrides against the
    method's card, build method and dataset, then :func:`evaluate`."""
    from odbench.cards import dataset_card, method_card
    from odbench.data.base import create_dataset
    from odbench.methods.base import create_method
    from odbench.registry import DATASETS, METHODS, PROTOCOLS

    protocol = PROTOCOLS.get(protocol_name)
    if method_name not in METHODS:
        METHODS.get(method_name)  # raises UnknownNameError listing the valid names
    dcard = dataset_card(dataset_name)
    canonical = dcard.name if dcard is not None else dataset_name
    if canonical not in DATASETS:
        DATASETS.get(dataset_name)
    overrides = dict(overrides or {})
    card = method_card(method_name)
    valid = card.hyperparameters if card is not None else None
    if backbone is not None:
        if valid is None or "backbone" not in valid:
            raise EvalError(f"method {method_name} does not use a diffusion backbone")
        overrides["backbone"] = backbone
    if checkpoint is not None:
        if valid is None or "checkpoint" not in valid:
            raise EvalError(f"method {method_name} takes no --checkpoint (it is not trained)")
        overrides["checkpoint"] = str(checkpoint)
    if valid is not None:
        unknown = sorted(set(overrides) - set(valid))
        if unknown:
            raise EvalError(
                f"unknown hyperparameter(s) {', '.join(unknown)} for method {method_name} "
                f"({card.path if card else ''}); valid: {', '.join(sorted(valid)) or 'none'}"
            )
        for key, value in overrides.items():
            if not _same_kind(valid[key], value):
                raise EvalError(
                    f"hyperparameter {key} of method {method_name} takes a value like "
                    f"{valid[key]!r} ({type(valid[key]).__name__}), got {value!r}"
                )
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise EvalError(f"--device {device}: torch sees no CUDA device; use --device cpu")
    elif device != "cpu":
        raise EvalError(f"--device {device!r}: expected cpu or cuda[:N]")
    dataset = create_dataset(dataset_name, data_root=data_root)
    method = create_method(method_name, device=device, **overrides)
    return evaluate(
        method, dataset, protocol, dataset_name=canonical, overrides=overrides, **kwargs
    )
