"""``odbench leaderboard`` and ``odbench compare``."""

from __future__ import annotations

from pathlib import Path

import click

from odbench.commands import options
from odbench.errors import UserError

_RESULTS_DIR = options.results_dir("Folder of results JSON files written by odbench eval.")


@click.command("leaderboard")
@click.option(
    "--task",
    type=click.Choice(["saliency", "localization", "discovery", "ablation", "all"]),
    default="all",
    show_default=True,
    help="Table 1a/1c, Table 1b, multi-object discovery (class-agnostic AP / AR), the paper's "
    "Tables 3-7 (reported), or all of them; with --format (and no --metrics): that task's "
    "metrics as the columns.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the table (markdown, or --format's LaTeX / CSV) here (atomically) instead of "
    "printing it.",
)
@click.option(
    "--all",
    "show_all",
    is_flag=True,
    help="Also show runs with overrides, on subsets (--limit, or a GT folder smaller than the "
    "dataset) or with other card settings, labelled (--format: subset cells starred).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["md", "latex", "csv"]),
    default=None,
    help="A metric table of odbench's runs (methods x dataset/metric; top-3 marked, arrows) "
    "instead of the paper's Table 1 layout; csv: one row per method, dataset, protocol.",
)
@options.metrics(
    "--format: the columns, as score's --metrics (all: every metric stored; basic: Acc, "
    "IoU, maxFβ, MAE; or names, e.g. s_measure,max_fbeta,mae, in that order).",
    default="all",
)
@click.option("--datasets", default="", help="--format: comma-separated datasets (default: all).")
@options.protocol("--format md/latex.")
@click.option(
    "--marks",
    default="bold,underline,color:blue",
    show_default=True,
    help="--format latex: how the 1st, 2nd, 3rd of a column are marked "
    "(bold, underline, italic, color:NAME, none).",
)
@click.option(
    "--bib",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="--format latex: write the BibTeX of the methods, datasets, metrics here and \\cite "
    "the methods.",
)
@_RESULTS_DIR
def leaderboard(
    task: str,
    out: Path | None,
    show_all: bool,
    fmt: str | None,
    metrics: str,
    datasets: str,
    protocol: str,
    marks: str,
    bib: Path | None,
    results_dir: Path,
) -> None:
    """Leaderboards of odbench runs: the papers' Table 1 layout in markdown, beside the
    reported rows (†), or with --format a metric table in markdown, LaTeX or CSV.

    By default only runs with the card's settings over the full dataset are shown.  A results
    file that cannot be read is left out, with a warning naming it."""
    from odbench.imageio import atomic_write_bytes
    from odbench.leaderboard import render
    from odbench.outputs import check_output_file

    skipped: list[str] = []
    try:
        if out is not None:
            check_output_file(out, "--out")
        if bib is not None and fmt != "latex":
            raise UserError("--bib goes with --format latex")
        keys = _metric_keys(metrics)  # checked before anything is read
        if keys and fmt is None:
            raise UserError("--metrics goes with --format md|latex|csv (the columns shown)")
        reads_results = fmt is not None or task != "ablation"
        if reads_results and not Path(results_dir).is_dir():
            raise UserError(
                f"{results_dir}: no such results folder (--results-dir: where odbench eval and "
                "odbench score --config wrote their results)"
            )
        if fmt is not None:
            of_task = task if task in ("saliency", "localization", "discovery") else None
            text = _table(
                fmt, results_dir, keys, datasets, protocol, marks, bib, show_all, skipped, of_task
            )
        else:
            text = render(task, results_dir, show_all=show_all, skipped=skipped)
            if not show_all and task != "ablation":
                _note_hidden(results_dir, task)
        if out is None:
            click.echo(text, nl=False)
        else:
            atomic_write_bytes(out, text.encode())
            click.echo(f"wrote {out}")
    finally:  # also when nothing is left to show
        for line in skipped:
            click.echo(f"warning: {line}; left out of the table", err=True)
    if reads_results and not skipped and not any(Path(results_dir).glob("*.json")):
        click.echo(
            f"note: {results_dir} holds no results: only the papers' reported rows (†) are "
            "shown; odbench eval and odbench score --config write runs there",
            err=True,
        )
    _note_unmerged(results_dir)


def _note_hidden(results_dir: Path, task: str) -> None:
    """One line on stderr when the table leaves out runs of ``task`` (other settings, e.g.
    ``--backbone dino-tiny``, or a subset), so a fresh run never vanishes without a word."""
    from odbench.leaderboard import run_label, shown_runs
    from odbench.results import load_all_results

    runs = [r for r in load_all_results(results_dir, []) if task == "all" or task in r.metrics]
    shown = {id(r) for r in shown_runs(runs).values()}
    hidden = [r for r in shown_runs(runs, show_all=True).values() if id(r) not in shown]
    if hidden:
        r = max(hidden, key=lambda r: r.date)
        click.echo(
            f"note: {len(hidden)} run(s) with other settings or on a subset are not shown (e.g. "
            f"{run_label(r.method_name, r.overrides)} on {r.dataset_name}): --all shows them",
            err=True,
        )


def _note_unmerged(results_dir: Path) -> None:
    """One line on stderr when shards of a run wait to be merged (they are not in the table)."""
    from odbench.results import unmerged_shards

    waiting = unmerged_shards(results_dir)
    if waiting:
        more = f" (and {len(waiting) - 1} more run(s))" if len(waiting) > 1 else ""
        pattern = Path(results_dir) / f"{waiting[0]}__*__shard-*-of-*.json"
        click.echo(
            f"note: {results_dir} holds shards not merged yet, not shown{more}: "
            f"odbench merge {pattern} --results-dir {results_dir}",
            err=True,
        )


def _table(
    fmt: str,
    results_dir: Path,
    metrics: list[str],
    datasets: str,
    protocol: str,
    marks: str,
    bib: Path | None,
    show_all: bool = False,
    skipped: list[str] | None = None,
    task: str | None = None,
) -> str:
    from odbench import tables

    wanted = [d for d in datasets.split(",") if d]
    if fmt == "csv":
        return tables.render_csv(results_dir, wanted, metrics, show_all, skipped, task)
    table = tables.collect(results_dir, protocol, wanted, metrics, show_all, skipped, task)
    if fmt == "md":
        return tables.render_markdown(*table)
    cite = None
    if bib is not None:
        from odbench.commands.cite import bibliography, citation_keys
        from odbench.imageio import atomic_write_bytes
        from odbench.outputs import check_output_file

        check_output_file(bib, "--bib")
        methods, shown_datasets, shown_metrics = table[:3]
        atomic_write_bytes(
            bib, bibliography([*methods, *shown_datasets, *shown_metrics], False).encode()
        )
        cite = citation_keys(methods)
    return tables.render_latex(*table, marks=marks, cite=cite)


def _metric_keys(spec: str) -> list[str]:
    """``--metrics`` of the table: [] (every metric stored) for ``all``, else the names."""
    from odbench.metrics.catalog import METRICS
    from odbench.metrics.selection import parse_metrics

    selection = parse_metrics(spec, valid=list(METRICS))
    return [] if selection.spec == "all" else list(selection.keys)


@click.command("compare")
@click.option("--methods", required=True, help="Two method names, comma-separated: A,B.")
@click.option("--dataset", required=True, help="Dataset both methods were evaluated on.")
@options.protocol()
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
    runs, comparisons = compare_runs(
        results_dir, (names[0], names[1]), dataset, protocol, n_resamples=resamples, seed=seed
    )
    click.echo(render_compare(runs, comparisons), nl=False)
