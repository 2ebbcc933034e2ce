"""``odbench bench metrics``: odbench's saliency metrics against pysodmetrics, and ``odbench score``
end to end against plain PNG decoding.

1. The same ``--n`` random 300×400 uint8 prediction / GT pairs are scored, in one process on one
   thread, by :class:`odbench.metrics.saliency.SaliencyMeter` (protocols ``odbench`` and
   ``pysodmetrics``) and by pysodmetrics' ``Fmeasure`` + ``MAE``; the ratio is the figure
   (target: odbench >= 5x faster).  The ``pysodmetrics`` protocol's curve is also checked
   against the package's while we are at it.
2. ``--n-files`` pairs are written as PNGs to a temporary folder; ``odbench score``'s code path
   (:func:`odbench.commands.score.score_folders`) is timed against decoding the same files with
   Pillow and nothing else (images/s and the ratio).
3. End to end on PNG files, one process: real ECSSD GT masks (``--data-root``; ``--synthetic``
   draws ellipses instead) with plausible predictions (the mask shifted, blurred, noised).
   A PySODMetrics loop as PySODEvalToolkit runs it (``cv2.imread`` grayscale, one thread)
   against ``odbench score`` (1 worker and ``--workers`` threads): Fβ + MAE vs
   ``--metrics basic``, then S, E, weighted F, F, MAE, Dice, BER vs ``--metrics all`` under the
   ``pysodmetrics`` protocol (whose values are checked against the loop's).  Targets: basic
   >= 6x, all >= 5x.  Wall-clock ratios on a shared machine are noisy: run it twice.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path

import click
import numpy as np

from odbench.bench import data_root_option, ecssd_images, one_thread


def random_pairs(n: int, shape: tuple[int, int], seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Random uint8 predictions and 0/255 GT masks (about 30 % foreground)."""
    rng = np.random.default_rng(seed)
    return [
        (
            rng.integers(0, 256, shape, dtype=np.uint8),
            np.where(rng.random(shape) < 0.3, 255, 0).astype(np.uint8),
        )
        for _ in range(n)
    ]


def time_odbench(pairs: list[tuple[np.ndarray, np.ndarray]], protocol: str) -> tuple[float, dict]:
    from odbench.metrics.saliency import SaliencyMeter

    meter = SaliencyMeter(protocol)
    t0 = time.perf_counter()
    for i, (pred, gt) in enumerate(pairs):
        meter.update(pred, gt, str(i))
    result = meter.compute()
    return time.perf_counter() - t0, result


def time_pysodmetrics(
    pairs: list[tuple[np.ndarray, np.ndarray]],
) -> tuple[float, np.ndarray, float]:
    try:
        import py_sod_metrics
    except ImportError as e:
        from odbench.cli import UserError

        raise UserError("pysodmetrics is not installed: pip install 'odbench[test]'") from e

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Fmeasure will be removed" deprecation notice
        fm, mae = py_sod_metrics.Fmeasure(), py_sod_metrics.MAE()
    t0 = time.perf_counter()
    for pred, gt in pairs:
        fm.step(pred=pred, gt=gt)
        mae.step(pred=pred, gt=gt)
    curve = fm.get_results()["fm"]["curve"]
    mae_value = float(mae.get_results()["mae"])
    return time.perf_counter() - t0, curve[::-1], mae_value


def time_score_files(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float]:
    """(seconds for score_folders, seconds for plain Pillow decoding of the same files)."""
    from PIL import Image

    from odbench.commands.score import score_folders
    from odbench.imageio import write_png

    with tempfile.TemporaryDirectory() as tmp:
        pred_dir, gt_dir = Path(tmp, "pred"), Path(tmp, "gt")
        pred_dir.mkdir()
        gt_dir.mkdir()
        for i, (pred, gt) in enumerate(pairs):
            write_png(pred_dir / f"{i:05d}.png", pred)
            write_png(gt_dir / f"{i:05d}.png", gt)
        files = sorted(pred_dir.iterdir()) + sorted(gt_dir.iterdir())
        t0 = time.perf_counter()
        for path in files:
            with Image.open(path) as img:
                np.asarray(img)
        decode = time.perf_counter() - t0
        t0 = time.perf_counter()
        score_folders(pred_dir, gt_dir, "odbench")
        score = time.perf_counter() - t0
    return score, decode


def plausible_pairs(
    gt_folder: Path | None, n: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(uint8 prediction, uint8 GT): the first ``n`` masks of ``gt_folder`` (or ellipses on
    300x400 when None), predictions = mask shifted, blurred and noised."""
    import cv2

    from odbench.imageio import read_gray

    rng = np.random.default_rng(seed)
    if gt_folder is not None:
        gts = [read_gray(p) for p in sorted(gt_folder.glob("*.png"))[:n]]
    else:
        gts = []
        for _ in range(n):
            g = np.zeros((300, 400), np.uint8)
            center = (int(rng.integers(100, 300)), int(rng.integers(80, 220)))
            axes = (int(rng.integers(30, 120)), int(rng.integers(30, 90)))
            cv2.ellipse(g, center, axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
            gts.append(g)
    pairs = []
    for g in gts:
        shift = (int(rng.integers(-15, 15)), int(rng.integers(-15, 15)))
        blurred = cv2.GaussianBlur(np.roll(g.astype(np.float32), shift, (0, 1)), (0, 0), 6)
        noisy = blurred + rng.normal(0, 20, g.shape)
        pairs.append((np.clip(noisy, 0, 255).astype(np.uint8), g))
    return pairs


def pysod_loop_files(pred_dir: Path, gt_dir: Path, family: bool) -> tuple[float, dict[str, float]]:
    """PySODEvalToolkit's way: cv2.imread both files, step every metric; (seconds, results)."""
    import cv2
    import py_sod_metrics as psm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fm, mae = psm.Fmeasure(), psm.MAE()
        extra = {}
        if family:
            extra = {
                "sm": psm.Smeasure(),
                "em": psm.Emeasure(),
                "wfm": psm.WeightedFmeasure(),
                "v2": psm.FmeasureV2(
                    {
                        "dice": psm.DICEHandler(False, False, with_binary=True),
                        "ber": psm.BERHandler(False, False, with_binary=True),
                    }
                ),
            }
        t0 = time.perf_counter()
        for path in sorted(pred_dir.iterdir()):
            pred = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            gt = cv2.imread(str(gt_dir / path.name), cv2.IMREAD_GRAYSCALE)
            for m in (fm, mae, *extra.values()):
                m.step(pred=pred, gt=gt)
        seconds = time.perf_counter() - t0
    f = fm.get_results()["fm"]
    out = {"max_fbeta": float(f["curve"].max()), "mae": float(mae.get_results()["mae"])}
    if family:
        e = extra["em"].get_results()["em"]
        v = extra["v2"].get_results()
        out |= {
            "s_measure": float(extra["sm"].get_results()["sm"]),
            "e_measure_adaptive": float(e["adp"]),
            "e_measure_mean": float(e["curve"].mean()),
            "e_measure_max": float(e["curve"].max()),
            "weighted_fbeta": float(extra["wfm"].get_results()["wfm"]),
            "adaptive_fbeta": float(f["adp"]),
            "mean_fbeta": float(f["curve"].mean()),
            "dice": float(v["dice"]["binary"]),
            "ber": float(v["ber"]["binary"]),
        }
    return seconds, out


def end_to_end(pairs: list[tuple[np.ndarray, np.ndarray]], workers: int) -> None:
    """Part 3: PySODMetrics loop vs ``odbench score`` on the same PNG files."""
    from odbench.commands.score import score_folders
    from odbench.imageio import write_png

    with tempfile.TemporaryDirectory() as tmp:
        pred_dir, gt_dir = Path(tmp, "pred"), Path(tmp, "gt")
        for i, (pred, gt) in enumerate(pairs):
            write_png(pred_dir / f"{i:05d}.png", pred)
            write_png(gt_dir / f"{i:05d}.png", gt)
        n = len(pairs)
        for label, metrics, target in (("Fβ + MAE", "basic", 6), ("all metrics", "all", 5)):
            t_ref, ref = pysod_loop_files(pred_dir, gt_dir, family=metrics == "all")
            click.echo(f"[{label}] PySODMetrics loop: {n / t_ref:7.1f} images/s")
            for w in sorted({1, workers}):
                t0 = time.perf_counter()
                ours = score_folders(pred_dir, gt_dir, "pysodmetrics", metrics=metrics, workers=w)
                t = time.perf_counter() - t0
                diff = max(abs(float(ours[k]) - v) for k, v in ref.items())
                click.echo(
                    f"[{label}] odbench score --metrics {metrics} --workers {w}: "
                    f"{n / t:7.1f} images/s = {t_ref / t:5.1f}x the loop (target >= {target}x); "
                    f"max |difference| {diff:.1e}"
                )


@click.command()
@click.option("--n", default=1000, show_default=True, help="Random prediction/GT pairs.")
@click.option("--n-files", default=200, show_default=True, help="PNG pairs for the score test.")
@click.option("--seed", default=0, show_default=True)
@data_root_option
@click.option("--synthetic", is_flag=True, help="Ellipse masks instead of real ECSSD masks.")
@click.option("--workers", type=int, default=None, help="Threads (default: the cores available).")
def cli(
    n: int, n_files: int, seed: int, data_root: Path | None, synthetic: bool, workers: int | None
) -> None:
    """Saliency metrics: odbench vs pysodmetrics on random 300x400 pairs; score images/s;
    score --metrics all end to end vs a PySODMetrics loop."""
    from odbench.commands.score import default_workers

    gt_folder = None
    if not synthetic:
        gt_folder = ecssd_images(data_root, "use --synthetic").parent / "ground_truth_mask"
    shape = (300, 400)
    pairs = random_pairs(n, shape, seed)
    with one_thread():
        click.echo(f"{n} random {shape[0]}x{shape[1]} uint8 pairs, 1 thread")
        time_odbench(pairs[:10], "odbench")  # warm-up (imports, allocator)
        t_od, _ = time_odbench(pairs, "odbench")
        t_odp, res_p = time_odbench(pairs, "pysodmetrics")
        t_ps, curve, mae = time_pysodmetrics(pairs)
        diff = max(
            float(np.max(np.abs(np.asarray(res_p["fbeta_curve"]) - curve))),
            abs(float(res_p["mae"]) - mae),  # type: ignore[arg-type]
        )
        click.echo(f"pysodmetrics Fmeasure+MAE    {t_ps:8.3f} s  {1e3 * t_ps / n:7.3f} ms/image")
        for label, t in (("odbench (odbench protocol)", t_od), ("odbench (pysodmetrics)", t_odp)):
            click.echo(
                f"{label:28s} {t:8.3f} s  {1e3 * t / n:7.3f} ms/image  "
                f"{t_ps / t:6.1f}x faster than pysodmetrics (target >= 5x)"
            )
        click.echo(f"pysodmetrics protocol vs package: max |difference| = {diff:.2e}")

        files = random_pairs(n_files, shape, seed + 1)
        t_score, t_decode = time_score_files(files)
        click.echo(
            f"odbench score on {n_files} PNG pairs: {n_files / t_score:8.1f} images/s; "
            f"Pillow decode only: {n_files / t_decode:8.1f} images/s "
            f"(score takes {t_score / t_decode:.2f}x the decode time)"
        )

    workers = default_workers() if workers is None else workers
    click.echo(
        f"end to end on {n_files} PNG pairs ({'ellipses' if synthetic else gt_folder}), "
        f"{workers} worker(s); wall-clock on a shared machine: noisy"
    )
    end_to_end(plausible_pairs(gt_folder, n_files, seed + 2), workers)
