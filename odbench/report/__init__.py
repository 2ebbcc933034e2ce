"""``odbench report``: a static HTML page to browse where methods fail, and PNG figure grids.

``runs`` reads the runs (results + per-image records), ``select`` picks the worst / best / most
disagreeing images, ``thumbs`` reads maps from the prediction caches and images from the
dataset and writes thumbnails once, ``page`` renders the HTML (``report.js`` beside it), and
``build`` puts it together.  For discovery runs (class-agnostic AP / AR) ``discovery`` reads
the runs' match records, ``instances`` draws the instance overlays (also ``--panel
instances``), ``discovery_page`` renders the page and ``build_discovery`` puts it together.
Nothing is predicted or scored again.
"""
