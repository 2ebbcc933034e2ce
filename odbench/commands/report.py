"""``odbench report``: a static HTML report of several runs, or one PNG grid for a paper figure."""

from __future__ import annotations

from pathlib import Path

import click

from odbench.commands import options
from odbench.errors import UserError


def _names(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


@click.command("report")
@click.option("--dataset", required=True, help="Dataset the methods were evaluated on.")
@click.option("--methods", required=True, help="Method names, comma-separated: A,B,C.")
@options.protocol()
@options.results_dir("Folder of results JSON files written by odbench eval.")
@options.data_root()
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    help="Report folder (index.html and thumbnails), or the .png file with --grid.",
)
@click.option(
    "--task",
    type=click.Choice(["saliency", "discovery"]),
    default=None,
    help="What the page shows: saliency (maps, masks, IoU, Fβ) or multi-object discovery "
    "(class-agnostic AP / AR, per-image instance overlays, precision-recall curves; with "
    "--grid: --panel instances).  Default: saliency when every method has a saliency run on "
    "the dataset, else discovery.",
)
@click.option("-n", "n", type=int, default=8, show_default=True, help="Images per grid.")
@click.option("--ids", default=None, help="Sample ids to show as well, comma-separated.")
@click.option(
    "--row-images/--no-row-images",
    default=True,
    show_default=True,
    help="A small image in every row of the per-image table (written once, reused).",
)
@click.option(
    "--grid",
    type=int,
    default=None,
    metavar="N",
    help="Write one PNG grid of N images (rows) × methods (columns) to --out instead.",
)
@click.option(
    "--select",
    type=click.Choice(["disagree", "worst", "best"]),
    default="disagree",
    show_default=True,
    help="With --grid: images with the largest IoU spread across methods, or the lowest / "
    "highest mean IoU.",
)
@click.option(
    "--panel",
    type=click.Choice(["map", "mask", "instances"]),
    default="map",
    show_default=True,
    help="With --grid: show the soft maps or the binarised masks, or the instances of the "
    "methods' discovery runs (colour per instance, score; solid outline: matched at IoU .5, "
    "dashed: unmatched, dotted: matched a crowd region; images chosen by recall at IoU .5).",
)
def report(
    dataset: str,
    methods: str,
    protocol: str,
    results_dir: Path,
    data_root: Path | None,
    out: Path,
    n: int,
    ids: str | None,
    row_images: bool,
    task: str | None,
    grid: int | None,
    select: str,
    panel: str,
) -> None:
    """Static HTML report of runs: leaderboard, sortable per-image table, worst / best / most
    disagreeing images, IoU histograms, paired scatter, Fβ curves, run metadata; for discovery
    runs: AP / AR, per-image instance overlays (matched / unmatched at IoU .5), precision-recall
    curves at IoU .5 and .75.

    Everything is read from the results, the runs' prediction caches and the dataset; nothing is
    predicted again.  The page opens from disk (no server, no network)."""
    from odbench.report.build import build_grid, build_report

    names = _names(methods)
    if not names:
        raise UserError(f"--methods {methods!r}: give method names, e.g. A,B")
    if task is None:
        from odbench.report.discovery import has_task

        sal = has_task(results_dir, dataset, names, protocol, "saliency")
        disc = has_task(results_dir, dataset, names, protocol, "discovery")
        task = "discovery" if disc and not sal else "saliency"
    if grid is not None:
        if task == "discovery":
            panel = "instances"
        path = build_grid(
            results_dir,
            dataset,
            names,
            out,
            n=grid,
            protocol=protocol,
            data_root=data_root,
            ids=_names(ids),
            select=select,
            panel=panel,
        )
        click.echo(f"wrote {path}")
        return
    if task == "discovery":
        from odbench.report.build_discovery import build_discovery_report

        outcome = build_discovery_report(
            results_dir,
            dataset,
            names,
            out,
            protocol=protocol,
            data_root=data_root,
            n=n,
            ids=_names(ids),
            row_images=row_images,
            show_progress=True,
        )
    else:
        outcome = build_report(
            results_dir,
            dataset,
            names,
            out,
            protocol=protocol,
            data_root=data_root,
            n=n,
            ids=_names(ids),
            row_images=row_images,
            show_progress=True,
        )
    click.echo(
        f"wrote {outcome.path} ({outcome.n_images} images, {outcome.n_selected} in grids; "
        f"thumbnails: {outcome.thumbs_written} written, {outcome.thumbs_reused} reused; "
        f"{outcome.seconds:.1f} s)"
    )
