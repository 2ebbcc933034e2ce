"""The metric catalog (:mod:`odbench.metrics.catalog`): its entries match what the meters
compute, ``--metrics`` and ``odbench list metrics`` read it."""

from __future__ import annotations

import dataclasses

import numpy as np
from click.testing import CliRunner

from odbench.cli import main
from odbench.metrics.boxes import CorLocMeter
from odbench.metrics.catalog import METERS, METRICS, keys
from odbench.metrics.papers import BIBTEX
from odbench.metrics.selection import parse_metrics
from odbench.metrics.sod import FamilyMeter, SodRecord


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
