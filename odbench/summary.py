"""A run's metrics as the terminal shows them: one line per task, the catalog's short labels
(``odbench eval``, ``reproduce`` and ``bench learn`` print these)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from odbench.metrics.catalog import METRICS
from odbench.metrics.catalog import keys as keys_of


def threshold_note(m: dict[str, Any]) -> str:
    """Why the best threshold is what it is, when a number alone would mislead."""
    curve = m.get("fbeta_curve") or []
    if m.get("best_threshold") is None:
        return ""
    if curve and max(curve) == 0:
        return "  (Fβ is 0 at every threshold: no predicted pixel is foreground in the GT)"
    if curve and max(curve) == min(curve):
        return (
            "  (Fβ is the same at every threshold: the maps are constant or binary, so no "
            "threshold is better than another)"
        )
    return f"  (best threshold {m['best_threshold']:.3f})"


def _number(value: Any) -> str:
    return "NaN" if value is None or value != value else f"{value:.4f}"


def format_metrics(metrics: dict[str, Any], keys: Sequence[str] | None = None) -> list[str]:
    """One line per task, the catalog's short labels: ``saliency: acc 0.912  iou 0.655  maxF
    0.771  mae 0.083``, the family (``--metrics all``) on a second line; ``keys`` (``--metrics
    NAME,...``): only those of the saliency metrics."""
    lines = []
    if "saliency" in metrics:
        m = metrics["saliency"]
        basic = [k for k in keys_of(meter="saliency") if keys is None or k in keys]
        if basic:
            shown = "  ".join(f"{METRICS[k].short} {_number(m[k])}" for k in basic)
            lines.append("saliency:     " + shown)
            if "max_fbeta" in basic:
                lines[-1] += threshold_note(m)
        family = [k for k in keys_of(meter="sod") if k in m and (keys is None or k in keys)]
        if family:
            lead = "              " if basic else "saliency:     "
            lines.append(lead + "  ".join(f"{METRICS[k].short} {_number(m[k])}" for k in family))
    if "localization" in metrics:
        m = metrics["localization"]
        corloc = f"{METRICS['corloc'].short} {m['corloc']:.2f}%"
        lines.append(f"localization: {corloc} ({m['hits']}/{m['n_images']})")
        if m.get("n_no_gt"):
            lines[-1] += (
                f"; {m['n_no_gt']} image(s) without a (non-crowd) GT box left out, as LOST and "
                "TokenCut do"
            )
    if "discovery" in metrics:
        m = metrics["discovery"]
        for prefix, iou_type in (("box", "bbox"), ("mask", "segm")):
            if f"{prefix}_AP" in m:
                shown = "  ".join(
                    f"{k} {_number(m[f'{prefix}_{k}'])}" for k in ("AP", "AP50", "AP75", "AR100")
                )
                lines.append(f"discovery:    {iou_type} {shown}")
    return lines
