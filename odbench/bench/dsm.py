"""``odbench bench dsm``: Deep Spectral Methods' eigensolve per image, and the method's images/s on
the full-size random ViTs, one CPU thread.

1. The eigensolve (the released code's bottleneck: its issue #3 reports ~10 s per image on a CPU)
   on planted graphs of the sizes real images give: 30 × 30 = 900 nodes (480² with ViT-S/16) and
   60 × 44 = 2,640 nodes (480 × 352 with ViT-B/8, a VOC-sized image), feature affinity only
   (λ = 0) and with the KNN colour affinity (λ = 10).  Three solvers, timed on the same graphs:

   - ``original``: the released code's ``eigsh(D − W, k=2, sigma=0, which='LM', M=D)`` on dense
     float32 arrays (shift-invert, a dense LU per image; the KNN block densified);
   - ``dense``: :func:`odbench.methods.dsm.spectral_vectors` with LAPACK (eigenpairs 0..1);
   - ``lanczos``: the same by Lanczos (ARPACK) on the operator ``D^-1/2 W D^-1/2`` (the KNN
     block stays sparse), used by the card.

   Each solver's foreground mask is compared with the original's (fraction of nodes equal).
2. ``dsm`` end to end (crop, keys, graph, solve, map) on the full-size random ViTs
   (``--backbone``, default ``dino-vits16-random``) on real ECSSD images (``--data-root``; or
   planted images with ``--planted-only``): images/s, and the share of the ViT forward.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import click
import numpy as np

from odbench.bench import data_root_option, ecssd_images, one_thread, read_pil_rgb

#: (label, grid) of the planted graphs.
SIZES = (("480² ViT-S/16", (30, 30)), ("480×352 ViT-B/8", (44, 60)))


def planted_graph(grid: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(h * w, 64) float32 keys (an object rectangle, a background region, noise) and a
    matching (h, w, 3) uint8 image of one pixel per node."""
    rng = np.random.default_rng(seed)
    h, w = grid
    lab = np.zeros(grid, int)
    y, x = rng.integers(2, h // 3), rng.integers(2, w // 3)
    lab[y : y + rng.integers(h // 4, h // 2), x : x + rng.integers(w // 4, w // 2)] = 1
    lab[: rng.integers(2, h // 3), : rng.integers(2, w)] = 2
    keys = rng.standard_normal((3, 64))[lab.ravel()] + rng.uniform(0.6, 1.2) * rng.standard_normal(
        (h * w, 64)
    )
    colours = np.array([[40, 120, 200], [200, 40, 40], [90, 160, 60]], float)[lab]
    image = np.clip(colours + rng.normal(0, 25, colours.shape), 0, 255).astype(np.uint8)
    return keys.astype(np.float32), image


def original_vectors(w_feat: np.ndarray, w_color: Any = None, lam: float = 0.0) -> np.ndarray:
    """The released code's solve: dense float32, ``eigsh(D - W, k=2, sigma=0, M=D)`` (falling
    back to ``which='SM'``), eigenvectors as columns."""
    from scipy.sparse.linalg import eigsh

    w = w_feat.astype(np.float32)
    if lam:
        w = w + np.asarray(w_color.toarray(), np.float32) * np.float32(lam)
    d = w.sum(axis=1)
    d[d < 1e-12] = 1.0
    dm = np.diag(d)
    with warnings.catch_warnings():  # LU of the (numerically) singular D - W: as the original
        warnings.simplefilter("ignore")
        try:
            _, vecs = eigsh(dm - w, k=2, sigma=0, which="LM", M=dm)
        except Exception:  # as the original: any failure of shift-invert
            _, vecs = eigsh(dm - w, k=2, which="SM", M=dm)
    return np.asarray(vecs)


def _time(solve: Callable[[], np.ndarray]) -> tuple[float, np.ndarray]:
    t0 = time.process_time()
    out = solve()
    return time.process_time() - t0, out


def bench_solvers(n: int) -> None:
    from odbench.methods.dsm import (
        colour_pixels,
        feature_affinity,
        knn_affinity,
        orient,
        spectral_vectors,
    )

    for label, grid in SIZES:
        for lam in (0.0, 10.0):
            graphs = []
            for seed in range(n):
                keys, image = planted_graph(grid, seed)
                w_color = knn_affinity(colour_pixels(image, grid, 1 / 255)) if lam else None
                graphs.append((feature_affinity(keys), w_color))
            click.echo(f"{label}: {n} graphs of {grid[0] * grid[1]} nodes, lambda = {lam:g}")
            solvers: dict[str, Callable[[np.ndarray, Any], np.ndarray]] = {
                "original": partial(original_vectors, lam=lam),
                "dense": partial(spectral_vectors, lam=lam, solver="dense"),
                "lanczos": partial(spectral_vectors, lam=lam, solver="lanczos"),
            }
            ref_masks: list[np.ndarray] = []
            for name, solve in solvers.items():
                solve(*graphs[0])  # warm-up
                total, masks = 0.0, []
                for w, c in graphs:
                    seconds, vecs = _time(lambda: solve(w, c))  # noqa: B023
                    total += seconds
                    masks.append(orient(vecs[:, 1]) > 0)
                if not ref_masks:
                    ref_masks = masks
                agree = np.mean([np.mean(m == r) for m, r in zip(masks, ref_masks)])
                click.echo(f"  {name:9s} {1000 * total / n:9.1f} ms CPU/image   "
                           f"mask agreement with the original {agree:.4f}")  # fmt: skip


def bench_method(backbones: tuple[str, ...], images: list[np.ndarray], source: str) -> None:
    from odbench.methods.base import create_method

    for backbone in backbones:
        method: Any = create_method("dsm", backbone=backbone)
        method.predict(images[:1])  # loads the ViT, warms up
        t0 = time.perf_counter()
        raws = method.forward(images)
        t1 = time.perf_counter()
        for im, raw in zip(images, raws):
            method.postprocess(im, raw, method.hparams)
        t2 = time.perf_counter()
        nodes = np.mean([np.prod(r.grid) for r in raws])
        click.echo(f"dsm on {backbone}, {len(images)} {source} images ({nodes:.0f} nodes on "
                   f"average): {len(images) / (t2 - t0):.2f} images/s "
                   f"(ViT forward {(t1 - t0) / len(images) * 1000:.0f} ms/image, graph + solve + "
                   f"map {(t2 - t1) / len(images) * 1000:.0f} ms/image)")  # fmt: skip


def load_images(data_root: Path | None, planted_only: bool, n: int) -> tuple[list[Any], str]:
    if planted_only:
        imgs = []
        for seed in range(n):
            _, small = planted_graph((20, 25), seed)
            imgs.append(np.repeat(np.repeat(small, 16, 0), 16, 1))
        return imgs, "planted 320×400"
    folder = ecssd_images(data_root, "use --planted-only")
    out = [np.asarray(read_pil_rgb(f)) for f in sorted(folder.glob("*.jpg"))[:n]]
    return out, "real ECSSD"


@click.command("dsm")
@click.option(
    "--n",
    "n_images",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Graphs / images per row.",
)
@click.option(
    "--backbone",
    "backbones",
    multiple=True,
    default=("dino-vits16-random",),
    show_default=True,
    help="Full-size random ViT(s) for the end-to-end part (repeatable).",
)
@data_root_option
@click.option("--planted-only", is_flag=True, help="Planted images instead of ECSSD.")
@click.option("--solvers-only", is_flag=True, help="Only the eigensolve part.")
def cli(
    n_images: int,
    backbones: tuple[str, ...],
    data_root: Path | None,
    planted_only: bool,
    solvers_only: bool,
) -> None:
    """Deep Spectral Methods: eigensolve time per image (3 solvers), method images/s; 1 thread.

    Takes minutes: the eigensolve part alone ~2.5 min at the default --n 10 on 2 shared cores
    (`--n 2 --solvers-only`: ~1 min)."""
    import torch  # noqa: F401  (loaded first so one_thread() limits it too)

    from odbench.methods.base import create_method

    images: list[Any] = []
    if not solvers_only:
        for backbone in backbones:  # a wrong name fails now, not after the solver part
            create_method("dsm", backbone=backbone)
        images, source = load_images(data_root, planted_only, n_images)
    with one_thread():
        bench_solvers(n_images)
        if not solvers_only:
            bench_method(backbones, images, source)
