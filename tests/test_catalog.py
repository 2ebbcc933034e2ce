"""The metric catalog (:mod:`odbench.metrics.catalog`): its entries match what the meters
compute, ``--metrics`` and ``odbench list metrics`` read it."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
from click.testing import CliRunner

from odbench.cli import main
from odbench.metrics.boxes import CorLocMeter
from odbench.metrics.catalog import METERS, METRICS, Metric, keys
from odbench.metrics.papers import BIBTEX
from odbench.metrics.selection import parse_metrics
from odbench.metrics.sod import FamilyMeter, SodRecord
from odbench.results import SodRecords


def test_each_meter_computes_exactly_its_catalog_metrics():
    rng = np.random.default_rng(0)
    meter = FamilyMeter("odbench")
    for i in range(3):
        gt = rng.random((24, 32)) > 0.6
        meter.update((rng.random((24, 32)) * 255).astype(np.uint8), gt, f"im{i}")
    base = meter.base.compute()
    family = meter.family.compute(base["fbeta_curve"])  # type: ignore[arg-type]
    assert set(keys(meter="saliency")) == {k for k in base if k in METRICS}
    assert list(keys(meter="sod")) == [k for k in family if k != "curves"]  # catalog order
    loc = CorLocMeter()
    loc.update([0, 0, 4, 4], [[0, 0, 4, 4]])
    assert set(keys(meter="corloc")) == {k for k in loc.compute() if k in METRICS}
    # per-image family metrics are the record's scalars, the rest come from curves
    scalars = {f.name for f in dataclasses.fields(SodRecord) if f.type in (float, "float")}
    assert {k for k in keys(meter="sod") if METRICS[k].per_image} == scalars
    stored = {f.name for f in dataclasses.fields(SodRecords)}
    assert set(keys(meter="sod", per_image=True)) <= stored  # the run's records keep them
    assert {m.meter for m in METRICS.values()} == set(METERS)
    for path in METERS.values():
        module, _, name = path.rpartition(".")
        assert hasattr(__import__(module, fromlist=[name]), name), path


def test_catalog_citations_are_the_papers_table():
    assert {m.citation for m in METRICS.values()} - {None} == set(BIBTEX)


def test_metrics_option_reads_the_catalog():
    assert parse_metrics("basic").keys == keys(meter="saliency")
    assert parse_metrics("all").keys == keys(task="saliency")
    assert parse_metrics("mae,dice").tier == "all" and parse_metrics("iou,mae").tier == "basic"
    done = parse_metrics("s_measure")
    assert parse_metrics(done) is done  # parsed once, handed on as it is


def test_list_metrics_prints_the_catalog():
    out = CliRunner().invoke(main, ["list", "metrics"])
    assert out.exit_code == 0, out.output
    lines = out.output.strip().splitlines()
    assert [line.split()[0] for line in lines] == list(METRICS)
    mae = lines[list(METRICS).index("mae")].split()
    assert mae[1:4] == ["MAE", "↓", "sal"] and "perazzi2012saliency" in mae
    assert "corloc" in CliRunner().invoke(main, ["list"]).output


def test_a_new_catalog_entry_reaches_leaderboard_compare_and_report(tmp_path, monkeypatch):
    """An entry added to the catalog, and nothing else, is a column of the leaderboard's tables,
    a row of ``compare`` and a column of the report, with its label and direction.  The metric:
    the GT area ``n_gt``, which the family's records already keep per image (so only the
    catalog entry is new), marked lower-is-better."""
    results = tmp_path / "results"
    for method in ("center-prior", "wctr"):
        args = ["eval", "--method", method, "--dataset", "toy", "--metrics", "all"]
        args += ["--results-dir", str(results), "--cache-dir", str(tmp_path / "cache")]
        out = CliRunner().invoke(main, args)
        assert out.exit_code == 0, out.output
    for path in results.glob("*.json"):  # the run stores the metric, as its meter would
        run = json.loads(path.read_text())
        with np.load(results / run["records"]) as npz:
            run["metrics"]["saliency"]["n_gt"] = float(np.mean(npz["n_gt"]))
        path.write_text(json.dumps(run))
    where = ["--results-dir", str(results)]

    def views() -> tuple[str, str, str, str]:
        runner = CliRunner()
        md = runner.invoke(main, ["leaderboard", "--format", "md", *where])
        tex = runner.invoke(main, ["leaderboard", "--format", "latex", *where])
        compare = ["compare", "--methods", "center-prior,wctr", "--dataset", "toy"]
        cmp = runner.invoke(main, [*compare, "--resamples", "100", *where])
        page = tmp_path / f"report{len(list(tmp_path.glob('report*')))}"
        report = ["report", "--dataset", "toy", "--methods", "center-prior,wctr", "-n", "1"]
        rep = runner.invoke(main, [*report, "--out", str(page), *where])
        for out in (md, tex, cmp, rep):
            assert out.exit_code == 0, out.output
        return md.stdout, tex.stdout, cmp.stdout, (page / "index.html").read_text()

    before = views()
    assert not any("GTarea" in text or "n_gt ↓" in text for text in before)
    entry = Metric(
        "n_gt", "GT area", "GTarea", r"$|G|$", "gt", False, "saliency", "sod", None, True
    )
    monkeypatch.setitem(METRICS, "n_gt", entry)
    md, tex, cmp, page = views()
    assert "toy GTarea↓" in md and r"$|G|$$\downarrow$" in tex
    row = next(line for line in cmp.splitlines() if line.startswith("| n_gt ↓ |"))
    a, b = (float(cell.split()[0]) for cell in row.split("|")[2:4])
    assert a == b  # the same GT: no run is better
    assert "lower (MAE, BER, GTarea)" in cmp
    assert "<th>GTarea ↓</th>" in page and "<option value='n_gt'>GTarea ↓</option>" in page


def test_eval_parses_metrics_once_and_prints_short_labels(tmp_path, monkeypatch):
    import odbench.metrics.selection as selection
    import odbench.runner as runner

    parsed: list[object] = []
    real = selection.parse_metrics

    def counting(spec, *args, **kwargs):  # type: ignore[no-untyped-def]
        if not isinstance(spec, selection.MetricSelection):
            parsed.append(spec)
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(selection, "parse_metrics", counting)
    monkeypatch.setattr(runner, "parse_metrics", counting, raising=False)
    args = ["eval", "--method", "center-prior", "--dataset", "toy", "--limit", "2"]
    args += ["--metrics", "s_measure,mae", "--results-dir", str(tmp_path / "r")]
    out = CliRunner().invoke(main, [*args, "--cache-dir", str(tmp_path / "c")])
    assert out.exit_code == 0, out.output
    assert parsed == ["s_measure,mae"]
    summary = out.stdout.split("saliency:", 1)[1].split("cache:")[0]
    assert re.findall(r"(\S+) (?:\d\.\d{4}|NaN)", summary) == ["mae", "S"]  # catalog's short


def test_score_parses_metrics_once_and_names_rows_from_the_catalog(tmp_path, monkeypatch):
    import odbench.metrics.selection as selection
    from odbench.imageio import write_png

    rng = np.random.default_rng(1)
    for folder in ("gt", "pred"):
        (tmp_path / folder).mkdir()
    for i in range(3):
        write_png(tmp_path / "gt" / f"{i}.png", (rng.random((12, 16)) > 0.5).astype(np.uint8) * 255)
        write_png(tmp_path / "pred" / f"{i}.png", (rng.random((12, 16)) * 255).astype(np.uint8))
    config = tmp_path / "runs.toml"
    config.write_text('[datasets.ecssd]\ngt = "gt"\n[methods.m]\necssd = "pred"\n')
    parsed: list[object] = []
    real = selection.parse_metrics

    def counting(spec, *args, **kwargs):  # type: ignore[no-untyped-def]
        if not isinstance(spec, selection.MetricSelection):
            parsed.append(spec)
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(selection, "parse_metrics", counting)
    folders = ["--pred-dir", str(tmp_path / "pred"), "--gt-dir", str(tmp_path / "gt")]
    by_config = ["--config", str(config), "--results-dir", str(tmp_path / "results")]
    for where in (folders, by_config):
        parsed.clear()
        args = ["score", *where, "--metrics", "s_measure,mae", "--workers", "1"]
        out = CliRunner(env={"COLUMNS": "200"}).invoke(main, args)
        assert out.exit_code == 0, out.output
        assert parsed == ["s_measure,mae"], where
    single = CliRunner().invoke(main, ["score", *folders, "--metrics", "all", "--workers", "1"])
    names = [m.name for m in METRICS.values() if m.task == "saliency"]
    assert all(f" {name} " in single.stdout for name in names)
