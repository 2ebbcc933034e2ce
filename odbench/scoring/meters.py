"""Which meter scores a metric set.

A meter accumulates per-image records into declared states (memory independent of the dataset
size): ``score`` computes one image's record without touching them (pure: safe in worker
processes), ``add(record)`` adds it, ``merge(other)`` adds another meter's states (shards,
workers), ``compute()`` gives the dataset's metrics; the interface is
:class:`odbench.metrics.meter.Meter`.  The meters live beside their metrics
(:mod:`odbench.metrics.saliency`, :mod:`odbench.metrics.sod`, :mod:`odbench.metrics.boxes`) and
the catalog names the meter of each metric (:data:`odbench.metrics.catalog.METERS`).
"""

from __future__ import annotations

from typing import Any

from odbench.metrics.selection import MetricSelection


def make_meter(protocol: str, metrics: str | MetricSelection) -> Any:
    """A :class:`~odbench.metrics.saliency.SaliencyMeter` (``basic``) or
    :class:`~odbench.metrics.sod.FamilyMeter` (``all``, or a list naming a family metric:
    :func:`odbench.metrics.selection.parse_metrics`)."""
    from odbench.metrics.selection import parse_metrics

    if parse_metrics(metrics).tier == "all":
        from odbench.metrics.sod import FamilyMeter

        return FamilyMeter(protocol)
    from odbench.metrics.saliency import SaliencyMeter

    return SaliencyMeter(protocol)
