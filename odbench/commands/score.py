"""``odbench score`` and ``odbench score-boxes``: the command line of :mod:`odbench.scoring`
(options, tables, JSON output, warning lines); no torch imported."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from odbench.commands import options
from odbench.errors import UserError
from odbench.metrics.selection import MetricSelection


@contextmanager
def _warning_lines() -> Iterator[None]:
    """The warnings raised while scoring (RGB maps converted, 0/1 masks, pairs left out) as
    ``warning:`` lines on stderr, each kind summarised in one line, after the work (before
    the error line when it failed)."""
    from odbench.imageio import read_warnings

    try:
        with read_warnings() as notes:
            yield
    finally:
        for line in sorted(notes):
            click.echo(f"warning: {line}", err=True)


def _given(name: str) -> bool:
    """Whether the option of parameter ``name`` was given (command line or environment), not
    left at its default."""
    source = click.get_current_context().get_parameter_source(name)
    return source not in (None, click.core.ParameterSource.DEFAULT)


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


def _rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    """(long name, key) of the metrics in ``result``, in the catalog's order (basic ones
    first, the family after)."""
    from odbench.metrics.catalog import METRICS

    return [(m.name, m.key) for m in METRICS.values() if m.key in result]


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
@options.results_dir("--config: the results store.")
@options.protocol(optional=True)
@options.metrics(
    "basic (default): Acc, IoU, maxFβ, MAE; all: also S, E, weighted/adaptive/mean Fβ, "
    "Dice, BER, AUC and the curves; or a comma-separated list of result keys, e.g. "
    "s_measure,weighted_fbeta,mae (an unknown name lists the valid ones)."
)
@options.workers(
    "Processes (threads outside Linux) decoding and scoring images (default: the cores available)."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--subset-of-gt",
    is_flag=True,
    help="Score only the GT masks that have a prediction (default: every GT needs one).",
)
@options.on_mismatch(
    "Pairs of different aspect ratio (or any size difference, under protocols that do "
    "not resize): refuse, or leave them out (listed in skipped_ids)."
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

    # parsed once, here, before anything is read; handed on as it is
    selection = parse_metrics(metrics) if metrics is not None else None
    if config_path is not None:
        if pred_dir is not None or gt_dir is not None:
            raise UserError("--config replaces --pred-dir and --gt-dir: give one or the other")
        if subset_of_gt or on_mismatch != "error":
            raise UserError(
                "--subset-of-gt and --on-mismatch skip go with --pred-dir/--gt-dir; --config "
                "scores only complete, matching folders (its report lists what to fix)"
            )
        _score_config(config_path, protocol, selection, workers, results_dir, as_json)
        return
    if pred_dir is None or gt_dir is None:
        raise UserError("give --pred-dir and --gt-dir (or --config runs.toml)")
    if _given("results_dir"):
        raise UserError(
            "--results-dir goes with --config (the results store); --pred-dir/--gt-dir write "
            "nothing: print the result with --json, or list the folders in a runs.toml"
        )
    from odbench.metrics.protocols import DEFAULT_PROTOCOL
    from odbench.scoring.folders import score_folders

    with _warning_lines():
        result = score_folders(
            pred_dir,
            gt_dir,
            protocol or DEFAULT_PROTOCOL,
            subset_of_gt=subset_of_gt,
            on_mismatch=on_mismatch,
            metrics=selection or "basic",
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
    metrics: MetricSelection | None,
    workers: int | None,
    results_dir: Path,
    as_json: bool,
) -> None:
    from odbench.commands.stopping import interrupted_in_one_line
    from odbench.scoring.config import score_config

    kept = "the pairs finished are stored: run the same command again to score the rest"
    with _warning_lines(), interrupted_in_one_line(kept):
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
    --pred that is not in --gt is an error.  An image of --gt with no box ([]) is left out of
    CorLoc and counted, as LOST and TokenCut do.
    """
    from odbench.scoring.boxes import score_box_files

    result = score_box_files(pred_path, gt_path)
    if as_json:
        click.echo(json.dumps(result))
        return
    rows = [
        ("CorLoc (%)", f"{result['corloc']:.2f}"),
        ("hits", f"{result['hits']}/{result['n_images']}"),
    ]
    if result["n_no_gt"]:
        rows.append(("no GT box (left out)", str(result["n_no_gt"])))
    _print_table("odbench score-boxes", rows)
