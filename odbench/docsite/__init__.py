"""The documentation site's generated pages (``mkdocs build``; ``mkdocs.yml`` at the root).

Each page that describes something odbench registers is written here from the registry, never
by hand: the model zoo and datasets from the cards (:mod:`odbench.docsite.cards`), protocols,
metrics and feature extractors from their tables (:mod:`odbench.docsite.tables`), and "why my
number differs" from a run over real data (:mod:`odbench.docsite.numbers`).  A new card,
catalog entry, protocol or extractor appears on its page with no edit here.
:mod:`odbench.docsite.build` is the script mkdocs-gen-files runs at build time.
"""
