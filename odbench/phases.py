"""The three phases of a run (the shape of pycocotools' evaluate -> accumulate -> summarize),
chained by :func:`odbench.runner.run`:

1. predict — method × dataset -> per-image entries of the prediction cache
   (:mod:`odbench.cache`; the unit of caching, resuming, sharding and merging).  Cached images
   are not predicted again, so an interrupted run resumes where it stopped.
2. score — (sample, cached uint16 map) pairs × protocol -> typed per-image
   :class:`~odbench.results.Records` (:func:`odbench.metrics.saliency.score_image`, CorLoc hits).
   Scoring always reads the uint16 map, so a resumed run and an uninterrupted one agree exactly.
3. summarize (:mod:`odbench.summarize`) — records -> dataset metrics, through the same meters
   as every other command (:mod:`odbench.merge` summarizes merged shards with them).  A run
   summarizes as its records stream (:class:`~odbench.summarize.Summary`: the same additions in
   the same order) and holds none of them: they go to temporary files, read back as memory maps
   where they are used.

Phases 1 and 2 stream together (:func:`evaluate`): decoding, the cache look-up, CPU-bound
post-processing (:meth:`odbench.methods.base.Method.postprocess`), storing and scoring run in
``workers`` processes (:class:`odbench.forked.Pipeline`), at least two batches ahead of the
model, which runs in this process's main thread; each GT mask is decoded once, in the process
that scores it, and dropped with its image.  Every function here takes ids explicitly, so a
caller can predict a shard of a dataset and score the union later.

Saliency (dataset task "saliency", samples with masks), localization (task "localization",
samples with boxes: :meth:`Method.predict_boxes` -> CorLoc) and discovery (task "discovery":
:meth:`Method.predict_instances` -> class-agnostic AP / AR, :mod:`odbench.discovery`) are scored
when the dataset has them.
"""

from __future__ import annotations

import math
import tempfile
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import numpy as np

from odbench.cache import CacheError, PredictionCache, image_digest, quantize, safe_name
from odbench.claims import Claims
from odbench.data.base import Dataset, Sample
from odbench.discovery import check_instances, discovery_records, save_instances, score_sample
from odbench.errors import OdbenchError
from odbench.imageio import DISK_FULL
from odbench.methods.base import Method
from odbench.metrics.instances import Instances
from odbench.results import (
    SOD_SCALARS,
    LocalizationRecords,
    Records,
    SaliencyRecords,
    SodRecords,
)
from odbench.summarize import Summary

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


def check_map(method: Method, sample: Sample, pred: Any) -> np.ndarray:
    """``pred`` as an array, checked: a finite float map of the sample's size in [0, 1] (up to
    :data:`MAP_RANGE_TOLERANCE`); else an :class:`EvalError` naming the method and the sample."""
    arr = np.asarray(pred)
    if arr.shape != sample.image.shape[:2]:
        raise EvalError(
            f"method {method.name!r} returned a map of shape {arr.shape} for sample "
            f"{sample.id!r} of size {sample.image.shape[:2]}"
        )
    floating = np.issubdtype(arr.dtype, np.floating)
    # min and max are NaN when any value is, infinite when one is: two passes check it all
    lo, hi = (float(arr.min()), float(arr.max())) if floating and arr.size else (0.0, 0.0)
    if not floating or not (math.isfinite(lo) and math.isfinite(hi)):
        raise EvalError(
            f"method {method.name!r} returned a non-finite or non-float map for {sample.id!r}"
        )
    if lo < -MAP_RANGE_TOLERANCE or hi > 1.0 + MAP_RANGE_TOLERANCE:
        raise EvalError(
            f"method {method.name!r} returned a map with values in [{lo:g}, {hi:g}] for "
            f"{sample.id!r}; maps must lie in [0, 1] (scores would clip them silently)"
        )
    return arr


# ----------------------------------------------------------------------------- phases 1 + 2


def _batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass(frozen=True)
class Prediction:
    """One image's sample and its stored prediction (uint16 map, box or None)."""

    sample: Sample
    map: np.ndarray
    box: np.ndarray | None
    cached: bool
    instances: Instances | None = None


@dataclass(frozen=True)
class _Scored:
    id: str
    saliency: Any  # ImageRecord | None
    hit: bool | None
    box: np.ndarray | None
    sod: Any = None  # SodRecord | None (metrics_set="all")
    n_boxes: int = 0  # GT boxes (localization)
    cached: bool = False
    discovery: dict[str, bytes] | None = None  # match records per iou type (discovery)
    n_gt: int = 0  # GT instances, crowd regions not counted (discovery)


class MethodFailed(Exception):
    """The method's code failed on one image in a worker (post-processing, a bad map)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(error)
        self.error = error


_BOX_LATER = "box-later"  # the default box (or instances), from the checked map, in the worker


class _Work:
    """The per-image work of :func:`evaluate` that runs in the :class:`~odbench.forked.Pipeline`
    processes: decode + cache look-up (``load``), then post-processing, the map's checks,
    quantizing, storing and scoring against the GT decoded by ``load`` (``finish``)."""

    def __init__(
        self,
        method: Method,
        dataset: Dataset,
        ids: Sequence[str],
        cache: PredictionCache | None,
        score: Callable[[Prediction], _Scored],
        save_preds: Path | None,
        instances: bool = False,
    ) -> None:
        self.method, self.dataset, self.ids, self.cache = method, dataset, ids, cache
        self.instances = instances  # discovery: an entry must hold them
        self.score, self.save_preds = score, save_preds
        #: ``(i, image) -> (i, raw, box, instances)``: the method's prediction, set by
        #: :func:`evaluate` for a method that runs in the workers (:attr:`Method.in_workers`)
        self.predict: Callable[[int, np.ndarray], tuple[int, Any, Any, Any]] | None = None
        # made here, so a claim taken in a worker names this process (alive while the run is)
        self.claims = Claims(cache.folder) if cache is not None else None

    def usable(self, sample: Sample, look_again: bool = True) -> tuple[np.ndarray, Any, Any] | None:
        """The cached entry of ``sample``; None when there is none, or it is unreadable, was
        predicted from another version of the image (:func:`~odbench.cache.image_digest`), is
        not of the image's size or lacks the instances a discovery run needs (then it is
        predicted again and overwritten, as the feature cache recomputes a damaged file).
        ``look_again``: :meth:`PredictionCache.has`'s."""
        sample_id = sample.id
        if self.cache is None or not self.cache.has(sample_id, look_again):
            return None
        source = image_digest(sample.image)
        try:
            pred, box = self.cache.get(sample_id, look_again, source)
            found = (
                self.cache.get_instances(sample_id, look_again, source) if self.instances else None
            )
        except CacheError:
            return None
        if pred.shape != sample.image.shape[:2] or (self.instances and found is None):
            return None
        return pred, box, found

    def load(self, i: int) -> tuple[tuple[str, Any], Sample | None]:
        """(("done", scored) for a cached image (or one predicted here: :attr:`predict`),
        ("failed", the error) for one the method failed on here, or ("image", its pixels) for
        the model, once claimed; the sample, kept for :meth:`finish`, or None)."""
        sample = self.dataset.load(self.ids[i])
        hit = self.usable(sample, look_again=False)  # looked up again once claimed
        if hit is None and self.claims is not None:
            name = safe_name(sample.id)
            ready = partial(self.usable, sample)
            if self.claims.acquire(name) or self.claims.wait(name, lambda: ready() is not None):
                hit = ready()  # stored by another process since it was looked up
                if hit is not None:
                    self.claims.release(name)
            else:
                hit = ready()
        if hit is not None:
            return ("done", self.stored(sample, hit[0], hit[1], cached=True, found=hit[2])), None
        if self.predict is None:
            return ("image", sample.image), sample
        try:
            try:
                _, raw, box, found = self.predict(i, sample.image)
            except Exception as e:  # the method's code failed on this image
                raise MethodFailed(e) from e
            return ("done", self.finish(i, sample, ("raw", raw, box, False, found))), None
        except BaseException as e:  # no entry stored: no claim left (storing's errors go on)
            if self.claims is not None:
                self.claims.release(safe_name(sample.id))
            if isinstance(e, MethodFailed):
                return ("failed", e.error), None
            raise

    def finish(self, i: int, sample: Sample | None, payload: tuple[Any, ...]) -> _Scored | None:
        """("raw", the model's output, its box (None, _BOX_LATER: the default box of the map,
        or the method's own), whether it is :meth:`Method.forward`'s and needs
        :meth:`Method.postprocess`), or ("drop",): the method failed on it in the main
        process."""
        if sample is None or payload[0] == "drop":
            return None
        _, raw, box, post, found = payload
        method = self.method
        try:
            if post:
                raw = type(method).postprocess(sample.image, raw, method.hparams)
            raw = check_map(method, sample, raw)
            if isinstance(box, str):  # _BOX_LATER
                box = Method.predict_boxes(method, [sample.image], [raw])[0]
            if isinstance(found, str):  # _BOX_LATER: the default, one instance from the map
                found = Method.predict_instances(method, [sample.image], [raw])[0]
            if self.instances:
                found = check_instances(method.name, sample, found)
        except Exception as e:  # the method's code failed on this image
            raise MethodFailed(e) from e
        q = quantize(raw)
        if self.cache is not None and self.claims is not None:
            release = partial(self.claims.release, safe_name(sample.id))
            self.cache.put(sample.id, q, box, found, release, image_digest(sample.image))
        return self.stored(sample, q, box, cached=False, found=found)

    def stored(
        self, sample: Sample, q: np.ndarray, box: Any, cached: bool, found: Any = None
    ) -> _Scored:
        if self.save_preds is not None:
            from odbench.imageio import write_png

            write_png(Path(self.save_preds) / f"{safe_name(sample.id)}.png", q)
            if self.instances and isinstance(found, Instances):
                image_id = self.dataset.gt_image_id(sample.id)
                save_instances(Path(self.save_preds), sample.id, found, image_id)
        box = None if box is None else np.asarray(box, np.float64)
        return self.score(Prediction(sample, q, box, cached, found))


def evaluate(
    method: Method,
    dataset: Dataset,
    ids: Sequence[str],
    cache: PredictionCache | None,
    protocol: Any,
    tasks: Collection[str],
    *,
    batch_size: int = 4,
    workers: int = 1,
    metrics_set: str = "basic",
    started: Callable[[], None] | None = None,
    on_image: Callable[[str, bool], None] | None = None,
    on_failure: Callable[[str, str], None] | None = None,
    save_preds: Path | None = None,
    discovery: tuple[Any, tuple[str, ...]] | None = None,
    summary: Summary | None = None,
) -> Records:
    """Phases 1 and 2, streamed: per-image records of every id, in order, under ``protocol``
    for ``tasks`` ("saliency", "localization").  Images ``cache`` holds are scored from it;
    the others are predicted in batches of ``batch_size`` by the model in this thread, each
    stored as soon as it is predicted (``cache`` None: nothing is stored).  Decoding, the cache
    look-up, :meth:`Method.postprocess`, the map's checks, storing and scoring run in
    ``workers`` processes (:class:`odbench.forked.Pipeline`: this one and ``workers - 1``
    forked from it), decoding at least two batches ahead of the model; each GT is decoded
    once, in the process that scores it.  ``started()`` once the workers are forked (a
    progress bar's thread starts there), ``on_image(id, cached)`` after each image,
    ``save_preds``: 16-bit PNG maps written there.  ``discovery``: (discovery protocol, iou
    types) for the task "discovery": each image's instances (:meth:`Method.predict_instances`,
    after its map) are stored with it and matched to its GT.
    The records are streamed to temporary files as they come (the returned arrays are
    read-only memory maps of them) and added to ``summary`` (:class:`Summary`), whose metrics
    are then :func:`~odbench.summarize.summarize` 's of the records, so the run's memory does
    not grow with the dataset.

    An image the method fails on (any exception of its code, e.g. a ``MemoryError``; a batch
    that fails is predicted again image by image to find it) stops the run with an
    :class:`ImageError` naming it, every image before it stored; with ``on_failure``
    (``--on-error skip``) it is left out instead and ``on_failure(id, why)`` is called.

    Processes sharing the cache never predict the same image: each uncached image is claimed
    first (:mod:`odbench.claims`); one that another live process claimed is waited for (its
    entry, or its claim when that process dies)."""
    import cv2  # noqa: F401  (loaded before the pipeline starts: it runs it single-threaded)

    from odbench.forked import Pipeline
    from odbench.scoring.folders import keep_freed_memory

    keep_freed_memory()  # maps of a few hundred KB per image: no page faults for each
    score_one = partial(_score_one, protocol, tasks, metrics_set, discovery)
    work = _Work(method, dataset, ids, cache, score_one, save_preds, discovery is not None)
    claims = work.claims
    held: set[str] = set()  # claimed (by any of the processes), not stored yet
    own_boxes = "localization" in tasks and type(method).predict_boxes is not Method.predict_boxes
    # a method's own instances (MaskCut), or the default's from its own boxes, need the model
    own_instances = discovery is not None and (
        type(method).predict_instances is not Method.predict_instances
        or type(method).predict_boxes is not Method.predict_boxes
    )
    split = method.has_postprocess() and not own_boxes and not own_instances
    split = split and not method.in_workers  # predict() in the workers: nothing to split

    def release(sample_id: str) -> None:
        if claims is not None and safe_name(sample_id) in held:
            claims.release(safe_name(sample_id))
            held.discard(safe_name(sample_id))

    ahead = [0, 0]  # indices [first not taken, first not loaded]: loaded ahead, maybe claimed

    def release_all() -> None:
        """Once the workers are stopped: no claim of ours left (another process would wait on
        it while this one lives): the model's, and those the workers took for images loaded
        ahead of an error (released, unless stored meanwhile; a claim not ours stays)."""
        if claims is not None:
            names = held | {safe_name(ids[i]) for i in range(*ahead)}
            for name in names:
                claims.release(name)
            claims.remove_if_empty()

    def failure(sample_id: str, error: BaseException) -> None:
        release(sample_id)
        if on_failure is None:
            if isinstance(error, OdbenchError):  # already one line naming the image
                raise error
            raise ImageError(method.name, sample_id, error) from error
        on_failure(sample_id, describe_error(error))

    def run_batch(todo: list[tuple[int, np.ndarray]]) -> list[tuple[int, Any, Any, Any]]:
        images = [image for _, image in todo]
        raws = method.forward(images) if split else method.predict(images)
        if len(raws) != len(images):
            raise EvalError(
                f"method {method.name!r} returned {len(raws)} maps for {len(images)} images"
            )
        maps = raws
        if own_boxes or own_instances:
            maps = [_check_map_shape(method, ids[i], im, m) for (i, im), m in zip(todo, raws)]
        if own_boxes:
            box_list: list[Any] = list(method.predict_boxes(images, maps))
        else:
            box_list = [_BOX_LATER if "localization" in tasks else None] * len(todo)
        found: list[Any] = [_BOX_LATER if discovery is not None else None] * len(todo)
        if own_instances:
            found = list(method.predict_instances(images, maps))
            if len(found) != len(todo):
                raise EvalError(
                    f"method {method.name!r} returned {len(found)} instance sets for "
                    f"{len(todo)} images"
                )
        return [(i, raw, box, f) for (i, _), raw, box, f in zip(todo, raws, box_list, found)]

    def run_each(
        todo: list[tuple[int, np.ndarray]],
    ) -> tuple[list[tuple[int, Any, Any, Any]], tuple[int, Exception] | None]:
        """The batch, or (when it fails) each image alone, so only the failing one is lost:
        (what was predicted, the image that stops the run and its error, or None)."""
        try:
            return run_batch(todo), None
        except Exception as e:  # the method's code failed on (an image of) this batch
            if len(todo) == 1:
                return [], (todo[0][0], e)
        out = []
        for item in todo:
            try:
                out += run_batch([item])
            except Exception as e:
                return out, (item[0], e)
        return out, None

    if method.in_workers:
        work.predict = lambda i, image: run_batch([(i, image)])[0]
    rows = _Rows(summary)
    depth = max(2 * batch_size, 2 * workers, 4)  # decoded ahead: two batches at least
    with ExitStack() as stack:
        stack.callback(release_all)  # on an error: leave no claim of ours behind
        pipe = stack.enter_context(Pipeline(work.load, work.finish, len(ids), workers, depth))
        stack.callback(lambda: ahead.__setitem__(1, pipe.written))  # after the workers stop
        if cache is not None and not method.in_workers:  # (after forking) the model's
            # process hands its entries to a thread: the model never waits on the disk; with
            # no model there (in_workers), writing inline costs less CPU (~0.1 ms per image)
            stack.enter_context(cache.writing_behind())
        if started is not None:
            started()
        order: deque[int] = deque()  # indices whose result is still to be taken, in order
        known: dict[int, _Scored] = {}  # results known here (cached images)

        def emit(i: int) -> None:
            ahead[0] = i + 1
            if i in known:
                result = known.pop(i)
            else:
                ok, value = pipe.finished(i)
                if not ok:
                    if not isinstance(value, MethodFailed):
                        raise value
                    failure(ids[i], value.error)
                    return
                result = value
            if result is not None:
                held.discard(safe_name(ids[i]))  # released where it was stored
                rows.add(ids[i], result)
                if on_image is not None:
                    on_image(ids[i], result.cached)

        def stop(before: int, error: BaseException) -> NoReturn:
            """The images before ``before`` stored and taken, then the error."""
            while order and order[0] < before:
                emit(order.popleft())
            raise error

        for batch in _batches(pipe.loaded(), batch_size):
            todo = []
            for i, (ok, value) in batch:
                if not ok:
                    stop(i, value)
                order.append(i)
                kind, payload = value
                if kind == "done":
                    known[i] = payload
                elif kind == "failed":  # in a worker (Method.in_workers); claim released there
                    order.pop()
                    if on_failure is None:
                        stop(i, _as_image_error(method.name, ids[i], payload))
                    on_failure(ids[i], describe_error(payload))
                else:
                    if claims is not None:
                        held.add(safe_name(ids[i]))
                    todo.append((i, payload))
            while todo:
                done, stopped = run_each(todo)
                for i, raw, box, found in done:
                    pipe.submit(i, ("raw", raw, box, split, found))
                if stopped is None:
                    break
                k, error = stopped
                pipe.submit(k, ("drop",))
                if on_failure is None:
                    try:
                        failure(ids[k], error)
                    except OdbenchError as e:
                        stop(k, e)
                failure(ids[k], error)
                todo = [t for t in todo if t[0] > k]
            while len(order) > depth:
                emit(order.popleft())
        while order:
            emit(order.popleft())
    return rows.records(tasks, metrics_set, discovery is not None)


def _as_image_error(method: str, sample_id: str, error: BaseException) -> OdbenchError:
    """The error that stops a run at an image the method failed on: one line naming it."""
    return error if isinstance(error, OdbenchError) else ImageError(method, sample_id, error)


def _check_map_shape(method: Method, sample_id: str, image: np.ndarray, pred: Any) -> np.ndarray:
    return check_map(method, Sample(sample_id, image), pred)


def _score_one(
    protocol: Any,
    tasks: Collection[str],
    metrics_set: str,
    discovery: tuple[Any, tuple[str, ...]] | None,
    p: Prediction,
) -> _Scored:
    """One image's records under ``protocol`` (and ``discovery``: its protocol, iou types)."""
    from odbench.metrics.boxes import CorLocMeter
    from odbench.metrics.saliency import score_image
    from odbench.metrics.sod import score_image_all

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
    matched, n_gt = None, 0
    if "discovery" in tasks and discovery is not None:
        if p.instances is None or s.instances is None:
            raise EvalError(f"sample {s.id!r} has no instances")
        matched = score_sample(s, p.instances, *discovery)
        n_gt = int(np.count_nonzero(~s.instances.iscrowd))
    return _Scored(s.id, rec, hit, box, family, n_boxes, p.cached, matched, n_gt)


class _Spool:
    """One per-image field (its rows all of one dtype and shape) appended, as the images come,
    to an unnamed temporary file (:func:`tempfile.TemporaryFile`: never visible, gone with the
    last reference, whatever ends the process), read back as a read-only memory map whose pages
    are read only where the records are used: a run holds no per-image row in memory."""

    def __init__(self, row: np.ndarray) -> None:
        self.dtype, self.shape = row.dtype, row.shape
        self.file = tempfile.TemporaryFile(prefix="odbench-records-")

    def write(self, row: np.ndarray) -> None:
        try:
            self.file.write(row.tobytes())
        except OSError as e:
            _raise_naming_temp_folder(e)

    def array(self, n: int) -> np.ndarray:
        """The ``n`` rows written, memory-mapped (the map keeps the file; it is closed here)."""
        with self.file:
            try:
                self.file.flush()
            except OSError as e:
                _raise_naming_temp_folder(e)
            return np.memmap(self.file, self.dtype, "r", shape=(n, *self.shape))


def _raise_naming_temp_folder(error: OSError) -> NoReturn:
    """``error``; a full disk met writing an unnamed temporary file with the temporary folder
    as its file name (the error line said "the output folder": not where space is missing)."""
    if error.errno in DISK_FULL and not error.filename:
        raise OSError(error.errno, error.strerror, tempfile.gettempdir()) from error
    raise error


class _Rows:
    """Per-image records written, as they come, to one :class:`_Spool` per field (and added to
    the run's :class:`Summary`), so the run's memory does not grow with the dataset but for the
    ids (references to the caller's strings) and discovery's match records."""

    def __init__(self, summary: Summary | None = None) -> None:
        self.summary, self.count = summary, 0
        self.ids: list[str] = []
        self.spools: dict[str, _Spool] = {}
        self.matches: list[dict[str, bytes]] = []  # discovery: JSON match records per image
        self.n_gt: list[int] = []  # discovery: GT instances per image

    def add(self, sample_id: str, r: _Scored) -> None:
        """Add the records of image ``sample_id`` (the caller's id string, shared, not a copy)."""
        row: dict[str, Any] = {}
        if r.saliency is not None:
            row.update({k: getattr(r.saliency, k) for k in ("acc", "iou", "mae", "fbeta")})
        if r.hit is not None:
            row.update(hit=np.asarray(r.hit, bool), pred_box=r.box, n_boxes=r.n_boxes)
        if r.sod is not None:
            row.update({k: getattr(r.sod, k) for k in (*SOD_SCALARS, "tp", "fp", "n_gt", "n_pix")})
        for key, value in row.items():  # the dtype of each field in the records
            row[key] = value = np.asarray(value, _DTYPES.get(key, np.float64))
            spool = self.spools.get(key)
            if spool is None:
                spool = self.spools[key] = _Spool(value)
            spool.write(value)
        if r.discovery is not None:
            self.matches.append(r.discovery)
            self.n_gt.append(r.n_gt)
        if self.summary is not None:
            self.summary.add(sample_id, row)
        self.ids.append(sample_id)
        self.count += 1

    def records(self, tasks: Collection[str], metrics_set: str, discovery: bool = False) -> Records:
        if not self.count:  # every image failed (on_error="skip"): the caller says so
            return Records(())
        a = {k: spool.array(self.count) for k, spool in self.spools.items()}
        sal = loc = sod = None
        if "saliency" in tasks:
            sal = SaliencyRecords(acc=a["acc"], iou=a["iou"], mae=a["mae"], fbeta=a["fbeta"])
            if metrics_set == "all":
                sod = SodRecords(**{k: a[k] for k in (*SOD_SCALARS, "tp", "fp", "n_gt", "n_pix")})
        if "localization" in tasks:
            loc = LocalizationRecords(hit=a["hit"], pred_box=a["pred_box"], n_boxes=a["n_boxes"])
        disc = None
        if "discovery" in tasks and discovery:
            disc = discovery_records(self.matches, self.n_gt)
        return Records(tuple(self.ids), sal, loc, sod, disc)


#: The dtype of each integer or boolean record field (the others are float64).
_DTYPES: dict[str, Any] = {
    "hit": bool,
    "n_boxes": np.int64,
    "tp": np.int64,
    "fp": np.int64,
    "n_gt": np.int64,
    "n_pix": np.int64,
}
