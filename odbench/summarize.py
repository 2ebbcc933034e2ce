"""Phase 3 of a run (:mod:`odbench.phases`): per-image records -> dataset metrics, through the
same meters (and the one maxFβ reduction, :func:`odbench.metrics.saliency.reduce_max_fbeta`) as
every other command.  :class:`Summary` takes the records as a run streams them; :func:`summarize`
feeds it stored records (:mod:`odbench.merge`): the same additions in the same order, so the same
numbers bit for bit."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import fields
from typing import Any

import numpy as np

from odbench.metrics.discovery_records import DiscoveryRecords
from odbench.results import SOD_SCALARS, Records


class Summary:
    """Phase 3 as the records stream: the meters of :func:`summarize` fed one image's records
    at a time, in record order (the same additions in the same order: the same numbers bit for
    bit), so a run summarizes without holding its per-image records."""

    def __init__(self, protocol: Any, saliency: bool, sod: bool, localization: bool) -> None:
        from odbench.metrics.saliency import SaliencyMeter
        from odbench.metrics.sod import SodMeter

        self.protocol = protocol
        self.saliency = SaliencyMeter(protocol) if saliency else None
        self.sod = SodMeter(protocol) if sod else None
        self.localization = localization
        self.n = self.hits = self.with_boxes = 0

    @classmethod
    def of_run(cls, protocol: Any, tasks: Collection[str], metrics_set: str) -> Summary:
        """The summary of a run of ``tasks`` (``metrics_set`` "all": the family too)."""
        saliency = "saliency" in tasks
        return cls(protocol, saliency, saliency and metrics_set == "all", "localization" in tasks)

    def add(self, sample_id: str, row: dict[str, Any]) -> None:
        """One image's records: ``row`` maps each field of :meth:`Records.arrays` to its value
        (as stored: float64 scalars and curves, int64 counts, a bool hit)."""
        from odbench.metrics.saliency import ImageRecord
        from odbench.metrics.sod import SodRecord

        self.n += 1
        if self.saliency is not None:
            acc, iou, mae = (float(row[k]) for k in ("acc", "iou", "mae"))
            self.saliency.add(ImageRecord(sample_id, acc, iou, mae, row["fbeta"]))
        if self.sod is not None:
            record = SodRecord(
                sample_id,
                **{k: float(row[k]) for k in SOD_SCALARS},
                tp=row["tp"],
                fp=row["fp"],
                n_gt=int(row["n_gt"]),
                n_pix=int(row["n_pix"]),
                protocol=self.protocol,
            )
            self.sod.add(record)
        if self.localization:
            has_boxes = bool(row["n_boxes"] > 0)
            self.with_boxes += has_boxes
            self.hits += has_boxes and bool(row["hit"])

    def compute(
        self, discovery: DiscoveryRecords | None = None, protocol: Any = None
    ) -> dict[str, dict[str, Any]]:
        """The dataset metrics; ``discovery``: the run's discovery records, summarized under the
        discovery ``protocol``."""
        from odbench.metrics.boxes import CorLocMeter

        metrics: dict[str, dict[str, Any]] = {}
        if self.saliency is not None:
            base: dict[str, Any] = self.saliency.compute()
            metrics["saliency"] = base
            if self.sod is not None:
                family: dict[str, Any] = self.sod.compute(base["fbeta_curve"])
                curves = family.pop("curves")
                fbeta = base["fbeta_curve"]
                metrics["saliency"] = {**base, **family, "curves": {**curves, "fbeta": fbeta}}
        if self.localization:
            corloc = CorLocMeter()
            corloc.hits, corloc.n = self.hits, self.with_boxes
            corloc.n_no_gt = self.n - self.with_boxes
            metrics["localization"] = corloc.compute()  # type: ignore[assignment]
        if discovery is not None:
            if protocol is None:
                raise ValueError("discovery records but no discovery protocol to summarize them")
            metrics["discovery"] = discovery.summarize(protocol)
        return metrics


def summarize(records: Records, protocol: Any, discovery: Any = None) -> dict[str, dict[str, Any]]:
    """Phase 3: dataset metrics from per-image records, in record order (the meters' sums, so
    the numbers equal a streaming evaluation's bit for bit: :class:`Summary`); ``discovery``:
    the discovery protocol, for discovery records."""
    loc = records.localization is not None
    summary = Summary(protocol, records.saliency is not None, records.sod is not None, loc)
    arrays: dict[str, np.ndarray] = {}
    for part in (records.saliency, records.localization, records.sod):
        if part is not None:
            arrays.update((f.name, getattr(part, f.name)) for f in fields(part))
    for n, sample_id in enumerate(records.ids):
        summary.add(sample_id, {k: v[n] for k, v in arrays.items()})
    return summary.compute(records.discovery, discovery)
