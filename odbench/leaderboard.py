"""Leaderboards and method comparison, generated only from results files and reported rows.

``render_saliency`` / ``render_localization`` lay out the paper's Table 1 (datasets as column
groups): odbench's own runs (the latest per method, hyperparameter overrides, dataset and
protocol; full runs preferred over ``--limit`` runs) and, clearly marked with †, the numbers
published in papers: the ``[[reported]]`` tables of the method cards and of
``leaderboard/reported/*.toml``.  ``render_ablation`` shows the paper's Tables 3-7 (reported
only).

``compare_runs`` puts two runs on the same images side by side with 95% percentile-bootstrap
confidence intervals (images resampled with replacement, the same resample for both methods:
a paired bootstrap; Efron & Tibshirani 1993, ch. 13) and a paired test across images.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from odbench.cards import CardError, card_dir, method_cards
from odbench.results import ResultsError, load_all_results, read_records

#: Paper display names of the benchmark datasets (snake_case ids), in Table 1's order.
DATASET_LABELS = {
    "dut_omron": "DUT-OMRON",
    "duts_te": "DUTS-TE",
    "ecssd": "ECSSD",
    "cub": "CUB",
    "voc07": "VOC07",
    "voc12": "VOC12",
    "coco20k": "COCO20K",
}
SALIENCY_DATASETS = ("dut_omron", "duts_te", "ecssd", "cub")
LOCALIZATION_DATASETS = ("voc07", "voc12", "coco20k")
SALIENCY_METRICS = (("acc", "Acc"), ("iou", "IoU"), ("max_fbeta", "maxFβ"))
ABLATION_TABLES = {
    "3": "Table 3: segmentation networks trained on synthetic vs real data (Acc / IoU)",
    "4": "Table 4: frozen backbones + the same decoder (Acc / IoU)",
    "5": "Table 5: training-free mask generators on diffusion features (Acc / IoU)",
    "6": "Table 6: AttentionCut ablation (Acc / IoU)",
    "7": "Table 7: CLIP-classifiable prior (Acc / IoU)",
}
#: Formats one metric value for a table cell.
Fmt = Callable[[float | None], str]
METRIC_KEYS = frozenset({"acc", "iou", "max_fbeta", "mae", "corloc"})
_ROW_KEYS = frozenset({"method", "variant", "source", "table", "dataset", "protocol", "note"})


# ----------------------------------------------------------------------------- reported rows


@dataclass(frozen=True)
class ReportedRow:
    """One published row: a method's numbers on one dataset in one table of one paper."""

    method: str
    source: str
    table: str
    dataset: str
    metrics: dict[str, float]
    variant: str = ""
    protocol: str = ""
    origin: str = ""


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
    return ReportedRow(
        method=str(name),
        source=str(row["source"]),
        table=str(row["table"]),
        dataset=str(row["dataset"]),
        metrics=metrics,
        variant=str(row.get("variant", "")),
        protocol=str(row.get("protocol", "")),
        origin=str(origin),
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


# ----------------------------------------------------------------------------- our runs


def run_key(result: dict[str, Any]) -> tuple[str, str, str]:
    """(method, overrides as JSON, protocol): one leaderboard row."""
    overrides = json.dumps(result["method"].get("overrides", {}), sort_keys=True)
    return result["method"]["name"], overrides, result["protocol"]["name"]


def latest_runs(
    results: Iterable[dict[str, Any]],
) -> dict[tuple[str, str, str, str], dict[str, Any]]:
    """The run to show per (method, overrides, protocol, dataset): the latest full run, or the
    latest ``--limit`` run when there is no full one."""
    best: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for r in results:
        key = (*run_key(r), r["dataset"]["name"])
        rank = (r["dataset"].get("limit") is None, r["date"], r["_path"])
        old = best.get(key)
        if old is None or rank > (old["dataset"].get("limit") is None, old["date"], old["_path"]):
            best[key] = r
    return best


# ----------------------------------------------------------------------------- rendering


def _fmt_fraction(v: float | None) -> str:
    """Paper style: ``.843`` (``1.000`` stays as is)."""
    if v is None or not math.isfinite(v):
        return "-"
    s = f"{v:.3f}"
    return s[1:] if s.startswith("0.") else s


def _fmt_percent(v: float | None) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.1f}"


@dataclass
class _Row:
    label: str
    protocol: str
    method: str = ""
    cells: dict[tuple[str, str], str] = field(default_factory=dict)


def _interleave(run_rows: list[_Row], ref_rows: list[_Row]) -> list[_Row]:
    """Our runs, each method's reported row (same method name) right after its runs, then the
    remaining reported rows in source order."""
    out: list[_Row] = []
    placed: set[int] = set()
    for i, row in enumerate(run_rows):
        out.append(row)
        if i + 1 == len(run_rows) or run_rows[i + 1].method != row.method:
            for j, ref in enumerate(ref_rows):
                if ref.method == row.method and j not in placed:
                    out.append(ref)
                    placed.add(j)
    return out + [r for j, r in enumerate(ref_rows) if j not in placed]


def _table(columns: list[tuple[str, str, str]], rows: list[_Row]) -> str:
    """Markdown table; ``columns`` are (dataset, metric key, header)."""
    header = ["method", "protocol", *(h for _, _, h in columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row.cells.get((d, k), "-") for d, k, _ in columns]
        lines.append("| " + " | ".join([row.label, row.protocol, *cells]) + " |")
    return "\n".join(lines)


def _short_source(source: str) -> str:
    return source.split(" (")[0].strip()


def _reported_table_rows(
    rows: list[ReportedRow], tables: set[str], fmt: dict[str, Fmt]
) -> list[_Row]:
    merged: dict[tuple[str, str, str, str], _Row] = {}
    table_ids: dict[tuple[str, str, str, str], list[str]] = {}
    for r in rows:
        if r.table not in tables:
            continue
        key = (r.method, r.variant, r.protocol, _short_source(r.source))
        row = merged.setdefault(key, _Row("", r.protocol or "paper", r.method))
        ids = table_ids.setdefault(key, [])
        if r.table not in ids:
            ids.append(r.table)
        for metric, value in r.metrics.items():
            if metric in fmt:
                row.cells[(r.dataset, metric)] = fmt[metric](value)
    for key, row in merged.items():
        method, variant, _, source = key
        name = f"{method} ({variant})" if variant else method
        row.label = f"{name} † (reported, {source} Tab. {', '.join(table_ids[key])})"
    return list(merged.values())


def run_label(method: str, overrides: dict[str, Any]) -> str:
    """``wctr``, or ``wctr (sigma_clr=10)`` for a run with hyperparameter overrides."""
    if not overrides:
        return method
    return method + " (" + ", ".join(f"{k}={v}" for k, v in sorted(overrides.items())) + ")"


def _run_rows(
    runs: dict[tuple[str, str, str, str], dict[str, Any]],
    task: str,
    fmt: dict[str, Fmt],
) -> tuple[list[_Row], set[str], bool]:
    rows: dict[tuple[str, str, str], _Row] = {}
    datasets: set[str] = set()
    subset = False
    for (method, overrides, protocol, dataset), r in sorted(runs.items()):
        metrics = r["metrics"].get(task)
        if metrics is None:
            continue
        label = run_label(method, json.loads(overrides))
        row = rows.setdefault((method, overrides, protocol), _Row(label, protocol, method))
        mark = ""
        if r["dataset"].get("limit") is not None:
            mark, subset = "*", True
        for metric in fmt:
            if metric in metrics:
                row.cells[(dataset, metric)] = fmt[metric](metrics[metric]) + mark
        datasets.add(dataset)
    return list(rows.values()), datasets, subset


def _footer(subset: bool) -> str:
    notes = [
        "† reported in the cited paper (copied, not computed by odbench); other rows are "
        "odbench runs (latest per method/dataset/protocol)."
    ]
    if subset:
        notes.append("\\* evaluated on a subset of the dataset (--limit).")
    return "\n\n".join(notes)


def _ordered_datasets(paper: tuple[str, ...], found: set[str]) -> list[str]:
    return [d for d in paper if d in found] + sorted(found - set(paper))


def render_saliency(results: list[dict[str, Any]], reported: list[ReportedRow]) -> str:
    """Table 1a/1c layout: Acc / IoU / maxFβ per dataset (DUT-OMRON, DUTS-TE, ECSSD, CUB,
    then every other dataset with results)."""
    fmt: dict[str, Fmt] = {k: _fmt_fraction for k, _ in SALIENCY_METRICS}
    run_rows, found, subset = _run_rows(latest_runs(results), "saliency", fmt)
    ref_rows = _reported_table_rows(reported, {"1a", "1c"}, fmt)
    found |= {r.dataset for r in reported if r.table in {"1a", "1c"}}
    columns = [
        (d, k, f"{DATASET_LABELS.get(d, d)} {h}")
        for d in _ordered_datasets(SALIENCY_DATASETS, found)
        for k, h in SALIENCY_METRICS
    ]
    title = "## Saliency segmentation (layout of DiffusionSeg Table 1a/1c)"
    return f"{title}\n\n{_table(columns, _interleave(run_rows, ref_rows))}\n\n{_footer(subset)}\n"


def render_localization(results: list[dict[str, Any]], reported: list[ReportedRow]) -> str:
    """Table 1b layout: CorLoc (%) per dataset (VOC07, VOC12, COCO20K, then others)."""
    fmt: dict[str, Fmt] = {"corloc": _fmt_percent}
    run_rows, found, subset = _run_rows(latest_runs(results), "localization", fmt)
    ref_rows = _reported_table_rows(reported, {"1b"}, fmt)
    found |= {r.dataset for r in reported if r.table == "1b"}
    columns = [
        (d, "corloc", f"{DATASET_LABELS.get(d, d)} CorLoc")
        for d in _ordered_datasets(LOCALIZATION_DATASETS, found)
    ]
    title = "## Single-object localization, CorLoc % (layout of DiffusionSeg Table 1b)"
    return f"{title}\n\n{_table(columns, _interleave(run_rows, ref_rows))}\n\n{_footer(subset)}\n"


def render_ablation(reported: list[ReportedRow]) -> str:
    """The paper's Tables 3-7 from reported rows: "Acc / IoU" per dataset."""
    parts = []
    for table, title in ABLATION_TABLES.items():
        rows = [r for r in reported if r.table == table]
        if not rows:
            continue
        merged: dict[tuple[str, str, str], _Row] = {}
        for r in rows:
            label = f"{r.method} ({r.variant}) †" if r.variant else f"{r.method} †"
            row = merged.setdefault(
                (r.method, r.variant, r.protocol), _Row(label, r.protocol or "paper")
            )
            acc, iou = r.metrics.get("acc"), r.metrics.get("iou")
            row.cells[(r.dataset, "acc_iou")] = f"{_fmt_fraction(acc)} / {_fmt_fraction(iou)}"
        found = {r.dataset for r in rows}
        columns = [
            (d, "acc_iou", DATASET_LABELS.get(d, d))
            for d in _ordered_datasets(SALIENCY_DATASETS, found)
        ]
        source = _short_source(rows[0].source)
        parts.append(
            f"## {title}, reported by {source}\n\n{_table(columns, list(merged.values()))}\n"
        )
    return "\n".join(parts) if parts else "No reported rows for Tables 3-7.\n"


def render(task: str, results_dir: Path, reported_dir: Path | None = None) -> str:
    """``task``: saliency, localization, ablation or all."""
    results = load_all_results(results_dir)
    reported = reported_rows(reported_dir)
    parts = {
        "saliency": lambda: render_saliency(results, reported),
        "localization": lambda: render_localization(results, reported),
        "ablation": lambda: render_ablation(reported),
    }
    if task == "all":
        return "\n".join(f() for f in parts.values())
    return parts[task]()


# ----------------------------------------------------------------------------- compare


def bootstrap_weights(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, n) counts: how often each image is drawn in each resample of n images
    with replacement (multinomial, equivalent to drawing n indices uniformly)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples).astype(np.float64)


def weighted_mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mean of per-image ``values`` under each row of ``weights``: ``values`` (n,) or (n, T) ->
    (B,) or (B, T).  A NaN value makes every resample that draws its image NaN, as it makes the
    dataset mean NaN in :class:`odbench.metrics.saliency.SaliencyMeter` (TokenCut's IoU rule)."""
    bad = ~np.isfinite(values)
    mean = (weights @ np.where(bad, 0.0, values)) / weights.sum(axis=1).reshape(
        (-1,) + (1,) * (values.ndim - 1)
    )
    if bad.any():
        mean = np.where(weights @ bad.astype(np.float64) > 0, np.nan, mean)
    return mean


def percentile_ci(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    lo, hi = np.nanpercentile(samples, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def bootstrap_p_value(diffs: np.ndarray) -> float:
    """Two-sided paired-bootstrap p-value of "no difference": twice the smaller tail of the
    resampled differences at 0, with the +1 correction, capped at 1."""
    b = diffs.size
    low = (np.count_nonzero(diffs <= 0) + 1) / (b + 1)
    high = (np.count_nonzero(diffs >= 0) + 1) / (b + 1)
    return float(min(1.0, 2.0 * min(low, high)))


def wilcoxon_p_value(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank test (scipy) on paired per-image values; images with a NaN
    are left out; all-zero differences -> 1."""
    from scipy.stats import wilcoxon

    ok = np.isfinite(a) & np.isfinite(b)
    d = b[ok] - a[ok]
    if not np.any(d != 0):
        return 1.0
    return float(wilcoxon(a[ok], b[ok]).pvalue)


def mcnemar_p_value(a: np.ndarray, b: np.ndarray) -> float:
    """Exact McNemar test on paired hits (binomial test on the discordant images)."""
    from scipy.stats import binomtest

    only_a = int(np.count_nonzero(a & ~b))
    only_b = int(np.count_nonzero(~a & b))
    if only_a + only_b == 0:
        return 1.0
    return float(binomtest(only_a, only_a + only_b, 0.5).pvalue)


@dataclass(frozen=True)
class MetricComparison:
    metric: str
    a: float
    a_ci: tuple[float, float]
    b: float
    b_ci: tuple[float, float]
    diff: float
    diff_ci: tuple[float, float]
    p_value: float
    test: str


def fbeta_statistic(per_image_max: bool) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """maxFβ under resampling weights: the max over thresholds of the weighted mean curve (one
    threshold for the dataset), or the weighted mean of per-image maxima (SelfMask / FOUND)."""

    def stat(curves: np.ndarray, weights: np.ndarray) -> np.ndarray:
        if per_image_max:
            return weighted_mean(curves.max(axis=1), weights)
        return weighted_mean(curves, weights).max(axis=-1)

    return stat


def compare_records(
    rec_a: dict[str, np.ndarray],
    rec_b: dict[str, np.ndarray],
    *,
    per_image_max_fbeta: bool = False,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> list[MetricComparison]:
    """Per-metric comparison of two runs' per-image records on the same images.

    Acc, IoU, MAE (per-image means): percentile-bootstrap CIs and a Wilcoxon signed-rank test.
    maxFβ: recomputed from the resampled mean Fβ curves; paired-bootstrap p-value.  CorLoc (when
    both have hits): bootstrap CIs and an exact McNemar test."""
    ids_a, ids_b = [str(i) for i in rec_a["ids"]], [str(i) for i in rec_b["ids"]]
    if sorted(ids_a) != sorted(ids_b):
        only_a = len(set(ids_a) - set(ids_b))
        only_b = len(set(ids_b) - set(ids_a))
        raise ResultsError(
            f"the runs cover different images ({len(ids_a)} vs {len(ids_b)}; {only_a} only in the "
            f"first, {only_b} only in the second); re-run both on the same dataset and --limit"
        )
    order_a, order_b = np.argsort(ids_a), np.argsort(ids_b)
    n = len(ids_a)
    weights = np.vstack([np.ones((1, n)), bootstrap_weights(n, n_resamples, seed)])
    out = []

    def compare(
        metric: str,
        xa: np.ndarray,
        xb: np.ndarray,
        stat: Callable[[np.ndarray, np.ndarray], np.ndarray],
        scale: float,
        test: str,
        p_value: float | None,
    ) -> None:
        sa, sb = stat(xa, weights) * scale, stat(xb, weights) * scale
        d = sb - sa
        out.append(
            MetricComparison(
                metric,
                float(sa[0]),
                percentile_ci(sa[1:], level),
                float(sb[0]),
                percentile_ci(sb[1:], level),
                float(d[0]),
                percentile_ci(d[1:], level),
                bootstrap_p_value(d[1:]) if p_value is None else p_value,
                test,
            )
        )

    for metric in ("acc", "iou", "mae"):
        if metric in rec_a and metric in rec_b:
            xa, xb = rec_a[metric][order_a], rec_b[metric][order_b]
            compare(
                metric, xa, xb, weighted_mean, 1.0, "Wilcoxon signed-rank", wilcoxon_p_value(xa, xb)
            )
    if "fbeta" in rec_a and "fbeta" in rec_b:
        fa, fb = rec_a["fbeta"][order_a], rec_b["fbeta"][order_b]
        if fa.shape != fb.shape:
            raise ResultsError("the runs' Fβ curves have different threshold grids")
        compare(
            "max_fbeta", fa, fb, fbeta_statistic(per_image_max_fbeta), 1.0, "paired bootstrap", None
        )
    if "hit" in rec_a and "hit" in rec_b:
        ha, hb = rec_a["hit"][order_a].astype(bool), rec_b["hit"][order_b].astype(bool)
        compare(
            "corloc",
            ha.astype(np.float64),
            hb.astype(np.float64),
            weighted_mean,
            100.0,
            "McNemar (exact)",
            mcnemar_p_value(ha, hb),
        )
    return out


def select_run(
    results: list[dict[str, Any]], method: str, dataset: str, protocol: str
) -> dict[str, Any]:
    """The run of method on dataset/protocol to compare: one with the card's hyperparameters
    (no overrides) before one with overrides, then a full run before a ``--limit`` run, then the
    latest."""
    runs = [
        r
        for r in results
        if r["method"]["name"] == method
        and r["dataset"]["name"] == dataset
        and r["protocol"]["name"] == protocol
    ]
    if not runs:
        raise ResultsError(
            f"no results of method {method!r} on dataset {dataset!r} with protocol {protocol!r}; "
            f"run: odbench eval --method {method} --dataset {dataset} --protocol {protocol}"
        )
    return max(
        runs,
        key=lambda r: (
            not r["method"].get("overrides"),
            r["dataset"].get("limit") is None,
            r["date"],
            r["_path"],
        ),
    )


def compare_runs(
    results_dir: Path,
    methods: tuple[str, str],
    dataset: str,
    protocol: str = "odbench",
    n_resamples: int = 1000,
    seed: int = 0,
) -> tuple[list[dict[str, Any]], list[MetricComparison]]:
    results = load_all_results(results_dir)
    runs = [select_run(results, m, dataset, protocol) for m in methods]
    records = [read_records(r) for r in runs]
    definition = runs[0]["protocol"].get("definition") or {}
    per_image = definition.get("max_over") == "per_image"
    for run, rec in zip(runs, records):
        _check_reproduces(run, rec, per_image)
    comparisons = compare_records(
        *records, per_image_max_fbeta=per_image, n_resamples=n_resamples, seed=seed
    )
    return runs, comparisons


def _check_reproduces(run: dict[str, Any], rec: dict[str, np.ndarray], per_image: bool) -> None:
    """The records must give back the run's own metrics (catches stale or foreign records)."""
    ones = np.ones((1, len(rec["ids"])))
    sal = run["metrics"].get("saliency")
    if sal is not None:
        ours = {m: float(weighted_mean(rec[m], ones)[0]) for m in ("acc", "iou", "mae")}
        ours["max_fbeta"] = float(fbeta_statistic(per_image)(rec["fbeta"], ones)[0])
        for metric, value in ours.items():
            stored = sal.get(metric)
            if stored is not None and not math.isclose(value, stored, rel_tol=1e-9, abs_tol=1e-9):
                raise ResultsError(
                    f"{run['_path']}: {metric} = {stored} but its records give {value}; the "
                    f"records file does not belong to this run"
                )
    loc = run["metrics"].get("localization")
    if loc is not None and not math.isclose(100.0 * float(np.mean(rec["hit"])), loc["corloc"]):
        raise ResultsError(
            f"{run['_path']}: corloc = {loc['corloc']} but its records give "
            f"{100.0 * float(np.mean(rec['hit']))}; the records file does not belong to this run"
        )


def render_compare(
    runs: list[dict[str, Any]], comparisons: list[MetricComparison], level: float = 0.95
) -> str:
    a, b = (run_label(r["method"]["name"], r["method"].get("overrides") or {}) for r in runs)
    pct = f"{round(level * 100)}%"
    lines = [
        f"{a} vs {b} on {runs[0]['dataset']['name']} ({runs[0]['dataset']['n_evaluated']} "
        f"images, protocol {runs[0]['protocol']['name']}); {pct} percentile-bootstrap CIs, "
        f"images resampled in pairs",
        "",
        f"| metric | {a} [{pct} CI] | {b} [{pct} CI] | {b} − {a} [{pct} CI] | p | test |",
        "|---|---|---|---|---|---|",
    ]
    for c in comparisons:

        def f(v: float, ci: tuple[float, float], sign: bool = False) -> str:
            s = "+" if sign else ""
            return f"{v:{s}.4f} [{ci[0]:{s}.4f}, {ci[1]:{s}.4f}]"

        lines.append(
            f"| {c.metric} | {f(c.a, c.a_ci)} | {f(c.b, c.b_ci)} | "
            f"{f(c.diff, c.diff_ci, True)} | {c.p_value:.3g} | {c.test} |"
        )
    lines.append("")
    lines.append(
        "p: Wilcoxon signed-rank (scipy) on per-image values; exact McNemar on CorLoc hits; "
        "two-sided paired bootstrap for maxFβ (smallest possible p = 2/(resamples + 1))."
    )
    lines.append("runs: " + ", ".join(Path(r["_path"]).name for r in runs))
    return "\n".join(lines) + "\n"
