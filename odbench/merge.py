"""Shards -> the one result an unsharded run writes (``odbench merge``, and rank 0 of a launch).

A shard's results JSON carries a ``shard`` block: ``index``, ``count``, ``n_total`` (ids in the
whole run) and ``ids_sha256`` (:func:`odbench.distributed.ids_digest` of the whole run's ids in
order).  Merging checks that the shards fit together — the same method (name, card,
hyperparameters, overrides; code and weights, by the key of the prediction cache), dataset,
protocol and tasks; every shard ``0..N-1`` exactly once;
disjoint ids whose interleaving is the whole run's id list — then interleaves the per-image
records back into the dataset's order and computes the metrics from them with the same
accumulators, in the same order, as a single process: the numbers are bit-identical.
Anything that does not fit is one :class:`MergeError` line naming the files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePath
from typing import Any

import numpy as np

from odbench.discovery import DiscoveryError, protocol_of
from odbench.distributed import Shard, ShardError, ids_digest, interleave
from odbench.errors import OdbenchError
from odbench.results import jsonable

#: Results fields that must be equal in every shard, as (path, what to call it).
_MUST_MATCH = (
    (("schema_version",), "schema_version"),
    (("method", "name"), "method"),
    (("method", "card_sha256"), "method card (sha256)"),
    (("method", "hyperparameters"), "hyperparameters"),
    (("method", "overrides"), "--set overrides"),
    (("dataset",), "dataset"),
    (("protocol", "name"), "protocol"),
    (("protocol", "definition"), "protocol definition"),
    (("protocol", "discovery"), "discovery protocol"),
    (("tasks",), "tasks"),
)
#: Per-run fields that differ between shards and are not copied into the merged result as is.
_PER_RUN = ("shard", "records", "records_sha256", "_path")


class MergeError(OdbenchError, ValueError):
    """Shards that do not fit together; the message names the files."""


#: The fix for a shard whose file is damaged.
RERUN_SHARD = "re-run that shard (its odbench eval … --shard I/N command) and merge again"


def _cache_key(part: Part) -> str | None:
    """The prediction cache key a part's maps came from (the name of the cache folder its
    results name): a hash of the method's name, card, hyperparameters, code and weights and of
    the dataset (:func:`odbench.cache.cache_key`), wherever the cache lived.  ``None``: no cache."""
    cache = part.results.get("cache")
    return PurePath(cache).name if isinstance(cache, str) and cache else None


def _metrics_set(part: Part) -> str:
    """How a part was scored, as the eval option that decides its per-image records."""
    return "--metrics all" if "s_measure" in part.records else "--metrics basic"


@dataclass
class Part:
    """One shard: its results dict, its per-image records, and a name for messages."""

    results: dict[str, Any]
    records: dict[str, np.ndarray]
    name: str


def _field(results: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = results
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    if path == ("dataset",) and isinstance(value, dict):
        value = {k: v for k, v in value.items() if k != "n_evaluated"}
    return jsonable(value)


def _first_difference(a: Any, b: Any, where: str) -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{where}.{key}")
    return f"{where} ({a!r} vs {b!r})"


def check_fit(parts: Sequence[Part], into: Shard | None = None) -> list[Part]:
    """The parts in shard order, after checking that they are exactly the shards of ``into``
    (default: the whole run) from one setting.  Raises :class:`MergeError`."""
    if not parts:
        raise MergeError("nothing to merge: give the results JSONs of all shards")
    into = into or Shard()
    for p in parts:
        block = p.results.get("shard")
        if not isinstance(block, dict) or not {"index", "count", "n_total", "ids_sha256"} <= set(
            block
        ):
            raise MergeError(
                f"{p.name}: not the result of a sharded run (no shard field); merge takes the "
                "results JSONs written by odbench eval --shard I/N"
            )
        whole_numbers = [block[k] for k in ("index", "count", "n_total")]
        if any(type(v) is not int for v in whole_numbers) or not isinstance(
            p.results.get("date"), str
        ):
            raise MergeError(f"{p.name}: damaged shard or date field; {RERUN_SHARD}")
        try:
            datetime.fromisoformat(p.results["date"])
        except ValueError:
            raise MergeError(
                f"{p.name}: date {p.results['date']!r} is not ISO 8601; {RERUN_SHARD}"
            ) from None
    first = parts[0]
    for p in parts[1:]:
        for path, what in _MUST_MATCH:
            a, b = _field(first.results, path), _field(p.results, path)
            if a != b:
                raise MergeError(
                    f"{first.name} and {p.name} differ in {what}: "
                    f"{_first_difference(a, b, '.'.join(path))}; merge only shards of one run"
                )
        for key in ("n_total", "ids_sha256"):
            if p.results["shard"][key] != first.results["shard"][key]:
                raise MergeError(
                    f"{first.name} and {p.name} were cut from different id lists "
                    f"(shard.{key} differs: another dataset version or --limit)"
                )
        key_a, key_b = _cache_key(first), _cache_key(p)
        if key_a is not None and key_b is not None and key_a != key_b:
            raise MergeError(
                f"{first.name} and {p.name} were predicted by different method code or weights "
                f"(cache keys {key_a} vs {key_b}: odbench or the method changed between them); "
                "re-run the older shards with the current code, then merge"
            )
        if set(p.records) != set(first.records):
            raise MergeError(
                f"{first.name} and {p.name} hold different per-image records "
                f"({_metrics_set(first)} vs {_metrics_set(p)}); merge only shards of one run"
            )
    count = first.results["shard"]["count"]
    if count % into.count:
        raise MergeError(f"{first.name}: {count} shards cannot form shard {into}")
    ways = count // into.count
    expected = {into.split(ways, r).index: r for r in range(ways)}
    by_index: dict[int, Part] = {}
    for p in parts:
        s = p.results["shard"]
        label = f"{s['index']}/{s['count']}"
        if s["count"] != count:
            raise MergeError(
                f"{first.name} is one of {count} shards but {p.name} is shard {label}; "
                "merge the shards of one split"
            )
        if s["index"] not in expected:
            raise MergeError(f"{p.name}: shard {label} is not part of shard {into}")
        if s["index"] in by_index:
            if by_index[s["index"]].name == p.name:
                raise MergeError(f"{p.name} is given twice; pass each shard once")
            raise MergeError(
                f"{by_index[s['index']].name} and {p.name} are both shard {label}; pass each "
                "shard once (a shard run twice writes two files: keep one)"
            )
        by_index[s["index"]] = p
    missing = [f"{i}/{count}" for i in sorted(expected) if i not in by_index]
    if missing:
        raise MergeError(
            f"shard(s) {', '.join(missing)} missing: pass all {ways} shard results "
            f"(given: {', '.join(p.name for p in by_index.values())}); a shard that failed "
            f"or is still running: run it (odbench eval … --shard {missing[0]}), then merge"
        )
    ordered = [by_index[i] for i in sorted(expected, key=expected.__getitem__)]
    seen: dict[str, str] = {}
    for p in ordered:
        for sample_id in p.records.get("ids", np.array([])).tolist():
            if sample_id in seen:
                raise MergeError(f"sample {sample_id!r} is in both {seen[sample_id]} and {p.name}")
            seen[sample_id] = p.name
    n_total = first.results["shard"]["n_total"]
    n_held = len(seen)
    if into.whole and n_held != n_total:
        raise MergeError(
            f"{', '.join(p.name for p in ordered)}: the shards hold {n_held} images but the run "
            f"has {n_total}; a shard's records are incomplete"
        )
    keys = set(first.records)
    for p in ordered:
        if set(p.records) != keys or "ids" not in keys:
            raise MergeError(
                f"{p.name}: per-image records hold {sorted(p.records)}, not {sorted(keys)}"
            )
    return ordered


def merge_records(ordered: Sequence[Part]) -> dict[str, np.ndarray]:
    """Interleave the parts' records (in shard order) back into the run's order."""
    sizes = [len(p.records["ids"]) for p in ordered]
    offsets = np.cumsum([0, *sizes[:-1]])
    try:
        order = interleave([list(range(o, o + n)) for o, n in zip(offsets, sizes)])
    except ShardError as e:
        raise MergeError(f"{', '.join(p.name for p in ordered)}: {e}") from None
    merged: dict[str, np.ndarray] = {}
    for key in ordered[0].records:
        merged[key] = np.concatenate([p.records[key] for p in ordered])[np.asarray(order, int)]
    return merged


def summarize(records: dict[str, np.ndarray], protocol: Any, discovery: Any = None) -> dict:
    """Metrics from per-image records in run order, by the runner's own summarize phase (the
    accumulators a single run uses, fed the same numbers in the same order: bit-identical);
    ``discovery``: the discovery protocol the shards were scored under."""
    from odbench.results import Records
    from odbench.summarize import summarize as summarize_records

    return summarize_records(Records.from_arrays(records), protocol, discovery)


def merge(parts: Sequence[Part], into: Shard | None = None) -> tuple[dict[str, Any], dict]:
    """(results, records) of the run the parts are shards of: the whole run, or shard ``into``
    (then the result is itself a shard, with its ``shard`` block)."""
    from odbench.metrics.protocols import get_protocol
    from odbench.registry import UnknownNameError

    ordered = check_fit(parts, into)
    first = ordered[0].results
    records = merge_records(ordered)
    block = first["shard"]
    target = into or Shard()
    if target.whole and ids_digest(records["ids"].tolist()) != block["ids_sha256"]:
        raise MergeError(
            f"{', '.join(p.name for p in ordered)}: the merged ids are not the run's id list"
        )
    try:
        protocol = get_protocol(first["protocol"]["name"])
    except UnknownNameError as e:
        raise MergeError(f"{ordered[0].name}: {e}") from None
    if jsonable(protocol.as_dict()) != first["protocol"]["definition"]:
        raise MergeError(
            f"{ordered[0].name}: protocol {protocol.name!r} has changed since the shards were "
            "scored; re-run them"
        )
    results = {k: v for k, v in first.items() if k not in _PER_RUN}
    results["dataset"] = {**first["dataset"], "n_evaluated": len(records["ids"])}
    try:
        discovery = protocol_of(first.get("protocol") or {})
    except DiscoveryError as e:
        raise MergeError(f"{ordered[0].name}: {e}") from None
    results["metrics"] = summarize(records, protocol, discovery)
    wall = sum(float(p.results.get("wall_time_s") or 0.0) for p in ordered)
    results["wall_time_s"] = wall
    results["images_per_s"] = len(records["ids"]) / wall if wall > 0 else None
    results["n_predicted"] = sum(int(p.results.get("n_predicted") or 0) for p in ordered)
    results["n_cached"] = sum(int(p.results.get("n_cached") or 0) for p in ordered)
    results["cpu_time_s"] = sum(float(p.results.get("cpu_time_s") or 0.0) for p in ordered)
    results["date"] = max(str(p.results["date"]) for p in ordered)
    devices = sorted({str(p.results.get("device")) for p in ordered})
    results["device"] = devices[0] if len(devices) == 1 else ", ".join(devices)
    if not target.whole:
        results["shard"] = {**block, "index": target.index, "count": target.count}
    results["merged_from"] = [
        {
            "name": p.name,
            "n_images": len(p.records["ids"]),
            **{k: p.results.get(k) for k in ("date", "device", "wall_time_s", "cpu_time_s")},
        }
        for p in ordered
    ]
    return results, records
