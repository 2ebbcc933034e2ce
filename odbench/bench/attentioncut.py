"""``odbench bench attentioncut``: AttentionCut per-stage timing on captured-shaped maps.

Synthetic maps with the shapes SD-v1.4 captures at 512² (latent 64²): cross-attention for a
class name from five layers each at 16², 32², 64²; self-attention means at 16², 32², 64²
(rows summing to 1).  Times every stage of :func:`odbench.methods.attentioncut.attention_cut`
(aggregation, seeds, r(p), φ, ψ, cut, post-processing) when cutting on the 64² attention grid
and at 512² full resolution, on one thread.  Issue-6 targets: ≤ 20 ms (64²) and ≤ 150 ms
(512²) per image.  A memory-bound reference (one copy of the 4096² self-attention) is timed in
the same process so the figures can be compared across machines as ratios.
"""

from __future__ import annotations

import time
from typing import Any

import click
import numpy as np

from odbench.bench import one_thread

STAGES = ("aggregate", "seeds", "r", "phi", "psi", "cut", "post")
TARGETS_MS = {"64": 20.0, "512": 150.0}


def synthetic_maps(seed: int = 0) -> tuple[list[np.ndarray], list[tuple[np.ndarray, float]], Any]:
    """Cross-attention layers (h, w), self-attention (mean, weight) per side, a 512² image."""
    rng = np.random.default_rng(seed)
    cross = []
    for side in (16, 32, 64):
        yy, xx = np.mgrid[0:side, 0:side] / side
        blob = np.exp(-((yy - 0.5) ** 2 + (xx - 0.45) ** 2) / 0.04)
        for _ in range(5):
            layer = blob * rng.uniform(0.2, 0.6) + rng.uniform(0, 0.05, (side, side))
            cross.append(layer.astype(np.float32))
    selfs = []
    for side, weight in ((16, 5.0), (32, 5.0), (64, 5.0)):
        a = rng.uniform(0, 1, (side * side, side * side)).astype(np.float32) ** 8
        a /= a.sum(1, keepdims=True)
        selfs.append((a, weight))
    image = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)
    return cross, selfs, image


def time_once(
    cross: list[np.ndarray],
    selfs: list[tuple[np.ndarray, float]],
    image: np.ndarray,
    out_size: tuple[int, int] | None,
) -> dict[str, float]:
    from odbench.methods import attentioncut as ac
    from odbench.methods import diffusion as dm

    t0 = time.perf_counter()
    a_c = dm.aggregate_cross_attention(cross, top_k=4, grid=64)
    affinity = dm.aggregate_self_attention(selfs, grid=64)
    timings = {"aggregate": time.perf_counter() - t0}
    ac.attention_cut(
        a_c, affinity, image, ac.CutParams.from_card(), out_size=out_size, timings=timings
    )
    return timings


@click.command("attentioncut")
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Timed runs per setting.",
)
def cli(repeats: int) -> None:
    """AttentionCut per-stage timing at a 64² and a 512² cut, one CPU thread (median ms)."""
    cross, selfs, image = synthetic_maps()
    with one_thread():
        ref = []
        big = selfs[-1][0]
        for _ in range(repeats):
            t = time.perf_counter()
            big.copy()
            ref.append(time.perf_counter() - t)
        ref_ms = 1e3 * float(np.median(ref))
        click.echo(f"AttentionCut per-stage median over {repeats} runs, 1 thread")
        click.echo(f"reference: copy of the 4096x4096 float32 self-attention = {ref_ms:.2f} ms")
        header = "cut      " + " ".join(f"{s:>9s}" for s in STAGES) + "     total  target  x ref"
        click.echo(header)
        for label, size in (("64", None), ("512", (512, 512))):
            time_once(cross, selfs, image, size)  # warm-up
            runs = [time_once(cross, selfs, image, size) for _ in range(repeats)]
            med = {s: 1e3 * float(np.median([r[s] for r in runs])) for s in STAGES}
            total = 1e3 * float(np.median([sum(r.values()) for r in runs]))
            ok = "ok" if total <= TARGETS_MS[label] else "MISS"
            cells = " ".join(f"{med[s]:9.2f}" for s in STAGES)
            click.echo(
                f"{label + chr(178):8s} {cells} {total:9.2f}  {TARGETS_MS[label]:4.0f} {ok:4s}"
                f" {total / ref_ms:6.1f}"
            )
