"""``odbench compare`` on the salient-object family (runs scored with ``--metrics all``):
point estimates equal the stored metrics, resampled curve metrics equal the meter's on the
resampled list of records, tampered records are refused, a run without the family says so."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from odbench.cli import main
from odbench.compare import (
    SOD_CURVE_METRICS,
    bootstrap_weights,
    compare_runs,
    family_statistics,
)
from odbench.imageio import write_png
from odbench.metrics.protocols import get_protocol
from odbench.metrics.saliency import SaliencyMeter
from odbench.metrics.sod import SOD_KEYS, SodMeter, score_image_all
from odbench.results import SOD_SCALARS, load_all_results, saliency_records, sod_records

N = 16


def _project(root: Path, metrics_b: str = "all", protocol: str = "odbench") -> Path:
    """GT masks and two methods' maps: B's are the GT softened with a little noise, A's the GT
    drowned in more noise and a shifted box (A worse than B on every image)."""
    rng = np.random.default_rng(0)
    for folder in ("gt", "preds/a", "preds/b"):
        (root / folder).mkdir(parents=True)
    for i in range(N):
        gt = np.zeros((20, 24), np.uint8)
        gt[4 : 12 + i % 5, 5 : 14 + i % 4] = 255
        fg = gt > 0
        b = np.where(fg, 0.85, 0.1) + rng.normal(0, 0.05, gt.shape)
        shifted = np.roll(fg, 3, axis=1)
        a = np.where(shifted, 0.6, 0.3) + rng.normal(0, 0.2, gt.shape)
        write_png(root / "gt" / f"{i:03d}.png", gt)
        write_png(root / "preds/a" / f"{i:03d}.png", np.clip(a * 255, 0, 255).astype(np.uint8))
        write_png(root / "preds/b" / f"{i:03d}.png", np.clip(b * 255, 0, 255).astype(np.uint8))
    results = root / "results"
    for method, metrics in (("a", "all"), ("b", metrics_b)):
        config = root / f"{method}.toml"
        config.write_text(
            f'protocol = "{protocol}"\n[datasets.ecssd]\ngt = "gt"\n'
            f'[methods.method-{method}]\necssd = "preds/{method}"\n'
        )
        args = ["score", "--config", str(config), "--results-dir", str(results)]
        out = CliRunner().invoke(main, [*args, "--metrics", metrics])
        assert out.exit_code == 0, out.output
    return results


def _compare(results: Path) -> CliRunner:
    args = ["compare", "--methods", "method-a,method-b", "--dataset", "ecssd"]
    return CliRunner().invoke(main, [*args, "--results-dir", str(results), "--resamples", "200"])


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _project(tmp_path_factory.mktemp("planted"))


def test_point_estimates_are_the_stored_family_metrics(planted: Path) -> None:
    runs, comparisons = compare_runs(planted, ("method-a", "method-b"), "ecssd", n_resamples=200)
    by_metric = {c.metric: c for c in comparisons}
    assert set(SOD_KEYS) <= set(by_metric)
    stored = [r.metrics["saliency"] for r in runs]
    for key in SOD_KEYS:
        assert by_metric[key].a == pytest.approx(stored[0][key], rel=1e-12, abs=1e-12), key
        assert by_metric[key].b == pytest.approx(stored[1][key], rel=1e-12, abs=1e-12), key
    for key in SOD_SCALARS:
        assert by_metric[key].test == "Wilcoxon signed-rank"
    for key in SOD_CURVE_METRICS:
        assert by_metric[key].test == "paired bootstrap"


def test_planted_better_method_wins_every_family_metric(planted: Path) -> None:
    _, comparisons = compare_runs(planted, ("method-a", "method-b"), "ecssd", n_resamples=200)
    by_metric = {c.metric: c for c in comparisons}
    for key in SOD_KEYS:
        c = by_metric[key]
        lower_better = key == "ber"
        assert c.higher_is_better is not lower_better
        assert (c.diff < 0) if lower_better else (c.diff > 0), c
        assert c.diff_ci[1] < 0 if lower_better else c.diff_ci[0] > 0, c
        assert c.better == "b" and c.p_value < 0.01, c
    out = _compare(planted)
    assert out.exit_code == 0, out.output
    rows = {line.split("|")[1].strip(): line for line in out.output.splitlines() if "|" in line}
    assert rows["ber ↓"].split("|")[5].strip() == "method-b"
    assert rows["s_measure ↑"].split("|")[5].strip() == "method-b"
    assert "skipped" not in out.output


@pytest.mark.parametrize("name", ["odbench", "selfmask"])  # max over dataset / per image
def test_resampled_curve_metrics_equal_the_meter_on_resampled_records(name: str) -> None:
    protocol = get_protocol(name)
    rng = np.random.default_rng(1)
    scored = []
    for i in range(7):
        gt = np.zeros((9, 11), bool)
        gt[2 : 5 + i % 3, 3:8] = i != 0  # one empty GT
        pred = np.clip(gt * rng.uniform(0.3, 0.9) + rng.uniform(0, 0.5, gt.shape), 0, 1)
        scored.append(score_image_all(pred, gt, protocol, f"im{i}"))
    sal = saliency_records([r[0] for r in scored])
    sod = sod_records([r[1] for r in scored])
    weights = bootstrap_weights(7, 3, seed=4)
    got = family_statistics(sod, sal.fbeta, weights, protocol)
    for row, counts in enumerate(weights.astype(int)):
        drawn = [r for r, k in zip(scored, counts) for _ in range(k)]
        base = SaliencyMeter.from_records(protocol, [r[0] for r in drawn]).compute()
        want = SodMeter.from_records(protocol, [r[1] for r in drawn]).compute(base["fbeta_curve"])
        for key in SOD_CURVE_METRICS:
            assert got[key][row] == pytest.approx(want[key], rel=1e-12, abs=1e-12), (key, row)


def test_tampered_family_records_are_refused(planted: Path, tmp_path: Path) -> None:
    import shutil

    for field, image in (("s_measure", 3), ("tp", 5)):
        results = tmp_path / field
        shutil.copytree(planted, results)
        npz = next(results.glob("method-b__*.records.npz"))
        with np.load(npz, allow_pickle=False) as f:
            arrays = dict(f)
        arrays[field][image] = arrays[field][image] + (0.01 if field == "s_measure" else 1)
        np.savez_compressed(npz, allow_pickle=False, **arrays)
        out = _compare(results)
        lines = [line for line in out.output.splitlines() if line.strip()]
        assert out.exit_code == 2 and len(lines) == 1, out.output
        assert "does not belong to this run" in lines[0] and "method-b__ecssd" in lines[0]


def test_records_of_the_wrong_shape_or_type_are_one_line(planted: Path, tmp_path: Path) -> None:
    """A records file whose arrays have another shape or type (edited, or not odbench's) is
    one error line naming it, not a traceback from the statistics."""
    import shutil

    edits = {
        "s_measure 2-D": lambda a: {**a, "s_measure": a["s_measure"][:, None]},
        "dice as text": lambda a: {**a, "dice": a["dice"].astype(str)},
        "tp one level short": lambda a: {**a, "tp": a["tp"][:, :-1]},
    }
    for name, edit in edits.items():
        results = tmp_path / name.replace(" ", "_")
        shutil.copytree(planted, results)
        npz = next(results.glob("method-b__*.records.npz"))
        with np.load(npz, allow_pickle=False) as f:
            arrays = edit(dict(f))
        np.savez_compressed(npz, allow_pickle=False, **arrays)
        _forget_records_digest(npz)  # as in results written before it was stored
        out = _compare(results)
        lines = [line for line in out.output.splitlines() if line.strip()]
        assert out.exit_code == 2 and len(lines) == 1, (name, out.output)
        assert npz.name in lines[0] and "re-run" in lines[0], (name, lines[0])


def _forget_records_digest(npz: Path) -> None:
    import json

    path = npz.with_name(npz.name.replace(".records.npz", ".json"))
    data = json.loads(path.read_text())
    data.pop("records_sha256", None)
    path.write_text(json.dumps(data))


def test_records_reordered_or_edited_after_the_run_are_refused(
    planted: Path, tmp_path: Path
) -> None:
    """Image ids shuffled against their rows give every run-level mean back (the check that the
    records reproduce the run cannot see it) but pair the images wrongly: the records file's
    sha256, stored in the results JSON, refuses it.  Without the digest (older files) the
    means still catch an edited value."""
    import shutil

    for digest in (True, False):
        results = tmp_path / f"digest-{digest}"
        shutil.copytree(planted, results)
        npz = next(results.glob("method-b__*.records.npz"))
        with np.load(npz, allow_pickle=False) as f:
            arrays = dict(f)
        arrays["ids"] = arrays["ids"][::-1]
        if not digest:
            arrays["dice"] = arrays["dice"] * 0.9
            _forget_records_digest(npz)
        np.savez_compressed(npz, allow_pickle=False, **arrays)
        out = _compare(results)
        lines = [line for line in out.output.splitlines() if line.strip()]
        assert out.exit_code == 2 and len(lines) == 1, out.output
        assert "method-b__ecssd" in lines[0] and "does not belong to this run" in lines[0], lines[0]
        assert ("sha256 differs" in lines[0]) == digest, lines[0]


def test_one_run_without_family_records_says_what_was_skipped(tmp_path: Path) -> None:
    results = _project(tmp_path, metrics_b="basic")
    assert {r.method_name: r.records.sod is None for r in load_all_results(results)} == {
        "method-a": False,
        "method-b": True,
    }
    out = _compare(results)
    assert out.exit_code == 0, out.output
    metrics = {line.split("|")[1].strip() for line in out.output.splitlines() if "|" in line}
    assert "max_fbeta ↑" in metrics and not any(k in m for m in metrics for k in SOD_KEYS)
    skipped = [line for line in out.output.splitlines() if line.startswith("skipped")]
    assert len(skipped) == 1 and "re-score method-b with --metrics all" in skipped[0]
    assert all(k in skipped[0] for k in SOD_KEYS)


def test_every_protocol_reads_back_from_its_stored_definition(tmp_path: Path) -> None:
    """Compare rebuilds the protocol from the run's JSON (Protocol.from_dict): pysodmetrics'
    s_empty_quadrant is the choice "nan", not the float NaN that as_dict also writes as "nan"."""
    import json

    from odbench.metrics.protocols import BUILTIN_PROTOCOLS, Protocol

    for proto in BUILTIN_PROTOCOLS:
        stored = json.loads(json.dumps(proto.as_dict()))
        assert Protocol.from_dict(stored).as_dict() == proto.as_dict(), proto.name
    results = _project(tmp_path, protocol="pysodmetrics")
    out = CliRunner().invoke(
        main,
        [
            "compare",
            "--methods",
            "method-a,method-b",
            "--dataset",
            "ecssd",
            "--protocol",
            "pysodmetrics",
            "--results-dir",
            str(results),
            "--resamples",
            "100",
        ],
    )
    assert out.exit_code == 0, out.output
    assert "s_measure" in out.output
