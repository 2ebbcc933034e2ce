"""The script ``mkdocs build`` runs (mkdocs-gen-files, ``mkdocs.yml``): writes the generated
pages into the site.  Each page is a function of the code (see :mod:`odbench.docsite`)."""

from __future__ import annotations

from collections.abc import Callable

from odbench.docsite.cards import datasets_page, zoo_page
from odbench.docsite.numbers import numbers_page
from odbench.docsite.tables import features_page, metrics_page, protocols_page

#: Site path -> the function that writes it.
PAGES: dict[str, Callable[[], str]] = {
    "reference/zoo.md": zoo_page,
    "reference/datasets.md": datasets_page,
    "reference/protocols.md": protocols_page,
    "reference/metrics.md": metrics_page,
    "reference/features.md": features_page,
    "why-numbers-differ.md": numbers_page,
}


def write_pages() -> None:
    """Write every page of :data:`PAGES` through mkdocs-gen-files (inside ``mkdocs build``)."""
    import mkdocs_gen_files

    for path, page in PAGES.items():
        with mkdocs_gen_files.open(path, "w") as f:
            f.write(page())


if __name__ in ("__main__", "<run_path>"):
    write_pages()
