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
"""

from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path

import click
import numpy as np

from odbench.bench import one_thread


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


@click.command()
@click.option("--n", default=1000, show_default=True, help="Random prediction/GT pairs.")
@click.option("--n-files", default=200, show_default=True, help="PNG pairs for the score test.")
@click.option("--seed", default=0, show_default=True)
def cli(n: int, n_files: int, seed: int) -> None:
    """Saliency metrics: odbench vs pysodmetrics on random 300x400 pairs; score images/s."""
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
