"""``odbench bench report``: build time of ``odbench report`` at DUTS-TE size (target: 5,019
images × 5 methods in under a minute on 2 cores) and how fast the page sorts and filters.

No DUTS-TE here, so the benchmark plants it: a folder dataset of ``--images`` 300×400 JPEG
images and PNG masks (a pool of 64 distinct pictures written under every id), ``--methods``
results files whose per-image records (IoU, Fβ curves over 255 thresholds) are random but
self-consistent, and the prediction-cache entries the report opens (it stats only those: an
entry it does not show is never read, so the others are not written; a report that opened
one would fail here).  Then, in this process:

* reference: decode every file the report reads once, plainly and in full (one thread);
* a cold build (every thumbnail written: grids, and a small image per table row) and a warm
  rebuild (every thumbnail reused), wall clock and CPU time, with their ratio to the reference;
* with ``chromium`` and playwright present: page load, sort (a header click on all images)
  and filter times measured inside the page (``performance.now``).
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from odbench.errors import UserError
from odbench.outputs import check_output_folder

TARGET_S = 60.0


def _pictures(rng: np.random.Generator, size: tuple[int, int], k: int) -> list[tuple[bytes, bytes]]:
    """``k`` (JPEG image, PNG mask) pairs: an ellipse on a noisy background."""
    from PIL import Image

    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for _ in range(k):
        cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
        ry, rx = rng.uniform(0.1, 0.35) * h, rng.uniform(0.1, 0.35) * w
        mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        img = rng.integers(0, 256, size=(h // 8, w // 8, 3), dtype=np.uint8)
        big = np.asarray(Image.fromarray(img).resize((w, h), Image.Resampling.BILINEAR)).copy()
        big[mask] = (0.4 * big[mask] + 0.6 * rng.integers(0, 256, 3)).astype(np.uint8)
        jpg, png = io.BytesIO(), io.BytesIO()
        Image.fromarray(big).save(jpg, format="JPEG", quality=90)
        Image.fromarray(mask.astype(np.uint8) * 255).save(png, format="PNG")
        out.append((jpg.getvalue(), png.getvalue()))
    return out


def plant(root: Path, n_images: int, n_methods: int, size: tuple[int, int], n: int) -> list[str]:
    """Write the planted dataset, results and the cache entries the report will open; return
    the method names."""
    from odbench.cache import PredictionCache
    from odbench.data.base import create_dataset
    from odbench.metrics.protocols import ODBENCH
    from odbench.report.select import select_all

    rng = np.random.default_rng(0)
    pool = _pictures(rng, size, 64)
    ids = [f"sun_{i:05d}" for i in range(n_images)]
    for sub in ("images", "masks"):
        (root / "data" / sub).mkdir(parents=True)
    for k, sid in enumerate(ids):
        jpg, png = pool[k % len(pool)]
        (root / "data" / "images" / f"{sid}.jpg").write_bytes(jpg)
        (root / "data" / "masks" / f"{sid}.png").write_bytes(png)
    dataset = create_dataset("folder", data_root=root / "data")
    base = rng.uniform(0.0, 1.0, n_images)  # image difficulty, shared by the methods
    methods, ious = [f"method-{m}" for m in range(n_methods)], []
    for m, name in enumerate(methods):
        iou = np.clip(base + rng.normal(0.0, 0.2, n_images), 0.0, 1.0)
        curves = np.clip(
            iou[:, None] * np.sin(np.linspace(0.05, 3.0, 255))[None, :] ** 2 + 0.1, 0.0, 1.0
        )
        records = {
            "ids": np.array(ids),
            "acc": np.clip(iou + 0.1, 0, 1),
            "iou": iou,
            "mae": 1.0 - iou,
            "fbeta": curves,
        }
        curve = curves.mean(axis=0)
        results = {
            "method": {"name": name, "overrides": {}, "hyperparameters": {}},
            "dataset": {**dataset.describe(), "limit": None, "n_evaluated": n_images},
            "protocol": {"name": ODBENCH.name, "definition": ODBENCH.as_dict()},
            "tasks": ["saliency"],
            "metrics": {
                "saliency": {
                    "acc": float(records["acc"].mean()),
                    "iou": float(iou.mean()),
                    "max_fbeta": float(curve.max()),
                    "mae": float(records["mae"].mean()),
                    "best_threshold": float(np.argmax(curve) / 255),
                    "fbeta_curve": curve.tolist(),
                }
            },
            "date": f"2026-01-01T00:00:{m:02d}+00:00",
            "device": "cpu",
            "cache": str(root / "cache" / name),
            "packages": {},
            "git_commit": None,
        }
        _write_results(results, records, root / "results")
        ious.append(iou)
    wanted = sorted({i for s in select_all(np.stack(ious), n) for i in s.indices})
    yy, xx = np.mgrid[0 : size[0], 0 : size[1]]
    for m, name in enumerate(methods):
        cache = PredictionCache(root / "cache" / name)
        for i in wanted:
            soft = np.exp(
                -(((yy - size[0] / 2) / (40 + 10 * m)) ** 2 + ((xx - size[1] / 2) / 60) ** 2)
            )
            soft *= rng.uniform(0.5, 1.0)
            cache.put(ids[i], np.round(soft * 65535.0).astype(np.uint16), None)
    return methods


def _write_results(results: dict[str, Any], records: dict[str, np.ndarray], folder: Path) -> None:
    """Write a planted run through the results store's own writer."""
    from odbench.results import Records, RunResult, write_results

    known = ("method", "dataset", "protocol", "tasks", "metrics", "date")
    run = RunResult(
        **{k: results[k] for k in known},
        info={k: v for k, v in results.items() if k not in known},
        _records=Records.from_arrays(records),
    )
    write_results(run, folder)


def _decode_reference(root: Path, methods: list[str]) -> float:
    """Seconds to decode (plainly, in full, one thread) every file the report reads: the grid
    images, masks and cache entries, and every image for the table's thumbnails."""
    from odbench.cache import PredictionCache
    from odbench.imageio import read_gray, read_rgb

    entries = PredictionCache(root / "cache" / methods[0]).ids()
    t0 = time.perf_counter()
    for e in entries:
        read_rgb(root / "data" / "images" / f"{e}.jpg")
        read_gray(root / "data" / "masks" / f"{e}.png")
        for name in methods:
            PredictionCache(root / "cache" / name).get(e)
    for path in sorted((root / "data" / "images").glob("*.jpg")):
        read_rgb(path)
    return time.perf_counter() - t0


def _browser(index: Path) -> str:
    import os

    chromium = os.environ.get("ODBENCH_CHROMIUM") or shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return "browser: skipped (playwright is not installed)"
    if chromium is None:
        return "browser: skipped (no chromium on PATH)"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        t0 = time.perf_counter()
        page.goto(index.as_uri(), wait_until="load")
        load = time.perf_counter() - t0
        sort_ms = page.evaluate(
            "() => { const t = performance.now();"
            " document.querySelector('#pi th[data-key=iou0]').click();"
            " return performance.now() - t; }"
        )
        filter_ms = page.evaluate(
            "() => { const f = document.getElementById('filter'); const t = performance.now();"
            " f.value = '12'; f.dispatchEvent(new Event('input'));"
            " return performance.now() - t; }"
        )
        browser.close()
    return (
        f"browser: page load {load:.2f} s, sort all rows {sort_ms:.0f} ms, "
        f"filter {filter_ms:.0f} ms (chromium, headless)"
    )


@click.command("report")
@click.option(
    "--images",
    "n_images",
    type=click.IntRange(min=1),
    default=5019,
    show_default=True,
    help="DUTS-TE: 5,019.",
)
@click.option("--methods", "n_methods", type=click.IntRange(min=1), default=5, show_default=True)
@click.option(
    "-n", "n", type=click.IntRange(min=0), default=8, show_default=True, help="Images per grid."
)
@click.option(
    "--keep",
    type=click.Path(path_type=Path),
    default=None,
    help="Plant into this new folder and keep it (default: a temporary folder).",
)
@click.option(
    "--browser/--no-browser",
    default=True,
    show_default=True,
    help="Also time the page in headless chromium (when present).",
)
def cli(n_images: int, n_methods: int, n: int, keep: Path | None, browser: bool) -> None:
    """odbench report at DUTS-TE size: cold and warm build time, page sort/filter time."""
    from odbench.report.build import build_report

    if keep is not None and keep.exists():
        raise UserError(f"--keep {keep}: exists; give a new folder")
    if keep is not None:
        check_output_folder(keep, "--keep")
    root = keep if keep is not None else Path(tempfile.mkdtemp(prefix="odbench-bench-report-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        methods = plant(root, n_images, n_methods, (300, 400), n)
        click.echo(
            f"report: {n_images} planted 300x400 images x {n_methods} methods "
            f"(planted in {time.perf_counter() - t0:.1f} s, {root})"
        )
        ref = _decode_reference(root, methods)
        times = []
        for label in ("cold (thumbnails written)", "warm (thumbnails reused)"):
            c0, t0 = time.process_time(), time.perf_counter()
            outcome = build_report(
                root / "results", "folder", methods, root / "out",
                data_root=root / "data", n=n,
            )  # fmt: skip
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            times.append(wall)
            click.echo(
                f"  {label:27s} {wall:6.2f} s wall, {cpu:6.2f} s CPU  "
                f"({outcome.n_selected} images in grids, {outcome.thumbs_written} thumbnails "
                f"written, {outcome.thumbs_reused} reused; {wall / ref:.1f}x the decode reference)"
            )
        size = (root / "out" / "index.html").stat().st_size
        click.echo(f"  reference: decoding the files the report reads once: {ref:.2f} s")
        click.echo(f"  index.html {size / 1e6:.1f} MB")
        verdict = "meets" if max(times) < TARGET_S else "MISSES"
        click.echo(f"  {verdict} the target of {TARGET_S:g} s (wall clock, shared machine)")
        if browser:
            click.echo("  " + _browser(root / "out" / "index.html"))
        summary = {"cold_s": times[0], "warm_s": times[1], "decode_reference_s": ref}
        click.echo("  " + json.dumps(summary))
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)
