"""``odbench report``: image selection, the page and its thumbnails, the PNG grid, bad input, and
the page in a real browser (headless Chromium; skipped where it is absent)."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from odbench.cache import PredictionCache
from odbench.cli import main
from odbench.metrics.protocols import get_protocol
from odbench.metrics.saliency import binarize_gt, binarize_prediction, score_image
from odbench.report.select import (
    disagreement,
    most_disagreeing,
    rank_images,
    select_all,
)

METHODS = ("center-prior", "wctr")


def _stored(results_dir: Path) -> dict[str, tuple[dict[str, Any], dict[str, np.ndarray]]]:
    """method -> (results JSON, records arrays), read straight from the files."""
    out = {}
    for path in sorted(results_dir.glob("*.json")):
        run = json.loads(path.read_text())
        with np.load(results_dir / run["records"], allow_pickle=False) as npz:
            out[run["method"]["name"]] = (run, {k: npz[k] for k in npz.files})
    return out


def _run(args: list[str]) -> Any:
    return CliRunner().invoke(main, args, catch_exceptions=False)


# ----------------------------------------------------------------------------- selection


def test_selection_on_planted_records() -> None:
    """Three methods, six images; NaN and exact ties planted (dyadic values, so the ties are
    exact in floating point).  Expected picks worked out by hand."""
    nan = np.nan
    s = np.array(
        [
            [0.875, 0.125, 0.5, nan, 0.125, 0.625],  # A
            [0.5, 0.5, 0.875, 0.375, 0.625, 0.625],  # B
            [0.5, 0.5, 0.125, 0.5, 0.625, 0.625],  # C
        ]
    )
    sel = {(x.method, x.kind): x.indices for x in select_all(s, 2)}
    assert sel[(0, "worst")] == (1, 4)  # tie 0.125: dataset order; NaN never picked
    assert sel[(0, "best")] == (0, 5)
    assert sel[(1, "worst")] == (3, 0)
    assert sel[(1, "best")] == (2, 4)
    # A - mean(B, C) = [0.375, -0.375, 0, nan, -0.5, 0]: 4, then the tie 0 / 1 in dataset order
    d = disagreement(s)
    np.testing.assert_array_equal(d[0], [0.375, -0.375, 0.0, nan, -0.5, 0.0])
    assert sel[(0, "disagree")] == (4, 0)
    # B - mean(A, C) on image 2: 0.875 - 0.3125 = 0.5625, the largest
    assert sel[(1, "disagree")][0] == 2
    # C - mean(A, B) on image 2: 0.125 - 0.6875 = -0.5625 (sign kept in d, |d| ranks)
    assert d[2, 2] == -0.5625 and most_disagreeing(s, 2, 1).tolist() == [2]
    assert [len(x.indices) for x in select_all(s, 10)][:3] == [5, 5, 5]  # NaN dropped
    assert select_all(s[:1], 3)[2].indices == ()  # one method: nothing to disagree with
    # a figure over all methods (B, C): spread max - min, mean for worst / best
    assert rank_images(s[1:], "disagree", 1).tolist() == [2]
    assert rank_images(s[1:], "worst", 1).tolist() == [3]
    assert rank_images(s[1:], "best", 2).tolist() == [4, 5]


@pytest.mark.parametrize("protocol", ["odbench", "voynov", "pysodmetrics"])
def test_binarised_mask_is_what_iou_counts(protocol: str) -> None:
    """The mask thumbnails show the pixels IoU counts: IoU recomputed from
    binarize_prediction / binarize_gt equals the scorer's per-image IoU."""
    rng = np.random.default_rng(0)
    proto = get_protocol(protocol)
    for dtype in (np.uint8, np.uint16):
        top = np.iinfo(dtype).max
        pred = (rng.random((20, 20)) * 0.6 * top).astype(dtype)  # minmax differs from dtype_max
        gt = (rng.random((20, 20)) > 0.5).astype(np.uint8) * 255
        record = score_image(pred, gt, proto, "x")
        p, g = binarize_prediction(pred, proto), binarize_gt(gt, proto.gt_rule)
        if proto.center_crop:
            from odbench.metrics.saliency import center_crop_square

            p, g = center_crop_square(p), center_crop_square(g)
        assert record.iou == pytest.approx(np.sum(p & g) / np.sum(p | g), abs=1e-12)


# ----------------------------------------------------------------------------- the page


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """center-prior and wctr evaluated on the toy dataset (16 images), every metric."""
    root = tmp_path_factory.mktemp("runs")
    for method in METHODS:
        args = ["eval", "--method", method, "--dataset", "toy", "--metrics", "all"]
        args += ["--results-dir", str(root / "results"), "--cache-dir", str(root / "cache")]
        result = _run(args)
        assert result.exit_code == 0, result.output
    return root


def _report(runs: Path, out: Path, *extra: str) -> Any:
    args = ["report", "--dataset", "toy", "--methods", ",".join(METHODS)]
    return _run([*args, "--results-dir", str(runs / "results"), "--out", str(out), *extra])


def _page_data(index: Path) -> dict[str, Any]:
    text = index.read_text()
    payload = re.search(r'<script id="odb-data" type="application/json">(.*?)</script>', text, re.S)
    assert payload is not None
    return json.loads(payload.group(1))  # type: ignore[no-any-return]


def test_report_page_from_records_and_caches(runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    t0 = time.perf_counter()
    result = _report(runs, out, "-n", "3", "--ids", "toy_00007")
    wall = time.perf_counter() - t0
    assert result.exit_code == 0, result.output
    said = float(re.findall(r"; ([0-9.]+) s\)", result.output)[-1])
    assert 0 < said <= wall + 0.05  # the build time it reports (printed to 0.1 s)
    index = out / "index.html"
    text = index.read_text()
    # the per-image columns are the runs' records, in the dataset's order
    data = _page_data(index)
    stored = _stored(runs / "results")
    for m, method in enumerate(METHODS):
        run, rec = stored[method]
        assert data["ids"] == [str(i) for i in rec["ids"]]
        np.testing.assert_allclose(data["iou"][m], rec["iou"], atol=5e-5)
        # per-image Fβ at the best threshold averages to the run's maxFβ
        fb = np.mean(data["fbeta"][m])
        assert fb == pytest.approx(run["metrics"]["saliency"]["max_fbeta"], abs=5e-5)
        assert f"{run['metrics']['saliency']['iou']:.3f}" in text  # leaderboard row
        np.testing.assert_allclose(data["extra"]["s_measure"][m], rec["s_measure"], atol=5e-5)
    # every image the page shows exists beside it (relative links)
    assert sorted(map(int, data["thumbs"])) == list(range(len(data["ids"])))  # every table row
    sources = re.findall(r"<img src='([^']+)'", text) + list(data["thumbs"].values())
    assert sources and all((out / s).is_file() for s in sources)
    assert not any(s.startswith(("/", "http")) for s in sources)
    assert "toy_00007" in text and "Chosen images (--ids)" in text
    assert "http://" not in text and "https://" not in text  # works offline: no CDN
    # the worst grid of center-prior holds its 3 lowest-IoU images, lowest first
    iou0 = np.array(data["iou"][0])
    worst = [data["ids"][i] for i in np.argsort(iou0, kind="stable")[:3]]
    grid = text.split("Worst 3 images of center-prior")[1].split("</details>")[0]
    assert re.findall(r"alt='image ([^']+)'", grid) == worst


def test_thumbnails_are_written_once_and_never_stale(runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    first = _report(runs, out, "-n", "2")
    assert "0 reused" in first.output
    written = sorted(p.name for p in (out / "thumbs").iterdir())
    second = _report(runs, out, "-n", "2")
    assert "thumbnails: 0 written" in second.output, second.output
    assert sorted(p.name for p in (out / "thumbs").iterdir()) == written
    # a cache entry that changes gets a new thumbnail (its size/mtime are in the name)
    run = _stored(runs / "results")["wctr"][0]
    cache = PredictionCache(Path(run["cache"]))
    sample_id = cache.ids()[0]
    entry = cache.path(sample_id)  # its pack: a change there may change the entry
    st = entry.stat()
    os.utime(entry, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    try:
        third = _report(runs, out, "-n", "2", "--ids", sample_id)
        # its two, and those of the shown entries in the same pack (every process writes one)
        rewritten = int(re.findall(r"thumbnails: (\d+) written", third.output)[-1])
        assert rewritten >= 2, third.output
    finally:
        os.utime(entry, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_report_imports_no_torch(runs: Path, tmp_path: Path) -> None:
    """A report predicts nothing, so building one never imports torch (a fresh process)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from odbench.cli import main\n"
        f"args = ['report', '--dataset', 'toy', '--methods', 'center-prior,wctr', '--results-dir', "
        f"{str(runs / 'results')!r}, '--out', {str(tmp_path / 'r')!r}]\n"
        "r = CliRunner().invoke(main, args)\n"
        "print(r.exit_code, 'torch' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.split() == ["0", "False"], out
    assert (tmp_path / "r" / "index.html").is_file()


def test_grid_png(runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "fig.png"
    result = _report(runs, out, "--grid", "3")
    assert result.exit_code == 0, result.output
    img = np.asarray(Image.open(out).convert("L"), dtype=np.float64)
    cell, gap, header = 192, 4, 28
    row_h = 144  # toy images are 96 x 128: scaled up to 144 x 192
    assert img.shape == (header + 3 * (row_h + gap) + gap, 4 * (cell + gap) + gap)
    # row 0 = the image with the largest IoU spread; its GT panel is its binarised GT
    data_ids, spread = _spread(runs)
    sid = data_ids[int(np.argmax(spread))]
    from odbench.data.base import create_dataset

    sample = create_dataset("toy").load(sid)
    gt = Image.fromarray(binarize_gt(sample.mask, "ge128").astype(np.uint8) * 255)
    gt = gt.resize((cell, row_h), Image.Resampling.LANCZOS)
    panel = img[header + gap : header + gap + row_h, gap + cell + gap : gap + 2 * cell + gap]
    assert np.abs(panel - np.asarray(gt, dtype=np.float64)).mean() < 1.0


def _spread(runs: Path) -> tuple[list[str], np.ndarray]:
    stored = _stored(runs / "results")
    recs = [stored[m][1] for m in METHODS]
    iou = np.stack([r["iou"] for r in recs])
    return [str(i) for i in recs[0]["ids"]], iou.max(axis=0) - iou.min(axis=0)


def test_stored_curves_and_family_are_shown(runs: Path, tmp_path: Path) -> None:
    """Curves a run stored (PR, ROC, Eξ) are drawn from the stored values; the salient-object
    columns appear when a run carries them; a run without curves is named."""
    copy = tmp_path / "runs"
    shutil.copytree(runs / "results", copy)
    other = next(p for p in copy.glob("center-prior__*.json"))
    run = json.loads(other.read_text())
    del run["metrics"]["saliency"]["curves"]  # a run without stored curves
    other.write_text(json.dumps(run))
    path = next(p for p in copy.glob("wctr__*.json"))
    run = json.loads(path.read_text())
    t = np.arange(255) / 255.0
    run["metrics"]["saliency"]["s_measure"] = 0.6789
    run["metrics"]["saliency"]["auc_roc"] = 0.9123
    run["metrics"]["saliency"]["curves"] = {
        "thresholds": t.tolist(),
        "precision": (0.5 + 0.5 * t).tolist(),
        "recall": (1.0 - t).tolist(),
        "fpr": ((1.0 - t) ** 2).tolist(),
        "e_measure": np.sin(np.pi * t).tolist(),
    }
    path.write_text(json.dumps(run))
    out = tmp_path / "report"
    args = ["report", "--dataset", "toy", "--methods", ",".join(METHODS), "-n", "1"]
    result = _run([*args, "--results-dir", str(copy), "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = (out / "index.html").read_text()
    assert "<th>Sα</th>" in text and "0.679" in text and "AUC 0.912" in text
    pr = text.split("precision-recall")[0].rsplit("<svg", 1)[1]
    points = re.findall(r"points='([^']*)'", pr)
    assert len(points) == 1 and len(points[0].split()) == 255
    # first point: recall 1, precision 0.5 -> x at the right end, y half-way (axes: 40..410, 260..10)
    x, y = (float(v) for v in points[0].split()[0].split(","))
    assert (x, y) == (410.0, 135.0)
    assert "Eξ against threshold" in text and "max 1.000 at threshold 0.498" in text
    assert "No stored curves for center-prior" in text


def test_bad_input_is_one_line(runs: Path, tmp_path: Path) -> None:
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    cases = [
        (["--out", str(a_file)], "not a folder"),
        (["--out", str(tmp_path / "r"), "--ids", "nope"], "--ids: nope"),
        (["--out", str(tmp_path / "g.jpg"), "--grid", "2"], "ending in .png"),
    ]
    for extra, message in cases:
        args = ["report", "--dataset", "toy", "--methods", ",".join(METHODS)]
        result = _run([*args, "--results-dir", str(runs / "results"), *extra])
        assert result.exit_code == 2 and message in result.output, result.output
        assert "Traceback" not in result.output
    result = _run(
        [
            "report",
            "--dataset",
            "toy",
            "--methods",
            "wctr,lost",
            "--out",
            str(tmp_path / "r2"),
            "--results-dir",
            str(runs / "results"),
        ]
    )
    assert result.exit_code == 2 and "no results of method 'lost'" in result.output
    assert not (tmp_path / "r").exists() and not (tmp_path / "r2").exists()


def test_foreign_records_are_refused(runs: Path, tmp_path: Path) -> None:
    """Records that do not average to the run's own metrics are refused, naming the file."""
    copy = tmp_path / "results"
    shutil.copytree(runs / "results", copy)
    path = next(p for p in copy.glob("wctr__*.json"))
    run = json.loads(path.read_text())
    run["metrics"]["saliency"]["iou"] += 0.01
    path.write_text(json.dumps(run))
    args = ["report", "--dataset", "toy", "--methods", ",".join(METHODS), "--out"]
    result = _run([*args, str(tmp_path / "r"), "--results-dir", str(copy)])
    assert result.exit_code == 2 and str(path) in result.output, result.output
    assert "does not belong to this run" in result.output and not (tmp_path / "r").exists()


def test_missing_cache_entry_names_the_file(runs: Path, tmp_path: Path) -> None:
    copy = tmp_path / "runs"
    shutil.copytree(runs, copy)
    for path in (copy / "results").glob("*.json"):
        path.write_text(path.read_text().replace(str(runs / "cache"), str(copy / "cache")))
    run = _stored(copy / "results")["wctr"][0]
    victim = Path(run["cache"])
    for pack in victim.glob("*.pack"):
        pack.unlink()
    result = _report(copy, tmp_path / "r", "--ids", "toy_00003")
    assert result.exit_code == 2, result.output
    assert str(victim) in result.output and "re-run odbench eval" in result.output
    assert not (tmp_path / "r").exists()  # checked before anything is written


# ----------------------------------------------------------------------------- browser


def _chromium() -> str | None:
    for name in (os.environ.get("ODBENCH_CHROMIUM"), "chromium", "chromium-browser"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.slow
def test_page_in_headless_chromium(runs: Path, tmp_path: Path) -> None:
    """Opened from disk: clicking a method's IoU header puts its worst image first, every image
    loads, nothing logs an error; a screenshot is written (look at it: tmp_path/report.png)."""
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    executable = _chromium()
    if executable is None:
        pytest.skip("no chromium on PATH (apt-get install chromium, or set ODBENCH_CHROMIUM)")
    out = tmp_path / "report"
    assert _report(runs, out, "-n", "3").exit_code == 0
    data = _page_data(out / "index.html")
    worst = data["ids"][int(np.argmin(data["iou"][1]))]
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto((out / "index.html").as_uri())
        first = "#pi tbody tr:first-child td:nth-child(2)"
        assert page.inner_text(first) == data["ids"][0]
        assert page.locator("#pi tbody tr").count() == len(data["ids"])
        page.click("#pi th[data-key=iou1]")
        assert page.inner_text(first) == worst != data["ids"][0]
        page.click("#pi th[data-key=iou1]")  # again: best first
        assert page.inner_text(first) == data["ids"][int(np.argmax(data["iou"][1]))]
        # the difference column follows the A / B choice: B = center-prior, A = wctr
        page.select_option("#pa", "1")
        page.select_option("#pb", "0")
        page.click("#pi th[data-key=diff]")
        diff = np.array(data["iou"][0]) - np.array(data["iou"][1])
        assert page.inner_text(first) == data["ids"][int(np.argmin(diff))]
        assert "IoU center-prior − wctr" in page.inner_text("#pi th[data-key=diff]")
        # a stored per-image metric as extra columns, sortable like the others
        page.select_option("#extra", "s_measure")
        page.click("#pi th[data-key=s_measure1]")
        assert page.inner_text(first) == data["ids"][int(np.argmin(data["extra"]["s_measure"][1]))]
        page.fill("#filter", data["ids"][5])
        assert page.locator("#pi tbody tr").count() == 1
        # a row's thumbnail leads to its first grid row, unfolding that grid
        i, anchor = next((int(k), a) for k, a in data["anchors"].items() if not a.startswith("g0-"))
        assert (
            page.evaluate(f"document.getElementById('{anchor}').closest('details').open") is False
        )
        page.fill("#filter", data["ids"][i])
        page.click("#pi tbody a")
        assert page.evaluate(f"document.getElementById('{anchor}').closest('details').open")
        box = page.evaluate(
            f"(() => {{ const r = document.getElementById('{anchor}').getBoundingClientRect();"
            " return [r.top, r.bottom]; })()"
        )
        assert box[1] > 0 and box[0] < 900, box  # the grid row is on screen
        page.fill("#filter", "")
        page.click("#pi th[data-key=iou1]")  # worst first again, for the picture
        assert page.inner_text(first) == worst
        assert page.get_attribute("#pi th[data-key=iou1]", "aria-sort") == "ascending"
        # load every image (grids are lazy and folded): none may be broken
        page.eval_on_selector_all("details", "els => els.forEach(e => e.open = true)")
        page.eval_on_selector_all("img", "els => els.forEach(e => e.loading = 'eager')")
        page.wait_for_function("[...document.images].every(i => i.complete)")
        broken = page.eval_on_selector_all(
            "img", "els => els.filter(i => !(i.naturalWidth > 0)).map(i => i.src)"
        )
        n_images = page.eval_on_selector_all("img", "els => els.length")
        assert n_images > 20 and broken == []
        assert page.locator("#scatter circle").count() == len(data["ids"])
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert errors == []
    shot = Image.open(tmp_path / "report.png")
    assert shot.width == 1280 and shot.height > 1500


def test_bench_report_runs_small() -> None:
    """``odbench bench report`` at toy size (the DUTS-TE-size figure is in benchmarks/)."""
    result = _run(["bench", "report", "--images", "40", "--methods", "2", "-n", "2",
                   "--no-browser"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "meets the target" in result.output and "0 thumbnails written" in result.output


# ----------------------------------------------------------------------------- other runs


def _saved_maps_project(root: Path, dataset: str = "toy", images: bool = False) -> Path:
    """The toy dataset's GT (and, with ``images``, its images) as folders, two methods' saved
    maps -- one named ``m_ID_sal.png``, one at half size -- and a ``score --config`` file."""
    from odbench.data.base import create_dataset
    from odbench.imageio import write_png

    toy = create_dataset("toy")
    for folder in ("gt", "images", "maps/a", "maps/b"):
        (root / folder).mkdir(parents=True)
    rng = np.random.default_rng(1)
    for sid in toy.ids():
        sample = toy.load(sid)
        assert sample.mask is not None
        write_png(root / "gt" / f"{sid}.png", sample.mask)
        Image.fromarray(sample.image).save(root / "images" / f"{sid}.png")
        noisy = sample.mask.astype(np.float64) * 0.6 + rng.uniform(0, 100, sample.mask.shape)
        write_png(root / "maps/a" / f"m_{sid}_sal.png", noisy.astype(np.uint8))
        half = rng.integers(0, 256, (48, 64), dtype=np.uint8)
        write_png(root / "maps/b" / f"{sid}.png", half)
    config = root / "runs.toml"
    config.write_text(
        f"[datasets.{dataset}]\n"
        'gt = "gt"\n' + ('images = "images"\n' if images else "") + f"[methods.mine.{dataset}]\n"
        'path = "maps/a"\nprefix = "m_"\nsuffix = "_sal.png"\n'
        "[methods.theirs]\n"
        f'{dataset} = "maps/b"\n'
    )
    return config


def test_report_of_saved_maps_reads_the_folders_score_config_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs of ``score --config`` (someone's saved maps: no prediction cache) are shown from
    the prediction folders the results recorded, named as the config named them (prefix,
    suffix), scored from one folder and reported from another."""
    from odbench.imageio import read_gray
    from odbench.report.runs import load_report_data
    from odbench.report.thumbs import load_prediction

    project = tmp_path / "project"
    _saved_maps_project(project)
    monkeypatch.chdir(tmp_path)
    results = tmp_path / "results"
    args = ["score", "--config", "project/runs.toml", "--results-dir", str(results)]
    assert _run(args).exit_code == 0  # the config given relative to where it runs
    monkeypatch.chdir(project / "maps")  # reported from elsewhere
    out = tmp_path / "report"
    base = ["report", "--dataset", "toy", "--methods", "mine,theirs"]
    result = _run([*base, "--results-dir", str(results), "--out", str(out), "-n", "2"])
    assert result.exit_code == 0, result.output
    text = (out / "index.html").read_text()
    assert "saved maps" in text and str(project / "maps" / "a") in text
    data = load_report_data(results, "toy", ["mine", "theirs"])
    sid = data.ids[3]
    mine = load_prediction(data.runs[0], sid)
    np.testing.assert_array_equal(mine, read_gray(project / "maps/a" / f"m_{sid}_sal.png"))
    assert load_prediction(data.runs[1], sid, (96, 128)).shape == (96, 128)  # resized
    grid = tmp_path / "fig.png"
    result = _run([*base, "--results-dir", str(results), "--out", str(grid), "--grid", "2"])
    assert result.exit_code == 0, result.output
    other = ["report", "--dataset", "ecssd", "--methods", "mine,theirs", "--out", "r3"]
    elsewhere = _run([*other, "--results-dir", str(results)])
    assert elsewhere.exit_code == 2 and "its saved maps are scored on toy (odbench); score its" in (
        elsewhere.output
    )
    assert "odbench eval" not in elsewhere.output
    # the GT shown must be the GT scored: one changed after scoring is refused
    gt = project / "gt" / f"{data.ids[0]}.png"
    Image.fromarray(255 - np.asarray(Image.open(gt))).save(gt)
    result = _run([*base, "--results-dir", str(results), "--out", str(tmp_path / "r2")])
    assert result.exit_code == 2 and "is not the dataset's" in result.output, result.output
    assert not (tmp_path / "r2").exists()


def test_saved_maps_moved_are_scored_again_and_reported_from_their_new_folder(
    tmp_path: Path,
) -> None:
    """A result records where its maps are: moving them (same files) scores the pair again so
    that the report reads them from the new folder; a dataset of ``score --config`` only shows
    the images its config gives."""
    project = tmp_path / "project"
    config = _saved_maps_project(project, "mine_set", images=True)
    results = tmp_path / "results"
    args = ["score", "--config", str(config), "--results-dir", str(results), "--json"]
    assert _run(args).exit_code == 0
    for path in results.glob("*.json"):  # scored an hour ago (not in the same second)
        run = json.loads(path.read_text())
        path.write_text(json.dumps({**run, "date": "2026-01-01T00:00:00+00:00"}))
    (project / "maps/b").rename(project / "maps/moved")
    config.write_text(config.read_text().replace('"maps/b"', '"maps/moved"'))
    again = json.loads(_run(args).stdout)
    assert [r["status"] for r in again] == ["unchanged", "scored"]
    out = tmp_path / "report"
    base = ["report", "--dataset", "mine_set", "--methods", "mine,theirs", "-n", "1"]
    result = _run([*base, "--results-dir", str(results), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert str(project / "maps" / "moved") in (out / "index.html").read_text()
    config.write_text(config.read_text().replace('images = "images"\n', ""))
    (results / "none").mkdir()
    for path in results.glob("*"):
        if path.is_file():
            path.rename(results / "none" / path.name)
    assert _run([*args[:-2], str(results / "none2")]).exit_code == 0
    result = _run([*base, "--results-dir", str(results / "none2"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and 'add images = "FOLDER" to [datasets.mine_set]' in (
        result.output
    )


def test_report_of_a_folder_dataset(tmp_path: Path) -> None:
    """Runs on a ``folder`` dataset are stored as ``folder:NAME``, the name ``compare`` takes;
    the report takes it too and opens the folder its runs recorded."""
    from odbench.data.base import create_dataset

    toy = create_dataset("toy")
    data = tmp_path / "shapes"
    for folder in ("images", "masks"):
        (data / folder).mkdir(parents=True)
    for sid in toy.ids()[:5]:
        sample = toy.load(sid)
        Image.fromarray(sample.image).save(data / "images" / f"{sid}.png")
        Image.fromarray(sample.mask).save(data / "masks" / f"{sid}.png")
    results = tmp_path / "results"
    for method in METHODS:
        args = ["eval", "--method", method, "--dataset", "folder", "--data-root", str(data)]
        args += ["--results-dir", str(results), "--cache-dir", str(tmp_path / "cache")]
        assert _run(args).exit_code == 0
    base = ["report", "--methods", ",".join(METHODS), "--results-dir", str(results)]
    result = _run([*base, "--dataset", "folder:shapes", "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "folder:shapes, 5 images" in (tmp_path / "r" / "index.html").read_text()
    result = _run([*base, "--dataset", "folder", "--out", str(tmp_path / "r2")])
    assert result.exit_code == 2 and "folder:NAME (the results hold folder:shapes)" in (
        result.output
    )


def test_a_mistyped_method_is_unknown_not_unevaluated(runs: Path, tmp_path: Path) -> None:
    args = ["report", "--dataset", "toy", "--methods", "center-prior,wctrr"]
    result = _run([*args, "--results-dir", str(runs / "results"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    assert "unknown method 'wctrr'" in result.output and "did you mean 'wctr'?" in result.output
    assert "odbench eval" not in result.output


def test_a_dataset_the_report_cannot_open_is_one_line(runs: Path, tmp_path: Path) -> None:
    """Runs on a dataset given to the Python API as an object (no registered name, no
    folders recorded) cannot be shown: one line saying so."""
    copy = tmp_path / "results"
    shutil.copytree(runs / "results", copy)
    for path in copy.glob("*.json"):
        run = json.loads(path.read_text())
        path.write_text(json.dumps({**run, "dataset": {**run["dataset"], "name": "mydata"}}))
    args = ["report", "--dataset", "mydata", "--methods", ",".join(METHODS)]
    result = _run([*args, "--results-dir", str(copy), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    assert "'mydata': not a registered dataset (odbench list)" in result.output
    assert not (tmp_path / "r").exists()
