r"""Metric tables of odbench's runs for papers: markdown, LaTeX and CSV
(``odbench leaderboard --format md|latex|csv``).

Columns, their labels and directions come from the metric catalog
(:mod:`odbench.metrics.catalog`), in its order.  Rows are methods, columns (dataset, metric);
the runs shown are the leaderboard's (:func:`odbench.leaderboard.shown_runs`: the
:func:`odbench.results.select` ed run of each method, dataset and protocol, when it has the
card's settings over the full dataset).  Each metric header carries the arrow saying which
direction is better (↑ higher, ↓ lower: MAE and BER).  The best three values of a column are
marked: in LaTeX by ``marks`` (default ``bold,underline,color:blue``: 1st, 2nd, 3rd), in
markdown 1st **bold**, 2nd *italic*, 3rd plain; equal values share a mark.  CSV has one row per
(method, dataset, protocol) with every metric (or those of ``--metrics``), unrounded.  The LaTeX
needs only LaTeX's base packages (``color`` for ``\textcolor``).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from odbench.errors import OdbenchError
from odbench.metrics.catalog import METRICS

DEFAULT_MARKS = "bold,underline,color:blue"


class TableError(OdbenchError, ValueError):
    """A table that cannot be made (unknown metric, nothing to show); one line."""


def _metrics_of(run: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    for task in run.metrics.values():
        for key, value in task.items():
            if key in METRICS and isinstance(value, int | float) and not isinstance(value, bool):
                out[key] = float(value)
    return out


Table = tuple[
    list[str], list[str], list[str], dict[tuple[str, str], dict[str, float]], set[tuple[str, str]]
]


def _shown_runs(
    results_dir: Path,
    protocol: str | None,
    datasets: Sequence[str],
    show_all: bool,
    skipped: list[str] | None = None,
) -> list[Any]:
    """The runs a table shows (the leaderboard's; ``show_all``: every kind), least preferred
    first (:func:`odbench.results.preference`), with one line saying what to do when none is
    left.  ``skipped``: see :func:`odbench.results.load_all_results`."""
    from odbench.leaderboard import shown_runs
    from odbench.results import load_all_results, preference

    if not Path(results_dir).is_dir():
        raise TableError(
            f"{results_dir}: no such results folder (--results-dir: where odbench eval and "
            "odbench score --config wrote their results)"
        )
    every = [
        r
        for r in load_all_results(results_dir, skipped)
        if (protocol is None or r.protocol_name == protocol)
        and (not datasets or r.dataset_name in datasets)
    ]
    runs = list(shown_runs(every, show_all).values())
    if not runs:
        where = (f" under protocol {protocol}" if protocol else "") + (
            f" on {', '.join(datasets)}" if datasets else ""
        )
        hidden = f"; {len(every)} run(s) on subsets or with other settings: --all shows them"
        raise TableError(f"{results_dir}: no runs{where}" + (hidden if every else ""))
    # one cell per (method, dataset): the run select() prefers, placed last
    runs.sort(key=preference)
    return runs


def _of_task(metric: str, task: str | None) -> bool:
    return task is None or METRICS[metric].task == task


def _with_metrics(runs: list[Any], metrics: Sequence[str]) -> list[Any]:
    """The runs holding at least one of ``metrics`` (all of them when none are chosen): a
    method or dataset without any of the chosen columns is no row or column of dashes."""
    if len(metrics) == len(METRICS):
        return runs
    kept = [r for r in runs if any(m in _metrics_of(r) for m in metrics)]
    if not kept:
        chosen = ", ".join(metrics) if len(metrics) < 6 else "its task's metrics"
        raise TableError(f"no run shown has any of the metrics {chosen}")
    return kept


def collect(
    results_dir: Path,
    protocol: str | None,
    datasets: Sequence[str] = (),
    metrics: Sequence[str] = (),
    show_all: bool = False,
    skipped: list[str] | None = None,
    task: str | None = None,
) -> Table:
    """(methods, datasets, metrics, values[(method, dataset)] -> {metric: value}, the
    (method, dataset) cells from runs on a subset) of the shown runs under ``protocol``
    (None: every protocol, for CSV); ``show_all``: runs of every kind, not just the card's
    settings over full datasets; ``skipped``: unreadable results files are left out and
    reported there (:func:`odbench.results.load_all_results`)."""
    from odbench.results import is_subset

    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise TableError(f"unknown metric(s) {', '.join(unknown)}; valid: {', '.join(METRICS)}")
    runs = _shown_runs(results_dir, protocol, datasets, show_all, skipped)
    runs = _with_metrics(runs, metrics or [m for m in METRICS if _of_task(m, task)])
    cells = {(r.method_name, r.dataset_name): r for r in runs}  # the last: the preferred
    values = {key: _metrics_of(r) for key, r in cells.items()}
    starred = {key for key, r in cells.items() if is_subset(r)}  # that run's, not another's
    present = {k for v in values.values() for k in v}
    shown = list(metrics) or [m for m in METRICS if m in present and _of_task(m, task)]
    found = sorted({r.dataset_name for r in runs})
    order = [d for d in datasets if d in found] or found
    return sorted({r.method_name for r in runs}), order, shown, values, starred


SUBSET_NOTE = (
    "evaluated on a subset of the dataset (--limit, skipped images or a smaller GT folder)"
)


def ranks(values: list[float | None], higher_better: bool) -> list[int | None]:
    """1, 2, 3 for the best three distinct values of a column (ties share), None otherwise."""
    finite = sorted(
        {v for v in values if v is not None and math.isfinite(v)}, reverse=higher_better
    )
    place = {v: i + 1 for i, v in enumerate(finite[:3])}
    return [place.get(v) if v is not None else None for v in values]


def _column(methods, dataset, metric, values) -> list[float | None]:  # type: ignore[no-untyped-def]
    return [values.get((m, dataset), {}).get(metric) for m in methods]


def _fmt(v: float | None) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.3f}"


def render_markdown(methods, datasets, metrics, values, starred=frozenset()) -> str:  # type: ignore[no-untyped-def]
    header = ["Method"] + [
        f"{d} {METRICS[m].label}{METRICS[m].arrow}" for d in datasets for m in metrics
    ]
    cells: list[list[str]] = [[m] for m in methods]
    for d in datasets:
        for metric in metrics:
            col = _column(methods, d, metric, values)
            for m, row, v, r in zip(
                methods, cells, col, ranks(col, METRICS[metric].higher_is_better)
            ):
                text = _fmt(v)
                text = f"**{text}**" if r == 1 else f"*{text}*" if r == 2 else text
                row.append(text + ("\\*" if (m, d) in starred and v is not None else ""))
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    if starred:
        lines += ["", f"\\* {SUBSET_NOTE}."]
    return "\n".join(lines) + "\n"


def _mark(text: str, how: str) -> str:
    if how == "bold":
        return rf"\textbf{{{text}}}"
    if how == "underline":
        return rf"\underline{{{text}}}"
    if how == "italic":
        return rf"\textit{{{text}}}"
    if how.startswith("color:"):
        return rf"\textcolor{{{how.split(':', 1)[1]}}}{{{text}}}"
    return text


def parse_marks(marks: str) -> list[str]:
    """``bold,underline,color:blue`` -> the mark of the 1st, 2nd, 3rd (``none`` for none)."""
    parts = [p.strip() for p in marks.split(",")]
    for p in parts:
        if p not in ("bold", "underline", "italic", "none") and not (
            p.startswith("color:") and p[6:].isalnum()
        ):
            raise TableError(
                f"--marks {marks}: {p!r} is not bold, underline, italic, none or color:NAME"
            )
    if len(parts) != 3:
        raise TableError(f"--marks {marks}: give three marks (1st, 2nd, 3rd)")
    return parts


def _tex(text: str) -> str:
    for a, b in (
        ("\\", r"\textbackslash{}"),
        ("_", r"\_"),
        ("&", r"\&"),
        ("%", r"\%"),
        ("#", r"\#"),
    ):
        text = text.replace(a, b)
    return text


def render_latex(  # type: ignore[no-untyped-def]
    methods,
    datasets,
    metrics,
    values,
    starred=frozenset(),
    marks: str = DEFAULT_MARKS,
    cite: dict[str, str] | None = None,
) -> str:
    """A ``tabular`` (base LaTeX + ``color``); ``cite``: method -> BibTeX key (``\\cite``)."""
    how = parse_marks(marks)
    n = len(metrics)
    spec = "l" + "".join("|" + "c" * n for _ in datasets)
    groups = " & ".join(rf"\multicolumn{{{n}}}{{c}}{{{_tex(d)}}}" for d in datasets)
    heads = " & ".join(
        METRICS[m].latex + (r"$\uparrow$" if METRICS[m].higher_is_better else r"$\downarrow$")
        for _ in datasets
        for m in metrics
    )
    rows = []
    for i, method in enumerate(methods):
        label = _tex(method) + (rf"~\cite{{{cite[method]}}}" if cite and method in cite else "")
        cells = [label]
        for d in datasets:
            for metric in metrics:
                col = _column(methods, d, metric, values)
                r = ranks(col, METRICS[metric].higher_is_better)[i]
                text = _fmt(col[i])
                text = _mark(text, how[r - 1]) if r else text
                star = (method, d) in starred and col[i] is not None
                cells.append(text + ("$^*$" if star else ""))
        rows.append(" & ".join(cells) + r" \\")
    lines = [
        r"% odbench leaderboard --format latex; needs \usepackage{color} for \textcolor",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\hline",
        rf" & {groups} \\",
        rf"Method & {heads} \\",
        r"\hline",
        *rows,
        r"\hline",
        r"\end{tabular}",
        *([rf"% $^*$ {SUBSET_NOTE}"] if starred else []),
    ]
    return "\n".join(lines) + "\n"


def render_csv(
    results_dir: Path,
    datasets: Sequence[str] = (),
    metrics: Sequence[str] = (),
    show_all: bool = False,
    skipped: list[str] | None = None,
    task: str | None = None,
) -> str:
    """One row per (method, dataset, protocol) with every metric (or ``metrics``), unrounded;
    ``n_images`` says how many images each run scored (``skipped``: as :func:`collect`)."""
    runs = _shown_runs(results_dir, None, datasets, show_all, skipped)
    runs = _with_metrics(runs, metrics or [m for m in METRICS if _of_task(m, task)])
    runs.sort(key=lambda r: (r.method_name, r.dataset_name, r.protocol_name))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    columns = list(metrics) or [m for m in METRICS if _of_task(m, task)]
    writer.writerow(["method", "dataset", "protocol", "n_images", *columns])
    for r in runs:
        got = _metrics_of(r)
        writer.writerow(
            [r.method_name, r.dataset_name, r.protocol_name, r.n_evaluated]
            + [repr(got[m]) if m in got else "" for m in columns]
        )
    return buf.getvalue()
