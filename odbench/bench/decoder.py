"""``odbench bench decoder``: segment-decoder training steps/s on cached features (CPU).

Builds the extractor only to read its levels (channels, strides), fills a feature cache of
``--rows`` random fp16 rows of those shapes at ``--resolution`` (what :mod:`odbench.feature_cache`
stores: one file per image), and times ``odbench train``'s step — read the batch from the cache,
flip, decoder forward, BCE + dice, backward, Adam — at batch 10.  The reference in the same process is
the same step on a batch already in memory, so the ratio is the cost of reading the cache.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import click
import numpy as np


@click.command("decoder")
@click.option(
    "--features", default="sd-v1-4-random", show_default=True, help="Extractor whose levels to use."
)
@click.option("--resolution", type=click.IntRange(min=1), default=512, show_default=True)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Rows per step (distinct: at most --rows).",
)
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Timed steps per variant.",
)
@click.option(
    "--rows",
    type=click.IntRange(min=1),
    default=40,
    show_default=True,
    help="Cached rows (images).",
)
@click.option(
    "--threads", type=click.IntRange(min=1), default=1, show_default=True, help="torch CPU threads."
)
def cli(
    features: str, resolution: int, batch_size: int, steps: int, rows: int, threads: int
) -> None:
    """Decoder training steps/s on cached features vs in-memory features."""
    if batch_size > rows:
        raise click.BadParameter(
            f"{batch_size} is more than --rows {rows} (a batch draws distinct rows); "
            "lower it or raise --rows",
            param_hint="'--batch-size'",
        )
    import torch

    from odbench.feature_cache import FeatureEntry
    from odbench.features import load_extractor
    from odbench.models.build import build_model
    from odbench.training.data import Inputs, Prepared, flips
    from odbench.training.loop import soft_dice_bce
    from odbench.training.options import card_for_features

    torch.set_num_threads(threads)
    fx = load_extractor(features)
    if resolution % fx.input_multiple:
        raise click.BadParameter(
            f"{resolution} is not a multiple of {fx.input_multiple} (what {features} needs)",
            param_hint="'--resolution'",
        )
    card = card_for_features(features)
    spec = {**card.raw["model"], "channels": list(fx.channels), "strides": list(fx.strides)}
    del fx
    shapes = [
        (rows, c, resolution // s, resolution // s)
        for c, s in zip(spec["channels"], spec["strides"])
    ]
    mb = sum(2 * int(np.prod(s[1:])) for s in shapes) / 2**20
    click.echo(
        f"decoder on {features} levels at {resolution}² ({len(shapes)} levels, {mb:.1f} MiB fp16 "
        f"per image), batch {batch_size}, {threads} thread(s)"
    )
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="odbench-bench-decoder-") as tmp:
        entry = FeatureEntry(Path(tmp), "bench", resolution, [s[1:] for s in shapes])
        hashes = [f"{i:064x}" for i in range(rows)]
        for h in hashes:
            row = rng.standard_normal(entry.size, dtype=np.float32).astype(np.float16)
            entry.store(h, row)
        masks = (rng.random((rows, resolution, resolution)) > 0.5).astype(np.uint8) * 255
        prepared = Prepared(
            [str(i) for i in range(rows)], np.zeros((rows, 3, 1, 1), np.uint8), masks, [], ""
        )
        inputs = Inputs(prepared, entry.rows(hashes))
        torch.manual_seed(0)
        net = build_model(spec).train()
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        size = (resolution, resolution)

        def step(x: list[torch.Tensor], target: torch.Tensor) -> None:
            loss = soft_dice_bce(net(x, size=size), target, 1.0, 1.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        batches = [np.sort(rng.choice(rows, size=batch_size, replace=False)) for _ in range(steps)]
        x0, t0 = inputs.batch(batches[0], flips(0, 0, batch_size, True), "cpu")
        step(x0, t0)  # warm-up
        start = time.perf_counter()
        for _ in range(steps):
            step(x0, t0)
        in_memory = (time.perf_counter() - start) / steps
        read = 0.0
        start = time.perf_counter()
        for s, rows_ in enumerate(batches):
            r0 = time.perf_counter()
            x, t = inputs.batch(rows_, flips(0, s, batch_size, True), "cpu")
            read += time.perf_counter() - r0
            step(x, t)
        cached = (time.perf_counter() - start) / steps
    click.echo(
        f"  in-memory batch   {1 / in_memory:6.2f} steps/s  ({1000 * in_memory:.0f} ms/step)"
    )
    click.echo(
        f"  cached (files)    {1 / cached:6.2f} steps/s  ({1000 * cached:.0f} ms/step; reading "
        f"{1000 * read / steps:.0f} ms/step) = {cached / in_memory:.2f}x the in-memory step"
    )
