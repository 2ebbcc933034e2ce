"""``odbench leaderboard --format md|latex|csv``: top-3 marks on a planted table, arrows,
CSV rows, a LaTeX compile when pdflatex exists, --bib."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from odbench.cards import method_card
from odbench.cli import main
from odbench.results import (
    Records,
    RunResult,
    SaliencyRecords,
    jsonable,
    write_results,
)

#: method -> (S on ecssd, MAE on ecssd); S: higher is better, MAE: lower.
PLANTED = {
    "wctr": (0.9, 0.30),
    "alpha": (0.8, 0.05),
    "beta": (0.7, 0.10),
    "gamma": (0.6, 0.20),
    "delta": (0.8, 0.40),  # ties alpha's S: both 2nd
}


def plant(results: Path) -> None:
    for i, (method, (s, mae)) in enumerate(PLANTED.items()):
        card = method_card(method)  # wctr: a run with its card's settings, so it is shown
        hparams = jsonable(card.hyperparameters) if card is not None else {}
        for dataset in ("ecssd", "duts_te"):
            rec = SaliencyRecords(np.zeros(1), np.zeros(1), np.zeros(1), np.zeros((1, 255)))
            run = RunResult(
                method={"name": method, "hyperparameters": hparams, "overrides": {}},
                dataset={"name": dataset, "n_evaluated": 1, "limit": None},
                protocol={"name": "odbench", "definition": {}},
                tasks=["saliency"],
                metrics={"saliency": {"s_measure": s, "mae": mae, "max_fbeta": 0.5 + i / 100}},
                date=datetime(2026, 1, 1, 0, 0, i, tzinfo=UTC).isoformat(),
                _records=Records(("x",), rec),
            )
            write_results(run, results)


def table(results: Path, *extra: str) -> str:
    out = CliRunner().invoke(main, ["leaderboard", "--results-dir", str(results), *extra])
    assert out.exit_code == 0, out.output
    return out.stdout


def latex_rows(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.removesuffix(r"\\").split("&")]
        if cells[0].split("~")[0] in PLANTED:
            rows[cells[0].split("~")[0]] = cells[1:]
    return rows


def test_latex_marks_the_best_three_per_column_with_arrows(tmp_path):
    plant(tmp_path)
    text = table(tmp_path, "--format", "latex", "--metrics", "s_measure,mae", "--datasets", "ecssd")
    assert r"$S_\alpha$$\uparrow$" in text and r"$\mathcal{M}$$\downarrow$" in text
    rows = latex_rows(text)
    s = {m: cells[0] for m, cells in rows.items()}
    assert s["wctr"] == r"\textbf{0.900}"
    assert s["alpha"] == s["delta"] == r"\underline{0.800}"  # tied 2nd
    assert s["beta"] == r"\textcolor{blue}{0.700}" and s["gamma"] == "0.600"
    mae = {m: cells[1] for m, cells in rows.items()}  # lower is better
    assert mae["alpha"] == r"\textbf{0.050}" and mae["beta"] == r"\underline{0.100}"
    assert mae["gamma"] == r"\textcolor{blue}{0.200}" and mae["wctr"] == "0.300"
    custom = table(
        tmp_path, "--format", "latex", "--metrics", "s_measure", "--marks", "italic,none,bold"
    )
    assert (
        r"\textit{0.900}" in custom and r"\textbf{0.700}" in custom and r"\underline" not in custom
    )
    md = table(tmp_path, "--format", "md", "--metrics", "s_measure", "--datasets", "duts_te")
    assert "| wctr | **0.900** |" in md and "| alpha | *0.800* |" in md and "Sα↑" in md


def test_csv_one_row_per_method_dataset_protocol(tmp_path):
    plant(tmp_path)
    rows = list(csv.DictReader(io.StringIO(table(tmp_path, "--format", "csv"))))
    assert len(rows) == 2 * len(PLANTED)
    for row in rows:
        s, mae = PLANTED[row["method"]]
        assert float(row["s_measure"]) == s and float(row["mae"]) == mae
        assert row["protocol"] == "odbench" and row["dice"] == ""


def test_table_errors_are_one_line(tmp_path):
    plant(tmp_path)
    runner = CliRunner()
    bad = runner.invoke(
        main,
        ["leaderboard", "--results-dir", str(tmp_path), "--format", "latex", "--metrics", "sm"],
    )
    assert bad.exit_code == 2 and "unknown metric sm (did you mean s_measure?)" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and "corloc" in bad.stderr
    bad = runner.invoke(
        main,
        ["leaderboard", "--results-dir", str(tmp_path), "--format", "latex", "--marks", "bold"],
    )
    assert bad.exit_code == 2 and "three marks" in bad.stderr
    bad = runner.invoke(
        main, ["leaderboard", "--results-dir", str(tmp_path), "--bib", str(tmp_path / "x.bib")]
    )
    assert bad.exit_code == 2 and "--format latex" in bad.stderr


def test_latex_table_with_bib_compiles(tmp_path):
    results = tmp_path / "results"
    plant(results)
    bib = tmp_path / "refs.bib"
    text = table(results, "--format", "latex", "--bib", str(bib))
    assert r"wctr~\cite{zhu2014saliency}" in text
    refs = bib.read_text()
    assert "@inproceedings{zhu2014saliency" in refs and "fan2017structure" in refs
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed (apt-get install texlive-latex-base)")
    doc = tmp_path / "doc.tex"
    doc.write_text(
        "\\documentclass{article}\n\\usepackage{color}\n\\begin{document}\n"
        + text.replace("~\\cite{zhu2014saliency}", "")
        + "\\end{document}\n"
    )
    run = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout[-2000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 1000


def test_metrics_option_is_score_s_basic_all_or_names_in_every_format(tmp_path):
    plant(tmp_path)
    md = table(tmp_path, "--format", "md", "--metrics", "mae, S_measure", "--datasets", "ecssd")
    assert md.splitlines()[0] == "| Method | ecssd MAE↓ | ecssd Sα↑ |"  # the order given
    basic = table(tmp_path, "--format", "md", "--metrics", "basic", "--datasets", "ecssd")
    assert "Acc↑" in basic and "Sα" not in basic
    every = table(tmp_path, "--format", "md", "--datasets", "ecssd")  # all: what is stored
    assert "Sα↑" in every and "maxFβ↑" in every and "Dice" not in every
    rows = list(csv.DictReader(io.StringIO(table(tmp_path, "--format", "csv", "--metrics", "mae"))))
    assert list(rows[0]) == ["method", "dataset", "protocol", "n_images", "mae"]
    bad = CliRunner().invoke(
        main, ["leaderboard", "--results-dir", str(tmp_path), "--metrics", "mae"]
    )
    assert bad.exit_code == 2 and "--metrics goes with --format" in bad.stderr


def test_bib_notes_say_why_an_entry_is_missing(tmp_path):
    """--bib: a metric with no paper is said to be a textbook quantity (it needs no card); a
    method with no card is said to lack one."""
    plant(tmp_path / "results")
    bib = tmp_path / "refs.bib"
    table(
        tmp_path / "results", "--format", "latex", "--metrics", "acc,max_fbeta", "--bib", str(bib)
    )
    notes = [line for line in bib.read_text().splitlines() if line.startswith("%")]
    assert "% acc: a textbook quantity, no paper to cite" in notes
    assert not [n for n in notes if "card" in n and n.startswith(("% acc", "% max_fbeta"))]
    assert any(n.startswith("% alpha: no card") for n in notes)


def test_format_keeps_to_the_task_and_leaves_out_empty_rows_and_columns(tmp_path):
    """--task discovery --format md shows the discovery columns of the runs that have them, not
    every saliency metric, dataset and method as dashes; --metrics does the same."""
    from odbench.metrics.catalog import METRICS

    plant(tmp_path)  # saliency runs on ecssd and duts_te
    card = method_card("center-prior")
    run = RunResult(
        method={"name": "center-prior", "hyperparameters": jsonable(card.hyperparameters),
                "overrides": {}},
        dataset={"name": "coco", "n_evaluated": 1, "limit": None},
        protocol={"name": "odbench", "definition": {}},
        tasks=["discovery"],
        metrics={"discovery": {"box_AP": 0.25, "box_AP50": 0.5}},
        date=datetime(2026, 1, 2, tzinfo=UTC).isoformat(),
        _records=Records(("x",), SaliencyRecords(*(np.zeros(1),) * 3, np.zeros((1, 255)))),
    )  # fmt: skip
    write_results(run, tmp_path)
    md = table(tmp_path, "--format", "md", "--task", "discovery").splitlines()
    ap, ap50 = METRICS["box_AP"].label, METRICS["box_AP50"].label
    assert md[0] == f"| Method | coco {ap}↑ | coco {ap50}↑ |"
    assert [line.split("|")[1].strip() for line in md[2:]] == ["center-prior"]
    rows = list(
        csv.DictReader(io.StringIO(table(tmp_path, "--format", "csv", "--task", "discovery")))
    )
    assert [(r["method"], r["dataset"]) for r in rows] == [("center-prior", "coco")]
    assert "mae" not in rows[0] and rows[0]["box_AP50"] == "0.5"
    mae = table(tmp_path, "--format", "md", "--metrics", "mae").splitlines()
    assert mae[0] == "| Method | duts_te MAE↓ | ecssd MAE↓ |"
    assert "center-prior" not in "\n".join(mae)
    none = CliRunner().invoke(
        main,
        ["leaderboard", "--results-dir", str(tmp_path), "--format", "md", "--metrics", "corloc"],
    )
    assert none.exit_code == 2 and "no run shown has any of the metrics corloc" in none.stderr


def test_table_layout_says_when_runs_are_left_out(tmp_path):
    """The Table layout shows runs with the card's settings only: the others (here: wctr with an
    override, as eval --set or --backbone makes) are counted in one note; --all shows them."""
    plant(tmp_path)
    hparams = jsonable(method_card("wctr").hyperparameters)
    run = RunResult(
        method={"name": "wctr", "hyperparameters": hparams, "overrides": {"sigma": 2}},
        dataset={"name": "ecssd", "n_evaluated": 1, "limit": None},
        protocol={"name": "odbench", "definition": {}},
        tasks=["saliency"],
        metrics={"saliency": {"s_measure": 0.5, "mae": 0.5, "max_fbeta": 0.777}},
        date=datetime(2026, 1, 2, tzinfo=UTC).isoformat(),
        _records=Records(("x",), SaliencyRecords(*(np.zeros(1),) * 3, np.zeros((1, 255)))),
    )
    write_results(run, tmp_path)
    runner = CliRunner()
    out = runner.invoke(main, ["leaderboard", "--task", "saliency", "--results-dir", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert out.stderr == (
        "note: 1 run(s) with other settings or on a subset are not shown (e.g. wctr (sigma=2) on "
        "ecssd): --all shows them\n"
    )
    assert ".777" not in out.stdout
    every = runner.invoke(
        main, ["leaderboard", "--task", "saliency", "--all", "--results-dir", str(tmp_path)]
    )
    assert every.exit_code == 0 and every.stderr == "" and ".777" in every.stdout


def test_a_full_run_is_not_starred_for_a_subset_run_beside_it(tmp_path):
    """--all with a full run and a --limit run of one method on one dataset: the cell shows
    the full run's value (preferred), unstarred; it was starred for the subset beside it."""
    card = method_card("wctr")
    assert card is not None
    results = tmp_path / "results"
    for n, value in ((4, 0.25), (1, 0.75)):  # the full run, then a later subset (--limit 1)
        rec = SaliencyRecords(np.zeros(n), np.zeros(n), np.zeros(n), np.zeros((n, 255)))
        run = RunResult(
            method={"name": "wctr", "hyperparameters": jsonable(card.hyperparameters)},
            dataset={"name": "folder:x", "n_images": 4, "n_evaluated": n, "limit": n},
            protocol={"name": "odbench", "definition": {}},
            tasks=["saliency"],
            metrics={"saliency": {"mae": value}},
            date=datetime(2026, 1, 1, 0, 0, n, tzinfo=UTC).isoformat(),
            _records=Records(tuple(f"i{k}" for k in range(n)), rec),
        )
        write_results(run, results)
    text = table(results, "--format", "md", "--all", "--metrics", "mae")
    (row,) = [line for line in text.splitlines() if line.startswith("| wctr")]
    assert "0.250" in row and "\\*" not in row, text  # "\\*": the subset star
