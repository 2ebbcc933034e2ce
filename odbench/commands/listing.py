"""``odbench list [methods|datasets|protocols|features|metrics]``: what is registered, one line
each.

Reads the registries, the TOML cards and the metric catalog only: no method or dataset module
is imported, so the command starts without torch.
"""

from __future__ import annotations

import click

_TASK_ABBREV = {"saliency": "sal", "localization": "loc", "discovery": "disc"}


def _task(task: tuple[str, ...] | None) -> str:
    return "+".join(_TASK_ABBREV.get(t, t) for t in task) if task else "?"


def rows(what: str) -> list[tuple[str, ...]]:
    """(name, [task, [images,]] description) rows of one registry, sorted by name; metrics:
    the catalog's rows, in its order."""
    if what == "metrics":
        from odbench.metrics.catalog import rows as metric_rows

        return [
            (k, label, arrow, _task((task,)), *rest)
            for k, label, arrow, task, *rest in metric_rows()
        ]
    from odbench.cards import dataset_cards, method_cards
    from odbench.registry import DATASETS, FEATURES, METHODS

    if what == "methods":
        cards = method_cards()
        return [(n, _task(cards[n].task if n in cards else None), d) for n, d in METHODS.describe()]
    if what == "datasets":
        dcards = dataset_cards()
        out: list[tuple[str, ...]] = []
        for name, description in DATASETS.describe():
            card = dcards.get(name)
            count = f"{card.count:,}" if card is not None and card.count else "-"
            out.append((name, _task(card.task if card else None), count, description))
        return out
    if what == "features":
        specs = {n: FEATURES.get(n) for n in FEATURES.names()}
        return [
            (n, specs[n].family, specs[n].random or "weights", d) for n, d in FEATURES.describe()
        ]
    from odbench.metrics.protocols import PROTOCOLS  # numpy: only when protocols are listed

    return [(n, d) for n, d in PROTOCOLS.describe()]


def _print(table: list[tuple[str, ...]]) -> None:
    widths = [max((len(r[i]) for r in table), default=0) for i in range(len(table[0]) - 1)]
    for row in table:
        cells = [f"{c:<{w}}" for c, w in zip(row, widths)]
        click.echo("  ".join([*cells, row[-1]]))


@click.command("list")
@click.argument(
    "what",
    type=click.Choice(["methods", "datasets", "protocols", "features", "metrics"]),
    required=False,
)
def list_cmd(what: str | None) -> None:
    """List registered methods, datasets, protocols, feature extractors or metrics (all when
    WHAT is omitted), with their task (sal = saliency, loc = localization, disc = discovery), image count, family
    and weights of extractors (published, tiny or full-size random) and a one-line description.  Metrics: key, label,
    direction (↑ higher is better, ↓ lower), task, meter, BibTeX key of its paper, name."""
    sections = ["methods", "datasets", "protocols", "features", "metrics"]
    for section in [what] if what else sections:
        table = rows(section)
        if not what:
            click.echo(f"{section}:")
        if table:
            _print(table)
        if not what and section != sections[-1]:
            click.echo()
