"""``odbench eval``: run a method over a dataset, score it, write a results JSON."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from odbench.cli import UserError, user_errors


@contextmanager
def run_errors() -> Iterator[None]:
    """:func:`odbench.cli.user_errors` plus the runner's and results' own one-line errors."""
    from odbench.evaluate import EvalError
    from odbench.results import ResultsError

    with user_errors():
        try:
            yield
        except (EvalError, ResultsError) as e:
            raise UserError(str(e)) from e


def format_metrics(metrics: dict[str, Any]) -> list[str]:
    """One line per task: ``saliency: acc 0.912  iou 0.655  max_fbeta 0.771  mae 0.083``."""
    lines = []
    if "saliency" in metrics:
        m = metrics["saliency"]
        lines.append(
            "saliency:     "
            + "  ".join(f"{k} {m[k]:.4f}" for k in ("acc", "iou", "max_fbeta", "mae"))
        )
        if m.get("best_threshold") is not None:
            lines[-1] += f"  (best threshold {m['best_threshold']:.3f})"
    if "localization" in metrics:
        m = metrics["localization"]
        lines.append(f"localization: corloc {m['corloc']:.2f}% ({m['hits']}/{m['n_images']})")
    return lines


@click.command("eval")
@click.option("--method", "method_name", required=True, help="Registered method name.")
@click.option("--dataset", "dataset_name", required=True, help="Registered dataset name.")
@click.option("--protocol", default="odbench", show_default=True, help="Evaluation protocol.")
@click.option("--limit", type=int, default=None, help="Evaluate only the first N samples.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--batch-size", type=int, default=4, show_default=True)
@click.option(
    "--save-preds",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write 16-bit PNG maps named by sample id (and boxes.json) here.",
)
@click.option(
    "--data-root",
    type=click.Path(path_type=Path),
    default=None,
    help="Where the dataset lives (default: $ODBENCH_DATA or the cache).",
)
@click.option("--backbone", default=None, help="Diffusion backbone (e.g. sd-v1-4, sd-tiny).")
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
    "--results-dir",
    type=click.Path(path_type=Path),
    default=Path("leaderboard/results"),
    show_default=True,
)
@click.option(
    "--cache-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Prediction cache (default: $ODBENCH_CACHE or the user cache folder).",
)
def eval_cmd(
    method_name: str,
    dataset_name: str,
    protocol: str,
    limit: int | None,
    device: str,
    batch_size: int,
    save_preds: Path | None,
    data_root: Path | None,
    backbone: str | None,
    checkpoint: Path | None,
    set_items: tuple[str, ...],
    results_dir: Path,
    cache_dir: Path | None,
) -> None:
    """Run a method over a dataset, score it and write a results JSON.

    Predictions are cached per image, so an interrupted run resumes where it stopped."""
    from odbench.evaluate import parse_set, run_eval
    from odbench.imageio import read_warnings

    with run_errors(), read_warnings() as notes:
        outcome = run_eval(
            method_name,
            dataset_name,
            protocol,
            device=device,
            overrides=parse_set(set_items),
            backbone=backbone,
            checkpoint=checkpoint,
            data_root=data_root,
            limit=limit,
            batch_size=batch_size,
            cache_dir=cache_dir,
            save_preds=save_preds,
            results_dir=results_dir,
            show_progress=True,
        )
    for line in notes:  # e.g. GT masks stored as 0/1: one line
        click.echo(f"warning: {line}", err=True)
    r = outcome.results
    click.echo(
        f"{r['method']['name']} on {r['dataset']['name']} "
        f"({r['dataset']['n_evaluated']} images, protocol {r['protocol']['name']}, "
        f"{outcome.n_predicted} predicted, {outcome.n_cached} from cache, "
        f"{r['wall_time_s']:.1f} s)"
    )
    for line in format_metrics(r["metrics"]):
        click.echo(line)
    click.echo(f"results: {outcome.path}")
