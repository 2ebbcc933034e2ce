r"""The metric catalog: one entry per metric odbench computes, the one place that says what a
result key is called, which way is better, which task and meter it belongs to and which paper
defines it.

Every reader goes through it: ``--metrics`` (:mod:`odbench.metrics.selection`), the meters'
key lists (:mod:`odbench.metrics.sod`), the leaderboard and its md / LaTeX / CSV tables,
``compare``, ``report``, ``score``, ``eval``, ``cite`` and ``odbench list metrics``.  Adding a
metric is its function (in the module of the meter that computes it) plus an entry here
(docs/adding-a-metric.md).  The entries' order is the order of every listing (tables, score
rows, report columns); ``--metrics a,b,c`` picks another.

This module imports nothing (no numpy, no torch): ``odbench list metrics`` reads it at once.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Meter name -> the class that computes its metrics (named, not imported).  ``saliency`` is
#: ``--metrics basic``; ``sod`` (the salient-object family) is what ``--metrics all`` adds.
METERS: dict[str, str] = {
    "saliency": "odbench.metrics.saliency.SaliencyMeter",
    "sod": "odbench.metrics.sod.SodMeter",
    "corloc": "odbench.metrics.boxes.CorLocMeter",
    "discovery": "odbench.metrics.discovery.DiscoveryMeter",
}
#: Meter name -> the task (the ``metrics`` block of a results file) its metrics belong to.
_TASKS = {
    "saliency": "saliency",
    "sod": "saliency",
    "corloc": "localization",
    "discovery": "discovery",
}


@dataclass(frozen=True)
class Metric:
    """One metric.  ``key``: its name in results files and on the command line; ``name``: the
    long name (``score``'s table, ``list metrics``); ``label``: column headers (markdown,
    report, compare); ``latex``: LaTeX column headers; ``short``: ``eval``'s one-line
    summary; ``higher_is_better``: the direction tables mark (↑ / ↓) and ``compare`` judges by;
    ``task``: the ``metrics`` block of a results file it lives in; ``meter``: the key of
    :data:`METERS` that computes it; ``citation``: the BibTeX key of its paper in
    :data:`odbench.metrics.papers.BIBTEX` (None: a textbook quantity, cited by none);
    ``per_image``: the dataset value is the mean of per-image values that the run's records
    keep under ``key`` (False: reduced from mean curves, or kept under another name)."""

    key: str
    name: str
    label: str
    latex: str
    short: str
    higher_is_better: bool
    task: str
    meter: str
    citation: str | None
    per_image: bool

    @property
    def arrow(self) -> str:
        """↑ (higher is better) or ↓."""
        return "↑" if self.higher_is_better else "↓"


# fmt: off
_TABLE: tuple[tuple[str, str, str, str, str, str, str, str | None, bool], ...] = (
    # key,                 long name,              label,    LaTeX,            short,
    #   higher is better, meter, citation (papers.BIBTEX), per image
    ("acc",                "Acc",                  "Acc",    "Acc",            "acc",
        "↑", "saliency", None,                      True),
    ("iou",                "IoU",                  "IoU",    "IoU",            "iou",
        "↑", "saliency", None,                      True),
    ("max_fbeta",          "max Fβ",               "maxFβ",  r"max$F_\beta$",  "maxF",
        "↑", "saliency", "achanta2009frequency",    False),
    ("mae",                "MAE",                  "MAE",    r"$\mathcal{M}$", "mae",
        "↓", "saliency", "perazzi2012saliency",     True),
    ("s_measure",          "S-measure",            "Sα",     r"$S_\alpha$",    "S",
        "↑", "sod",      "fan2017structure",        True),
    ("e_measure_adaptive", "E-measure (adaptive)", "adpEξ",  r"adp$E_\xi$",    "adpE",
        "↑", "sod",      "fan2018enhanced",         True),
    ("e_measure_mean",     "E-measure (mean)",     "meanEξ", r"mean$E_\xi$",   "meanE",
        "↑", "sod",      "fan2018enhanced",         False),
    ("e_measure_max",      "E-measure (max)",      "maxEξ",  r"max$E_\xi$",    "maxE",
        "↑", "sod",      "fan2018enhanced",         False),
    ("weighted_fbeta",     "weighted Fβ",          "wFβ",    r"$F_\beta^w$",   "wF",
        "↑", "sod",      "margolin2014evaluate",    True),
    ("adaptive_fbeta",     "adaptive Fβ",          "adpFβ",  r"adp$F_\beta$",  "adpF",
        "↑", "sod",      "achanta2009frequency",    True),
    ("mean_fbeta",         "mean Fβ",              "meanFβ", r"mean$F_\beta$", "meanF",
        "↑", "sod",      "achanta2009frequency",    False),
    ("dice",               "Dice",                 "Dice",   "Dice",           "dice",
        "↑", "sod",      "dice1945measures",        True),
    ("ber",                "BER",                  "BER",    "BER",            "ber",
        "↓", "sod",      None,                      True),
    ("auc_roc",            "AUC (ROC)",            "AUC",    "AUC",            "auc",
        "↑", "sod",      "fawcett2006introduction", False),
    ("corloc",             "CorLoc (%)",           "CorLoc", "CorLoc",         "corloc",
        "↑", "corloc",   "deselaers2012weakly",     False),
)
# fmt: on

#: The discovery task's class-agnostic COCO summary (:mod:`odbench.metrics.detection`), for boxes
#: (``box_AP`` ...) and masks (``mask_AP`` ...): COCO name, long name, LaTeX body.
_COCO_SUMMARY = (
    ("AP", "AP (IoU .50:.95)", "AP"),
    ("AP50", "AP at IoU .50", "AP_{50}"),
    ("AP75", "AP at IoU .75", "AP_{75}"),
    ("APs", "AP small", "AP_{S}"),
    ("APm", "AP medium", "AP_{M}"),
    ("APl", "AP large", "AP_{L}"),
    ("AR1", "AR at 1 detection", "AR_{1}"),
    ("AR10", "AR at 10 detections", "AR_{10}"),
    ("AR100", "AR at max detections (100; LVIS 300)", "AR_{100}"),
    ("ARs", "AR small", "AR_{S}"),
    ("ARm", "AR medium", "AR_{M}"),
    ("ARl", "AR large", "AR_{L}"),
)
_TABLE += tuple(
    (
        f"{kind}_{coco}",
        f"{kind} {name}",
        f"{coco}^{kind}",
        rf"${body}^{{\text{{{kind}}}}}$",
        f"{kind}{coco}",
        "↑",
        "discovery",
        "lin2014microsoft",
        False,
    )
    for kind in ("box", "mask")
    for coco, name, body in _COCO_SUMMARY
)

#: Every metric by key, in listing order.
METRICS: dict[str, Metric] = {
    key: Metric(key, name, label, latex, short, arrow == "↑", _TASKS[meter], meter, cite, per)
    for key, name, label, latex, short, arrow, meter, cite, per in _TABLE
}


def keys(
    *, meter: str | None = None, task: str | None = None, per_image: bool | None = None
) -> tuple[str, ...]:
    """The keys of the metrics computed by ``meter`` / of ``task`` / (not) ``per_image`` (None:
    any), in order."""
    return tuple(
        m.key
        for m in METRICS.values()
        if (meter is None or m.meter == meter)
        and (task is None or m.task == task)
        and (per_image is None or m.per_image == per_image)
    )


def rows() -> list[tuple[str, ...]]:
    """``odbench list metrics``: (key, label, direction, task, meter, citation, long name)."""
    return [
        (m.key, m.label, m.arrow, m.task, m.meter, m.citation or "-", m.name)
        for m in METRICS.values()
    ]
