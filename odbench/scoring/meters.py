"""The meters: which one scores a metric set, and the interface they share.

A meter accumulates per-image records into sums (memory independent of the dataset size):
``score(pred, gt, image_id)`` computes one image's record without touching the sums (pure: safe
in worker processes), ``add(record)`` adds it, ``merge(other)`` adds another meter's sums (shards,
workers), ``compute()`` gives the dataset's metrics.  The meters themselves live beside their
metrics (:mod:`odbench.metrics.saliency`, :mod:`odbench.metrics.sod`,
:mod:`odbench.metrics.boxes`).
"""

from __future__ import annotations

from typing import Any


def make_meter(protocol: str, metrics: str) -> Any:
    """A :class:`~odbench.metrics.saliency.SaliencyMeter` (``basic``) or
    :class:`~odbench.metrics.sod.FamilyMeter` (``all``, or a list naming a family metric:
    :func:`odbench.metrics.selection.parse_metrics`)."""
    from odbench.metrics.selection import parse_metrics

    if parse_metrics(metrics).tier == "all":
        from odbench.metrics.sod import FamilyMeter

        return FamilyMeter(protocol)
    from odbench.metrics.saliency import SaliencyMeter

    return SaliencyMeter(protocol)
