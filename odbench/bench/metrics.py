"""``odbench bench metrics``: odbench's saliency metrics against pysodmetrics, and ``odbench score``
end to end against plain PNG decoding.

1. The same ``--n`` random 300×400 uint8 prediction / GT pairs are scored, in one process on one
   thread, by :class:`odbench.metrics.saliency.SaliencyMeter` (protocols ``odbench`` and
   ``pysodmetrics``) and by pysodmetrics' ``Fmeasure`` + ``MAE``; the ratio is the figure
   (target: odbench >= 5x faster).  The ``pysodmetrics`` protocol's curve is also checked
   against the package's while we are at it.
2. ``--n-files`` pairs are written as PNGs to a temporary folder; ``odbench score``'s code path
   (:func:`odbench.scoring.folders.score_folders`) is timed against decoding the same files with
   Pillow and nothing else (images/s and the ratio).
3. End to end on PNG files, one process: real ECSSD GT masks (``--data-root``; ``--synthetic``
   draws ellipses instead) with plausible predictions (the mask shifted, blurred, noised).
   A PySODMetrics loop as PySODEvalToolkit runs it (``cv2.imread`` grayscale, one thread)
   against ``odbench score`` (1 worker and ``--workers`` workers: processes on Linux): Fβ + MAE vs
   ``--metrics basic``, then S, E, weighted F, F, MAE, Dice, BER vs ``--metrics all`` under the
   ``pysodmetrics`` protocol (whose values are checked against the loop's).  Targets: basic
   >= 6x, all >= 5x.  Each timing is the best of ``--repeat`` rounds in which the runs take
   turns; wall-clock ratios on a shared machine are still noisy: run it twice.
4. ``--methods`` methods' maps of the same GT masks, ``--metrics all``: scored one method after
   the other (each GT read, binarised and its weighted-Fβ distance transform computed once per
   method) vs together as ``score --config`` does (once per GT), and ``score --config`` itself.

Measured 30 Nov 2026 on the 2-core VM (benchmarks/README.md), six runs as the speed-ups landed:
1,000 ECSSD pairs, basic 4.1-5.1x (1 worker) / 6.7-8.3x (2 workers: this process and one forked;
8.1x and 8.3x on the final code), all 4.3-5.0x / 7.2-8.6x; 5 methods sharing the GT 1.61-1.77x.
With worker threads 2 workers gave 1.3x one worker; with a multiprocessing.Pool of two processes
1.5-1.6x; now 1.6-1.7x.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import click
import numpy as np

from odbench.bench import cpu_seconds, data_root_option, ecssd_images, one_thread
from odbench.commands import options
from odbench.errors import UserError


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
        from odbench.errors import UserError

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

    from odbench.imageio import write_png
    from odbench.scoring.folders import score_folders

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
    return [(plausible_map(g, rng), g) for g in gts]


def plausible_map(gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A uint8 prediction of ``gt``: the mask shifted, blurred and noised."""
    import cv2

    shift = (int(rng.integers(-15, 15)), int(rng.integers(-15, 15)))
    blurred = cv2.GaussianBlur(np.roll(gt.astype(np.float32), shift, (0, 1)), (0, 0), 6)
    noisy = blurred + rng.normal(0, 20, gt.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


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


def best_of(
    repeat: int, runs: dict[str, Callable[[], Any]], cpu: dict[str, float] | None = None
) -> dict[str, tuple[float, Any]]:
    """Each run's shortest wall time over ``repeat`` rounds, the runs taking turns within a
    round (so that a burst of other work on a shared machine slows them alike), and its
    result: {name: (seconds, result)}.  ``cpu``, if given, receives each run's smallest CPU
    time of the process and its worker processes, which other work on the machine disturbs
    less."""
    best: dict[str, tuple[float, Any]] = {name: (float("inf"), None) for name in runs}
    for _ in range(repeat):
        for name, run in runs.items():
            t0, c0 = time.perf_counter(), cpu_seconds()
            result = run()
            seconds, cpu_s = time.perf_counter() - t0, cpu_seconds() - c0
            if seconds < best[name][0]:
                best[name] = (seconds, result)
            if cpu is not None:
                cpu[name] = min(cpu.get(name, cpu_s), cpu_s)
    return best


def end_to_end(pairs: list[tuple[np.ndarray, np.ndarray]], workers: int, repeat: int) -> None:
    """Part 3: PySODMetrics loop vs ``odbench score`` on the same PNG files (malloc set as
    ``score`` sets it for both: :func:`keep_freed_memory`)."""
    from odbench.imageio import write_png
    from odbench.scoring.folders import keep_freed_memory, score_folders

    keep_freed_memory()

    with tempfile.TemporaryDirectory() as tmp:
        pred_dir, gt_dir = Path(tmp, "pred"), Path(tmp, "gt")
        for i, (pred, gt) in enumerate(pairs):
            write_png(pred_dir / f"{i:05d}.png", pred)
            write_png(gt_dir / f"{i:05d}.png", gt)
        n = len(pairs)
        for label, metrics, target in (("Fβ + MAE", "basic", 6), ("all metrics", "all", 5)):
            runs: dict[str, Callable[[], Any]] = {
                "loop": partial(pysod_loop_files, pred_dir, gt_dir, metrics == "all")
            }
            for w in sorted({1, workers}):
                runs[str(w)] = partial(
                    score_folders, pred_dir, gt_dir, "pysodmetrics", metrics=metrics, workers=w
                )
            cpu: dict[str, float] = {}
            best = best_of(repeat, runs, cpu)
            t_ref, (_, ref) = best.pop("loop")
            click.echo(
                f"[{label}] PySODMetrics loop: {n / t_ref:7.1f} images/s "
                f"(CPU {1e3 * cpu['loop'] / n:.2f} ms/image)"
            )
            for threads, (t, ours) in best.items():
                diff = max(abs(float(ours[k]) - v) for k, v in ref.items())
                # CPU time comes in clock ticks (10 ms): a tiny run may measure none
                less = f" = {cpu['loop'] / cpu[threads]:.1f}x less" if cpu[threads] else ""
                click.echo(
                    f"[{label}] odbench score --metrics {metrics} --workers {threads}: "
                    f"{n / t:7.1f} images/s = {t_ref / t:5.1f}x the loop (target >= {target}x; "
                    f"CPU {1e3 * cpu[threads] / n:.2f} ms/image{less}); max |difference| {diff:.1e}"
                )


def shared_gt(gts: list[np.ndarray], n_methods: int, workers: int, repeat: int, seed: int) -> None:
    """Part 4: ``n_methods`` methods' maps of the same GT masks, scored one method after the
    other (each GT read and its weighted-Fβ distance transform computed once per method) and
    together as ``score --config`` does (once per GT: :func:`score_methods`)."""
    from odbench.imageio import write_png
    from odbench.scoring.config import score_config
    from odbench.scoring.folders import score_files, score_methods
    from odbench.scoring.meters import make_meter

    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        gt_paths = []
        for i, g in enumerate(gts):
            gt_paths.append(root / "gt" / f"{i:05d}.png")
            write_png(gt_paths[-1], g)
        preds: list[list[Path]] = []
        for m in range(n_methods):
            preds.append([root / f"m{m}" / f"{i:05d}.png" for i in range(len(gts))])
            for path, g in zip(preds[-1], gts):
                write_png(path, plausible_map(g, rng))

        def alone() -> list[Any]:
            return [
                score_files(
                    [(str(i), p, g) for i, (p, g) in enumerate(zip(preds[m], gt_paths))],
                    make_meter("pysodmetrics", "all"),
                    workers,
                )
                for m in range(n_methods)
            ]

        def together() -> list[Any]:
            items = [(str(i), [p[i] for p in preds], g) for i, g in enumerate(gt_paths)]
            meters = [make_meter("pysodmetrics", "all") for _ in range(n_methods)]
            return score_methods(items, meters, workers)

        best = best_of(repeat, {"alone": alone, "together": together})
        t_alone, t_shared = best["alone"][0], best["together"][0]
        config = root / "runs.toml"
        lines = ['metrics = "all"', 'protocol = "pysodmetrics"', "[datasets.d]", 'gt = "gt"']
        lines += [f'[methods.m{m}]\nd = "m{m}"' for m in range(n_methods)]
        config.write_text("\n".join(lines) + "\n")
        t0 = time.perf_counter()
        score_config(config, None, None, workers, root / "results")
        t_config = time.perf_counter() - t0
    n = len(gts) * n_methods
    click.echo(
        f"[{n_methods} methods, shared GT] --metrics all, {workers} worker(s): one method after "
        f"the other {n / t_alone:7.1f} maps/s; together (GT read and prepared once) "
        f"{n / t_shared:7.1f} maps/s = {t_alone / t_shared:4.2f}x; score --config end to end "
        f"(hashing the files, writing {n_methods} results) {n / t_config:7.1f} maps/s"
    )


@click.command("metrics")
@click.option(
    "--n",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Random prediction/GT pairs.",
)
@click.option(
    "--n-files",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="PNG pairs for the score test (and the end-to-end part: at most the masks there are).",
)
@click.option("--seed", default=0, show_default=True)
@data_root_option
@click.option("--synthetic", is_flag=True, help="Ellipse masks instead of real ECSSD masks.")
@options.workers("score's --workers (default: the cores available).", type=click.IntRange(min=1))
@click.option(
    "--repeat",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Parts 3 and 4: each timing is the best of this many runs (a shared machine's noise).",
)
@click.option(
    "--methods",
    "n_methods",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Part 4: methods.",
)
def cli(
    n: int,
    n_files: int,
    seed: int,
    data_root: Path | None,
    synthetic: bool,
    workers: int | None,
    repeat: int,
    n_methods: int,
) -> None:
    """Saliency metrics: odbench vs pysodmetrics on random 300x400 pairs; score images/s;
    score --metrics all end to end vs a PySODMetrics loop."""
    from odbench.scoring.folders import default_workers

    gt_folder = None
    if not synthetic:
        gt_folder = ecssd_images(data_root, "use --synthetic").parent / "ground_truth_mask"
        if not any(gt_folder.glob("*.png")):  # part 3 reads them: fail now, not after parts 1-2
            raise UserError(
                f"{gt_folder}: no PNG masks; pass --data-root (or set $ODBENCH_DATA) to the "
                "folder holding ECSSD/ with its ground_truth_mask/, or use --synthetic"
            )
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
    pairs = plausible_pairs(gt_folder, n_files, seed + 2)  # at most the masks there are
    click.echo(
        f"end to end on {len(pairs)} PNG pairs ({'ellipses' if synthetic else gt_folder}), "
        f"{workers} worker(s); wall-clock on a shared machine: noisy"
    )
    end_to_end(pairs, workers, repeat)
    shared_gt([g for _, g in pairs], n_methods, workers, repeat, seed + 3)
