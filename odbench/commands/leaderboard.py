"""``odbench leaderboard`` and ``odbench compare``."""

from __future__ import annotations

from pathlib import Path

import click

from odbench.cli import UserError
from odbench.commands.evaluate import run_errors

_RESULTS_DIR = click.option(
    "--results-dir",
    type=click.Path(path_type=Path),
    default=Path("leaderboard/results"),
    show_default=True,
    help="Folder of results JSON files written by odbench eval.",
)


@click.command("leaderboard")
@click.option(
    "--task",
    type=click.Choice(["saliency", "localization", "ablation", "all"]),
    default="all",
    show_default=True,
    help="Table 1a/1c, Table 1b, the paper's Tables 3-7 (reported), or all of them.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the markdown here (atomically) instead of printing it.",
)
@click.option(
    "--all",
    "show_all",
    is_flag=True,
    help="Also show runs with overrides, on subsets (--limit) or with other card settings, "
    "labelled.",
)
@_RESULTS_DIR
def leaderboard(task: str, out: Path | None, show_all: bool, results_dir: Path) -> None:
    """Render markdown leaderboards: odbench runs beside the papers' reported rows (†).

    By default only runs with the card's settings over the full dataset are shown."""
    from odbench.imageio import atomic_write_bytes
    from odbench.leaderboard import render
    from odbench.outputs import check_output_file

    with run_errors():
        if out is not None:
            check_output_file(out, "--out")
        text = render(task, results_dir, show_all=show_all)
        if out is None:
            click.echo(text, nl=False)
        else:
            atomic_write_bytes(out, text.encode())
            click.echo(f"wrote {out}")


@click.command("compare")
@click.option("--methods", required=True, help="Two method names, comma-separated: A,B.")
@click.option("--dataset", required=True, help="Dataset both methods were evaluated on.")
@click.option("--protocol", default="odbench", show_default=True)
@click.option("--resamples", type=int, default=1000, show_default=True, help="Bootstrap resamples.")
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed.")
@_RESULTS_DIR
def compare(
    methods: str, dataset: str, protocol: str, resamples: int, seed: int, results_dir: Path
) -> None:
    """Compare two methods' latest runs image by image: 95% bootstrap CIs and a paired test."""
    from odbench.compare import compare_runs, render_compare

    names = [m.strip() for m in methods.split(",") if m.strip()]
    if len(names) != 2:
        raise UserError(f"--methods {methods!r}: give exactly two method names, e.g. A,B")
    if resamples < 100:
        raise UserError(f"--resamples {resamples}: use at least 100")
    with run_errors():
        runs, comparisons = compare_runs(
            results_dir, (names[0], names[1]), dataset, protocol, n_resamples=resamples, seed=seed
        )
    click.echo(render_compare(runs, comparisons), nl=False)
