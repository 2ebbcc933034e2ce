"""``odbench eval``: run a method over a dataset, score it, write a results JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from odbench.commands import options
from odbench.commands.stopping import interrupted_in_one_line
from odbench.errors import UserError

#: What an interrupted eval keeps (its cached images), and how to resume.
RESUME = "the images finished are cached: run the same command again to resume where it stopped"


def parse_set(items: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are TOML literals (``3``, ``0.5``, ``true``, ``"text"``,
    ``[1, 2]``), Python's ``True`` / ``False``, JSON, then the raw text."""
    import tomllib

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"--set {item!r}: expected key=value")
        python_bool = {"True": True, "False": False}
        try:
            value: Any = python_bool.get(raw.strip())
            if value is None:
                value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
        out[key] = value
    return out


@click.command("eval")
@click.option("--method", "method_name", required=True, help="Registered method name.")
@click.option("--dataset", "dataset_name", required=True, help="Registered dataset name.")
@options.protocol()
@click.option("--limit", type=int, default=None, help="Evaluate only the first N samples.")
@options.device()
@click.option(
    "--batch-size",
    type=int,
    default=None,
    help="Images per forward of the method (default: its card's batch_size).",
)
@options.metrics(
    "basic: Acc, IoU, maxFβ, MAE; all: also S, E, weighted/adaptive/mean Fβ, Dice, BER, "
    "AUC and the curves; or a comma-separated list of result keys, e.g. s_measure,mae "
    "(shown; the results JSON keeps all that was computed).",
    default="basic",
    name="metrics_set",
)
@options.workers(
    "Processes decoding images ahead of the model, post-processing, storing and scoring "
    "them (this one and N-1 forked; 1: all here, in turn); CPU-only methods (center-prior, "
    "wctr) predict in each of them.",
    default=2,
)
@click.option(
    "--save-preds",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write 16-bit PNG maps named by sample id (and boxes.json; with --shard I/N, "
    "boxes.shard-I-of-N.json) here; on a discovery dataset also the instances as a COCO-results "
    "file, coco_instances_results.json, that odbench score-detections scores to this run's "
    "numbers.",
)
@options.data_root()
@click.option(
    "--split",
    default=None,
    help="Dataset split, e.g. val2017 for a COCO folder holding several annotation files.",
)
@options.on_mismatch(
    "Images whose GT mask has another size: refuse (listing them all), or leave them out "
    "(their ids go into the results JSON)."
)
@click.option(
    "--on-error",
    type=click.Choice(["error", "skip"]),
    default="error",
    show_default=True,
    help="An image the method fails on (e.g. out of memory): stop with one line naming it "
    "(the images before it stay cached, so a re-run resumes), or leave it out (its id and the "
    "error go into the results JSON).  An unreadable or corrupt input image is never "
    "skipped: one line names the file to fix.",
)
@click.option(
    "--backbone",
    default=None,
    help="Feature extractor of the method (odbench list features), e.g. sd-tiny, dino-tiny.",
)
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    default=None,
    help="Trained methods: an `odbench train` run folder (RUN_DIR).",
)
@click.option(
    "--set",
    "set_items",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a hyperparameter (TOML literal); repeatable.",
)
@click.option(
    "--iou-type",
    type=click.Choice(["bbox", "segm"]),
    default=None,
    help="Discovery datasets (class-agnostic AP / AR): bbox only, or segm too (refused on "
    "boxes-only data such as VOC).  Default: segm too when the data has instance masks.",
)
@click.option(
    "--max-dets",
    type=click.IntRange(min=10),
    default=None,
    help="Discovery datasets: detections per image scored (default: the dataset's protocol, "
    "100; LVIS 300).",
)
@options.results_dir("Folder of results JSON files (the results store).")
@click.option(
    "--cache-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Prediction cache (default: $ODBENCH_CACHE or the user cache folder).",
)
@click.option(
    "--shard",
    "shard_spec",
    default=None,
    metavar="I/N",
    help="Evaluate only shard I of N (every N-th image from the I-th), e.g. "
    "$SLURM_ARRAY_TASK_ID/8; `odbench merge` joins the N results.",
)
def eval_cmd(
    method_name: str,
    dataset_name: str,
    protocol: str,
    limit: int | None,
    device: str,
    batch_size: int | None,
    workers: int,
    metrics_set: str,
    save_preds: Path | None,
    data_root: Path | None,
    split: str | None,
    on_mismatch: str,
    on_error: str,
    backbone: str | None,
    checkpoint: Path | None,
    set_items: tuple[str, ...],
    iou_type: str | None,
    max_dets: int | None,
    results_dir: Path,
    cache_dir: Path | None,
    shard_spec: str | None,
) -> None:
    """Run a method over a dataset, score it and write a results JSON.

    Predictions are cached per image (keyed on the method's code, card, hyperparameters and the
    dataset; see `odbench cache info`), so an interrupted run resumes where it stopped.  Under a
    launcher (`torchrun -m odbench eval …`, `accelerate launch -m odbench eval …`) every process
    evaluates its share and the first writes the one results JSON (docs/cluster.md)."""
    from odbench.distributed import Shard
    from odbench.imageio import read_warnings
    from odbench.metrics.selection import parse_metrics
    from odbench.runner import run_eval

    with read_warnings() as notes, interrupted_in_one_line(RESUME):
        selection = parse_metrics(metrics_set)
        shard = Shard.parse(shard_spec) if shard_spec is not None else None
        result = run_eval(
            method_name,
            dataset_name,
            protocol,
            device=device,
            overrides=parse_set(set_items),
            backbone=backbone,
            checkpoint=checkpoint,
            data_root=data_root,
            split=split,
            on_mismatch=on_mismatch,
            on_error=on_error,
            limit=limit,
            batch_size=batch_size,
            workers=workers,
            cache_dir=cache_dir,
            save_preds=save_preds,
            results_dir=results_dir,
            show_progress=True,
            shard=shard,
            metrics_set=selection,  # parsed once, here
            iou_type=iou_type,
            max_dets=max_dets,
        )
    if result.info.get("rank"):  # a launch's other ranks: rank 0 reports
        return
    for line in notes:  # e.g. GT masks stored as 0/1: one line
        click.echo(f"warning: {line}", err=True)
    skipped = result.dataset.get("skipped_ids") or []
    if skipped:
        click.echo(
            f"warning: {len(skipped)} image(s) left out for a size mismatch "
            "(--on-mismatch skip; listed in the results JSON)",
            err=True,
        )
    failed = result.dataset.get("failed_ids") or {}
    if failed:
        first, why = next(iter(failed.items()))
        click.echo(
            f"warning: the method failed on {len(failed)} image(s), left out (--on-error skip; "
            f"listed with the errors in the results JSON), e.g. {first!r}: {why}",
            err=True,
        )
    info = result.info
    part = f" shard {shard}" if shard is not None and not shard.whole else ""
    procs = f", {info['processes']} processes" if info.get("processes") else ""
    found = result.protocol.get("discovery")
    protocol_line = result.protocol_name + (f" + {found['name']}" if found else "")
    click.echo(
        f"{result.method_name} on {result.dataset_name}{part} ({result.n_evaluated} images, "
        f"protocol {protocol_line}, device {info['device']}, {info['n_predicted']} "
        f"predicted, {info['n_cached']} from cache, {info['wall_time_s']:.1f} s{procs})"
    )
    keys = None if selection.spec in ("basic", "all") else selection.keys
    from odbench.summary import format_metrics

    for line in format_metrics(result.metrics, keys):
        click.echo(line)
    if info["cache"] is not None:
        from odbench.cache import cache_dir_option

        option = cache_dir_option(cache_dir)
        click.echo(
            f"cache: {info['cache']} (odbench cache info{option}; "
            f"odbench cache clear --method {result.method_name}{option})"
        )
    click.echo(f"results: {result.path}")
