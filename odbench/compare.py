"""``odbench compare``: two runs on the same images side by side, from their per-image records.

95% percentile-bootstrap confidence intervals (images resampled with replacement, the same
resample for both methods: a paired bootstrap; Efron & Tibshirani 1993, ch. 13) and a paired
test across images.  maxFβ under resampling goes through the one reduction every command uses,
:func:`odbench.metrics.saliency.reduce_max_fbeta`; the salient-object family's curve metrics
(E mean / max, mean Fβ, AUC; runs scored with ``--metrics all``) through the meter's
:func:`odbench.metrics.sod.reduce_family_curves`; discovery's AP / AR (box and mask AP, AP50,
AR100: dataset-level numbers) by accumulating the per-image match records of each resample
again, weighted by how often each image is drawn (:func:`odbench.discovery.bootstrap_statistics`:
identical to building the resample out, ~44x faster).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from odbench.discovery import DiscoveryError, bootstrap_statistics, protocol_of
from odbench.metrics.catalog import METRICS, keys
from odbench.metrics.detection_protocols import DetectionProtocol
from odbench.metrics.protocols import DEFAULT_PROTOCOL, Protocol, get_protocol
from odbench.metrics.saliency import reduce_max_fbeta
from odbench.metrics.sod import SOD_KEYS, family_curves, reduce_family_curves
from odbench.results import (
    Records,
    ResultsError,
    RunResult,
    SodRecords,
    load_all_results,
    select,
)

#: The family's metrics recomputed from resampled mean curves (the rest are per-image means).
SOD_CURVE_METRICS = keys(meter="sod", per_image=False)


def bootstrap_weights(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, n) counts: how often each image is drawn in each resample of n images
    with replacement (multinomial, equivalent to drawing n indices uniformly)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples).astype(np.float64)


def corloc_statistic(
    has_gt: np.ndarray,
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """CorLoc under each row of the weights when some images have no GT box: the weighted
    hits over the weighted count of images with one (those without are left out,
    :mod:`odbench.metrics.boxes`)."""
    counted = has_gt.astype(np.float64)

    def stat(hits: np.ndarray, weights: np.ndarray) -> np.ndarray:
        return np.asarray((weights @ (hits * counted)) / np.maximum(weights @ counted, 1e-12))

    return stat


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

    @property
    def higher_is_better(self) -> bool:
        """The metric's direction in the catalog (:mod:`odbench.metrics.catalog`): lower is
        better for MAE and BER."""
        return METRICS[self.metric].higher_is_better

    @property
    def better(self) -> str | None:
        """``"a"`` or ``"b"``: the run that is better when the CI of B − A excludes 0 (in the
        metric's direction), else None."""
        lo, hi = self.diff_ci
        if not (lo > 0 or hi < 0):
            return None
        return "b" if (lo > 0) == self.higher_is_better else "a"


def fbeta_statistic(max_over: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """maxFβ under resampling weights (B, n) from per-image curves (n, T), by
    :func:`reduce_max_fbeta` of the weighted mean curve and the weighted mean of maxima."""

    def stat(curves: np.ndarray, weights: np.ndarray) -> np.ndarray:
        mean_curve = weighted_mean(curves, weights)
        return reduce_max_fbeta(mean_curve, weighted_mean(curves.max(axis=1), weights), max_over)

    return stat


def family_statistics(
    sod: SodRecords, fbeta: np.ndarray, weights: np.ndarray, protocol: Protocol
) -> dict[str, np.ndarray]:
    """The family's curve metrics (:data:`SOD_CURVE_METRICS`) under resampling weights (B, n):
    the per-image E, TPR and FPR curves rebuilt from the stored counts by
    :func:`~odbench.metrics.sod.family_curves`, their weighted means (and that of the per-image
    Fβ curves ``fbeta`` (n, T)) reduced by :func:`~odbench.metrics.sod.reduce_family_curves`,
    the meter's own reduction.  Each value is (B,)."""
    per_image = [
        family_curves(sod.tp[i], sod.fp[i], int(sod.n_gt[i]), int(sod.n_pix[i]), protocol)
        for i in range(len(sod.n_gt))
    ]
    e_curve, _, tpr, fpr = (np.stack(c) for c in zip(*per_image))
    return reduce_family_curves(
        weighted_mean(e_curve, weights),
        weighted_mean(e_curve.max(axis=1), weights),
        weighted_mean(fpr, weights),
        weighted_mean(tpr, weights),
        weighted_mean(fbeta, weights),
        protocol.max_over,
    )


def run_protocol(run: RunResult) -> Protocol:
    """The protocol a run was scored under: its stored definition (guards, ``max_over``), else
    the registered protocol of its name."""
    definition = run.protocol.get("definition")
    if not definition:
        return get_protocol(run.protocol_name)
    try:
        return Protocol.from_dict(definition)
    except (TypeError, ValueError) as e:
        raise ResultsError(f"{run.path}: bad protocol definition ({e}); re-run the scoring") from e


def compare_records(
    rec_a: Records,
    rec_b: Records,
    *,
    protocol: Protocol | str = DEFAULT_PROTOCOL,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    discovery: DetectionProtocol | None = None,
) -> list[MetricComparison]:
    """Per-metric comparison of two runs' per-image records on the same images.

    Per-image means (the catalog's ``per_image`` metrics both runs' records keep: Acc, IoU,
    MAE and, scored with ``--metrics all``, the family's per-image scalars): percentile-bootstrap
    CIs and a Wilcoxon signed-rank test.  maxFβ: recomputed from the resampled mean Fβ curves;
    paired-bootstrap p-value.  When both have the family's records: E mean / max, mean Fβ and
    AUC (:data:`SOD_CURVE_METRICS`) recomputed from the resampled mean curves
    (:func:`family_statistics`) as maxFβ.  Rows in the catalog's order.  CorLoc (when both have hits): bootstrap CIs and an
    exact McNemar test.  Discovery (when both have its records; ``discovery``: the protocol):
    AP, AP50 and AR100 per iou type accumulated per resample (weighted), paired-bootstrap p-value.  The
    resamples are the rows of one weights matrix (Efron & Tibshirani
    1993, ch. 6): every statistic is a matrix product with per-image values."""
    protocol = get_protocol(protocol)
    ids_a, ids_b = list(rec_a.ids), list(rec_b.ids)
    if sorted(ids_a) != sorted(ids_b):
        only_a = len(set(ids_a) - set(ids_b))
        only_b = len(set(ids_b) - set(ids_a))
        raise ResultsError(
            f"the runs cover different images ({len(ids_a)} vs {len(ids_b)}; {only_a} only in the "
            f"first, {only_b} only in the second); re-run both on the same dataset and --limit"
        )
    a, b = rec_a.take(np.argsort(ids_a)), rec_b.take(np.argsort(ids_b))
    n = len(ids_a)
    weights = np.vstack([np.ones((1, n)), bootstrap_weights(n, n_resamples, seed)])

    def resampled(
        metric: str, sa: np.ndarray, sb: np.ndarray, test: str, p_value: float | None
    ) -> MetricComparison:
        """Row 0 of ``sa`` / ``sb``: the point estimates; the rest: the resamples."""
        d = sb - sa
        return MetricComparison(
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

    out: dict[str, MetricComparison] = {}
    # per-image means: every catalog metric whose values both runs' records keep
    arrays_a, arrays_b = a.arrays(), b.arrays()
    for m in METRICS.values():
        if m.per_image and m.key in arrays_a and m.key in arrays_b:
            xa, xb = arrays_a[m.key], arrays_b[m.key]
            p = wilcoxon_p_value(xa, xb)
            sa, sb = weighted_mean(xa, weights), weighted_mean(xb, weights)
            out[m.key] = resampled(m.key, sa, sb, "Wilcoxon signed-rank", p)
    if a.saliency is not None and b.saliency is not None:
        sal_a, sal_b = a.saliency, b.saliency
        if sal_a.fbeta.shape != sal_b.fbeta.shape:
            raise ResultsError("the runs' Fβ curves have different threshold grids")
        stat = fbeta_statistic(protocol.max_over)
        fba, fbb = stat(sal_a.fbeta, weights), stat(sal_b.fbeta, weights)
        out["max_fbeta"] = resampled("max_fbeta", fba, fbb, "paired bootstrap", None)
        if a.sod is not None and b.sod is not None:
            if a.sod.tp.shape != b.sod.tp.shape:
                raise ResultsError("the runs' family records have different threshold grids")
            fa = family_statistics(a.sod, sal_a.fbeta, weights, protocol)
            fb = family_statistics(b.sod, sal_b.fbeta, weights, protocol)
            for metric in SOD_CURVE_METRICS:
                out[metric] = resampled(metric, fa[metric], fb[metric], "paired bootstrap", None)
    if a.localization is not None and b.localization is not None:
        ha, hb = a.localization.hit.astype(bool), b.localization.hit.astype(bool)
        has_gt = (a.localization.n_boxes > 0) & (b.localization.n_boxes > 0)
        stat = weighted_mean if has_gt.all() else corloc_statistic(has_gt)
        sa = stat(ha.astype(np.float64), weights) * 100.0
        sb = stat(hb.astype(np.float64), weights) * 100.0
        out["corloc"] = resampled("corloc", sa, sb, "McNemar (exact)", mcnemar_p_value(ha, hb))
    if a.discovery is not None and b.discovery is not None and discovery is not None:
        da = bootstrap_statistics(a.discovery, weights, discovery)
        db = bootstrap_statistics(b.discovery, weights, discovery)
        for metric in [k for k in da if k in db]:
            out[metric] = resampled(metric, da[metric], db[metric], "paired bootstrap", None)
    return [out[k] for k in METRICS if k in out]  # in the catalog's order


def compare_runs(
    results_dir: Path,
    methods: tuple[str, str],
    dataset: str,
    protocol: str = DEFAULT_PROTOCOL,
    n_resamples: int = 1000,
    seed: int = 0,
) -> tuple[list[RunResult], list[MetricComparison]]:
    results = load_all_results(results_dir)
    runs = [select(results, m, dataset, protocol, results_dir=results_dir) for m in methods]
    for run in runs:
        _check_reproduces(run, run_protocol(run))
    try:
        found = [protocol_of(r.protocol) for r in runs]
    except DiscoveryError as e:
        raise ResultsError(f"{runs[0].path}: {e}") from e
    for run, proto in zip(runs, found):
        _check_discovery(run, proto)
    if found[0] is not None and found[1] is not None and found[0] != found[1]:
        raise ResultsError(
            f"the runs were scored under different discovery protocols ({found[0].name} vs "
            f"{found[1].name}); re-run one of them with the other's"
        )
    comparisons = compare_records(
        runs[0].records,
        runs[1].records,
        protocol=run_protocol(runs[0]),
        n_resamples=n_resamples,
        seed=seed,
        discovery=found[0],
    )
    return runs, comparisons


def _same(value: float, stored: object) -> bool:
    """A recomputed metric equals a stored one: to 1e-9, or both NaN (JSON may hold "nan")."""
    try:
        want = float(stored)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    if math.isnan(want) or math.isnan(value):
        return math.isnan(want) and math.isnan(value)
    return math.isclose(value, want, rel_tol=1e-9, abs_tol=1e-9)


def _check_reproduces(run: RunResult, protocol: Protocol) -> None:
    """The records must give back the run's own metrics -- the catalog's per-image means, maxFβ
    and, when it has family records, the family's curve metrics -- (catches stale or foreign
    records)."""
    rec = run.records
    ones = np.ones((1, len(rec.ids)))
    sal = run.metrics.get("saliency")
    if sal is not None and rec.saliency is not None:
        s, arrays = rec.saliency, rec.arrays()
        ours = {
            m.key: float(weighted_mean(arrays[m.key], ones)[0])
            for m in METRICS.values()
            if m.per_image and m.task == "saliency" and m.key in arrays
        }
        ours["max_fbeta"] = float(fbeta_statistic(protocol.max_over)(s.fbeta, ones)[0])
        if rec.sod is not None:
            curves = family_statistics(rec.sod, s.fbeta, ones, protocol)
            ours.update({m: float(v[0]) for m, v in curves.items()})
        for metric, value in ours.items():
            stored = sal.get(metric)
            if stored is not None and not _same(value, stored):
                raise ResultsError(
                    f"{run.path}: {metric} = {stored} but its records give {value}; the "
                    f"records file does not belong to this run"
                )
    loc = run.metrics.get("localization")
    if loc is not None and rec.localization is not None:
        has_gt = rec.localization.n_boxes > 0
        corloc = 100.0 * float(np.mean(rec.localization.hit[has_gt])) if has_gt.any() else 0.0
        if not math.isclose(corloc, loc["corloc"]):
            raise ResultsError(
                f"{run.path}: corloc = {loc['corloc']} but its records give {corloc}; the "
                f"records file does not belong to this run"
            )


def _check_discovery(run: RunResult, protocol: DetectionProtocol | None) -> None:
    """The discovery records must give back the run's own AP / AR (NaN where it stored null)."""
    stored, rec = run.metrics.get("discovery"), run.records.discovery
    if stored is None or rec is None or protocol is None:
        return
    for metric, value in rec.summarize(protocol).items():
        want = stored.get(metric)
        if (
            metric in METRICS
            and not (want is None and math.isnan(value))
            and not _same(value, want)
        ):
            raise ResultsError(
                f"{run.path}: {metric} = {want} but its records give {value}; the records file "
                "does not belong to this run"
            )


def render_compare(
    runs: list[RunResult], comparisons: list[MetricComparison], level: float = 0.95
) -> str:
    from odbench.leaderboard import run_label

    a, b = (run_label(r.method_name, r.overrides) for r in runs)
    pct = f"{round(level * 100)}%"
    lines = [
        f"{a} vs {b} on {runs[0].dataset_name} ({runs[0].n_evaluated} images, protocol "
        f"{runs[0].protocol_name}); {pct} percentile-bootstrap CIs, images resampled in pairs",
        "",
        f"| metric | {a} [{pct} CI] | {b} [{pct} CI] | {b} − {a} [{pct} CI] | better | p | test |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in comparisons:

        def f(v: float, ci: tuple[float, float], sign: bool = False) -> str:
            s = "+" if sign else ""
            return f"{v:{s}.4f} [{ci[0]:{s}.4f}, {ci[1]:{s}.4f}]"

        arrow = "↑" if c.higher_is_better else "↓"
        better = {"a": a, "b": b, None: "–"}[c.better]
        lines.append(
            f"| {c.metric} {arrow} | {f(c.a, c.a_ci)} | {f(c.b, c.b_ci)} | "
            f"{f(c.diff, c.diff_ci, True)} | {better} | {c.p_value:.3g} | {c.test} |"
        )
    lines.append("")
    lower = ", ".join(m.label for m in METRICS.values() if not m.higher_is_better)
    lines.append(
        f"↑ higher is better, ↓ lower ({lower}); better: the run ahead when the CI of the "
        "difference excludes 0."
    )
    lines.append(
        "p: Wilcoxon signed-rank (scipy) on per-image values; exact McNemar on CorLoc hits; "
        "two-sided paired bootstrap for maxFβ, the family's curve metrics and discovery's AP / "
        "AR (smallest possible p = 2/(resamples + 1))."
    )
    skipped = _skipped_family(runs)
    if skipped:
        lines.append(skipped)
    lines.append("runs: " + ", ".join(Path(str(r.path)).name for r in runs))
    return "\n".join(lines) + "\n"


def _skipped_family(runs: list[RunResult]) -> str | None:
    """One line when only one run has the family's per-image records: what was left out and
    how to get it; None otherwise."""
    without = [r for r in runs if r.records.sod is None]
    if len(without) != 1 or runs[0].records.saliency is None:
        return None
    from odbench.leaderboard import run_label

    r = without[0]
    return (
        f"skipped (only one run has per-image family records): {', '.join(SOD_KEYS)}; "
        f"re-score {run_label(r.method_name, r.overrides)} with --metrics all (odbench score "
        f"--metrics all, or odbench eval --metrics all) to compare them"
    )
