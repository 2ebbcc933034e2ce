"""Leaderboards (reported rows, latest-run selection, rendering) and ``odbench compare``."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from odbench.cards import card_dir, method_card
from odbench.cli import main
from odbench.compare import (
    bootstrap_p_value,
    bootstrap_weights,
    compare_records,
    percentile_ci,
    weighted_mean,
)
from odbench.data.base import create_dataset
from odbench.leaderboard import shown_runs
from odbench.methods.center_prior import CenterPrior
from odbench.metrics.protocols import get_protocol
from odbench.reported import reported_rows
from odbench.results import Records, ResultsError, RunResult, read_results, select
from odbench.runner import run

PAPER_TABLES = Path(__file__).resolve().parents[2] / "shared" / "reference" / "paper-tables.md"
REPORTED = card_dir("reported") / "diffusionseg-paper.toml"
# Rows that live in method cards (their engineers' files), not in diffusionseg-paper.toml.
IN_CARDS = {
    "wCtr",
    "LOST",
    "TokenCut",
    "LOST + BS",
    "TokenCut + BS",
    "AttentionCut",
    "Deep Spectral",
}
IN_CARDS |= {"FOUND-single", "FOUND-multi", "FOUND-single + BS", "FOUND-multi + BS"}


# ----------------------------------------------------------------------------- reported rows


def _markdown_tables(text: str) -> dict[str, list[list[str]]]:
    """'## Table X...' heading -> body rows (cells stripped), parsed from paper-tables.md."""
    tables: dict[str, list[list[str]]] = {}
    current = None
    for line in text.splitlines():
        m = re.match(r"## Table (\w+)", line)
        if m:
            current = m.group(1)
            tables[current] = []
        elif current and line.startswith("|") and not line.startswith("|---"):
            tables[current].append([c.strip() for c in line.strip().strip("|").split("|")])
    return {k: rows[1:] for k, rows in tables.items()}  # drop header rows


def _value(cell: str) -> float | None:
    cell = cell.replace("(?)", "").strip()
    return None if cell == "-" else float(cell)


def _expected_rows() -> dict[tuple[str, str, str, str], dict[str, float]]:
    """(method, variant, table, dataset) -> metrics, for the rows our file must hold."""
    tables = _markdown_tables(PAPER_TABLES.read_text())
    sal = ("dut_omron", "duts_te", "ecssd")
    out: dict[tuple[str, str, str, str], dict[str, float]] = {}

    def put(key: tuple[str, str, str, str], metrics: dict[str, float | None]) -> None:
        out[key] = {k: v for k, v in metrics.items() if v is not None}

    for row in tables["1a"]:
        if row[0] not in IN_CARDS:
            for j, d in enumerate(sal):
                a, i, f = (_value(c) for c in row[1 + 3 * j : 4 + 3 * j])
                put((row[0], "", "1a", d), {"acc": a, "iou": i, "max_fbeta": f})
    for row in tables["1b"]:
        if row[0] not in IN_CARDS:
            for j, d in enumerate(("voc07", "voc12", "coco20k")):
                put((row[0], "", "1b", d), {"corloc": _value(row[1 + j])})
    for row in tables["1c"]:
        if row[0] not in IN_CARDS:
            put(
                (row[0], "", "1c", "cub"),
                dict(zip(("acc", "iou", "max_fbeta"), map(_value, row[1:]))),
            )
    for t in ("3", "4"):
        for row in tables[t]:
            for j, d in enumerate(sal):
                a, i = row[2 + j].split("/")
                put((row[0], row[1], t, d), {"acc": _value(a), "iou": _value(i)})
    for row in tables["7"]:
        if row[0].startswith("DiffusionSeg"):
            method, variant = row[0].split(" ", 1)
            for j, d in enumerate(sal):
                a, i = row[1 + j].split("/")
                put((method, variant, "7", d), {"acc": _value(a), "iou": _value(i)})
    return out


@pytest.mark.skipif(not PAPER_TABLES.is_file(), reason="shared/reference/paper-tables.md absent")
def test_reported_file_reproduces_paper_tables() -> None:
    expected = _expected_rows()
    data = tomllib.loads(REPORTED.read_text())["reported"]
    got = {}
    for r in data:
        key = (r["method"], r.get("variant", ""), r["table"], r["dataset"])
        assert key not in got, f"duplicate reported row {key}"
        assert r["source"] == "DiffusionSeg (Ma et al. 2023)"
        got[key] = {k: r[k] for k in ("acc", "iou", "max_fbeta", "corloc") if k in r}
    assert set(got) == set(expected)
    for key, metrics in expected.items():
        assert got[key] == pytest.approx(metrics, abs=1e-9), key
    assert len(got) == 118


def test_reported_rows_are_well_formed() -> None:
    rows = reported_rows()
    assert {r.table for r in rows} >= {"1a", "1b", "1c", "3", "4", "7"}
    names = {r.method for r in rows}
    assert "DiffusionSeg" in names and not names & IN_CARDS


def test_bad_reported_file_names_it(tmp_path: Path) -> None:
    (tmp_path / "x.toml").write_text(
        '[[reported]]\nmethod = "A"\ntable = "1a"\ndataset = "ecssd"\n'
        'source = "S"\naccuracy = 0.5\n'
    )
    from odbench.cards import CardError

    with pytest.raises(CardError, match=r"x\.toml: .* unknown key\(s\) accuracy"):
        reported_rows(tmp_path)


# ----------------------------------------------------------------------------- runs + render


class Prior(CenterPrior):
    """center-prior under another name (a second "method" for leaderboard/compare tests)."""

    def __init__(self, name: str, sigma: float) -> None:
        super().__init__(method_card("center-prior"), sigma=sigma)
        self.name = name


def _eval(tmp_path: Path, name: str, sigma: float, **kw: Any) -> RunResult:
    out = run(
        Prior(name, sigma),
        create_dataset("toy", n=kw.pop("n", 16)),
        get_protocol(kw.pop("protocol", "odbench")),
        dataset_name="toy",
        cache_dir=tmp_path / "cache",
        results_dir=tmp_path / "results",
        **kw,
    )
    assert out.path is not None
    return out


def test_leaderboard_renders_runs_beside_paper_rows(tmp_path: Path) -> None:
    r = _eval(tmp_path, "center-prior", 0.25)
    result = CliRunner().invoke(main, ["leaderboard", "--results-dir", str(tmp_path / "results")])
    assert result.exit_code == 0, result.output
    text = result.output
    sal = r.metrics["saliency"]
    cells = [f"{sal[k]:.3f}".lstrip("0") for k in ("acc", "iou", "max_fbeta")]
    assert re.search(
        r"\| center-prior \| odbench \|( - \|){12} " + r" \| ".join(cells) + " |", text
    )
    assert "| HS † (reported, DiffusionSeg Tab. 1a) | paper | .843 | .433 | .561 |" in text
    assert (
        "| DiffusionSeg † (reported, DiffusionSeg Tab. 1a, 1c) | paper | .948 | .661 | .772 "
        "| .959 | .704 | .829 | .964 | .831 | .955 | .963 | .726 | .852 |"
    ) in text
    assert "DUT-OMRON Acc | DUT-OMRON IoU | DUT-OMRON maxFβ | DUTS-TE Acc" in text
    corloc = r.metrics["localization"]["corloc"]
    assert f"| center-prior | odbench | - | - | - | {corloc:.1f} |" in text
    assert (
        "| DiffusionSeg † (reported, DiffusionSeg Tab. 1b) | paper | 75.2 | 78.3 | 63.1 |" in text
    )
    assert (
        "| DiffusionSeg (w/o prior) † | paper | .929 / .628 | .943 / .672 | .952 / .801 |" in text
    )
    out = tmp_path / "board.md"
    result = CliRunner().invoke(
        main,
        [
            "leaderboard",
            "--task",
            "localization",
            "--out",
            str(out),
            "--results-dir",
            str(tmp_path / "results"),
        ],
    )
    assert result.exit_code == 0 and out.read_text().startswith("## Single-object localization")


def _run(
    date: str,
    *,
    dataset: str = "toy",
    n: int = 16,
    overrides: dict[str, Any] | None = None,
    limit: int | None = None,
    hyperparameters: dict[str, Any] | None = None,
    method: str = "center-prior",
) -> RunResult:
    hp = hyperparameters or {"sigma": 0.25, **(overrides or {})}
    return RunResult(
        method={"name": method, "overrides": overrides or {}, "hyperparameters": hp},
        dataset={"name": dataset, "n_images": 16, "limit": limit, "n_evaluated": n},
        protocol={"name": "odbench"},
        tasks=["saliency"],
        metrics={"saliency": {"acc": 0.5}},
        date=date,
        path=Path(date),
    )


def test_latest_full_run_with_the_cards_settings_wins() -> None:
    """Default tables: the latest run with the card's settings over the full dataset; subsets,
    overrides and runs of an edited card only with --all, each in its own labelled row."""
    full_old, full_new = _run("2026-01-01"), _run("2026-01-02")
    subset_newer = _run("2026-01-03", n=5, limit=5)
    overridden = _run("2026-01-04", overrides={"sigma": 0.4})
    old_card = _run("2026-01-05", hyperparameters={"sigma": 0.2})
    big_limit = _run("2026-01-06", dataset="ecssd", limit=2000)  # limit above the size: full
    runs = [full_old, full_new, subset_newer, overridden, old_card, big_limit]
    best = shown_runs(runs)
    assert {k[1]: v.date for k, v in best.items()} == {"toy": "2026-01-02", "ecssd": "2026-01-06"}
    shown = shown_runs(runs, show_all=True)
    labels = {(k[0][1], k[0][3]): v.date for k, v in shown.items() if k[1] == "toy"}
    assert labels == {
        ("{}", ""): "2026-01-02",
        ("{}", "subset"): "2026-01-03",
        ('{"sigma": 0.4}', ""): "2026-01-04",
        ("{}", "other card settings"): "2026-01-05",
    }


def test_leaderboard_default_hides_subset_and_override_rows(tmp_path: Path) -> None:
    _eval(tmp_path, "center-prior", 0.25)
    _eval(tmp_path, "center-prior", 0.25, limit=8)
    result = CliRunner().invoke(main, ["leaderboard", "--results-dir", str(tmp_path / "results")])
    assert result.exit_code == 0, result.output
    assert "[subset]" not in result.output and "*" not in result.output.split("†")[0]
    result = CliRunner().invoke(
        main, ["leaderboard", "--all", "--results-dir", str(tmp_path / "results")]
    )
    assert result.exit_code == 0, result.output
    assert "| center-prior [subset] | odbench |" in result.output
    assert "| center-prior | odbench |" in result.output


def test_compare_prefers_the_cards_hyperparameters() -> None:
    default = _run("2026-01-01")
    tuned = _run("2026-01-02", overrides={"sigma": 0.3})
    assert select([default, tuned], "center-prior", "toy", "odbench") is default
    assert select([tuned], "center-prior", "toy", "odbench") is tuned


def test_corrupt_results_file_is_left_out_with_one_warning(tmp_path: Path) -> None:
    """One unreadable results file does not block every leaderboard: it is left out with one
    warning naming it (compare, which needs the runs it names, still refuses)."""
    _eval(tmp_path, "center-prior", 0.25)
    results = tmp_path / "results"
    (results / "bad.json").write_text("{nope")
    for extra in ([], ["--format", "md"], ["--format", "csv"]):
        result = CliRunner().invoke(main, ["leaderboard", "--results-dir", str(results), *extra])
        assert result.exit_code == 0, result.output
        assert "center-prior" in result.stdout
        (line,) = result.stderr.splitlines()
        assert line.startswith(f"warning: {results / 'bad.json'}: cannot read results JSON")
        assert line.endswith("; left out of the table")
    header = {"kind": "odbench-results", "schema_version": 1}
    (results / "bad.json").write_text(json.dumps(header | {"method": {}}))
    result = CliRunner().invoke(main, ["leaderboard", "--results-dir", str(results)])
    assert result.stderr.splitlines() == [
        f"warning: {results / 'bad.json'}: results file lacks method, dataset, protocol, "
        "metrics, records, date; re-run odbench eval; left out of the table"
    ]
    compare = ["compare", "--methods", "a,b", "--dataset", "toy", "--results-dir", str(results)]
    result = CliRunner().invoke(main, compare)
    assert result.exit_code == 2 and "bad.json" in result.output


def test_missing_or_empty_results_folder_is_said(tmp_path: Path) -> None:
    """A mistyped --results-dir is an error, not the paper's rows alone; an empty folder shows
    the paper's rows with one note saying it holds no results."""
    typo = CliRunner().invoke(main, ["leaderboard", "--results-dir", str(tmp_path / "resluts")])
    assert typo.exit_code == 2
    assert typo.output.strip() == (
        f"error: {tmp_path / 'resluts'}: no such results folder (--results-dir: where odbench "
        "eval and odbench score --config wrote their results)"
    )
    empty = CliRunner().invoke(main, ["leaderboard", "--results-dir", str(tmp_path)])
    assert empty.exit_code == 0 and "HS † (reported" in empty.stdout
    assert empty.stderr.splitlines() == [
        f"note: {tmp_path} holds no results: only the papers' reported rows (†) are shown; "
        "odbench eval and odbench score --config write runs there"
    ]
    ablation = ["leaderboard", "--task", "ablation", "--results-dir", str(tmp_path / "none")]
    assert CliRunner().invoke(main, ablation).exit_code == 0  # reads no results


def test_doubtful_reported_values_carry_the_references_flag() -> None:
    """A value the reference tables mark (?) is flagged in the reported rows and shown as
    ``.993 (?)`` with a footer line saying why."""
    from odbench.leaderboard import render_saliency

    rows = reported_rows()
    flagged = {(r.method, r.dataset, m) for r in rows if r.table == "1a" for m in r.doubtful}
    card_of = {"FOUND-single": "found"}  # the paper's row name -> the card holding the row
    if PAPER_TABLES.is_file():
        marked = set()
        for row in _markdown_tables(PAPER_TABLES.read_text())["1a"]:
            for j, d in enumerate(("dut_omron", "duts_te", "ecssd")):
                for k, m in enumerate(("acc", "iou", "max_fbeta")):
                    if "(?)" in row[1 + 3 * j + k]:
                        marked.add((card_of.get(row[0], row[0]), d, m))
        assert flagged == marked
    assert flagged == {("found", "duts_te", "acc")}
    text = render_saliency([], rows)
    assert (
        "| found † (reported, DiffusionSeg Tab. 1a) | found | .920 | .586 | .683 | "
        ".993 (?) | .637 | .733 |" in text
    )
    assert (
        "(?) doubtful as printed: found DUTS-TE Acc (Tab. 1a): the paper prints .993, "
        "probably a typo for .933; kept as printed." in text
    )


def test_leaderboard_help_names_every_format() -> None:
    text = " ".join(CliRunner().invoke(main, ["leaderboard", "--help"]).output.split())
    assert "markdown, LaTeX or CSV" in text and "--format's LaTeX / CSV" in text


# ----------------------------------------------------------------------------- statistics


def test_bootstrap_ci_covers_true_mean() -> None:
    """95% percentile CIs of a mean cover the true mean in ~95% of simulated datasets."""
    rng = np.random.default_rng(1)
    a, b, n, trials = 2.0, 5.0, 80, 300
    true_mean = a / (a + b)
    covered = 0
    for t in range(trials):
        x = rng.beta(a, b, size=n)
        lo, hi = percentile_ci(weighted_mean(x, bootstrap_weights(n, 500, seed=t)))
        covered += lo <= true_mean <= hi
    assert 0.90 <= covered / trials <= 0.985


def test_weighted_mean_and_weights() -> None:
    w = bootstrap_weights(7, 50, seed=3)
    assert w.shape == (50, 7) and np.all(w.sum(axis=1) == 7)
    np.testing.assert_array_equal(w, bootstrap_weights(7, 50, seed=3))  # seeded
    x = np.arange(7.0)
    idx = np.repeat(np.arange(7), w[0].astype(int))
    assert weighted_mean(x, w)[0] == pytest.approx(x[idx].mean())
    x[2] = np.nan  # a NaN image makes exactly the resamples that draw it NaN
    np.testing.assert_array_equal(np.isnan(weighted_mean(x, w)), w[:, 2] > 0)


def _records(rng: np.random.Generator, n: int, shift: float) -> Records:
    return Records.from_arrays(_arrays(rng, n, shift))


def _arrays(rng: np.random.Generator, n: int, shift: float) -> dict[str, np.ndarray]:
    base = rng.uniform(0.3, 0.7, size=n)
    curves = np.clip(base[:, None] + np.linspace(-0.2, 0.2, 255)[None, :] ** 2 * -1 + shift, 0, 1)
    return {
        "ids": np.array([f"im{i:03d}" for i in range(n)]),
        "acc": np.clip(base + shift, 0, 1),
        "iou": np.clip(base - 0.2 + shift, 0, 1),
        "mae": np.clip(0.5 - base / 2 - shift / 2, 0, 1),
        "fbeta": curves,
        "hit": base + shift > 0.5,
        "pred_box": np.zeros((n, 4)),
    }


def test_compare_identical_methods() -> None:
    rec = _records(np.random.default_rng(0), 60, 0.0)
    for c in compare_records(rec, rec):
        assert c.p_value == pytest.approx(1.0)
        assert c.diff == 0 and c.diff_ci[0] <= 0 <= c.diff_ci[1]
        assert c.a == c.b and c.a_ci == c.b_ci


def test_compare_clearly_different_methods() -> None:
    rng = np.random.default_rng(0)
    a = _arrays(rng, 60, 0.0)
    b = {
        k: (v + rng.normal(0, 0.02, v.shape) if v.dtype == np.float64 else v)
        for k, v in _arrays(np.random.default_rng(0), 60, 0.1).items()
    }
    b["hit"] = a["hit"] | (np.arange(60) % 3 == 0)
    ra, rb = Records.from_arrays(a), Records.from_arrays(b)
    by_metric = {c.metric: c for c in compare_records(ra, rb)}
    assert set(by_metric) == {"acc", "iou", "mae", "max_fbeta", "corloc"}
    for c in by_metric.values():
        assert c.p_value < 0.01, c
        assert not c.diff_ci[0] <= 0 <= c.diff_ci[1], c
    assert by_metric["acc"].diff == pytest.approx(np.mean(b["acc"] - a["acc"]))
    assert by_metric["max_fbeta"].b == pytest.approx(b["fbeta"].mean(axis=0).max())
    assert by_metric["max_fbeta"].test == "paired bootstrap"
    assert by_metric["acc"].test == "Wilcoxon signed-rank"
    # Paired: the images are aligned by id even when stored in another order.
    perm = np.random.default_rng(5).permutation(60)
    shuffled = Records.from_arrays({k: v[perm] for k, v in b.items()})
    assert compare_records(ra, shuffled)[0] == compare_records(ra, rb)[0]


def test_bootstrap_p_value_tails() -> None:
    assert bootstrap_p_value(np.zeros(999)) == 1.0
    assert bootstrap_p_value(np.ones(999)) == pytest.approx(2 / 1000)
    assert bootstrap_p_value(np.r_[-np.ones(500), np.ones(499)]) == 1.0


def test_compare_refuses_different_image_sets() -> None:
    a = _records(np.random.default_rng(0), 10, 0.0)
    b = a.take(np.arange(9))
    with pytest.raises(ResultsError, match="different images"):
        compare_records(a, b)


def test_compare_cli(tmp_path: Path) -> None:
    _eval(tmp_path, "prior-narrow", 0.15)
    _eval(tmp_path, "prior-wide", 0.35)
    _eval(tmp_path, "prior-few", 0.35, limit=8)
    args = ["compare", "--results-dir", str(tmp_path / "results"), "--dataset", "toy"]
    result = CliRunner().invoke(main, [*args, "--methods", "prior-narrow,prior-wide"])
    assert result.exit_code == 0, result.output
    assert "| max_fbeta ↑ |" in result.output and "paired bootstrap" in result.output
    assert "| mae ↓ |" in result.output
    bad = CliRunner().invoke(main, [*args, "--methods", "prior-narrow,prior-few"])
    assert bad.exit_code == 2 and "different images" in bad.output
    missing = CliRunner().invoke(main, [*args, "--methods", "prior-narrow,nobody"])
    assert missing.exit_code == 2 and "no results of method 'nobody'" in missing.output
    typo = [*args[:2], str(tmp_path / "resutls"), *args[3:], "--methods", "prior-narrow,prior-wide"]
    no_dir = CliRunner().invoke(main, typo)
    assert no_dir.exit_code == 2 and "resutls: no such folder" in no_dir.output, no_dir.output
    one = CliRunner().invoke(main, [*args, "--methods", "prior-narrow"])
    assert one.exit_code == 2 and "exactly two" in one.output
    # Records that do not reproduce their run's metrics are refused.
    results = tmp_path / "results"
    narrow = next(results.glob("prior-narrow__*.records.npz"))
    narrow.write_bytes(next(results.glob("prior-wide__*.records.npz")).read_bytes())
    stale = CliRunner().invoke(main, [*args, "--methods", "prior-narrow,prior-wide"])
    assert stale.exit_code == 2 and "does not belong to this run" in stale.output


def test_reported_row_follows_the_methods_run() -> None:
    from odbench.leaderboard import render_saliency
    from odbench.reported import ReportedRow

    src = "Paper (X et al.)"
    reported = [
        ReportedRow("other", src, "1a", "ecssd", {"acc": 0.5}),
        ReportedRow("m", src, "1a", "ecssd", {"acc": 0.8, "iou": 0.6}),
    ]
    run = RunResult(
        method={"name": "m", "overrides": {"sigma": 0.3}},
        protocol={"name": "voynov"},
        dataset={"name": "ecssd", "limit": None},
        tasks=["saliency"],
        date="2026-01-01",
        metrics={"saliency": {"acc": 0.9123, "iou": 0.7, "max_fbeta": 0.75}},
    )
    lines = render_saliency([run], reported, show_all=True).splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith("| m (sigma=0.3) | voynov |"))
    assert "| .912 | .700 | .750 |" in lines[i]
    assert lines[i + 1].startswith("| m † (reported, Paper Tab. 1a) | paper |")
    assert "| .800 | .600 | - |" in lines[i + 1]
    assert lines[i + 2].startswith("| other † (reported, Paper Tab. 1a) |")


def test_every_command_shows_the_run_select_chooses(tmp_path: Path) -> None:
    """One rule for "the run" of a method: a newer run with overrides does not replace the
    card's run in plot, report or the metric tables (plot used to take the latest)."""
    from odbench.commands.plot import select_runs
    from odbench.report.runs import load_report_data
    from odbench.results import load_all_results
    from odbench.tables import collect

    card_run = _eval(tmp_path, "center-prior", 0.25)
    tuned = _eval(tmp_path, "center-prior", 0.4, overrides={"sigma": 0.4})
    assert card_run.metrics["saliency"]["acc"] != tuned.metrics["saliency"]["acc"]
    assert card_run.path is not None and tuned.path is not None
    later = json.loads(tuned.path.read_text()) | {"date": "2099-01-01T00:00:00+00:00"}
    tuned.path.write_text(json.dumps(later))  # certainly the latest
    assert card_run.path.name == f"center-prior__toy__odbench__{_stamp(card_run)}.json"
    results = tmp_path / "results"
    assert select(load_all_results(results), "center-prior", "toy").path == card_run.path
    plotted = select_runs(results, ["toy"], [], "odbench")["toy"]["center-prior"]
    assert plotted.path == card_run.path
    report = load_report_data(results, "toy", ["center-prior"])
    assert report.runs[0].results["_path"] == str(card_run.path)
    values = collect(results, "odbench", show_all=True)[3]
    assert values[("center-prior", "toy")]["acc"] == card_run.metrics["saliency"]["acc"]


def test_select_takes_the_last_of_runs_finishing_in_one_second(tmp_path: Path) -> None:
    """Runs finishing in one second are named <stem>.json, <stem>-2.json, ... by write_results:
    the last written is the latest (the file-name order put <stem>.json after <stem>-2.json and
    -9 after -10)."""
    from odbench.results import load_all_results, write_results

    first = _eval(tmp_path, "center-prior", 0.25)
    assert first.path is not None
    results = tmp_path / "results"
    for _ in range(10):
        last = write_results(read_results(first.path), results)
    assert last.name == first.path.name.replace(".json", "-11.json")
    assert select(load_all_results(results), "center-prior", "toy").path == last


def _stamp(run: RunResult) -> str:
    """The date of a run as its results file names it."""
    return run.date[:19].replace("-", "").replace(":", "") + "Z"


def test_eval_on_an_incomplete_copy_is_a_subset(tmp_path: Path) -> None:
    """eval on a folder holding 3 of ECSSD's 1,000 pairs: the run is out of the card's 1,000
    (a subset), said so in one line at the start, starred and hidden without --all, and a
    newer subset run does not replace the full run in its row."""
    from PIL import Image

    folder = tmp_path / "data" / "ECSSD"
    rng = np.random.default_rng(0)
    for name in ("images", "ground_truth_mask"):
        (folder / name).mkdir(parents=True)
    for i in range(1, 4):
        image = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
        Image.fromarray(image).save(folder / "images" / f"{i:04d}.png")
        mask = np.zeros((24, 32), dtype=np.uint8)
        mask[6:18, 8:24] = 255
        Image.fromarray(mask).save(folder / "ground_truth_mask" / f"{i:04d}.png")
    results = tmp_path / "results"
    args = ["eval", "--method", "center-prior", "--dataset", "ecssd"]
    args += ["--data-root", str(tmp_path / "data"), "--results-dir", str(results)]
    out = CliRunner().invoke(main, [*args, "--cache-dir", str(tmp_path / "cache")])
    assert out.exit_code == 0, out.output
    assert out.stderr.splitlines()[0] == (
        "note: ecssd: the data found holds 3 of the 1000 images its card lists; this run is a "
        "subset (starred, shown by odbench leaderboard --all only)"
    )
    (path,) = results.glob("*.json")
    data = json.loads(path.read_text())["dataset"]
    assert (data["n_images"], data["n_evaluated"]) == (1000, 3)
    board = CliRunner().invoke(main, ["leaderboard", "--results-dir", str(results)])
    assert board.exit_code == 0 and "| center-prior |" not in board.output
    board = CliRunner().invoke(main, ["leaderboard", "--all", "--results-dir", str(results)])
    assert "| center-prior [subset] | odbench |" in board.output
    assert re.search(r"\| \.\d{3}\* \|", board.output)
    full = _run("2020-01-01", dataset="ecssd", n=1000)
    full.dataset["n_images"] = 1000
    (chosen,) = shown_runs([full, read_results(path)]).values()
    assert chosen is full  # the older full run keeps its row


def test_report_page_flags_doubtful_reported_values() -> None:
    from odbench.report.page import leaderboard_html
    from odbench.report.runs import ReportData

    empty = np.zeros((0, 0))
    html = leaderboard_html(ReportData("duts_te", "odbench", [], [], empty, empty), reported_rows())
    assert "probably a typo for .933; kept as printed'>0.993 (?)</td>" in html


@pytest.mark.parametrize(
    "task_value",
    [
        None,
        {"max_fbeta": "x"},
        {"max_fbeta": 0.5, "fbeta_curve": "x"},
        {"max_fbeta": 0.5, "curves": 3},
    ],
)
def test_malformed_metrics_in_a_results_file_are_one_line(tmp_path: Path, task_value: Any) -> None:
    """A hand-edited results JSON with a metric that is not a number (or a task, curve that is
    not a table / list) passed read_results and crashed leaderboard, plot curves, cite and report
    with a traceback; it is refused in one line naming the file and the key."""
    out = CliRunner().invoke(
        main,
        ["eval", "--method", "center-prior", "--dataset", "toy", "--limit", "2"]
        + ["--results-dir", str(tmp_path), "--cache-dir", str(tmp_path / "cache")],
    )
    assert out.exit_code == 0, out.output
    (path,) = tmp_path.glob("*.json")
    data = json.loads(path.read_text())
    data["metrics"]["saliency"] = (
        None if task_value is None else {**data["metrics"]["saliency"], **task_value}
    )
    path.write_text(json.dumps(data))
    with pytest.raises(ResultsError, match=r"malformed metrics\.saliency"):
        read_results(path)
    board = CliRunner().invoke(main, ["leaderboard", "--all", "--results-dir", str(tmp_path)])
    assert board.exit_code == 0 and board.exception is None, board.output
    assert "malformed metrics.saliency" in board.output
