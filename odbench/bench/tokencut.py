"""``odbench bench tokencut``: the NCut eigen-solve per image at 480 × 480 (30 × 30 = 900 patches),
one CPU thread (target <= 0.1 s per image).

Three solvers of the same problem, timed on the same affinities in one process:

- ``reference``: ``scipy.linalg.eigh(D - A, D, subset_by_index=[1, 2])``, the generalized
  problem as TokenCut's code solves it;
- ``dense``: :func:`odbench.methods.tokencut.ncut_vector` with LAPACK on the symmetric
  normalised Laplacian (eigenpairs 0..1 only);
- ``lobpcg``: the same with LOBPCG (and its exact dense fallback).

Affinities come from planted 30 × 30 patch layouts (object/background key directions plus noise,
so the cut is as well or ill conditioned as a real image's) and, when ``--data-root`` holds
ECSSD, from the tiny random ViT's keys of ECSSD images resized to 480 × 480.  Each solver's
bipartition is compared with the reference's (fraction of patches on the same side).

``--backbone NAME`` (e.g. ``dinov2-vits14-random``, a full-size random architecture) also times
``tokencut`` and ``tokencut.bs`` end to end (keys, cut, bilateral solver) on ``--n`` ECSSD images
at their own size (toy images of 300 × 400 with ``--planted-only``), one thread: images/s.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np

from odbench.bench import data_root_option, ecssd_images, one_thread, read_pil_rgb

TARGET_S = 0.1
GRID = 30  # 480 / 16


def planted_keys(n: int, seed: int) -> list[np.ndarray]:
    """``n`` (900, 64) key sets: an object rectangle, 1-3 background regions, noise."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        lab = np.zeros((GRID, GRID), int)
        y, x = rng.integers(4, 14, 2)
        lab[y : y + rng.integers(6, 14), x : x + rng.integers(6, 14)] = 1
        for r in range(2, 2 + int(rng.integers(0, 3))):
            lab[: rng.integers(3, 10) if r % 2 else GRID, : rng.integers(3, 30)] = r
        base = rng.standard_normal((5, 64))
        out.append(base[lab.ravel()] + rng.uniform(0.6, 1.2) * rng.standard_normal((GRID**2, 64)))
    return out


def ecssd_keys(folder: Path, n: int) -> list[np.ndarray]:
    from PIL import Image

    from odbench.methods.base import create_method

    files = sorted(folder.glob("*.jpg"))[:n]
    method: Any = create_method("tokencut", backbone="dino-tiny")
    out = []
    for f in files:
        image = np.asarray(read_pil_rgb(f).resize((480, 480), Image.Resampling.BILINEAR))
        out.append(method.keys(image).keys)
    return out


def reference_vector(a: np.ndarray) -> np.ndarray:
    from scipy.linalg import eigh

    d = np.diag(a.sum(axis=1))
    _, vecs = eigh(d - a, d, subset_by_index=[1, 2])
    return np.asarray(vecs[:, 0])


def _time(
    solve: Callable[[np.ndarray], np.ndarray], affinities: list[np.ndarray]
) -> tuple[float, list[np.ndarray]]:
    solve(affinities[0])  # warm-up
    t0 = time.process_time()
    vectors = [solve(a) for a in affinities]
    return (time.process_time() - t0) / len(affinities), vectors


def end_to_end(backbone: str, images: list[np.ndarray]) -> None:
    """images/s of ``tokencut`` and ``tokencut.bs`` on ``backbone``, one image per call; the
    last image only warms up (builds the extractor)."""
    from odbench.methods.base import create_method

    *timed, warm = images
    for name in ("tokencut", "tokencut.bs"):
        method = create_method(name, backbone=backbone)
        method.predict([warm])
        t0, c0 = time.perf_counter(), time.process_time()
        for image in timed:
            method.predict([image])
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        click.echo(
            f"  {name:12s} {len(timed) / wall:6.2f} images/s  {1000 * cpu / len(timed):7.0f} ms "
            f"CPU/image  ({len(timed)} images, {backbone})"
        )


def _images(folder: Path | None, n: int) -> tuple[str, list[np.ndarray]]:
    """``n`` + 1 ECSSD images at their own size, or toy images of 300 × 400 without ECSSD."""
    if folder is None:
        from odbench.data.toy import ToyDataset

        ds = ToyDataset(n=n + 1, size=(300, 400))
        return "toy 300 × 400", [ds.load(i).image for i in ds.ids()]
    out = [np.asarray(read_pil_rgb(f)) for f in sorted(folder.glob("*.jpg"))[: n + 1]]
    return "ECSSD", out


@click.command("tokencut")
@click.option(
    "--n",
    "n_images",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Affinities per source.",
)
@data_root_option
@click.option("--planted-only", is_flag=True, help="Only the planted affinities (no ECSSD).")
@click.option(
    "--backbone",
    default=None,
    help="Also time tokencut and tokencut.bs end to end on this extractor "
    "(e.g. dinov2-vits14-random), on --n images.",
)
def cli(n_images: int, data_root: Path | None, planted_only: bool, backbone: str | None) -> None:
    """TokenCut NCut eigen-solve time per image at 900 patches, one thread."""
    import torch  # noqa: F401  (loaded first so one_thread() limits it too)

    from odbench.methods.base import create_method
    from odbench.methods.tokencut import bipartition, cosine_affinity, ncut_vector

    if backbone is not None:  # a wrong name fails now, not after the solver part
        create_method("tokencut", backbone=backbone)
    sources = {"planted": planted_keys(n_images, seed=0)}
    folder = None
    if not planted_only:
        folder = ecssd_images(data_root, "use --planted-only")
        sources["ecssd+tiny-vit"] = ecssd_keys(folder, n_images)
    solvers: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "reference": reference_vector,
        "dense": lambda a: ncut_vector(a, "dense"),
        "lobpcg": lambda a: ncut_vector(a, "lobpcg"),
    }
    with one_thread():
        for source, keys in sources.items():
            affinities = [cosine_affinity(k, 0.2, 1e-5) for k in keys]
            click.echo(
                f"{source}: {len(affinities)} affinities of {affinities[0].shape[0]} patches"
            )
            ref_parts = None
            for name, solve in solvers.items():
                seconds, vectors = _time(solve, affinities)
                parts = [bipartition(v)[0] for v in vectors]
                if ref_parts is None:
                    ref_parts = parts
                agree = np.mean([np.mean(p == r) for p, r in zip(parts, ref_parts)])
                ok = "meets" if seconds <= TARGET_S else "misses"
                click.echo(
                    f"  {name:10s} {1000 * seconds:8.1f} ms CPU/image ({ok} {1000 * TARGET_S:.0f} ms)"
                    f"  bipartition agreement with reference {agree:.4f}"
                )
        if backbone is not None:
            label, images = _images(folder, n_images)
            click.echo(f"end to end on {label} images, one thread:")
            end_to_end(backbone, images)
