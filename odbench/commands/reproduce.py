"""``odbench reproduce``: a paper's pipeline as one resumable command."""

from __future__ import annotations

from pathlib import Path

import click

from odbench.commands import options


@click.command("reproduce")
@click.argument("method", type=click.Choice(["diffusionseg"]))
@click.option(
    "--scale",
    default="tiny",
    show_default=True,
    help="tiny (random tiny SD on CPU, 20-60 s on 2 cores; 3 images of toy and of each benchmark "
    "under --data-root), 1k or paper (~50k pairs): methods/diffusionseg.toml [reproduce.*].",
)
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="Folder (resumed if it exists)."
)
@options.data_root()
@options.device()
def reproduce_cmd(method: str, scale: str, out: Path, data_root: Path | None, device: str) -> None:
    """Synthesize -> train -> evaluate on the benchmarks present -> leaderboard beside the paper.

    Every stage resumes: run the same command again after an interruption."""
    from odbench.reproduce import reproduce
    from odbench.summary import format_metrics

    rep = reproduce(
        scale, out, data_root=data_root, device=device, show_progress=True, echo=click.echo
    )
    for name, metrics in rep.evaluated.items():
        for line in format_metrics(metrics):
            click.echo(f"{name:10s} {line}")
    if rep.leaderboard is not None:
        click.echo(rep.leaderboard.read_text())
