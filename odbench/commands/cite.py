"""``odbench cite``: BibTeX for the methods, datasets and metrics of a results set.

Methods and datasets are cited from their cards (``citation``), metrics from their catalog
entries (:mod:`odbench.metrics.catalog`, ``citation``: a key of :mod:`odbench.metrics.papers`).  Without names, everything the results in ``--results-dir``
use; entries are deduplicated by BibTeX key, and a name with no citation gets a ``%`` comment
line saying so (never a made-up entry).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import click

from odbench.commands import options
from odbench.errors import UserError

_KEY = re.compile(r"@\w+\s*\{\s*([^,\s]+)\s*,")


def used_names(results_dir: Path) -> list[str]:
    """Methods, datasets and the cited metric keys of the runs in ``results_dir`` (of each
    method, dataset and protocol the run every command shows, :func:`odbench.results.select`),
    in that order."""
    from odbench.metrics.catalog import METRICS
    from odbench.results import load_all_results, select_all

    runs = select_all(load_all_results(results_dir))
    if not runs:
        raise UserError(f"{results_dir}: no results; name what to cite or pass --results-dir")
    methods = sorted({r.method_name for r in runs})
    datasets = sorted({r.dataset_name for r in runs})
    metrics = {k for r in runs for task in r.metrics.values() for k in task}
    return methods + datasets + [k for k, m in METRICS.items() if m.citation and k in metrics]


def citation_keys(names: Iterable[str]) -> dict[str, str]:
    """name -> BibTeX key, for the names whose card has a citation."""
    from odbench.cards import dataset_card, method_cards

    cards = method_cards()
    keys = {}
    for name in names:
        card = cards.get(name) or dataset_card(name)
        match = _KEY.search(card.citation) if card is not None else None
        if match:
            keys[name] = match.group(1)
    return keys


def bibliography(names: Iterable[str], strict: bool = True) -> str:
    """BibTeX for ``names`` (method, dataset or metric names), deduplicated by key; a name
    with no card is an error (``strict``) or a ``%`` comment (names read from results, e.g.
    methods scored from prediction folders)."""
    from odbench.cards import dataset_card, method_cards
    from odbench.metrics.catalog import METRICS
    from odbench.metrics.papers import BIBTEX

    cards = method_cards()
    entries: dict[str, str] = {}
    notes: list[str] = []
    unknown = []
    for name in names:
        if name in METRICS:
            key = METRICS[name].citation
            if key is None:
                notes.append(f"% {name}: a textbook quantity, no paper to cite")
            else:
                entries.setdefault(key, BIBTEX[key])
            continue
        card = cards.get(name) or dataset_card(name)
        if card is None:
            if strict:
                unknown.append(name)
            else:
                notes.append(
                    f"% {name}: no card, so no citation (add one to methods/ or datasets/)"
                )
            continue
        text = card.citation.strip()
        match = _KEY.search(text)
        if not match:
            notes.append(f"% {name}: its card ({card.path}) has no citation")
            continue
        entries.setdefault(match.group(1), text)
    if unknown:
        raise UserError(
            f"nothing to cite for {', '.join(unknown)}: not a method card, dataset card or "
            f"metric key (metrics: {', '.join(METRICS)}; methods: "
            f"{', '.join(sorted(cards))})"
        )
    return "\n\n".join([*notes, *entries.values()]) + "\n"


@click.command("cite")
@click.argument("names", nargs=-1)
@options.results_dir("Without NAMES: cite what these results use.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write a .bib file.")
def cite(names: tuple[str, ...], results_dir: Path, out: Path | None) -> None:
    """BibTeX for methods, datasets and metrics (default: those of the results set)."""
    bib = bibliography(names) if names else bibliography(used_names(results_dir), False)
    if out is None:
        click.echo(bib, nl=False)
        return
    from odbench.imageio import atomic_write_bytes
    from odbench.outputs import check_output_file

    check_output_file(out, "--out")
    atomic_write_bytes(out, bib.encode())
    click.echo(str(out))
