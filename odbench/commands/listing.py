"""``odbench list methods|datasets|protocols``: what is registered, one line each."""

from __future__ import annotations

import click


@click.command("list")
@click.argument("what", type=click.Choice(["methods", "datasets", "protocols"]))
def list_cmd(what: str) -> None:
    """List registered methods, datasets or protocols with a one-line description."""
    from odbench.registry import DATASETS, METHODS, PROTOCOLS

    registry = {"methods": METHODS, "datasets": DATASETS, "protocols": PROTOCOLS}[what]
    rows = registry.describe()
    width = max((len(name) for name, _ in rows), default=0)
    for name, description in rows:
        click.echo(f"{name:<{width}}  {description}")
