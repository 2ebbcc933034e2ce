"""``odbench cite``: BibTeX from cards and the metric papers table."""

from __future__ import annotations

import re

from click.testing import CliRunner
from test_score_config import make_project  # tests/ is on sys.path

from odbench.cli import main
from odbench.metrics.catalog import METRICS
from odbench.metrics.papers import BIBTEX


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def test_metric_papers_are_well_formed_entries():
    assert {m.citation for m in METRICS.values()} - {None} == set(BIBTEX)
    for key, entry in BIBTEX.items():
        assert re.match(rf"@(inproceedings|article)\{{{key},\n", entry), key
        assert entry.count("{") == entry.count("}") and "year=" in entry


def test_cite_names_dedups_and_refuses_unknown_names():
    out = invoke("cite", "wctr", "ecssd", "max_fbeta", "mean_fbeta", "s_measure", "center-prior")
    assert out.exit_code == 0, out.output
    text = out.stdout
    assert text.count("@inproceedings{achanta2009frequency,") == 1  # two metrics, one paper
    assert "zhu2014saliency" in text and "shi2016hierarchical" in text
    assert "fan2017structure" in text and "% center-prior: its card" in text
    bad = invoke("cite", "wctr", "sm")
    assert bad.exit_code == 2 and "nothing to cite for sm" in bad.stderr


def test_cite_a_results_set_and_write_a_bib(tmp_path):
    config = make_project(tmp_path)
    results = tmp_path / "results"
    assert invoke("score", "--config", str(config), "--results-dir", str(results)).exit_code == 0
    bib = tmp_path / "refs.bib"
    out = invoke("cite", "--results-dir", str(results), "--out", str(bib))
    assert out.exit_code == 0, out.output
    text = bib.read_text()
    assert "% method-a: no card" in text and "shi2016hierarchical" in text  # dataset ecssd
    for key in (
        "fan2017structure",
        "fan2018enhanced",
        "margolin2014evaluate",
        "perazzi2012saliency",
    ):
        assert f"{{{key}," in text
    assert "deselaers2012weakly" not in text  # no CorLoc in these results
    empty = invoke("cite", "--results-dir", str(tmp_path / "none"))
    assert empty.exit_code == 2 and "no results" in empty.stderr


def test_cite_the_metrics_of_the_run_every_command_shows(tmp_path):
    """Per method, dataset and protocol, the metrics of the selected run are cited: an older
    run scored with the family's metrics, replaced by a newer basic one, adds no S-measure."""
    from datetime import UTC, datetime

    import numpy as np

    from odbench.results import Records, RunResult, SaliencyRecords, write_results

    for second, metrics in ((1, {"s_measure": 0.5}), (2, {"max_fbeta": 0.5})):
        run = RunResult(
            method={"name": "method-a", "hyperparameters": {}, "overrides": {}},
            dataset={"name": "ecssd", "n_evaluated": 1, "limit": None},
            protocol={"name": "odbench", "definition": {}},
            tasks=["saliency"],
            metrics={"saliency": metrics},
            date=datetime(2026, 1, 1, 0, 0, second, tzinfo=UTC).isoformat(),
            _records=Records(("x",), SaliencyRecords(*(np.zeros(1),) * 3, np.zeros((1, 255)))),
        )
        write_results(run, tmp_path)
    out = invoke("cite", "--results-dir", str(tmp_path))
    assert out.exit_code == 0, out.output
    assert "achanta2009frequency" in out.stdout and "fan2017structure" not in out.stdout
