"""``odbench score`` and ``odbench score-boxes``: score saved predictions (no torch imported).

``score`` matches prediction maps to GT masks by file stem (``0001.png`` <-> ``0001.jpg``);
a prediction without GT, a GT without prediction, two files with one stem, an unreadable
image or a size mismatch the protocol does not resolve is an error naming the file(s).
``score-boxes`` reads ``{image_id: [x1, y1, x2, y2]}`` predictions and
``{image_id: [[x1, y1, x2, y2], ...]}`` GT boxes (continuous pixel coordinates); an image
missing from the predictions (or predicted as ``null``) counts as a miss.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from odbench.cli import UserError, results_dir_option, user_errors

MAX_NAMED = 5  # file names listed in one error line
CHUNK = 16  # images per worker task at most (score_methods)


def _by_stem(folder: Path, what: str) -> dict[str, Path]:
    from odbench.data.folder import index_by_stem

    files = index_by_stem(folder, what)
    if not files:
        raise UserError(f"{folder}: no images in the {what} folder")
    return files


def _name_some(paths: list[Path]) -> str:
    shown = ", ".join(str(p) for p in paths[:MAX_NAMED])
    more = len(paths) - MAX_NAMED
    return shown + (f" and {more} more" if more > 0 else "")


def default_workers() -> int:
    """The cores this process may use (``os.sched_getaffinity`` where it exists)."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def make_meter(protocol: str, metrics: str) -> Any:
    """A :class:`SaliencyMeter` (``basic``) or :class:`FamilyMeter` (``all``, or a list naming a
    family metric: :func:`odbench.metrics.selection.parse_metrics`); both have a pure
    ``score(pred, gt, id)`` and an ``add(record)``."""
    from odbench.metrics.selection import parse_metrics

    if parse_metrics(metrics).tier == "all":
        from odbench.metrics.sod import FamilyMeter

        return FamilyMeter(protocol)
    from odbench.metrics.saliency import SaliencyMeter

    return SaliencyMeter(protocol)


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
    two processes 1.6-1.7x (``odbench bench metrics``, 2 cores)."""
    from odbench.imageio import read_warnings

    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    keep_freed_memory()
    # a few images per task: handing a task to a worker costs tens of microseconds.  The first
    # image alone: it is scored before the workers are forked (they inherit what it loaded).
    size = max(1, min(CHUNK, len(items) // (4 * workers)))
    chunks = [items[:1]] + [items[k : k + size] for k in range(1, len(items), size)]
    out: list[list[Any]] = [[] for _ in meters]
    # read_warnings() catches process-wide, so it wraps all the workers (one context per thread
    # would race); RGB files converted, 0/1 masks: printed once at the end.
    with read_warnings() as notes:
        # the workers are forked before the progress bar starts its thread
        with _chunk_results(chunks, meters, workers) as results:
            with _progress(len(items), show_progress) as advance:
                for chunk_records in results:
                    for records in chunk_records:
                        for meter, record, kept in zip(meters, records, out):
                            meter.add(record)
                            kept.append(record)
                        advance()
    for line in sorted(notes):
        click.echo(f"warning: {line}", err=True)
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
            raise UserError(f"{pred_path}: {e}") from e
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
            raise UserError(str(e)) from e
    else:
        threads = ThreadPoolExecutor(max_workers=workers)
        try:
            yield threads.map(lambda chunk: _score_chunk(meters, chunk), chunks)
        finally:
            threads.shutdown(wait=True, cancel_futures=True)


def _score_chunk(meters: list[Any], chunk: list[Item]) -> list[list[Any]]:
    return [_score_item(meters, item) for item in chunk]


def score_folders(
    pred_dir: Path,
    gt_dir: Path,
    protocol: str = "odbench",
    subset_of_gt: bool = False,
    on_mismatch: str = "error",
    metrics: str = "basic",
    workers: int | None = None,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Score every prediction in ``pred_dir`` against the GT of the same stem in ``gt_dir``.

    ``subset_of_gt``: GT masks without a prediction are left out (``n_gt_skipped`` in the
    result) instead of being an error.  Sizes are checked for every pair before any scoring
    (:mod:`odbench.metrics.sizes`): a mismatch is an error listing them all, or with
    ``on_mismatch="skip"`` the pair is left out and its id listed in ``skipped_ids``.
    ``metrics="all"`` adds the salient-object family (:mod:`odbench.metrics.sod`) and its
    curves; a comma-separated list of names keeps only those metrics in the result
    (:func:`odbench.metrics.selection.parse_metrics`).  Images are decoded and scored by
    ``workers`` workers (default: the cores available; processes on Linux, threads elsewhere:
    :func:`score_methods`); records are added in file order, so the result does not depend on
    ``workers``."""
    from odbench.imageio import ImageReadError, image_size
    from odbench.metrics.selection import parse_metrics
    from odbench.metrics.sizes import describe_mismatches, protocol_mismatches

    if workers is not None and workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    selection = parse_metrics(metrics)
    meter = make_meter(protocol, metrics)
    preds = _by_stem(Path(pred_dir), "prediction")
    gts = _by_stem(Path(gt_dir), "GT")
    no_gt = sorted(preds[s] for s in preds.keys() - gts.keys())
    if no_gt:
        raise UserError(f"{len(no_gt)} prediction(s) without a GT mask: {_name_some(no_gt)}")
    no_pred = sorted(gts[s] for s in gts.keys() - preds.keys())
    if no_pred and not subset_of_gt:
        raise UserError(
            f"{len(no_pred)} GT mask(s) without a prediction: {_name_some(no_pred)} "
            "(--subset-of-gt scores only the GT masks that have one)"
        )
    stems = sorted(preds.keys() & gts.keys())
    try:
        sizes = [(stem, image_size(preds[stem]), image_size(gts[stem])) for stem in stems]
    except ImageReadError as e:
        raise UserError(str(e)) from e
    mismatched = protocol_mismatches(sizes, meter.protocol)
    if mismatched:
        line = describe_mismatches(mismatched, len(stems), "prediction")
        if on_mismatch != "skip":
            raise UserError(f"{pred_dir}: {line}; --on-mismatch skip scores the others")
        click.echo(f"warning: {pred_dir}: {line}; left out (--on-mismatch skip)", err=True)
    skipped = {m.id for m in mismatched}
    todo = [(s, preds[s], gts[s]) for s in stems if s not in skipped]
    if not todo:
        raise UserError(
            f"{pred_dir}: every prediction differs in size from its GT mask, nothing left to "
            "score; check that --pred-dir and --gt-dir are the same dataset"
        )
    score_files(todo, meter, workers, show_progress)
    result = {**meter.compute(), "n_gt_skipped": len(no_pred), "skipped_ids": sorted(skipped)}
    return selection.shown(result)


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


def _json_ready(result: dict[str, Any]) -> dict[str, Any]:
    """NaN -> null (strict JSON)."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in result.items()}


def _print_table(title: str, rows: list[tuple[str, str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in rows:
        table.add_row(name, value)
    Console().print(table)


def _fmt(value: float | None) -> str:
    return "NaN" if value is None or math.isnan(value) else f"{value:.4f}"


ROWS = (
    ("Acc", "acc"),
    ("IoU", "iou"),
    ("max Fβ", "max_fbeta"),
    ("MAE", "mae"),
    ("S-measure", "s_measure"),
    ("E-measure (adaptive)", "e_measure_adaptive"),
    ("E-measure (mean)", "e_measure_mean"),
    ("E-measure (max)", "e_measure_max"),
    ("weighted Fβ", "weighted_fbeta"),
    ("adaptive Fβ", "adaptive_fbeta"),
    ("mean Fβ", "mean_fbeta"),
    ("Dice", "dice"),
    ("BER", "ber"),
    ("AUC (ROC)", "auc_roc"),
)


def _rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, key) of the metrics in ``result``: basic ones first, the family after."""
    return [(label, key) for label, key in ROWS if key in result]


@click.command("score")
@click.option("--pred-dir", type=click.Path(path_type=Path), help="Prediction maps.")
@click.option("--gt-dir", type=click.Path(path_type=Path), help="GT masks.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=None,
    help="runs.toml listing datasets and methods' prediction folders (instead of --pred-dir "
    "and --gt-dir): validated first, results written to --results-dir.",
)
@results_dir_option("--config: the results store.")
@click.option("--protocol", default=None, help="Evaluation protocol [default: odbench].")
@click.option(
    "--metrics",
    default=None,
    metavar="basic|all|NAME,...",
    help="basic (default): Acc, IoU, maxFβ, MAE; all: also S, E, weighted/adaptive/mean Fβ, "
    "Dice, BER, AUC and the curves; or a comma-separated list of result keys, e.g. "
    "s_measure,weighted_fbeta,mae (an unknown name lists the valid ones).",
)
@click.option(
    "--workers",
    type=int,
    default=None,
    help="Processes (threads outside Linux) decoding and scoring images (default: the cores "
    "available).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--subset-of-gt",
    is_flag=True,
    help="Score only the GT masks that have a prediction (default: every GT needs one).",
)
@click.option(
    "--on-mismatch",
    type=click.Choice(["error", "skip"]),
    default="error",
    show_default=True,
    help="Pairs of different aspect ratio (or any size difference, under protocols that do "
    "not resize): refuse, or leave them out (listed in skipped_ids).",
)
def score(
    pred_dir: Path | None,
    gt_dir: Path | None,
    config_path: Path | None,
    results_dir: Path,
    protocol: str | None,
    metrics: str | None,
    workers: int | None,
    as_json: bool,
    subset_of_gt: bool,
    on_mismatch: str,
) -> None:
    """Score saved prediction maps (8/16-bit grayscale) against GT masks, matched by file stem.

    Every pair's size is checked first; a prediction of the GT's aspect ratio but another size
    is resized to the GT (bilinear) by protocols that resize, e.g. the default.  Conventions
    (thresholds, > vs >=, per-image averaging): README "Metrics and protocols",
    `odbench list protocols`.

    \b
    --config runs.toml (paths relative to the file; all checked before scoring):
      metrics = "all"                  # optional, as --metrics
      [datasets.ecssd]
      gt = "ECSSD/ground_truth_mask"   # optional: images, prefix, suffix
      [methods.wctr]
      ecssd = "preds/wctr/ECSSD"       # or a table: path, prefix, suffix
    Results go to --results-dir (leaderboard, plot, compare read them); a re-run scores only
    the pairs whose files changed."""
    from odbench.metrics.selection import parse_metrics

    with user_errors():
        if metrics is not None:
            parse_metrics(metrics)  # checked before anything is read
    if config_path is not None:
        if pred_dir is not None or gt_dir is not None:
            raise UserError("--config replaces --pred-dir and --gt-dir: give one or the other")
        if subset_of_gt or on_mismatch != "error":
            raise UserError(
                "--subset-of-gt and --on-mismatch skip go with --pred-dir/--gt-dir; --config "
                "scores only complete, matching folders (its report lists what to fix)"
            )
        _score_config(config_path, protocol, metrics, workers, results_dir, as_json)
        return
    if pred_dir is None or gt_dir is None:
        raise UserError("give --pred-dir and --gt-dir (or --config runs.toml)")
    with user_errors():
        result = score_folders(
            pred_dir,
            gt_dir,
            protocol or "odbench",
            subset_of_gt=subset_of_gt,
            on_mismatch=on_mismatch,
            metrics=metrics or "basic",
            workers=workers,
            show_progress=True,
        )
    if as_json:
        click.echo(json.dumps(_json_ready(result)))
        return
    rows = []
    for label, key in _rows(result):
        rows.append((label, _fmt(result[key])))
        if key == "max_fbeta":
            best = result["best_threshold"]
            rows.append(("best threshold", "per image" if best is None else f"{best:.4f}"))
    rows += [
        ("images", str(result["n_images"])),
        ("GT masks left out", str(result["n_gt_skipped"])),
        ("size mismatches left out", str(len(result["skipped_ids"]))),
        ("protocol", str(result["protocol"])),
    ]
    _print_table("odbench score", rows)


def _score_config(
    path: Path,
    protocol: str | None,
    metrics: str | None,
    workers: int | None,
    results_dir: Path,
    as_json: bool,
) -> None:
    from odbench.commands.score_config import score_config

    with user_errors():
        rows = score_config(path, protocol, metrics, workers, results_dir, show_progress=True)
    if as_json:
        click.echo(json.dumps([_json_ready(r) for r in rows]))
        return
    from rich.console import Console
    from rich.table import Table

    from odbench.metrics.catalog import METRICS
    from odbench.metrics.selection import SCORE_KEYS

    keys = [k for k in SCORE_KEYS if any(k in r for r in rows)]
    if len(keys) > 6:  # --metrics all: the headline ones (--json has every key)
        keys = ["max_fbeta", "mae", "s_measure", "e_measure_max", "weighted_fbeta"]
    table = Table(title=f"odbench score --config {path}")
    for column in ("method", "dataset", "status", *(METRICS[k].label for k in keys)):
        table.add_column(column)
    for r in rows:
        values = [_fmt(r[k]) if k in r else "" for k in keys]
        table.add_row(r["method"], r["dataset"], r["status"], *values)
    Console().print(table)


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise UserError(f"{path}: file not found") from e
    except OSError as e:  # a folder, no permission...
        raise UserError(f"{path}: cannot read ({e.strerror or e})") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from e


def _box(value: Any, where: str) -> list[float]:
    ok = (
        isinstance(value, list)
        and len(value) == 4
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        and all(math.isfinite(v) for v in value)
    )
    if not ok:
        raise UserError(
            f"{where}: expected a box [x1, y1, x2, y2] of 4 finite numbers, got {value!r}"
        )
    if value[2] < value[0] or value[3] < value[1]:  # e.g. [x, y, w, h] given for corners
        raise UserError(
            f"{where}: box {value!r} has x2 < x1 or y2 < y1; boxes are corners [x1, y1, x2, y2]"
        )
    return [float(v) for v in value]


def score_box_files(pred_path: Path, gt_path: Path) -> dict[str, Any]:
    """CorLoc of ``pred_path`` ({id: box or null}) against ``gt_path`` ({id: [box, ...]})."""
    from odbench.metrics.boxes import CorLocMeter

    preds = _load_json(Path(pred_path))
    gts = _load_json(Path(gt_path))
    for path, data in ((pred_path, preds), (gt_path, gts)):
        if not isinstance(data, dict):
            raise UserError(f"{path}: expected a JSON object mapping image ids to boxes")
    extra = sorted(preds.keys() - gts.keys())
    if extra:
        shown = ", ".join(extra[:MAX_NAMED]) + (" ..." if len(extra) > MAX_NAMED else "")
        raise UserError(f"{pred_path}: {len(extra)} image id(s) not in {gt_path}: {shown}")
    if not gts:
        raise UserError(f"{gt_path}: no images")
    meter = CorLocMeter()
    for image_id in sorted(gts):
        boxes = gts[image_id]
        if not isinstance(boxes, list):
            raise UserError(f"{gt_path}: {image_id}: expected a list of boxes, got {boxes!r}")
        gt_boxes = [_box(b, f"{gt_path}: {image_id}") for b in boxes]
        pred = preds.get(image_id)
        pred_box = None if pred is None else _box(pred, f"{pred_path}: {image_id}")
        meter.update(pred_box, gt_boxes, image_id)
    return meter.compute()


@click.command("score-boxes")
@click.option("--pred", "pred_path", required=True, type=click.Path(path_type=Path))
@click.option("--gt", "gt_path", required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def score_boxes(pred_path: Path, gt_path: Path, as_json: bool) -> None:
    """CorLoc: percentage of images whose predicted box has IoU >= 0.5 with a GT box.

    \b
    --pred: a JSON object {image_id: box or null}, one predicted box per image
    --gt:   a JSON object {image_id: [box, ...]}, every GT box of the image
    box:    [x1, y1, x2, y2], continuous pixel coordinates (a box covering
            pixel columns 0..9 has x1 = 0, x2 = 10)
    e.g.    pred.json {"0001": [12, 8, 140, 96], "0002": null}
            gt.json   {"0001": [[10, 5, 150, 100]], "0002": [[0, 0, 32, 32]]}

    Every image of --gt is scored: one missing from --pred (or null) is a miss; an id in
    --pred that is not in --gt is an error.
    """
    with user_errors():
        result = score_box_files(pred_path, gt_path)
    if as_json:
        click.echo(json.dumps(result))
        return
    rows = [
        ("CorLoc (%)", f"{result['corloc']:.2f}"),
        ("hits", f"{result['hits']}/{result['n_images']}"),
    ]
    _print_table("odbench score-boxes", rows)
