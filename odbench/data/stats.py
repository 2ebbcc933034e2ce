"""Dataset statistics of DiffusionSeg section 4.3.1 (Figs. 3-5) and Table 2.

For every GT mask, binarised as the ``odbench`` protocol does (8-bit value >= 128; 16-bit masks
scaled to 8 bits first, i.e. value >= 32768):

* **object size**: the foreground fraction, foreground pixels / image pixels (paper, "Object Size");
* **centre**: the centre of the tight box around all foreground pixels, divided by the image
  width and height, so (0.5, 0.5) is the image centre (paper, "Center Bias", Fig. 5);
* **colour contrast**: the chi-square distance between the foreground and background colour
  histograms, as in the centre-surround histogram feature of Liu et al., "Learning to Detect a
  Salient Object" (CVPR 2007; TPAMI 33(2), 2011): each region's RGB pixels are counted in a
  joint histogram of 8 bins per channel (512 bins, bin = value // 32), normalised to sum 1, and
  ``chi2(p, q) = 1/2 * sum_k (p_k - q_k)^2 / (p_k + q_k)`` over bins with ``p_k + q_k > 0``.
  It lies in [0, 1]: 0 for identical colour distributions, 1 for disjoint ones;
* **SC / PL**: vertex count and perimeter of the normalised simplified outer contour, and per
  dataset **SD**, the mean pairwise Chamfer distance of those contours
  (:mod:`odbench.metrics.geometry`; paper appendix 6.1.3, Eq. 12).

An empty mask (or a mask covering the whole image) has no box / no background: its centre and
contrast are NaN and are left out of the summaries, which report how many were left out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

BINS_PER_CHANNEL = 8  # 256 / 8 = 32 values per bin: bin = value >> 5


@dataclass(frozen=True)
class MaskStats:
    id: str
    size: float
    center_x: float
    center_y: float
    contrast: float
    sc: int
    pl: float


def binarise(mask: np.ndarray) -> np.ndarray:
    """Foreground of a GT mask as the ``odbench`` protocol defines it (see module docstring)."""
    if mask.dtype == np.uint16:
        return mask >= 32768
    if mask.dtype == np.uint8:
        return mask >= 128
    if mask.dtype == np.bool_:
        return mask
    raise TypeError(f"unsupported mask dtype {mask.dtype}")


def colour_bins(image: np.ndarray) -> np.ndarray:
    """Joint RGB bin index (0..511, 8 bins per channel, bin = value // 32) of every pixel."""
    q = (image.reshape(-1, 3) >> 5).astype(np.intp)
    return (q[:, 0] * BINS_PER_CHANNEL + q[:, 1]) * BINS_PER_CHANNEL + q[:, 2]


def chi_square(p: np.ndarray, q: np.ndarray) -> float:
    """``1/2 * sum (p - q)^2 / (p + q)`` over bins where ``p + q > 0`` (Liu et al. 2011)."""
    s = p + q
    nz = s > 0
    return float(0.5 * (((p[nz] - q[nz]) ** 2) / s[nz]).sum())


def colour_contrast(image: np.ndarray, fg: np.ndarray) -> float:
    """Chi-square distance between the normalised fg and bg colour histograms (512 bins);
    NaN if either region is empty."""
    flat = fg.reshape(-1)
    n_fg = int(flat.sum())
    if n_fg == 0 or n_fg == flat.size:
        return math.nan
    bins = colour_bins(image)
    total = np.bincount(bins, minlength=BINS_PER_CHANNEL**3).astype(np.float64)
    fg_hist = np.bincount(bins[flat], minlength=BINS_PER_CHANNEL**3).astype(np.float64)
    bg_hist = total - fg_hist
    return chi_square(fg_hist / n_fg, bg_hist / (flat.size - n_fg))


def box_center(fg: np.ndarray) -> tuple[float, float]:
    """Centre of the tight box of all foreground pixels, normalised by width and height
    (continuous coordinates: pixel columns 0..9 span x in [0, 10])."""
    ys, xs = np.nonzero(fg)
    if len(xs) == 0:
        return math.nan, math.nan
    h, w = fg.shape
    return (xs.min() + xs.max() + 1) / 2 / w, (ys.min() + ys.max() + 1) / 2 / h


def mask_stats(sample_id: str, image: np.ndarray, mask: np.ndarray) -> tuple[MaskStats, np.ndarray]:
    """Per-mask statistics and the contour polygon used for SD."""
    from odbench.metrics.geometry import contour_polygon, polygon_length

    fg = binarise(mask)
    cx, cy = box_center(fg)
    polygon = contour_polygon(fg.astype(np.uint8))
    record = MaskStats(
        id=sample_id,
        size=float(fg.mean()),
        center_x=float(cx),
        center_y=float(cy),
        contrast=colour_contrast(image, fg),
        sc=len(polygon),
        pl=polygon_length(polygon),
    )
    return record, polygon


@dataclass
class DatasetStats:
    name: str
    records: list[MaskStats] = field(default_factory=list)
    polygons: list[np.ndarray] = field(default_factory=list)

    def column(self, key: str) -> np.ndarray:
        return np.array([getattr(r, key) for r in self.records], dtype=np.float64)

    def summary(self, sd_shapes: int = 1000, seed: int = 0) -> dict[str, Any]:
        """Mean / median / std of every statistic (NaNs left out and counted) and SD."""
        from odbench.metrics.geometry import shape_diversity

        out: dict[str, Any] = {"name": self.name, "n_masks": len(self.records)}
        for key in ("size", "contrast", "center_x", "center_y", "sc", "pl"):
            values = self.column(key)
            ok = values[~np.isnan(values)]
            out[key] = {
                "mean": float(ok.mean()) if len(ok) else math.nan,
                "median": float(np.median(ok)) if len(ok) else math.nan,
                "std": float(ok.std()) if len(ok) else math.nan,
                "n_undefined": int(np.isnan(values).sum()),
            }
        cx, cy = self.column("center_x"), self.column("center_y")
        dist = np.hypot(cx - 0.5, cy - 0.5)
        dist = dist[~np.isnan(dist)]
        out["center_distance"] = float(dist.mean()) if len(dist) else math.nan
        non_empty = [p for p in self.polygons if len(p) > 0]
        out["sd"] = (
            shape_diversity(non_empty, max_shapes=sd_shapes, seed=seed)
            if len(non_empty) >= 2
            else math.nan
        )
        out["sd_shapes"] = min(len(non_empty), sd_shapes)
        return out


def collect(name: str, samples: Iterable[Any]) -> DatasetStats:
    """Statistics of every sample (objects with ``id``, ``image`` and ``mask``)."""
    from odbench.data.base import DatasetError

    stats = DatasetStats(name)
    for s in samples:
        if s.mask is None:
            raise DatasetError(f"{name}: sample {s.id!r} has no GT mask; statistics need masks")
        record, polygon = mask_stats(s.id, s.image, s.mask)
        stats.records.append(record)
        stats.polygons.append(polygon)
    if not stats.records:
        raise DatasetError(f"{name}: no samples (empty dataset)")
    return stats


# ----------------------------------------------------------------------------- outputs


def _fmt(x: float, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def markdown_report(summaries: list[dict[str, Any]], plots: list[str], info: dict[str, Any]) -> str:
    names = [s["name"] for s in summaries]
    head = "| statistic | " + " | ".join(names) + " |\n|---|" + "---|" * len(names) + "\n"
    rows = [
        ("masks", lambda s: str(s["n_masks"])),
        (
            "object size, mean (median)",
            lambda s: f"{_fmt(s['size']['mean'])} ({_fmt(s['size']['median'])})",
        ),
        (
            "colour contrast χ², mean (median)",
            lambda s: f"{_fmt(s['contrast']['mean'])} ({_fmt(s['contrast']['median'])})",
        ),
        (
            "box centre x, mean ± std",
            lambda s: f"{_fmt(s['center_x']['mean'])} ± {_fmt(s['center_x']['std'])}",
        ),
        (
            "box centre y, mean ± std",
            lambda s: f"{_fmt(s['center_y']['mean'])} ± {_fmt(s['center_y']['std'])}",
        ),
        ("centre distance to (0.5, 0.5), mean", lambda s: _fmt(s["center_distance"])),
        ("SC (vertices), mean", lambda s: _fmt(s["sc"]["mean"], 2)),
        ("PL (perimeter), mean", lambda s: _fmt(s["pl"]["mean"])),
        ("SD (mean pairwise Chamfer)", lambda s: f"{_fmt(s['sd'])} ({s['sd_shapes']} shapes)"),
        (
            "masks without box / background",
            lambda s: f"{s['center_x']['n_undefined']} / {s['contrast']['n_undefined']}",
        ),
    ]
    body = "".join(
        f"| {label} | " + " | ".join(f(s) for s in summaries) + " |\n" for label, f in rows
    )
    lines = [
        f"# Dataset statistics: {' vs '.join(names)}",
        "",
        "DiffusionSeg section 4.3.1 (Figs. 3-5) and Table 2, computed by `odbench stats`.",
        "",
        head + body,
        "## Definitions",
        "",
        "- GT foreground: 8-bit value >= 128 (the `odbench` protocol's binarisation).",
        "- Object size: foreground pixels / image pixels.",
        "- Box centre: centre of the tight box around all foreground pixels, divided by image width / height.",
        "- Colour contrast: chi-square distance 1/2 Σ (p−q)²/(p+q) between the normalised 8×8×8 RGB histograms "
        "of foreground and background pixels, as in Liu et al., *Learning to Detect a Salient Object*, "
        "CVPR 2007 / TPAMI 2011 (0 = same colours, 1 = disjoint colours).",
        "- SC / PL / SD: `odbench.metrics.geometry` (paper appendix 6.1.3, Eq. 12): contour normalised to the "
        "unit square, Douglas-Peucker 0.01; SD on at most the stated number of shapes (seeded subset).",
        "",
        "## Run",
        "",
        *[f"- {k}: {v}" for k, v in info.items()],
        "",
        "## Plots",
        "",
        *[f"![{p}]({p})" for p in plots],
        "",
    ]
    return "\n".join(lines)


def plot_histograms(
    stats: list[DatasetStats], key: str, xlabel: str, title: str, out: Path
) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    bins = np.linspace(0.0, 1.0, 21)
    for ds, colour in zip(stats, ("tab:blue", "tab:orange")):
        values = ds.column(key)
        values = values[~np.isnan(values)]
        weights = np.full(len(values), 1.0 / max(len(values), 1))
        ax.hist(
            values,
            bins=bins.tolist(),
            weights=weights,
            alpha=0.55,
            color=colour,
            edgecolor="white",
            label=f"{ds.name} (n={len(values)}, mean {values.mean():.2f})",
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction of masks")
    ax.set_title(title)
    ax.set_xlim(0, 1)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, out)


def plot_centers(stats: list[DatasetStats], out: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * len(stats), 4.4), dpi=120)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(stats), squeeze=False)[0]
    for ax, ds, colour in zip(axes, stats, ("tab:blue", "tab:orange")):
        cx, cy = ds.column("center_x"), ds.column("center_y")
        ok = ~np.isnan(cx)
        ax.scatter(cx[ok], cy[ok], s=6, alpha=0.5, color=colour, linewidths=0)
        ax.plot([0.5], [0.5], marker="+", color="black", markersize=12)
        ax.set_xlim(0, 1)
        ax.set_ylim(1, 0)  # image coordinates: y grows downwards
        ax.set_aspect("equal")
        ax.set_xlabel("box centre x / width")
        ax.set_ylabel("box centre y / height")
        ax.set_title(f"{ds.name} (n={int(ok.sum())})")
        ax.grid(alpha=0.3)
    fig.suptitle("Center bias: object box centres")
    fig.tight_layout()
    _save(fig, out)


def _save(fig: Any, out: Path) -> None:
    import io

    from odbench.imageio import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(out, buf.getvalue())


def _no_nan(value: Any) -> Any:
    """JSON has no NaN: undefined numbers become null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return value


def write_outputs(
    stats: list[DatasetStats],
    out_dir: Path,
    info: dict[str, Any],
    sd_shapes: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Write ``report.md``, ``stats.json``, per-mask CSVs and the three PNG plots into
    ``out_dir`` (each file atomically); return the summaries."""
    import csv
    import io
    import json

    from odbench.imageio import atomic_write_bytes

    out_dir.mkdir(parents=True, exist_ok=True)
    summaries = [s.summary(sd_shapes=sd_shapes, seed=seed) for s in stats]
    plots = ["size_hist.png", "contrast_hist.png", "center_scatter.png"]
    plot_histograms(
        stats, "size", "object size (foreground fraction)", "Object size", out_dir / plots[0]
    )
    plot_histograms(
        stats,
        "contrast",
        "colour contrast (χ² of fg/bg RGB histograms)",
        "Colour contrast",
        out_dir / plots[1],
    )
    plot_centers(stats, out_dir / plots[2])
    for s in stats:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(MaskStats.__dataclass_fields__))
        writer.writeheader()
        for r in s.records:
            writer.writerow(asdict(r))
        atomic_write_bytes(out_dir / f"{s.name}_per_mask.csv", buf.getvalue().encode())
    payload = _no_nan({"info": info, "summaries": summaries})
    atomic_write_bytes(out_dir / "stats.json", (json.dumps(payload, indent=2) + "\n").encode())
    atomic_write_bytes(out_dir / "report.md", markdown_report(summaries, plots, info).encode())
    return {"summaries": summaries, "files": ["report.md", "stats.json", *plots]}
