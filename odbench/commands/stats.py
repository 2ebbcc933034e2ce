"""``odbench stats DATASET [--vs DATASET]``: object size, colour contrast, centre bias and
shape statistics (DiffusionSeg section 4.3.1, Table 2) with a markdown report and PNG plots."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from odbench.commands import options
from odbench.errors import UserError


def open_dataset(arg: str, data_root: Path | None) -> Any:
    """A registered dataset name (or alias), ``NAME:FOLDER`` (that dataset read from FOLDER, e.g.
    ``synthetic:out/syn1k``), or a folder: an odbench synthetic dataset (``manifest.json``) or any
    ``images/`` + ``masks/`` folder."""
    from odbench.cards import dataset_card
    from odbench.data.base import create_dataset
    from odbench.registry import DATASETS

    if dataset_card(arg) is not None or arg in DATASETS:
        return create_dataset(arg, data_root=data_root)
    name, _, folder_arg = arg.partition(":")
    if folder_arg and (dataset_card(name) is not None or name in DATASETS):
        return create_dataset(name, data_root=Path(folder_arg))
    folder = Path(arg)
    if folder.is_dir():
        from odbench.data.folder import FolderDataset
        from odbench.data.synthetic import SyntheticDataset

        if (folder / "manifest.json").is_file():
            return SyntheticDataset(folder, name=folder.name)
        return FolderDataset(folder / "images", folder / "masks", name=folder.name)
    raise UserError(f"{DATASETS.unknown_message(arg)} (or give a dataset folder)")


def subset(ids: list[str], limit: int | None, seed: int) -> list[str]:
    """All ids, or a seeded random subset of ``limit`` of them (kept in id order)."""
    if limit is None or limit >= len(ids):
        return ids
    import numpy as np

    keep = np.sort(np.random.default_rng(seed).choice(len(ids), size=limit, replace=False))
    return [ids[i] for i in keep]


def _check_sizes(ds: Any, name: str, ids: list[str], on_mismatch: str) -> list[str]:
    """Every image/mask pair's size, checked before any work (one line listing them all)."""
    from odbench.metrics.sizes import describe_mismatches

    mismatched = ds.size_mismatches(ids)
    if not mismatched:
        return ids
    line = f"{name}: " + describe_mismatches(mismatched, len(ids), "image")
    if on_mismatch != "skip":
        raise UserError(f"{line}; --on-mismatch skip leaves them out")
    click.echo(f"warning: {line}; left out (--on-mismatch skip)", err=True)
    skipped = {m.id for m in mismatched}
    return [i for i in ids if i not in skipped]


@click.command("stats")
@click.argument("dataset")
@click.option(
    "--vs", "versus", default=None, help="A second dataset (name or folder) to compare with."
)
@options.data_root()
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write report.md, stats.json, per-mask CSVs and PNG plots here.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=2),
    default=None,
    help="Use a seeded random subset of N masks per dataset.",
)
@click.option(
    "--sd-shapes",
    type=click.IntRange(min=2),
    default=1000,
    show_default=True,
    help="At most this many shapes (seeded subset) for shape diversity SD.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@options.on_mismatch(
    "Images whose mask has another size: refuse (listing them all), or leave them out."
)
def stats(
    dataset: str,
    versus: str | None,
    data_root: Path | None,
    out_dir: Path | None,
    limit: int | None,
    sd_shapes: int,
    seed: int,
    on_mismatch: str,
) -> None:
    """Per-mask object size, box centre, colour contrast and SC/PL/SD of DATASET (and --vs)."""
    from rich.console import Console
    from rich.progress import track

    from odbench.data.stats import collect, markdown_report, write_outputs
    from odbench.imageio import read_warnings

    if out_dir is not None:  # before reading anything: one line, nothing written
        from odbench.outputs import check_output_folder

        check_output_folder(out_dir, "--out")
    t0 = time.perf_counter()
    datasets = [open_dataset(dataset, data_root)]
    names = [datasets[0].name]
    if versus is not None:
        datasets.append(open_dataset(versus, data_root))
        names.append(datasets[1].name if datasets[1].name != names[0] else f"{names[0]}-2")
    results = []
    # The bar goes to stderr (stdout carries the report, so it may be redirected to a file)
    # and is removed when done; warnings (0/1 masks, RGB masks) follow as lines.
    with read_warnings() as notes:
        for ds, name in zip(datasets, names):
            ids = subset(ds.ids(), limit, seed)
            ids = _check_sizes(ds, name, ids, on_mismatch)
            samples = (ds.load(i) for i in ids)
            bar = track(
                samples,
                total=len(ids),
                description=f"{name}: reading masks",
                transient=True,
                console=Console(stderr=True),
            )
            results.append(collect(name, bar))
    for line in notes:
        click.echo(f"warning: {line}", err=True)
    info: dict[str, Any] = {
        "datasets": ", ".join(f"{r.name} ({len(r.records)} masks)" for r in results),
        "data root": str(data_root) if data_root else "default",
        "limit": limit if limit is not None else "all",
        "seed": seed,
    }
    if out_dir is not None:
        written = write_outputs(results, out_dir, info, sd_shapes=sd_shapes, seed=seed)
        summaries = written["summaries"]
        click.echo(markdown_report(summaries, [], info).split("## Definitions")[0].rstrip())
        click.echo(
            f"\nwrote {', '.join(written['files'])} and per-mask CSVs to {out_dir} "
            f"({time.perf_counter() - t0:.1f} s)"
        )
    else:
        summaries = [r.summary(sd_shapes=sd_shapes, seed=seed) for r in results]
        click.echo(markdown_report(summaries, [], info).split("## Definitions")[0].rstrip())
