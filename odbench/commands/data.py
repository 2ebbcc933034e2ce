"""``odbench data list | download NAME | verify NAME | path NAME``."""

from __future__ import annotations

from pathlib import Path

import click

from odbench.commands import options
from odbench.errors import UserError


def _card(name: str):  # type: ignore[no-untyped-def]
    from odbench.cards import dataset_card
    from odbench.registry import DATASETS

    card = dataset_card(name)
    if card is None:
        raise UserError(DATASETS.unknown_message(name))
    return card


@click.group("data")
def data() -> None:
    """Download, verify and locate benchmark datasets."""


@data.command("list")
@options.data_root()
def list_cmd(data_root: Path | None) -> None:
    """Datasets with their size and whether they are present under the data root."""
    from odbench.cards import dataset_cards
    from odbench.data.download import file_specs
    from odbench.data.locate import candidate_folders
    from odbench.data.paths import resolve_data_root

    root = resolve_data_root(data_root)
    click.echo(f"data root: {root}")
    for card in dataset_cards().values():
        if not card.raw.get("layout"):
            status = "generated" if card.name == "toy" else "give a path"
        else:
            present = [f for f in candidate_folders(card, root)[:-1] if f.is_dir()]
            if present:
                status = f"present: {present[0]}"
            else:
                status = "absent (download)" if file_specs(card) else "absent"
        count = f"{card.count:,}" if card.count else "-"
        click.echo(f"{card.name:<10} {count:>7}  {'+'.join(card.task):<23} {status}")


@data.command("download")
@click.argument("name")
@options.data_root()
@click.option("--quiet", is_flag=True, help="No progress bar.")
def download_cmd(name: str, data_root: Path | None, quiet: bool) -> None:
    """Fetch, verify and extract NAME (nothing happens if it is already present)."""
    from odbench.data.download import file_specs
    from odbench.data.verify import dataset_location
    from odbench.registry import DATASETS

    card = _card(name)
    if not file_specs(card):
        raise UserError(f"{card.name}: nothing to download (generated or user-provided data)")
    ds = DATASETS.get(card.name).from_card(
        card, data_root=data_root, download=True, progressbar=not quiet
    )
    click.echo(f"{card.name}: {len(ds)} samples at {dataset_location(ds)}")


@data.command("verify")
@click.argument("name")
@options.data_root()
@click.option(
    "--path",
    "path",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The dataset folder itself (any supported layout).",
)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Read only N samples.")
def verify_cmd(name: str, data_root: Path | None, path: Path | None, limit: int | None) -> None:
    """Check counts, that every image has its GT, and that every file reads; exit 1 on problems."""
    from odbench.data.verify import verify_dataset

    card = _card(name)
    kwargs = {"path": path} if path is not None else {}
    report = verify_dataset(card, data_root=data_root, limit=limit, **kwargs)
    for line in report.lines():
        click.echo(line)
    if not report.ok:
        raise SystemExit(1)


@data.command("path")
@click.argument("name")
@options.data_root()
def path_cmd(name: str, data_root: Path | None) -> None:
    """Print the folder where NAME is found (error if absent; nothing is downloaded)."""
    from odbench.data.verify import dataset_location, open_existing

    ds = open_existing(_card(name), data_root)
    click.echo(dataset_location(ds))
