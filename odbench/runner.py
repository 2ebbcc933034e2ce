"""The runner behind ``odbench eval`` and :func:`odbench.evaluate`: :func:`run` chains the three
phases of :mod:`odbench.phases` (predict -> score -> summarize) for one (method, dataset,
protocol) and assembles the typed :class:`~odbench.results.RunResult` (written as JSON +
records by :func:`odbench.results.write_results`); :func:`run_eval` resolves method, dataset and
protocol by name first, and under a launcher runs :func:`run_launched`.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from odbench.cache import (
    PredictionCache,
    cache_key,
    default_cache_root,
)
from odbench.cards import dataset_size
from odbench.data.base import Dataset
from odbench.discovery import (
    dataset_protocol,
    has_discovery,
    iou_types_for,
    protocol_block,
    write_coco_results,
)
from odbench.distributed import Shard, World, detect_world, resolve_device, shard_block
from odbench.methods.base import Method
from odbench.metrics.protocols import DEFAULT_PROTOCOL
from odbench.metrics.selection import MetricSelection, parse_metrics
from odbench.outputs import OutputPathError, check_output_folder
from odbench.phases import EvalError, evaluate
from odbench.provenance import git_commit, package_versions, utc_now
from odbench.results import DEFAULT_RESULTS_DIR, RunResult, jsonable, write_results
from odbench.summarize import Summary

# ----------------------------------------------------------------------------- device


def device_description(device: str) -> str:
    """``cpu``, or ``cuda:0 (NVIDIA H100 ...)`` when torch names the GPU."""
    if device.startswith("cuda"):
        import torch

        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return device


# ----------------------------------------------------------------------------- methods


class CallableMethod(Method):
    """A plain callable ``list[np.ndarray] -> list[np.ndarray]`` (RGB uint8 images in, [0, 1]
    float maps out) used as a method.  Its maps are never cached: a callable has no card and no
    stable code identity (a closure can change without its code changing)."""

    def __init__(self, fn: Callable[[list[np.ndarray]], Sequence[np.ndarray]]) -> None:
        super().__init__(None, device="cpu")
        self.fn = fn
        name = getattr(fn, "__name__", "")
        self.name = name if name and not name.startswith("<") else "callable"

    def predict(self, images: list[np.ndarray]) -> list[np.ndarray]:
        maps = list(self.fn(images))
        if len(maps) != len(images):
            raise EvalError(f"{self.name} returned {len(maps)} maps for {len(images)} images")
        return maps


# ----------------------------------------------------------------------------- run

#: Batch size for a method without a card (a plain callable).
DEFAULT_BATCH = 4


@contextmanager
def _progress(total: int, label: str, show: bool) -> Iterator[Callable[[int], None]]:
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


def run(
    method: Method,
    dataset: Dataset,
    protocol: Any,
    *,
    dataset_name: str,
    limit: int | None = None,
    skip_ids: Collection[str] = (),
    batch_size: int | None = None,
    workers: int = 1,
    cache_dir: Path | None = None,
    use_cache: bool = True,
    save_preds: Path | None = None,
    results_dir: Path | None = DEFAULT_RESULTS_DIR,
    overrides: dict[str, Any] | None = None,
    show_progress: bool = False,
    progress_label: str | None = None,
    shard: Shard | None = None,
    metrics_set: str | MetricSelection = "basic",
    write_boxes: bool = True,
    on_error: str = "error",
    discovery_protocol: str | None = None,
    max_dets: int | None = None,
    iou_type: str | None = None,
) -> RunResult:
    """Run ``method`` over (the first ``limit`` samples, less ``skip_ids``, of) ``dataset``,
    score every image under ``protocol`` and write the results JSON + records to
    ``results_dir`` (``None``: write none).  Output folders are checked before any work.
    With ``shard``, only that shard of those samples (:class:`odbench.distributed.Shard`); the
    result says which part of which id list it holds, for :mod:`odbench.merge`.
    ``metrics_set="all"`` (or names of its metrics, or the selection a command parsed already:
    :mod:`odbench.metrics.selection`) adds the salient-object family and its curves.
    ``write_boxes=False``: ``save_preds`` gets the maps only (a launch's rank 0 writes the
    boxes of all ranks).  ``on_error``: an image the method fails on stops the run with one
    line naming it (``"error"``) or is left out, its id and the reason in
    ``dataset["failed_ids"]`` (``"skip"``; not with a shard, whose parts must hold every image
    for the merge).  On a dataset with the task "discovery": ``discovery_protocol`` (default:
    the dataset's), ``max_dets`` and ``iou_type`` (``bbox``, ``segm``; default: segm too when
    the data has instance masks) choose how instances are scored (:mod:`odbench.discovery`)."""
    metrics_set = parse_metrics(metrics_set, "metrics_set").tier
    if batch_size is None:  # the method's card says what batch it works best on
        batch_size = method.card.batch_size if method.card is not None else DEFAULT_BATCH
    if batch_size < 1:
        raise EvalError(f"--batch-size must be >= 1, got {batch_size}")
    if workers < 1:
        raise EvalError(f"--workers must be >= 1, got {workers}")
    if limit is not None and limit < 1:
        raise EvalError(f"--limit must be >= 1, got {limit}")
    if on_error not in ("error", "skip"):
        raise EvalError(f"--on-error must be error or skip, got {on_error!r}")
    if on_error == "skip" and shard is not None and not shard.whole:
        raise EvalError(
            "--on-error skip: a shard (or a launched process) must hold every image of its part "
            "for odbench merge; evaluate without --shard, or let the failing image stop the run"
        )
    found = discovery_setup(dataset, dataset_name, discovery_protocol, max_dets, iou_type)
    root = Path(cache_dir) if cache_dir else default_cache_root()  # a str from the API too
    outputs = [("--results-dir", results_dir), ("--save-preds", save_preds)]
    outputs.append(("--cache-dir", root if use_cache else None))
    try:
        for option, folder in outputs:
            if folder is not None:
                check_output_folder(folder, option)
    except OutputPathError as e:
        raise EvalError(str(e)) from e
    all_ids = dataset.ids()
    if len(set(all_ids)) != len(all_ids):  # each would be scored twice: weighted silently
        twice = next(i for i, n in Counter(all_ids).items() if n > 1)
        raise EvalError(
            f"dataset {dataset_name!r} lists the sample id {twice!r} more than once; "
            "its ids() must name each sample once"
        )
    chosen = all_ids[:limit] if limit is not None else all_ids
    skipped = set(skip_ids)
    ids = [i for i in chosen if i not in skipped]
    if not ids:
        raise EvalError(f"dataset {dataset_name!r} has no samples to evaluate")
    if save_preds is not None:
        _check_save_preds(dataset, ids[0], Path(save_preds))
    whole_ids, sharded = ids, shard is not None and not shard.whole
    if shard is not None and sharded:
        ids = shard.take(whole_ids)
        if not ids:
            raise EvalError(
                f"shard {shard} of {len(whole_ids)} images is empty: "
                f"use at most {len(whole_ids)} shards (or processes)"
            )
    description = {**dataset.describe(), "name": dataset_name}
    dataset_info = {
        **description,
        "limit": limit if limit is not None and limit < len(all_ids) else None,
        "n_evaluated": len(ids),
    }
    if skipped:
        dataset_info["skipped_ids"] = sorted(skipped & set(chosen))
    full = dataset_size(dataset_name)
    if full is not None and len(all_ids) < full:  # an incomplete copy: every run on it a subset
        dataset_info["n_images"] = full
        if show_progress:
            print(
                f"note: {dataset_name}: the data found holds {len(all_ids)} of the {full} images "
                "its card lists; this run is a subset (starred, shown by odbench leaderboard "
                "--all only)",
                file=sys.stderr,
            )
    tasks: list[str] = [t for t in ("saliency", "localization", "discovery") if t in dataset.task]
    cache = None
    if use_cache:
        digest, key = cache_key(method, description)
        cache = PredictionCache(root / method.name / digest, key)

    counts = {"predicted": 0, "cached": 0}
    failed: dict[str, str] = {}
    start, cpu_start = time.perf_counter(), time.process_time()
    with ExitStack() as bars:
        bar: list[Callable[[int], None]] = []

        def started() -> None:  # the progress bar's thread after the workers are forked
            label = progress_label or f"{method.name} on {dataset_name}"
            bar.append(bars.enter_context(_progress(len(ids), label, show_progress)))

        def on_image(sample_id: str, cached: bool) -> None:
            counts["cached" if cached else "predicted"] += 1
            bar[0](1)

        def on_failure(sample_id: str, why: str) -> None:  # on_error="skip"
            failed[sample_id] = why
            bar[0](1)

        summary = Summary.of_run(protocol, tasks, metrics_set)
        records = evaluate(
            method,
            dataset,
            ids,
            cache,
            protocol,
            tasks,
            batch_size=batch_size,
            workers=workers,
            metrics_set=metrics_set,
            started=started,
            on_image=on_image,
            on_failure=on_failure if on_error == "skip" else None,
            save_preds=save_preds,
            discovery=found,
            summary=summary,
        )
    wall = time.perf_counter() - start
    if failed:
        if not records.ids:
            first = next(iter(failed.items()))
            raise EvalError(
                f"method {method.name!r} failed on all {len(failed)} image(s) of {dataset_name} "
                f"(the first, {first[0]!r}: {first[1]})"
            )
        dataset_info["failed_ids"] = dict(sorted(failed.items()))
        dataset_info["n_evaluated"] = len(records.ids)
    metrics = summary.compute(records.discovery, found[0] if found is not None else None)
    if save_preds is not None and write_boxes:
        write_boxes_json(Path(save_preds), records.arrays(), shard if sharded else None)
        if found is not None:
            write_coco_results(Path(save_preds), records.ids, shard if sharded else None)

    when = utc_now()
    result = RunResult(
        method={**method.describe(), "overrides": overrides or {}},
        dataset=dataset_info,
        protocol={
            "name": protocol.name,
            "definition": jsonable(protocol.as_dict()),
            **({"discovery": protocol_block(found[0])} if found is not None else {}),
        },
        tasks=tasks,
        metrics=metrics,
        date=when.isoformat(timespec="seconds"),
        info={
            "device": device_description(method.device),
            "wall_time_s": wall,
            "cpu_time_s": time.process_time() - cpu_start,  # this process, all its threads
            "images_per_s": len(ids) / wall if wall > 0 else None,
            "n_predicted": counts["predicted"],
            "n_cached": counts["cached"],
            "cache": str(cache.folder) if cache is not None else None,
            "workers": workers,
            **({"shard": shard_block(shard, whole_ids)} if shard is not None and sharded else {}),
            "packages": package_versions(),
            "git_commit": git_commit(),
        },
        _records=records,
    )
    if results_dir is not None:
        write_results(result, Path(results_dir))
    return result


def discovery_setup(
    dataset: Dataset,
    name: str,
    protocol: str | None,
    max_dets: int | None,
    iou_type: str | None,
) -> tuple[Any, tuple[str, ...]] | None:
    """(discovery protocol, iou types) of a run on ``dataset``; None when it has no discovery
    task (then the discovery options are refused, in one line)."""
    if not has_discovery(dataset):
        given = [
            o
            for o, v in (
                ("--discovery-protocol", protocol),
                ("--max-dets", max_dets),
                ("--iou-type", iou_type),
            )
            if v is not None
        ]
        if given:
            raise EvalError(f"{given[0]}: dataset {name} has no discovery task (instances)")
        return None
    return dataset_protocol(dataset, protocol, max_dets), iou_types_for(dataset, name, iou_type)


def write_boxes_json(folder: Path, records: dict[str, np.ndarray], shard: Shard | None) -> None:
    """``--save-preds``' boxes, ``{id: [x1, y1, x2, y2]}``, when the run localizes: ``boxes.json``,
    or ``boxes.shard-I-of-N.json`` for a shard (shards may share one folder)."""
    from odbench.imageio import atomic_write_bytes

    if "pred_box" not in records:
        return
    import json

    boxes = {str(i): b.tolist() for i, b in zip(records["ids"], records["pred_box"])}
    name = "boxes.json" if shard is None or shard.whole else f"boxes.{shard.label()}.json"
    atomic_write_bytes(folder / name, json.dumps(boxes).encode())


# ----------------------------------------------------------------------------- by name


def with_backbone(
    method_name: str, card: Any, overrides: dict[str, Any], backbone: str | None
) -> dict[str, Any]:
    """``--backbone NAME`` as the ``backbone`` hyperparameter of methods that have one."""
    if backbone is None:
        return overrides
    if card is None or "backbone" not in card.hyperparameters:
        raise EvalError(f"method {method_name} takes no --backbone (it uses no features)")
    from odbench.registry import FEATURES

    FEATURES.get(backbone)  # unknown name: one line with "did you mean"
    return {**overrides, "backbone": backbone}


def with_checkpoint(
    method_name: str, card: Any, overrides: dict[str, Any], checkpoint: Path | None
) -> dict[str, Any]:
    """``--checkpoint RUN_DIR`` as the ``checkpoint`` hyperparameter of trained methods."""
    if checkpoint is None:
        return overrides
    if card is None or "checkpoint" not in card.hyperparameters:
        raise EvalError(f"method {method_name} takes no --checkpoint (it is not trained)")
    return {**overrides, "checkpoint": str(checkpoint)}


def resolve_protocol(name: Any) -> Any:
    """A registered protocol name, or a Protocol as is."""
    from odbench.metrics.protocols import PROTOCOLS

    return PROTOCOLS.get(name) if isinstance(name, str) else name


def build_method(
    method: str | Method | Callable[[list[np.ndarray]], Sequence[np.ndarray]],
    device: str,
    overrides: dict[str, Any] | None = None,
    backbone: str | None = None,
    checkpoint: Path | None = None,
) -> tuple[Method, dict[str, Any]]:
    """(method, overrides applied): a registered name (one lookup, overrides checked against
    its card by :func:`odbench.methods.base.create_method`), a :class:`Method` as is, or a
    plain callable wrapped in :class:`CallableMethod`."""
    overrides = dict(overrides or {})
    if isinstance(method, Method):
        if overrides or backbone or checkpoint:
            raise EvalError("overrides, --backbone and --checkpoint apply to a method by name")
        return method, {}
    if not isinstance(method, str):
        if not callable(method):
            raise EvalError(f"method must be a name, a Method or a callable, got {method!r}")
        return CallableMethod(method), {}
    from odbench.cards import method_card
    from odbench.methods.base import HyperparameterError, create_method

    card = method_card(method)
    overrides = with_backbone(method, card, overrides, backbone)
    overrides = with_checkpoint(method, card, overrides, checkpoint)
    try:
        return create_method(method, device=device, **overrides), overrides
    except HyperparameterError as e:
        raise EvalError(str(e)) from e


def build_dataset(
    dataset: str | Dataset, data_root: Path | None, split: str | None = None
) -> tuple[Dataset, str]:
    """(dataset, canonical name): a registered name or alias, or a :class:`Dataset` as is.
    ``split`` (``--split``) goes to loaders that take one (COCO folders)."""
    if isinstance(dataset, Dataset):
        return dataset, str(dataset.describe().get("name") or type(dataset).__name__)
    from odbench.data.base import create_dataset
    from odbench.registry import DATASETS

    canonical = DATASETS.canonical(dataset)  # aliases resolve here; unknown names list the valid
    options: dict[str, Any] = {}
    if split is not None:
        import inspect

        if "split" not in inspect.signature(DATASETS.get(canonical).from_card).parameters:
            raise EvalError(f"--split: dataset {canonical} has no splits to choose from")
        options["split"] = split
    built = create_dataset(dataset, data_root=data_root, **options)
    if canonical == "folder":  # a folder is identified by its path: folder:<its name>
        images = built.describe().get("images")
        if images:
            canonical = f"folder:{Path(images).absolute().parent.name}"
    return built, canonical


def run_eval(
    method: str | Method | Callable[[list[np.ndarray]], Sequence[np.ndarray]],
    dataset: str | Dataset,
    protocol: Any = DEFAULT_PROTOCOL,
    *,
    device: str = "auto",
    overrides: dict[str, Any] | None = None,
    backbone: str | None = None,
    checkpoint: Path | None = None,
    data_root: Path | None = None,
    split: str | None = None,
    on_mismatch: str = "error",
    **kwargs: Any,
) -> RunResult:
    """Resolve protocol, method (its card checks the overrides) and dataset by name — unknown
    names list the valid ones — check every image/mask pair's size (all mismatches in one
    error, or with ``on_mismatch="skip"`` left out and recorded), then :func:`run`; under a
    launcher (torchrun, accelerate launch), :func:`run_launched`."""
    if "metrics_set" in kwargs:  # basic, all or names: what to compute, checked before any work
        kwargs["metrics_set"] = parse_metrics(kwargs["metrics_set"], "metrics_set")
    resolved = resolve_protocol(protocol)
    world = detect_world(device)
    try:
        device = world.device(resolve_device(device))
        built, overrides = build_method(method, device, overrides, backbone, checkpoint)
        data, name = build_dataset(dataset, data_root, split)
        kwargs["skip_ids"] = [
            *kwargs.get("skip_ids", ()),
            *_mismatched(data, name, on_mismatch, kwargs.get("limit")),
        ]
        if isinstance(built, CallableMethod):
            kwargs.setdefault("use_cache", False)
        if world.size > 1:
            return run_launched(world, built, data, resolved, name, overrides, **kwargs)
        return run(built, data, resolved, dataset_name=name, overrides=overrides, **kwargs)
    finally:
        world.close()


def run_launched(
    world: World,
    method: Method,
    dataset: Dataset,
    protocol: Any,
    dataset_name: str,
    overrides: dict[str, Any],
    *,
    shard: Shard | None = None,
    results_dir: Path | None = DEFAULT_RESULTS_DIR,
    **kwargs: Any,
) -> RunResult:
    """One rank of a launch: :func:`run` this rank's part of ``shard`` (every ``W``-th image),
    gather every rank's result and records on rank 0, which merges them as ``odbench merge``
    does (:func:`odbench.merge.merge`: metrics and records identical to one process's) and
    writes the one results JSON.  Other ranks write nothing; their result has ``info["rank"]``."""
    from odbench.merge import Part, merge

    if results_dir is not None:
        try:
            check_output_folder(results_dir, "--results-dir")
        except OutputPathError as e:
            raise EvalError(str(e)) from e
    whole = shard or Shard()
    limit, skip = kwargs.get("limit"), set(kwargs.get("skip_ids", ()))
    chosen = dataset.ids()[:limit] if limit is not None and limit > 0 else dataset.ids()
    n = len(whole.take([i for i in chosen if i not in skip]))
    if 0 < n < world.size:  # every rank refuses alike, before any work (n = 0: run() says so)
        part = f"shard {whole} holds" if not whole.whole else "the run has"
        raise EvalError(
            f"{part} {n} image(s) for {world.size} processes: launch at most {n} processes"
        )
    kwargs["show_progress"] = bool(kwargs.get("show_progress")) and world.is_main
    # Rank 0's bar counts its own share (the others report nothing): say so.
    kwargs["progress_label"] = f"{method.name} on {dataset_name} (rank 0 of {world.size})"
    start = time.perf_counter()
    own = run(
        method,
        dataset,
        protocol,
        dataset_name=dataset_name,
        overrides=overrides,
        shard=whole.split(world.size, world.rank),
        results_dir=None,
        write_boxes=False,
        **kwargs,
    )
    gathered = world.gather((own.to_json(), own.records.arrays()))
    if gathered is None:
        own.info["rank"] = world.rank
        return own
    parts = [Part(results, records, f"rank {i}") for i, (results, records) in enumerate(gathered)]
    merged, records = merge(parts, into=whole)
    wall = time.perf_counter() - start
    merged.update(wall_time_s=wall, images_per_s=len(records["ids"]) / wall, processes=world.size)
    if kwargs.get("save_preds") is not None:
        write_boxes_json(Path(kwargs["save_preds"]), records, whole)
        if has_discovery(dataset):
            write_coco_results(Path(kwargs["save_preds"]), list(records["ids"]), whole)
    result = RunResult.from_json(merged, records=records)
    if results_dir is not None:
        write_results(result, Path(results_dir))
    return result


def _check_save_preds(dataset: Dataset, sample_id: str, save_preds: Path) -> None:
    """``--save-preds`` may not be the folder of the dataset's images or GT masks: its maps,
    named by sample id, overwrote the GT masks (``0001.png``: the next run scored the
    predictions against themselves) or joined the images."""
    from odbench.cache import safe_name

    files = dataset.mask_files(sample_id)
    target = save_preds.expanduser().resolve()
    for what, file in zip(("images", "GT masks"), files or ()):
        if Path(file).parent.resolve() == target:
            raise EvalError(
                f"--save-preds {save_preds}: is the folder of the dataset's {what}; the maps "
                f"(named by sample id, e.g. {safe_name(sample_id)}.png) would be written among "
                "them; choose another folder"
            )


def _mismatched(dataset: Dataset, name: str, on_mismatch: str, limit: int | None) -> list[str]:
    """Ids (among the first ``limit``) whose image and GT mask differ in size, all checked before
    any work: an error listing them (``on_mismatch="error"``) or the ids to skip."""
    from odbench.metrics.sizes import describe_mismatches

    chosen = dataset.ids()[:limit] if limit else dataset.ids()
    mismatched = dataset.size_mismatches(chosen)
    if mismatched and on_mismatch != "skip":
        line = describe_mismatches(mismatched, len(chosen), "image")
        raise EvalError(f"{name}: {line}; --on-mismatch skip evaluates the others")
    return [m.id for m in mismatched]
