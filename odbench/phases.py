"""The three phases of a run (the shape of pycocotools' evaluate -> accumulate -> summarize),
chained by :func:`odbench.runner.run`:

1. :func:`predict` — method × dataset -> per-image entries of the prediction cache
   (:mod:`odbench.cache`; the unit of caching, resuming, sharding and merging).  Cached images
   are not predicted again, so an interrupted run resumes where it stopped.
2. :func:`score` — (sample, cached uint16 map) pairs × protocol -> typed per-image
   :class:`~odbench.results.Records` (:func:`odbench.metrics.saliency.score_image`, CorLoc hits).
   Scoring always reads the uint16 map, so a resumed run and an uninterrupted one agree exactly.
3. :func:`summarize` — records -> dataset metrics, through the same meters (and the one maxFβ
   reduction, :func:`odbench.metrics.saliency.reduce_max_fbeta`) as every other command
   (:mod:`odbench.merge` summarizes merged shards with it).

The phases stream: images are decoded by ``workers`` threads ahead of the model, and storing,
scoring and (for methods that split their work, see
:meth:`odbench.methods.base.Method.postprocess`) CPU-bound post-processing run beside it, so
the model never waits on the CPU.  Every function here takes ids explicitly, so a caller can
predict a shard of a dataset and score the union later.

Saliency (dataset task "saliency", samples with masks) and localization (task "localization",
samples with boxes: :meth:`Method.predict_boxes` -> CorLoc) are scored when the dataset has them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, TypeVar

import numpy as np

from odbench.cache import CacheError, PredictionCache, quantize, safe_name
from odbench.claims import Claims
from odbench.data.base import Dataset, Sample
from odbench.errors import OdbenchError
from odbench.methods.base import Method
from odbench.results import (
    SOD_SCALARS,
    LocalizationRecords,
    Records,
    saliency_records,
    sod_records,
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
    on_failure: Callable[[str, str], None] | None = None,
) -> Iterator[Prediction]:
    """Phase 1: yield every id's :class:`Prediction` in order, predicting (in batches of
    ``batch_size``) only the images ``cache`` does not hold and storing each as soon as it is
    predicted.  ``pool`` (threads) decodes samples ahead of the model and stores maps; a method
    with :meth:`Method.postprocess` gets ``workers`` processes for it.  ``cache`` None: nothing is
    stored (plain callables).

    An image the method fails on (any exception of its code, e.g. a ``MemoryError``; a batch
    that fails is predicted again image by image to find it) stops the run with an
    :class:`ImageError` naming it, every image before it stored; with ``on_failure``
    (``--on-error skip``) it is left out instead and ``on_failure(id, why)`` is called.

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
        if on_failure is None:
            if isinstance(error, OdbenchError):  # already one line naming the image
                raise error
            raise ImageError(method.name, sample.id, error) from error
        on_failure(sample.id, describe_error(error))

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
                if on_failure is None:
                    return [], (todo[0], e)
                failure(todo[0], e)
                return [], None
        out = []
        for sample in todo:
            try:
                out += run_batch([sample], post)
            except Exception as e:
                if on_failure is None:
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
