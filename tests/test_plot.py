"""``odbench plot curves`` on results written by ``score --config``."""

from __future__ import annotations

import numpy as np
from click.testing import CliRunner
from PIL import Image
from test_score_config import make_project  # tests/ is on sys.path

from odbench.cli import main
from odbench.commands.plot import curve, select_runs


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def test_plot_curves_two_datasets_png_and_pdf(tmp_path):
    config = make_project(tmp_path)
    text = config.read_text().replace(
        "[methods.method-a]\n", '[datasets.duts_te]\ngt = "gt"\n[methods.method-a]\n'
    )
    text = text.replace('ecssd = "preds/a"\n', 'ecssd = "preds/a"\nduts_te = "preds/a"\n')
    config.write_text(text)
    results = tmp_path / "results"
    out = invoke("score", "--config", str(config), "--results-dir", str(results), "--json")
    assert out.exit_code == 0, out.output
    figs = tmp_path / "figs"
    args = ["plot", "curves", "--dataset", "ecssd", "--dataset", "duts_te"]
    args += ["--results-dir", str(results), "--out", str(figs), "--highlight", "method-b"]
    res = invoke(*args)
    assert res.exit_code == 0, res.output
    for stem in ("pr_curves", "fbeta_curves", "emeasure_curves"):
        with Image.open(figs / f"{stem}.png") as im:
            assert im.size[0] > im.size[1] > 300  # two subplots side by side
        assert (figs / f"{stem}.pdf").read_bytes()[:4] == b"%PDF"
    chosen = select_runs(results, ["ecssd", "duts_te"], [], "odbench")
    assert set(chosen["ecssd"]) == {"method-a", "method-b"} and set(chosen["duts_te"]) == {
        "method-a"
    }
    run = chosen["ecssd"]["method-a"]
    x, y = curve(run, "recall", "precision")
    assert y == run.metrics["saliency"]["curves"]["precision"] and len(x) == 255
    assert curve(run, "thresholds", "fbeta")[1] == run.metrics["saliency"]["fbeta_curve"]

    bad = invoke(
        "plot",
        "curves",
        "--dataset",
        "dut_omron",
        "--results-dir",
        str(results),
        "--out",
        str(figs),
    )
    assert bad.exit_code == 2 and "dut_omron" in bad.stderr
    bad = invoke(*args[:-1], "nobody")
    assert bad.exit_code == 2 and "--highlight nobody" in bad.stderr


def test_basic_runs_draw_only_the_fbeta_curves(tmp_path):
    config = make_project(tmp_path)
    config.write_text(config.read_text().replace('metrics = "all"\n', ""))
    results = tmp_path / "results"
    assert invoke("score", "--config", str(config), "--results-dir", str(results)).exit_code == 0
    figs = tmp_path / "figs"
    res = invoke(
        "plot", "curves", "--dataset", "ecssd", "--results-dir", str(results), "--out", str(figs)
    )
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in figs.iterdir()) == ["fbeta_curves.pdf", "fbeta_curves.png"]
    assert "score with --metrics all" in res.stderr
    assert np.asarray(Image.open(figs / "fbeta_curves.png")).std() > 0
    run = select_runs(results, ["ecssd"], ["method-a"], "odbench")["ecssd"]["method-a"]
    x, y = curve(run, "thresholds", "fbeta")  # a basic run: the Fβ curve and k/255
    assert y == run.metrics["saliency"]["fbeta_curve"] and x == [k / 255 for k in range(255)]
    assert curve(run, "recall", "precision") is None


def test_plot_and_table_errors_name_what_the_results_hold(tmp_path):
    config = make_project(tmp_path, n=3)
    results = tmp_path / "results"
    assert invoke("score", "--config", str(config), "--results-dir", str(results)).exit_code == 0
    figs = tmp_path / "figs"
    base = ["plot", "curves", "--results-dir", str(results), "--out", str(figs)]
    typo = invoke(*base, "--dataset", "ecsd")
    assert typo.exit_code == 2 and "dataset(s) ecsd" in typo.stderr
    assert "(found: ecssd)" in typo.stderr
    who = invoke(*base, "--dataset", "ecssd", "--methods", "method-a,nobody")
    assert who.exit_code == 2 and "no results for method(s) nobody on ecssd" in who.stderr
    assert "(found: method-a, method-b)" in who.stderr
    nowhere = str(tmp_path / "nowhere")
    gone = invoke(
        "plot", "curves", "--dataset", "ecssd", "--results-dir", nowhere, "--out", str(figs)
    )
    assert gone.exit_code == 2 and "nowhere: no such results folder" in gone.stderr
    table = invoke("leaderboard", "--format", "md", "--results-dir", nowhere)
    assert table.exit_code == 2 and "nowhere: no such results folder" in table.stderr
    assert not figs.exists()


def plant(folder, method: str, n: int, second: int, dataset: str = "ecssd", size: int = 1000):
    """A stored saliency run of ``method`` on ``n`` of the ``size`` images of ``dataset``."""
    from datetime import UTC, datetime

    from odbench.results import Records, RunResult, SaliencyRecords, write_results

    when = datetime(2026, 1, 1, 0, 0, second, tzinfo=UTC)
    run = RunResult(
        method={"name": method, "hyperparameters": {}, "overrides": {}},
        dataset={"name": dataset, "n_evaluated": n, "n_images": size, "limit": None},
        protocol={"name": "odbench", "definition": {}},
        tasks=["saliency"],
        metrics={"saliency": {"max_fbeta": n / size, "fbeta_curve": [0.5] * 255}},
        date=when.isoformat(),
        _records=Records(("x",), SaliencyRecords(*(np.zeros(1),) * 3, np.zeros((1, 255)))),
    )
    write_results(run, folder)


def test_plot_prefers_whole_dataset_runs_and_stars_subsets(tmp_path):
    from odbench.commands.plot import legend_labels

    plant(tmp_path, "full", 1000, 1)
    plant(tmp_path, "full", 50, 2)  # newer, but a subset: the whole-dataset run is drawn
    plant(tmp_path, "part", 50, 3)
    chosen = select_runs(tmp_path, ["ecssd"], [], "odbench")
    assert chosen["ecssd"]["full"].n_evaluated == 1000
    assert legend_labels(chosen) == {"full": "full", "part": "part*"}
    res = invoke(
        "plot",
        "curves",
        "--dataset",
        "ecssd",
        "--results-dir",
        str(tmp_path),
        "--out",
        str(tmp_path / "f"),
    )
    assert res.exit_code == 0, res.output


def test_plot_draws_the_datasets_with_results_and_names_the_others(tmp_path):
    """README's example: --dataset ecssd --dataset duts_te with results on ECSSD only draws
    ECSSD and says DUTS-TE is missing (was: nothing drawn); aliases resolve (ECSSD)."""
    config = make_project(tmp_path)
    results = tmp_path / "results"
    assert invoke("score", "--config", str(config), "--results-dir", str(results)).exit_code == 0
    figs = tmp_path / "figs"
    base = ["plot", "curves", "--results-dir", str(results), "--out", str(figs)]
    res = invoke(*base, "--dataset", "ECSSD", "--dataset", "duts_te", "--highlight", "method-a")
    assert res.exit_code == 0, res.output
    assert "note: duts_te: not plotted, no saliency results under protocol odbench" in res.stderr
    assert "ecssd" not in res.stderr
    with Image.open(figs / "pr_curves.png") as im:
        assert im.size[0] < im.size[1] * 1.5  # one subplot, not two
    notes: list[str] = []
    chosen = select_runs(results, ["ecssd", "DUTS-TE"], ["method-b"], "odbench", notes)
    assert list(chosen) == ["ecssd"] and list(chosen["ecssd"]) == ["method-b"]
    assert notes == ["duts_te: not plotted, no saliency results under protocol odbench"]
    none = invoke(*base, "--dataset", "dut_omron", "--dataset", "duts_te")
    assert none.exit_code == 2
    assert "dataset(s) dut_omron, duts_te under protocol odbench (found: ecssd)" in none.stderr


def test_plot_stars_the_subset_panel_not_every_method(tmp_path):
    """Whole ECSSD runs beside DUTS-TE subsets: the DUTS-TE panel is starred, not the methods
    (their ECSSD curves are whole-dataset ones)."""
    from odbench.commands.plot import legend_labels, panel_titles

    for k, method in enumerate(("a", "b")):
        plant(tmp_path, method, 1000, k)
        plant(tmp_path, method, 50, 2 + k, "duts_te", 5019)
    plant(tmp_path, "c", 10, 5, "duts_te", 5019)  # only ever on a subset: starred itself
    notes: list[str] = []
    chosen = select_runs(tmp_path, ["ecssd", "duts_te"], [], "odbench", notes)
    labels = legend_labels(chosen)
    assert labels == {"a": "a", "b": "b", "c": "c*"}
    assert panel_titles(chosen, labels) == {"ecssd": "ecssd", "duts_te": "duts_te*"}
    assert notes == ["ecssd: no results of c (not drawn there)"]
    plant(tmp_path, "b", 5019, 6, "duts_te", 5019)  # b now whole on DUTS-TE too
    chosen = select_runs(tmp_path, ["ecssd", "duts_te"], [], "odbench")
    labels = legend_labels(chosen)
    assert panel_titles(chosen, labels) == {"ecssd": "ecssd", "duts_te": "duts_te (* a)"}
    res = invoke(
        *("plot", "curves", "--dataset", "ecssd", "--dataset", "duts_te"),
        *("--results-dir", str(tmp_path), "--out", str(tmp_path / "f")),
    )
    assert res.exit_code == 0, res.output
    assert "note: ecssd: no results of c (not drawn there)" in res.stderr
