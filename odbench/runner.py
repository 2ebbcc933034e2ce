"""The runner behind ``odbench eval`` and :func:`odbench.evaluate`, in three phases (the shape of
pycocotools' evaluate -> accumulate -> summarize):

1. :func:`predict` — method × dataset -> per-image entries of the prediction cache
   (:mod:`odbench.cache`; the unit of caching, resuming, sharding and merging).  Cached images
   are not predicted again, so an interrupted run resumes where it stopped.
2. :func:`score` — (sample, cached uint16 map) pairs × protocol -> typed per-image
   :class:`~odbench.results.Records` (:func:`odbench.metrics.saliency.score_image`, CorLoc hits).
   Scoring always reads the uint16 map, so a resumed run and an uninterrupted one agree exactly.
3. :func:`summarize` — records -> dataset metrics, through the same meters (and the one maxFβ
   reduction, :func:`odbench.metrics.saliency.reduce_max_fbeta`) as every other command.

:func:`run` chains them for one (method, dataset, protocol) and assembles the typed
:class:`~odbench.results.RunResult` (written as JSON + records by
:func:`odbench.results.write_results`).  The phases stream: images are decoded by ``workers``
threads ahead of the model, and storing, scoring and (for methods that split their work, see
:meth:`odbench.methods.base.Method.postprocess`) CPU-bound post-processing run beside it, so
the model never waits on the CPU.  Every function here takes ids explicitly, so a caller can
predict a shard of a dataset and score the union later.

Saliency (dataset task "saliency", samples with masks) and localization (task "localization",
samples with boxes: :meth:`Method.predict_boxes` -> CorLoc) are scored when the dataset has them.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from odbench.cache import (
    CacheError,
    PredictionCache,
    cache_key,
    default_cache_root,
    quantize,
    safe_name,
)
from odbench.cards import dataset_size
from odbench.claims import Claims
from odbench.data.base import Dataset, Sample
from odbench.distributed import Shard, World, detect_world, resolve_device, shard_block
from odbench.errors import OdbenchError
from odbench.methods.base import Method
from odbench.metrics.protocols import DEFAULT_PROTOCOL
from odbench.metrics.selection import MetricSelection, parse_metrics
from odbench.outputs import OutputPathError, check_output_folder
from odbench.results import (
    DEFAULT_RESULTS_DIR,
    SOD_SCALARS,
    LocalizationRecords,
    Records,
    RunResult,
    git_commit,
    jsonable,
    package_versions,
    saliency_records,
    sod_records,
    utc_now,
    write_results,
)

T = TypeVar("T")
R = TypeVar("R")


class EvalError(OdbenchError, ValueError):
    """A run that cannot proceed (bad option, method output of the wrong shape); one line."""


def describe_error(error: BaseException) -> str:
    """``Type: first line of the message`` (at most 300 characters): why an image failed."""
    text = str(error).strip().splitlines()
    line = f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
    return line if len(line) <= 300 else line[:297] + "..."


class ImageError(EvalError):
    """The method failed on one image: the run stops with one line naming it."""

    def __init__(self, method: str, sample_id: str, error: BaseException) -> None:
        self.sample_id = sample_id
        super().__init__(
            f"method {method!r} failed on image {sample_id!r}: {describe_error(error)}; the "
            "images before it are cached (re-running resumes there); --on-error skip leaves "
            "such images out, listed in the results JSON"
        )


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


#: Float rounding a method may leave outside [0, 1] (e.g. min-max normalisation in float32);
#: anything further out is a map on another scale (0..255, logits) and is refused.
MAP_RANGE_TOLERANCE = 1e-3


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
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -MAP_RANGE_TOLERANCE or hi > 1.0 + MAP_RANGE_TOLERANCE:
        raise EvalError(
            f"method {method.name!r} returned a map with values in [{lo:g}, {hi:g}] for "
            f"{sample.id!r}; maps must lie in [0, 1] (scores would clip them silently)"
        )
    return arr


# ----------------------------------------------------------------------------- streaming helpers


class _Job(Generic[R]):
    """A call submitted to a pool that the caller runs itself if no worker has started it by
    the time its result is needed (the main thread helps instead of idling)."""

    def __init__(self, pool: Executor, fn: Callable[..., R], *args: Any) -> None:
        self.fn, self.args = fn, args
        self.future = pool.submit(fn, *args)

    def result(self) -> R:
        if self.future.cancel():
            return self.fn(*self.args)
        return self.future.result()


def _ordered(pool: Executor, fn: Callable[[T], R], items: Iterable[T], depth: int) -> Iterator[R]:
    """``map(fn, items)`` on ``pool`` with at most ``depth`` items in flight, in order."""
    pending: deque[_Job[R]] = deque()
    it = iter(items)
    try:
        for item in it:
            pending.append(_Job(pool, fn, item))
            if len(pending) >= depth:
                break
        while pending:
            done = pending.popleft().result()
            for nxt in it:
                pending.append(_Job(pool, fn, nxt))
                break
            yield done
    finally:
        for job in pending:
            job.future.cancel()


def _batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# ----------------------------------------------------------------------------- phase 1: predict


@dataclass(frozen=True)
class Prediction:
    """One image's sample and its stored prediction (uint16 map, box or None)."""

    sample: Sample
    map: np.ndarray
    box: np.ndarray | None
    cached: bool


def _post_pool(method: Method, workers: int, stack: ExitStack) -> Executor | None:
    """Worker processes for :meth:`Method.postprocess`, when the method splits its work."""
    if not method.has_postprocess():
        return None
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("spawn")  # safe with CUDA and threads in the parent
    return stack.enter_context(ProcessPoolExecutor(max_workers=workers, mp_context=ctx))


def predict(
    method: Method,
    dataset: Dataset,
    ids: Sequence[str],
    cache: PredictionCache | None,
    pool: Executor,
    *,
    batch_size: int = 4,
    boxes: bool = False,
    workers: int = 1,
    failed: dict[str, str] | None = None,
) -> Iterator[Prediction]:
    """Phase 1: yield every id's :class:`Prediction` in order, predicting (in batches of
    ``batch_size``) only the images ``cache`` does not hold and storing each as soon as it is
    predicted.  ``pool`` (threads) decodes samples ahead of the model and stores maps; a method
    with :meth:`Method.postprocess` gets ``workers`` processes for it.  ``cache`` None: nothing is
    stored (plain callables).

    An image the method fails on (any exception of its code, e.g. a ``MemoryError``; a batch
    that fails is predicted again image by image to find it) stops the run with an
    :class:`ImageError` naming it, every image before it stored; with ``failed`` (a dict,
    ``--on-error skip``) it is left out instead and ``failed[id]`` says why.

    Processes sharing the cache never predict the same image: each uncached image is claimed
    first (:mod:`odbench.claims`); one that another live process claimed is waited for (its
    entry, or its claim when that process dies)."""
    claims = Claims(cache.folder) if cache is not None else None
    held: set[str] = set()

    def release_all() -> None:
        if claims is not None:
            for name in list(held):
                claims.release(name)
            claims.remove_if_empty()

    def usable(sample: Sample) -> tuple[np.ndarray, np.ndarray | None] | None:
        """The cached entry of ``sample``; None when there is none, or it is unreadable or not
        of the image's size (then it is predicted again and overwritten, as the feature cache
        recomputes a damaged file)."""
        if cache is None or not cache.has(sample.id):
            return None
        try:
            pred, box = cache.get(sample.id)
        except CacheError:
            return None
        return (pred, box) if pred.shape == sample.image.shape[:2] else None

    def ready(sample: Sample) -> bool:
        return usable(sample) is not None

    def claim(batch: list[tuple[Sample, Any]]) -> list[tuple[Sample, Any]]:
        if claims is None or cache is None:
            return batch
        out = []
        for sample, hit in batch:
            name = safe_name(sample.id)
            if hit is None:
                if claims.acquire(name) or claims.wait(name, partial(ready, sample)):
                    held.add(name)
                hit = usable(sample)
                if hit is not None:  # stored by another process since it was loaded
                    claims.release(name)
                    held.discard(name)
            out.append((sample, hit))
        return out

    def failure(sample: Sample, error: Exception) -> None:
        if claims is not None and safe_name(sample.id) in held:
            claims.release(safe_name(sample.id))
            held.discard(safe_name(sample.id))
        if failed is None:
            if isinstance(error, OdbenchError):  # already one line naming the image
                raise error
            raise ImageError(method.name, sample.id, error) from error
        failed[sample.id] = describe_error(error)

    def load(sample_id: str) -> tuple[Sample, tuple[np.ndarray, np.ndarray | None] | None]:
        sample = dataset.load(sample_id)
        return sample, usable(sample)

    def store(sample: Sample, pred: Any, box: Any) -> Prediction | None:
        try:
            if isinstance(pred, Future):
                pred = pred.result()
            raw = _check_map(method, sample, pred)
            if box is _BOX_LATER:
                box = method.predict_boxes([sample.image], [raw])[0]
        except Exception as e:  # the method's code failed on this image
            failure(sample, e)
            return None
        q = quantize(raw)
        if cache is not None and claims is not None:
            cache.put(sample.id, q, box)
            claims.release(safe_name(sample.id))
            held.discard(safe_name(sample.id))
        return Prediction(sample, q, None if box is None else np.asarray(box, np.float64), False)

    def run_batch(todo: list[Sample], post: Executor | None) -> list[tuple[Sample, Any, Any]]:
        images = [s.image for s in todo]
        if post is not None:
            raws = method.forward(images)
            fn = type(method).postprocess
            maps: list[Any] = [
                post.submit(fn, im, r, method.hparams) for im, r in zip(images, raws)
            ]
            box_list: list[Any] = [_BOX_LATER if boxes else None] * len(todo)
        else:
            maps = [_check_map(method, s, m) for s, m in zip(todo, method.predict(images))]
            box_list = method.predict_boxes(images, maps) if boxes else [None] * len(todo)
        return list(zip(todo, maps, box_list))

    def run_each(
        todo: list[Sample], post: Executor | None
    ) -> tuple[list[tuple[Sample, Any, Any]], tuple[Sample, Exception] | None]:
        """The batch, or (when it fails) each image alone, so only the failing one is lost:
        (what was predicted, the image that stops the run and its error, or None)."""
        try:
            return run_batch(todo, post), None
        except Exception as e:  # the method's code failed on (an image of) this batch
            if len(todo) == 1:
                if failed is None:
                    return [], (todo[0], e)
                failure(todo[0], e)
                return [], None
        out = []
        for sample in todo:
            try:
                out += run_batch([sample], post)
            except Exception as e:
                if failed is None:
                    return out, (sample, e)
                failure(sample, e)
        return out, None

    with ExitStack() as stack:
        stack.callback(release_all)  # on an error: leave no claim of ours behind
        post = _post_pool(method, max(1, workers), stack)
        depth = max(2 * batch_size, 4 * workers)
        pending: deque[_Job[Prediction | None] | Prediction] = deque()
        for loaded in _batches(_ordered(pool, load, ids, depth), batch_size):
            batch = claim(loaded)
            todo = [s for s, hit in batch if hit is None]
            results: dict[str, _Job[Prediction | None]] = {}
            if todo:
                done, stop = run_each(todo, post)
                for s, m, b in done:
                    results[s.id] = _Job(pool, store, s, m, b)
                if stop is not None:
                    for job in [*pending, *results.values()]:  # store what came before it
                        _resolve(job)
                    failure(*stop)
            for sample, hit in batch:
                if hit is not None:
                    pending.append(Prediction(sample, hit[0], hit[1], True))
                elif sample.id in results:  # not when the method failed on it (skipped)
                    pending.append(results[sample.id])
            while len(pending) > depth:
                item = _resolve(pending.popleft())
                if item is not None:
                    yield item
        while pending:
            item = _resolve(pending.popleft())
            if item is not None:
                yield item


_BOX_LATER = object()


def _resolve(item: _Job[Prediction | None] | Prediction) -> Prediction | None:
    return item.result() if isinstance(item, _Job) else item


# ----------------------------------------------------------------------------- phase 2: score


@dataclass(frozen=True)
class _Scored:
    id: str
    saliency: Any  # ImageRecord | None
    hit: bool | None
    box: np.ndarray | None
    sod: Any = None  # SodRecord | None (metrics_set="all")
    n_boxes: int = 0  # GT boxes (localization)


def score(
    predictions: Iterable[Prediction],
    protocol: Any,
    tasks: Collection[str],
    pool: Executor | None = None,
    *,
    depth: int = 8,
    on_image: Callable[[Prediction], None] | None = None,
    metrics_set: str = "basic",
) -> Records:
    """Phase 2: per-image records of ``predictions`` under ``protocol`` for ``tasks``
    ("saliency", "localization"), in their order; scored on ``pool`` when given.
    ``metrics_set="all"``: the salient-object family too (one histogram pass per image)."""
    from odbench.metrics.boxes import CorLocMeter
    from odbench.metrics.saliency import score_image
    from odbench.metrics.sod import score_image_all

    def one(p: Prediction) -> _Scored:
        s = p.sample
        if p.map.shape != s.image.shape[:2]:
            raise CacheError(
                f"map of shape {p.map.shape} for image {s.id!r} of size "
                f"{s.image.shape[:2]}: the prediction of another image; predict it again"
            )
        rec = hit = box = family = None
        n_boxes = 0
        if "saliency" in tasks:
            if s.mask is None:
                raise EvalError(f"sample {s.id!r} has no mask")
            if metrics_set == "all":
                rec, family = score_image_all(p.map, s.mask, protocol, s.id)
            else:
                rec = score_image(p.map, s.mask, protocol, s.id)
        if "localization" in tasks:
            if s.boxes is None or p.box is None:
                raise EvalError(f"sample {s.id!r} has no boxes")
            hit = bool(CorLocMeter().score(p.box, s.boxes, s.id))  # None (no GT box): False
            box = np.asarray(p.box, dtype=np.float64)
            n_boxes = len(np.asarray(s.boxes).reshape(-1, 4))
        if on_image is not None:
            on_image(p)
        return _Scored(s.id, rec, hit, box, family, n_boxes)

    scored = list(_ordered(pool, one, predictions, depth) if pool else map(one, predictions))
    if not scored:  # every image failed (on_error="skip"): the caller says so
        return Records(())
    sal = loc = None
    if "saliency" in tasks:
        sal = saliency_records([r.saliency for r in scored])
    if "localization" in tasks:
        loc = LocalizationRecords(
            hit=np.array([r.hit for r in scored], dtype=bool),
            pred_box=np.stack([np.asarray(r.box, dtype=np.float64) for r in scored]),
            n_boxes=np.array([r.n_boxes for r in scored], dtype=np.int64),
        )
    sod = None
    if "saliency" in tasks and metrics_set == "all":
        sod = sod_records([r.sod for r in scored])
    return Records(tuple(r.id for r in scored), sal, loc, sod)


# ----------------------------------------------------------------------------- phase 3: summarize


def summarize(records: Records, protocol: Any) -> dict[str, dict[str, Any]]:
    """Phase 3: dataset metrics from per-image records, in record order (the meters' sums, so
    the numbers equal a streaming evaluation's bit for bit)."""
    from odbench.metrics.boxes import CorLocMeter
    from odbench.metrics.saliency import ImageRecord, SaliencyMeter

    metrics: dict[str, dict[str, Any]] = {}
    if records.saliency is not None:
        s = records.saliency
        meter = SaliencyMeter.from_records(
            protocol,
            (
                ImageRecord(i, float(s.acc[k]), float(s.iou[k]), float(s.mae[k]), s.fbeta[k])
                for k, i in enumerate(records.ids)
            ),
        )
        metrics["saliency"] = meter.compute()
        if records.sod is not None:
            metrics["saliency"] = _with_family(metrics["saliency"], records, protocol)
    if records.localization is not None:
        loc = records.localization
        corloc = CorLocMeter()
        corloc.hits = int(np.count_nonzero(loc.hit & (loc.n_boxes > 0)))
        corloc.n = int(np.count_nonzero(loc.n_boxes > 0))
        corloc.n_no_gt = len(records.ids) - corloc.n
        metrics["localization"] = corloc.compute()  # type: ignore[assignment]
    return metrics


def _with_family(base: dict[str, Any], records: Records, protocol: Any) -> dict[str, Any]:
    """``base`` (the SaliencyMeter's summary) plus the family's keys and ``curves``."""
    from odbench.metrics.sod import SodMeter, SodRecord

    f = records.sod
    assert f is not None
    meter = SodMeter.from_records(
        protocol,
        (
            SodRecord(
                i,
                **{k: float(getattr(f, k)[n]) for k in SOD_SCALARS},
                tp=f.tp[n],
                fp=f.fp[n],
                n_gt=int(f.n_gt[n]),
                n_pix=int(f.n_pix[n]),
                protocol=protocol,
            )
            for n, i in enumerate(records.ids)
        ),
    )
    family: dict[str, Any] = meter.compute(base["fbeta_curve"])
    curves = family.pop("curves")
    return {**base, **family, "curves": {**curves, "fbeta": base["fbeta_curve"]}}


# ----------------------------------------------------------------------------- run


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
    batch_size: int = 4,
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
    for the merge)."""
    from odbench.imageio import write_png

    metrics_set = parse_metrics(metrics_set, "metrics_set").tier
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
    root = cache_dir or default_cache_root()
    outputs = [("--results-dir", results_dir), ("--save-preds", save_preds)]
    outputs.append(("--cache-dir", root if use_cache else None))
    try:
        for option, folder in outputs:
            if folder is not None:
                check_output_folder(folder, option)
    except OutputPathError as e:
        raise EvalError(str(e)) from e
    all_ids = dataset.ids()
    chosen = all_ids[:limit] if limit is not None else all_ids
    skipped = set(skip_ids)
    ids = [i for i in chosen if i not in skipped]
    if not ids:
        raise EvalError(f"dataset {dataset_name!r} has no samples to evaluate")
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
    tasks: list[str] = [t for t in ("saliency", "localization") if t in dataset.task]
    cache = None
    if use_cache:
        digest, key = cache_key(method, description)
        cache = PredictionCache(root / method.name / digest, key)

    counts = {"predicted": 0, "cached": 0}
    failed: dict[str, str] | None = {} if on_error == "skip" else None
    start, cpu_start = time.perf_counter(), time.process_time()
    with (
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="odbench") as pool,
        _progress(
            len(ids), progress_label or f"{method.name} on {dataset_name}", show_progress
        ) as advance,
    ):

        def on_image(p: Prediction) -> None:
            counts["cached" if p.cached else "predicted"] += 1
            if save_preds is not None:
                write_png(Path(save_preds) / f"{_png_name(p.sample.id)}.png", p.map)
            advance(1)

        stream = predict(
            method,
            dataset,
            ids,
            cache,
            pool,
            batch_size=batch_size,
            boxes="localization" in tasks,
            workers=workers,
            failed=failed,
        )
        records = score(
            stream,
            protocol,
            tasks,
            pool,
            depth=2 * workers,
            on_image=on_image,
            metrics_set=metrics_set,
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
    metrics = summarize(records, protocol)
    if save_preds is not None and write_boxes:
        write_boxes_json(Path(save_preds), records.arrays(), shard if sharded else None)

    when = utc_now()
    result = RunResult(
        method={**method.describe(), "overrides": overrides or {}},
        dataset=dataset_info,
        protocol={"name": protocol.name, "definition": jsonable(protocol.as_dict())},
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


def _png_name(sample_id: str) -> str:
    from odbench.cache import safe_name

    return safe_name(sample_id)


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
    result = RunResult.from_json(merged, records=records)
    if results_dir is not None:
        write_results(result, Path(results_dir))
    return result


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
