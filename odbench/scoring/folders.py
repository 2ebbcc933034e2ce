"""Prediction folders scored against GT folders, file by file, in worker processes.

``score_folders`` matches prediction maps to GT masks by file stem (``0001.png`` <->
``0001.jpg``); a prediction without GT, a GT without prediction, two files with one stem, an
unreadable image or a size mismatch the protocol does not resolve is a :class:`ScoringError`
naming the file(s).  :func:`score_methods` decodes and scores (id, prediction files, GT file)
items in worker processes; :func:`score_run` is :func:`odbench.score`.

Warnings met while reading (RGB maps converted, 0/1 masks, pairs left out for their size) are
Python warnings: ``odbench score`` prints them as ``warning:`` lines
(:func:`odbench.imageio.read_warnings`).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from odbench.metrics.protocols import DEFAULT_PROTOCOL
from odbench.scoring import ScoringError
from odbench.scoring.meters import make_meter

if TYPE_CHECKING:
    from odbench.metrics.selection import MetricSelection
    from odbench.results import RunResult

MAX_NAMED = 5  # file names listed in one error line
CHUNK = 16  # images per worker task at most (score_methods)


def _by_stem(folder: Path, what: str) -> dict[str, Path]:
    """The image files of ``folder`` by stem; an entry named like one that is not a file (a
    folder, a broken link), which listing skips, is an error naming it."""
    from odbench.data.folder import index_by_stem

    files = index_by_stem(folder, what)
    odd = not_files(folder)
    if odd:
        raise ScoringError(f"{odd[0]}: {why_not_a_file(odd[0])}")
    if not files:
        raise ScoringError(f"{folder}: no images in the {what} folder")
    return files


def not_files(folder: Path) -> list[Path]:
    """The entries of ``folder`` named like images (not hidden) that are not files, sorted."""
    import os

    from odbench.imageio import IMAGE_SUFFIXES

    with os.scandir(folder) as entries:  # the type from the listing: a stat only for links
        return sorted(
            Path(e.path)
            for e in entries
            if not e.name.startswith(".")
            and os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES
            and not e.is_file()
        )


def why_not_a_file(path: Path) -> str:
    """What ``path`` (named like an image, not a file) is, and the fix."""
    import os

    if path.is_dir():
        return "folder named like an image file; move it out (only the images belong there)"
    if path.is_symlink():
        return f"broken link (to {os.readlink(path)}); point it at the image file or remove it"
    return "not a regular file; put the image file in its place"


def _name_some(paths: list[Path]) -> str:
    shown = ", ".join(str(p) for p in paths[:MAX_NAMED])
    more = len(paths) - MAX_NAMED
    return shown + (f" and {more} more" if more > 0 else "")


def check_workers(workers: int | None) -> None:
    """Refuse a ``workers`` count below 1 (None: the default) before anything is read."""
    if workers is not None and workers < 1:
        raise ScoringError(f"--workers must be >= 1, got {workers}")


def default_workers() -> int:
    """The cores this process may use (``os.sched_getaffinity`` where it exists)."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def keep_freed_memory() -> None:
    """Ask glibc's malloc to keep freed blocks instead of returning them to the kernel.

    Scoring allocates and frees maps of a few hundred KB per image; glibc hands such blocks
    back (munmap, heap trimming) and takes them again with page faults: about 1.2 s of system
    time per 1,000 ECSSD pairs of ``--metrics all``, and TLB shootdowns across the worker
    threads.  Fixed mmap (32 MiB) and trim (64 MiB) thresholds, as ``MALLOC_MMAP_THRESHOLD_`` /
    ``MALLOC_TRIM_THRESHOLD_`` would set, remove it.  Process-wide; nothing where the C library
    is not glibc."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:  # the symbols already loaded (ctypes.util.find_library would run ldconfig each time)
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    mallopt(m_trim_threshold, 64 << 20)
    mallopt(m_mmap_threshold, 32 << 20)


def score_files(
    pairs: list[tuple[str, Path, Path]],
    meter: Any,
    workers: int | None = None,
    show_progress: bool = False,
) -> list[Any]:
    """Decode and score (id, prediction file, GT file) pairs in ``workers`` workers (default:
    the cores available; see :func:`score_methods`) and add them to ``meter`` in
    the pairs' order, so the sums do not depend on ``workers``; returns the records in order."""
    items = [(image_id, [pred_path], gt_path) for image_id, pred_path, gt_path in pairs]
    return score_methods(items, [meter], workers, show_progress)[0]


def score_methods(
    items: list[tuple[str, list[Path], Path]],
    meters: list[Any],
    workers: int | None = None,
    show_progress: bool = False,
) -> list[list[Any]]:
    """Score several methods' maps of the same images: each item is (id, one prediction file
    per meter, GT file).  A worker takes one image: it reads the GT once, prepares it once
    (:func:`odbench.metrics.saliency.prepare_gt`: the binarised mask, and weighted Fβ's distance
    transform and nearest pixels on first use) and scores every method's map against it, so
    what depends on the GT alone is computed once per GT, not once per method; it is dropped
    with the image, so it can never serve another file or a changed one.  Records are added
    to each meter in the items' order (the sums do not depend on ``workers``); returns each
    meter's records in order.

    ``workers`` > 1 are this process and ``workers - 1`` forked from it on Linux (each decodes
    and scores whole chunks of images; only the small per-image records come back:
    :func:`odbench.forked.forked_map`), threads elsewhere: threads spend a quarter of their
    time waiting for the GIL in the small per-image Python work, so two threads gave 1.3x one,
    two processes 1.6-1.7x (``odbench bench metrics``, 2 cores).  Warnings raised in the
    workers (RGB maps converted, 0/1 masks) reach the caller as Python warnings, in order."""
    check_workers(workers)
    workers = default_workers() if workers is None else workers
    keep_freed_memory()
    # a few images per task: handing a task to a worker costs tens of microseconds.  The first
    # image alone: it is scored before the workers are forked (they inherit what it loaded).
    size = max(1, min(CHUNK, len(items) // (4 * workers)))
    chunks = [items[:1]] + [items[k : k + size] for k in range(1, len(items), size)]
    out: list[list[Any]] = [[] for _ in meters]
    # the workers are forked before the progress bar starts its thread
    with _chunk_results(chunks, meters, workers) as results:
        with _progress(len(items), show_progress) as advance:
            for chunk_records in results:
                for records in chunk_records:
                    for meter, record, kept in zip(meters, records, out):
                        meter.add(record)
                        kept.append(record)
                    advance()
    return out


Item = tuple[str, list[Path], Path]


def _score_item(meters: list[Any], item: Item) -> list[Any]:
    """One image's records, one per meter: the GT read and prepared once."""
    from odbench.imageio import read_gray
    from odbench.metrics.protocols import MetricInputError
    from odbench.metrics.saliency import prepare_gt

    image_id, pred_paths, gt_path = item
    gt = read_gray(gt_path, what="mask")
    prepared: dict[Any, Any] = {}  # one per GT rule among the meters' protocols
    records = []
    for meter, pred_path in zip(meters, pred_paths, strict=True):
        pred = read_gray(pred_path, what="prediction")
        try:
            key = (meter.protocol.gt_rule, meter.protocol.center_crop)
            if key not in prepared:
                prepared[key] = prepare_gt(gt, meter.protocol)
            records.append(meter.score(pred, prepared[key], image_id))
        except MetricInputError as e:
            raise ScoringError(f"{pred_path}: {e}") from e
    return records


@contextmanager
def _chunk_results(
    chunks: list[list[Item]], meters: list[Any], workers: int
) -> Iterator[Iterator[list[list[Any]]]]:
    """The chunks' records in order: in this thread (one worker), in forked processes
    (Linux), else in threads.  Leaving the context stops the workers."""
    import sys
    from concurrent.futures import ThreadPoolExecutor

    if workers == 1 or len(chunks) < 2:
        yield (_score_chunk(meters, chunk) for chunk in chunks)
    elif sys.platform.startswith("linux"):
        from odbench.forked import WorkerDiedError, forked_map

        try:
            with forked_map(lambda i: _score_chunk(meters, chunks[i]), len(chunks), workers) as it:
                yield it
        except WorkerDiedError as e:
            raise ScoringError(str(e)) from e
    else:
        threads = ThreadPoolExecutor(max_workers=workers)
        try:
            yield threads.map(lambda chunk: _score_chunk(meters, chunk), chunks)
        finally:
            threads.shutdown(wait=True, cancel_futures=True)


def _score_chunk(meters: list[Any], chunk: list[Item]) -> list[list[Any]]:
    return [_score_item(meters, item) for item in chunk]


@dataclass
class _Scored:
    """A folder pair scored: the meter (sums added), the selection asked for, the ids scored
    and their records in order, the GT masks without a prediction, the pairs left out for
    their size, and the wall time."""

    meter: Any
    selection: Any
    ids: list[str]
    records: list[Any]
    n_gt_skipped: int
    skipped_ids: list[str]
    wall_s: float


def _score_pairs(
    pred_dir: Path,
    gt_dir: Path,
    protocol: str,
    subset_of_gt: bool,
    on_mismatch: str,
    metrics: str | MetricSelection,
    workers: int | None,
    show_progress: bool,
) -> _Scored:
    """:func:`score_folders`' work (see there) before the result is shaped."""
    from odbench.imageio import ImageReadError, image_size
    from odbench.metrics.selection import parse_metrics
    from odbench.metrics.sizes import describe_mismatches, protocol_mismatches

    check_workers(workers)
    selection = parse_metrics(metrics)
    meter = make_meter(protocol, selection)
    preds = _by_stem(Path(pred_dir), "prediction")
    gts = _by_stem(Path(gt_dir), "GT")
    no_gt = sorted(preds[s] for s in preds.keys() - gts.keys())
    if no_gt:
        raise ScoringError(f"{len(no_gt)} prediction(s) without a GT mask: {_name_some(no_gt)}")
    no_pred = sorted(gts[s] for s in gts.keys() - preds.keys())
    if no_pred and not subset_of_gt:
        raise ScoringError(
            f"{len(no_pred)} GT mask(s) without a prediction: {_name_some(no_pred)} "
            "(--subset-of-gt scores only the GT masks that have one)"
        )
    stems = sorted(preds.keys() & gts.keys())
    try:
        sizes = [(stem, image_size(preds[stem]), image_size(gts[stem])) for stem in stems]
    except ImageReadError as e:
        raise ScoringError(str(e)) from e
    mismatched = protocol_mismatches(sizes, meter.protocol)
    if mismatched:
        line = describe_mismatches(mismatched, len(stems), "prediction")
        if on_mismatch != "skip":
            raise ScoringError(f"{pred_dir}: {line}; --on-mismatch skip scores the others")
        warnings.warn(f"{pred_dir}: {line}; left out (--on-mismatch skip)", stacklevel=3)
    skipped = {m.id for m in mismatched}
    todo = [(s, preds[s], gts[s]) for s in stems if s not in skipped]
    if not todo:
        raise ScoringError(
            f"{pred_dir}: every prediction differs in size from its GT mask, nothing left to "
            "score; check that --pred-dir and --gt-dir are the same dataset"
        )
    start = time.perf_counter()
    records = score_files(todo, meter, workers, show_progress)
    wall = time.perf_counter() - start
    ids = [s for s, _, _ in todo]
    return _Scored(meter, selection, ids, records, len(no_pred), sorted(skipped), wall)


def score_folders(
    pred_dir: Path,
    gt_dir: Path,
    protocol: str = DEFAULT_PROTOCOL,
    subset_of_gt: bool = False,
    on_mismatch: str = "error",
    metrics: str | MetricSelection = "basic",
    workers: int | None = None,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Score every prediction in ``pred_dir`` against the GT of the same stem in ``gt_dir``;
    the metrics asked for, ``n_images``, ``protocol``, ``n_gt_skipped`` and ``skipped_ids``
    (what ``odbench score --json`` prints).

    ``subset_of_gt``: GT masks without a prediction are left out (``n_gt_skipped`` in the
    result) instead of being an error.  Sizes are checked for every pair before any scoring
    (:mod:`odbench.metrics.sizes`): a mismatch is an error listing them all, or with
    ``on_mismatch="skip"`` the pair is left out (a warning) and its id listed in
    ``skipped_ids``.  ``metrics="all"`` adds the salient-object family
    (:mod:`odbench.metrics.sod`) and its curves; a comma-separated list of names keeps only
    those metrics in the result (:func:`odbench.metrics.selection.parse_metrics`; or the
    selection a command parsed already).  Images are
    decoded and scored by ``workers`` workers (default: the cores available; processes on
    Linux, threads elsewhere: :func:`score_methods`); records are added in file order, so the
    result does not depend on ``workers``."""
    done = _score_pairs(
        pred_dir, gt_dir, protocol, subset_of_gt, on_mismatch, metrics, workers, show_progress
    )
    result = {
        **done.meter.compute(),
        "n_gt_skipped": done.n_gt_skipped,
        "skipped_ids": done.skipped_ids,
    }
    return done.selection.shown(result)  # type: ignore[no-any-return]


def score_run(
    pred_dir: str | Path,
    gt_dir: str | Path,
    *,
    metrics: str = "basic",
    protocol: str = DEFAULT_PROTOCOL,
    method: str | None = None,
    dataset: str | None = None,
    subset_of_gt: bool = False,
    on_mismatch: str = "error",
    workers: int | None = None,
    show_progress: bool = False,
) -> RunResult:
    """:func:`odbench.score`: :func:`score_folders` as a :class:`~odbench.results.RunResult`
    (nothing written).  ``metrics["saliency"]`` holds the values ``odbench score --json``
    prints (the same numbers); ``dataset`` holds ``n_gt_skipped`` and ``skipped_ids``;
    ``records`` the per-image scores in id order.  ``method`` and ``dataset`` name the run
    (default: the folders' names)."""
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    done = _score_pairs(
        pred_dir, gt_dir, protocol, subset_of_gt, on_mismatch, metrics, workers, show_progress
    )
    from odbench.scoring.run import scored_run

    return scored_run(
        {"name": method or pred_dir.name, "predictions": str(pred_dir.absolute())},
        {
            "name": dataset or gt_dir.name,
            "gt": str(gt_dir.absolute()),
            "n_gt_skipped": done.n_gt_skipped,
            "skipped_ids": done.skipped_ids,
        },
        done.meter.protocol,
        done.selection.tier,
        done.selection.shown(done.meter.compute()),
        done.ids,
        done.records,
        {
            "source": "odbench.score",
            "wall_time_s": done.wall_s,
            "images_per_s": len(done.ids) / done.wall_s if done.wall_s > 0 else None,
        },
    )


@contextmanager
def _progress(total: int, show: bool) -> Iterator[Callable[[], None]]:
    """A rich progress bar on a terminal's stderr (nothing otherwise)."""
    if not show:
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True)
    with Progress(console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task("scoring", total=total)
        yield lambda: bar.advance(task)
