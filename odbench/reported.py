"""The papers' published numbers: ``[[reported]]`` rows of the method cards and of
``leaderboard/reported/*.toml``, parsed and checked (copied from papers, never computed).

A row's ``table`` names the source's table (DiffusionSeg's "1a" .. "7", or e.g. "README Model
Zoo (zero-shot)" for a repository's README); discovery rows carry :data:`DISCOVERY_KEYS`.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from odbench.cards import CardError, card_dir, method_cards

#: The discovery task's keys (class-agnostic COCO AP / AR, fractions as COCOeval gives them):
#: ``box_`` (iouType bbox) or ``mask_`` (segm) + COCO's summary names.
DISCOVERY_KEYS = frozenset(
    f"{kind}_{name}"
    for kind in ("box", "mask")
    for name in ("AP", "AP50", "AP75", "APs", "APm", "APl")
    + ("AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
)
METRIC_KEYS = frozenset({"acc", "iou", "max_fbeta", "mae", "corloc"}) | DISCOVERY_KEYS
_ROW_KEYS = frozenset(
    {"method", "variant", "source", "table", "dataset", "protocol", "note", "doubtful"}
)


@dataclass(frozen=True)
class ReportedRow:
    """One published row: a method's numbers on one dataset in one table of one paper.
    ``doubtful``: the metrics whose printed value is doubtful (``(?)`` in the reference
    tables, e.g. a likely typo kept as printed), explained by ``note``."""

    method: str
    source: str
    table: str
    dataset: str
    metrics: dict[str, float]
    variant: str = ""
    protocol: str = ""
    origin: str = ""
    doubtful: tuple[str, ...] = ()
    note: str = ""


def _reported_row(row: dict[str, Any], method: str | None, origin: Path) -> ReportedRow:
    missing = [k for k in ("source", "table", "dataset") if k not in row]
    name = row.get("method", method)
    if name is None:
        missing.append("method")
    if missing:
        raise CardError(f"{origin}: [[reported]] row lacks {', '.join(missing)}")
    unknown = sorted(set(row) - METRIC_KEYS - _ROW_KEYS)
    metrics = {k: float(v) for k, v in row.items() if k in METRIC_KEYS}
    if unknown or not metrics:
        what = f"unknown key(s) {', '.join(unknown)}" if unknown else "no metric"
        raise CardError(
            f"{origin}: [[reported]] row of {name} ({row['table']}, {row['dataset']}) has {what}"
        )
    doubtful = row.get("doubtful", [])
    if not isinstance(doubtful, list) or any(k not in metrics for k in doubtful):
        raise CardError(
            f"{origin}: [[reported]] row of {name} ({row['table']}, {row['dataset']}): doubtful "
            f"= {doubtful!r} must list metrics of the row (of {', '.join(sorted(metrics))})"
        )
    if doubtful and not row.get("note"):
        raise CardError(
            f"{origin}: [[reported]] row of {name} ({row['table']}, {row['dataset']}): a doubtful "
            "value needs a note saying why"
        )
    return ReportedRow(
        method=str(name),
        source=str(row["source"]),
        table=str(row["table"]),
        dataset=str(row["dataset"]),
        metrics=metrics,
        variant=str(row.get("variant", "")),
        protocol=str(row.get("protocol", "")),
        origin=str(origin),
        doubtful=tuple(str(k) for k in doubtful),
        note=str(row.get("note", "")),
    )


def reported_rows(reported_dir: Path | None = None) -> list[ReportedRow]:
    """Reported rows of every method card, then of ``leaderboard/reported/*.toml`` (rows there
    carry ``method = "..."``)."""
    rows = [
        _reported_row(r, card.name, card.path)
        for card in method_cards().values()
        for r in card.reported
    ]
    folder = reported_dir if reported_dir is not None else card_dir("reported")
    for path in sorted(Path(folder).glob("*.toml")):
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise CardError(f"{path}: cannot read reported rows: {e}") from e
        rows.extend(_reported_row(r, None, path) for r in data.get("reported", []))
    return rows
