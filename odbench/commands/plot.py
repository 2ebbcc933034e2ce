"""``odbench plot curves``: PR, Fβ-threshold and E-threshold curves from stored results;
``odbench plot discovery``: the precision-recall curves of multi-object discovery runs.

Reads the curves the runs stored (``metrics.saliency.fbeta_curve`` always; ``curves.precision``,
``recall``, ``e_measure`` when scored with ``--metrics all``), never recomputes them.  One
figure per curve kind, one subplot per dataset, the legend below the axes (it never covers a
curve), written as PNG and PDF.  Per (method, dataset) the run every command shows
(:func:`odbench.results.select`) under ``--protocol``; a dataset without results is left out,
with a note.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import click

from odbench.commands import options
from odbench.errors import UserError

#: (file stem, title, x key, y key, x label, y label)
KINDS = (
    ("pr_curves", "Precision-recall", "recall", "precision", "recall", "precision"),
    ("fbeta_curves", "Fβ against threshold", "thresholds", "fbeta", "threshold", "Fβ"),
    ("emeasure_curves", "Eξ against threshold", "thresholds", "e_measure", "threshold", "Eξ"),
)


def _canonical(dataset: str) -> str:
    """A dataset's registered name for an alias (``ECSSD`` -> ``ecssd``); other names as given
    (``folder:NAME``, a ``score --config`` dataset)."""
    from odbench.registry import DATASETS

    return DATASETS.canonical(dataset) if dataset in DATASETS else dataset


def select_runs(
    results_dir: Path,
    datasets: list[str],
    methods: list[str],
    protocol: str,
    notes: list[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """dataset -> method -> the saliency run to draw (:func:`odbench.results.select`), for the
    datasets that have one.  What is asked for but not found is one line per dataset appended
    to ``notes``; nothing found at all is an error naming what the results hold."""
    from odbench.results import load_all_results, select_all

    if not Path(results_dir).is_dir():
        raise UserError(
            f"{results_dir}: no such results folder (--results-dir: where odbench eval and "
            "odbench score --config wrote their results)"
        )
    runs = load_all_results(results_dir)
    datasets = list(dict.fromkeys(_canonical(d) for d in datasets))
    usable = [r for r in runs if r.protocol_name == protocol and "saliency" in r.metrics]
    held = sorted({r.dataset_name for r in usable})
    have = {r.method_name for r in usable if r.dataset_name in datasets}
    missing = [m for m in methods if m not in have]
    if missing and have:
        raise UserError(
            f"{results_dir}: no results for method(s) {', '.join(missing)} on "
            f"{', '.join(datasets)} under protocol {protocol} (found: {', '.join(sorted(have))})"
        )
    # per (dataset, method): the run every command shows (odbench.results.select)
    chosen: dict[str, dict[str, Any]] = {d: {} for d in datasets}
    for run in select_all(usable, "saliency"):
        if run.dataset_name in chosen and (not methods or run.method_name in methods):
            chosen[run.dataset_name][run.method_name] = run
    empty = [d for d, found in chosen.items() if not found]
    if len(empty) == len(datasets):
        raise UserError(
            f"{results_dir}: no saliency results for dataset(s) {', '.join(empty)} under "
            f"protocol {protocol}"
            + (f" (found: {', '.join(held)})" if held else "")
            + "; run odbench eval or odbench score --config first"
        )
    missing = [m for m in methods if not any(m in found for found in chosen.values())]
    if missing:
        raise UserError(f"{results_dir}: no results for method(s) {', '.join(missing)}")
    drawn = sorted({m for found in chosen.values() for m in found})
    for dataset, found in chosen.items():
        lacking = [m for m in drawn if m not in found]
        if notes is None or not lacking:
            continue
        if not found:
            others = [d for d in held if d not in datasets]
            notes.append(
                f"{dataset}: not plotted, no saliency results under protocol {protocol}"
                + (f" (the results hold: {', '.join(others)})" if others else "")
            )
        else:
            notes.append(f"{dataset}: no results of {', '.join(lacking)} (not drawn there)")
    return {d: found for d, found in chosen.items() if found}


def curve(run: Any, x_key: str, y_key: str) -> tuple[list[float], list[float]] | None:
    """A stored curve of a run, or None when the run did not store it."""
    sal = run.metrics["saliency"]
    stored = dict(sal.get("curves") or {})
    stored.setdefault("fbeta", sal.get("fbeta_curve"))
    if "thresholds" not in stored and sal.get("fbeta_curve") is not None:
        n = len(sal["fbeta_curve"])
        stored["thresholds"] = [k / 255 for k in range(n)]
    x, y = stored.get(x_key), stored.get(y_key)
    if x is None or y is None or len(x) != len(y):
        return None
    return list(x), list(y)


SUBSET_NOTE = "* evaluated on a subset of the dataset (--limit, or a smaller GT folder)"


def legend_labels(chosen: dict[str, dict[str, Any]]) -> dict[str, str]:
    """method -> its legend entry: the name, with ``*`` when every drawn run of the method saw
    only a subset of its dataset (a method whose subset runs are in some panels only is marked
    in those panels' titles, :func:`panel_titles`; :data:`SUBSET_NOTE` goes under the title)."""
    from odbench.results import is_subset

    runs: dict[str, list[Any]] = {}
    for found in chosen.values():
        for method, run in found.items():
            runs.setdefault(method, []).append(run)
    return {m: m + ("*" if all(is_subset(r) for r in rs) else "") for m, rs in runs.items()}


def panel_titles(chosen: dict[str, dict[str, Any]], labels: dict[str, str]) -> dict[str, str]:
    """dataset -> its subplot's title: the name, starred when all its runs saw a subset and the
    legend does not say so already, else followed by the methods whose run there saw one."""
    from odbench.results import is_subset

    titles = {}
    for dataset, found in chosen.items():
        subset = [m for m, run in found.items() if is_subset(run)]
        unmarked = [m for m in subset if not labels[m].endswith("*")]
        if not unmarked:
            titles[dataset] = dataset
        elif len(subset) == len(found):
            titles[dataset] = dataset + "*"
        else:
            titles[dataset] = f"{dataset} (* {', '.join(sorted(unmarked))})"
    return titles


def plot_curves(
    chosen: dict[str, dict[str, Any]], out: Path, highlight: str | None = None
) -> list[Path]:
    """Write the figures; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from odbench.imageio import atomic_write_bytes
    from odbench.outputs import check_output_folder
    from odbench.results import is_subset

    check_output_folder(out, "--out")
    methods = sorted({m for found in chosen.values() for m in found})
    labels_of = legend_labels(chosen)
    titles = panel_titles(chosen, labels_of)
    starred = any(is_subset(run) for found in chosen.values() for run in found.values())
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    written: list[Path] = []
    for stem, title, xk, yk, xlabel, ylabel in KINDS:
        fig, axes = plt.subplots(1, len(chosen), figsize=(4.2 * len(chosen), 4.2), squeeze=False)
        drawn = 0
        for ax, (dataset, found) in zip(axes[0], chosen.items()):
            for method in methods:
                if method not in found:
                    continue
                xy = curve(found[method], xk, yk)
                if xy is None:
                    continue
                strong = highlight is None or method == highlight
                ax.plot(
                    *xy,
                    label=labels_of[method],
                    color=colours[method],
                    linewidth=2.4 if method == highlight else 1.4,
                    alpha=1.0 if strong else 0.55,
                    zorder=3 if method == highlight else 2,
                )
                drawn += 1
            ax.set_title(titles[dataset])
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.set_xlim(0, 1)
            ax.grid(alpha=0.3)
        if drawn:
            handles, labels = [], []
            for ax in axes[0]:
                for h, lab in zip(*ax.get_legend_handles_labels()):
                    if lab not in labels:
                        handles.append(h)
                        labels.append(lab)
            fig.suptitle(f"{title}\n{SUBSET_NOTE}" if starred else title)
            fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), frameon=False)
            fig.tight_layout(rect=(0, 0.06 + 0.04 * ((len(labels) - 1) // 5), 1, 1))
            for ext in ("png", "pdf"):
                buf = io.BytesIO()
                fig.savefig(buf, format=ext, dpi=150)
                path = out / f"{stem}.{ext}"
                atomic_write_bytes(path, buf.getvalue())  # never a half-written figure
                written.append(path)
        else:
            click.echo(f"note: no run stored {title} curves (score with --metrics all)", err=True)
        plt.close(fig)
    return written


@click.group("plot")
def plot() -> None:
    """Figures from stored results."""


@plot.command("curves")
@click.option("--dataset", "datasets", multiple=True, required=True, help="Repeatable.")
@click.option("--methods", default="", help="Comma-separated (default: every method).")
@click.option("--highlight", default=None, help="Draw this method on top, thicker.")
@options.protocol()
@options.results_dir("Folder of results JSON files (the results store).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder.")
def curves(
    datasets: tuple[str, ...],
    methods: str,
    highlight: str | None,
    protocol: str,
    results_dir: Path,
    out: Path,
) -> None:
    """PR, Fβ-threshold and E-threshold curves, one subplot per dataset (PNG + PDF)."""
    wanted = [m for m in methods.split(",") if m]
    notes: list[str] = []
    chosen = select_runs(results_dir, list(datasets), wanted, protocol, notes)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    if highlight is not None and not any(highlight in f for f in chosen.values()):
        raise UserError(f"--highlight {highlight}: no such method in the selected results")
    for path in plot_curves(chosen, out, highlight):
        click.echo(str(path))


@plot.command("discovery")
@click.option("--dataset", "datasets", multiple=True, required=True, help="Repeatable.")
@click.option(
    "--methods", default="", help="Comma-separated (default: every method with a discovery run)."
)
@click.option(
    "--iou-type",
    type=click.Choice(["bbox", "segm"]),
    default=None,
    help="Boxes or masks (default: both; segm where the runs scored masks).",
)
@options.protocol("The runs' protocol (discovery runs carry the saliency protocol's name).")
@options.results_dir("Folder of results JSON files (the results store).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder.")
def discovery(
    datasets: tuple[str, ...],
    methods: str,
    iou_type: str | None,
    protocol: str,
    results_dir: Path,
    out: Path,
) -> None:
    """Multi-object discovery: precision-recall curves at IoU .5 and .75 (all areas, the
    protocol's max detections; COCO's interpolated precision at 101 recall points, whose mean
    is AP50 / AP75), one curve per method, a column per dataset: discovery_pr_bbox /
    discovery_pr_segm (PNG + PDF) and the points drawn in discovery_pr.csv."""
    from odbench.report.discovery import runs_to_plot

    chosen = runs_to_plot(
        results_dir, list(datasets), [m for m in methods.split(",") if m], protocol
    )
    for path in plot_discovery(chosen, out, [iou_type] if iou_type else ["bbox", "segm"]):
        click.echo(str(path))


def plot_discovery(chosen: dict[str, list[Any]], out: Path, iou_types: list[str]) -> list[Path]:
    """Write the figures (one per iou type that some run scored) and the CSV of their points;
    returns the files written."""
    import csv

    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from odbench.imageio import atomic_write_bytes
    from odbench.outputs import check_output_folder
    from odbench.report.discovery import CURVE_IOUS, pr_curves, scored_iou_types

    check_output_folder(out, "--out")
    methods = sorted({r.method_name for runs in chosen.values() for r in runs})
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    rows: list[list[Any]] = []
    written: list[Path] = []
    for iou_type in iou_types:
        have: dict[str, list[Any]] = {}
        for dataset, runs in chosen.items():
            drawn = [r for r in runs if iou_type in scored_iou_types(r)]
            if drawn:
                have[dataset] = drawn
        if not have:
            if len(iou_types) == 1:
                raise UserError(f"--iou-type {iou_type}: no run scored {iou_type}")
            continue
        fig, axes = plt.subplots(
            len(CURVE_IOUS), len(have), figsize=(4.2 * len(have), 3.8 * len(CURVE_IOUS)),
            squeeze=False,
        )  # fmt: skip
        for c, (dataset, runs) in enumerate(have.items()):
            for r, iou in enumerate(CURVE_IOUS):
                ax = axes[r][c]
                for run in runs:
                    x, y = pr_curves(run, iou_type, iou)
                    ap = 100 * float(np.mean(y))
                    label = f"{run.method_name} (AP{round(100 * iou)} {ap:.1f})"
                    ax.plot(x, y, color=colours[run.method_name], linewidth=1.6, label=label)
                    rows += [
                        [dataset, run.method_name, iou_type, iou, f"{a:.2f}", repr(float(b))]
                        for a, b in zip(x, y)
                    ]
                ax.set_title(f"{dataset}, IoU {iou:g}")
                ax.set_xlabel("recall")
                ax.set_ylabel("precision")
                ax.set_xlim(0, 1)
                ax.set_ylim(0, 1.02)
                ax.grid(alpha=0.3)
                ax.legend(loc="upper right", fontsize=8, frameon=False)
        kind = "boxes (bbox)" if iou_type == "bbox" else "masks (segm)"
        fig.suptitle(f"Class-agnostic precision-recall\n{kind}", fontsize=11)
        fig.tight_layout()
        for ext in ("png", "pdf"):
            buf = io.BytesIO()
            fig.savefig(buf, format=ext, dpi=150)
            path = out / f"discovery_pr_{iou_type}.{ext}"
            atomic_write_bytes(path, buf.getvalue())
            written.append(path)
        plt.close(fig)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["dataset", "method", "iou_type", "iou", "recall", "precision"])
    writer.writerows(rows)
    atomic_write_bytes(out / "discovery_pr.csv", text.getvalue().encode())
    return [*written, out / "discovery_pr.csv"]
