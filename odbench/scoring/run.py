"""A scored folder of predictions as a :class:`~odbench.results.RunResult` (what ``odbench eval``
writes and :func:`odbench.evaluate` returns), for :func:`odbench.score` and ``score --config``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from odbench.results import RunResult


def scored_run(
    method: dict[str, Any],
    dataset: dict[str, Any],
    protocol: Any,
    metrics_set: str,
    metrics: dict[str, Any],
    ids: Sequence[str],
    scored: Sequence[Any],
    info: dict[str, Any],
    when: datetime | None = None,
) -> RunResult:
    """The run of ``method`` over ``dataset`` under ``protocol``: ``metrics`` (the meter's
    computed saliency metrics), per-image records from ``scored`` (one meter record per id,
    in order: a pair of records under ``metrics_set="all"``), dated ``when`` (default: now); ``info`` completed with
    the metric set, device, package versions and git commit."""
    from odbench.provenance import git_commit, package_versions, utc_now
    from odbench.results import Records, jsonable, saliency_records, sod_records

    if metrics_set == "all":
        records = Records(
            tuple(ids),
            saliency_records([r[0] for r in scored]),
            sod=sod_records([r[1] for r in scored]),
        )
    else:
        records = Records(tuple(ids), saliency_records(scored))
    return RunResult(
        method={
            "name": method["name"],
            "card_sha256": None,
            "hyperparameters": {},
            "overrides": {},
            **method,
        },
        dataset={"name": dataset["name"], "limit": None, "n_evaluated": len(ids), **dataset},
        protocol={"name": protocol.name, "definition": jsonable(protocol.as_dict())},
        tasks=["saliency"],
        metrics={"saliency": metrics},
        date=(when or utc_now()).isoformat(timespec="seconds"),
        info={
            **info,
            "metrics_set": metrics_set,
            "device": "cpu",
            "packages": package_versions(),
            "git_commit": git_commit(),
        },
        _records=records,
    )
