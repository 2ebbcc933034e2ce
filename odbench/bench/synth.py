"""``odbench bench synth``: throughput of the synthesis stage and where its time goes.

The model is SD-1.4's real architecture with random weights (``sd-v1-4-random``), run through
the same :class:`~odbench.synthesis.pipeline.Synthesizer` as ``odbench synth`` (prompt bank,
guidance 7.5, capture, AttentionCut through the ``attentioncut`` card, mask checks, atomic
writes) with ``--filter none`` (CLIP needs real weights; with them it adds one ViT-L/14 image
pass per sample) and inline AttentionCut (``workers = 0``), so every stage is timed alone; with
workers > 0 AttentionCut and writing overlap sampling.

Time shares of the run's wall time: **sampling** (UNet passes without capture, the VAE decode,
the text encoder), **capture** (what the capture processors add to each UNet pass: single passes at the run's
batch alternate without and with capture, the fastest of each is kept, and the difference times
the run's passes),
**AttentionCut** (aggregation, cut, post-processing) and **writing** (mask checks, PNGs, record).
The reference in the same process is one plain UNet pass at the run's batch (x2 for guidance):
``pair / (T x UNet pass)`` says how far a pair costs beyond its bare UNet compute.

Defaults: CPU -> 256², T = 2, 2 pairs, batch 1, fp32, one thread (the GPU figure cannot be measured on a
CPU); CUDA -> 512², T = 40, 32 pairs, batch 8, bf16 (issue target: >= 1.5 pairs/s on one H100 /
H200, ~80 UNet passes and ~54 TFLOP per pair).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import click

from odbench.bench import SD_DTYPES, SD_MULTIPLE, multiple_of
from odbench.commands import options

TARGET_PAIRS_PER_S = 1.5  # one H100/H200, bf16, 512², T = 40, guidance


def _timed(fn: Any, sync: Any) -> float:
    sync()
    t = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t


@click.command("synth")
@options.device()
@click.option(
    "--resolution",
    type=int,
    default=None,
    callback=multiple_of(SD_MULTIPLE),
    help=f"Image side, a multiple of {SD_MULTIPLE} (CPU 256, CUDA 512).",
)
@click.option(
    "--steps", type=click.IntRange(1, 1000), default=None, help="DDIM steps T (CPU 2, CUDA 40)."
)
@click.option(
    "--n", "n", type=click.IntRange(min=1), default=None, help="Pairs to make (CPU 2, CUDA 32)."
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Prompts per batch (CPU 1, CUDA 8).",
)
@click.option(
    "--dtype", type=click.Choice(SD_DTYPES), default=None, help="UNet dtype (CPU fp32, CUDA bf16)."
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Timed UNet passes per condition.",
)
def cli(
    device: str,
    resolution: int | None,
    steps: int | None,
    n: int | None,
    batch_size: int | None,
    dtype: str | None,
    repeats: int,
) -> None:
    """Synthesis pairs/s on SD-1.4's architecture (random weights) and the time shares."""
    import torch

    from odbench.backbones.diffusion import Capture, load_backbone
    from odbench.distributed import resolve_device
    from odbench.synthesis.pipeline import Synthesizer, SynthOptions

    device = resolve_device(device)
    cuda = device.startswith("cuda")
    resolution = resolution or (512 if cuda else 256)
    steps = steps or (40 if cuda else 2)
    n = n or (32 if cuda else 2)
    batch = batch_size or (8 if cuda else 1)
    dtype = dtype or ("bf16" if cuda else "fp32")
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    if not cuda:  # per core, like the other benchmarks (and two spinning OpenMP threads on a
        torch.set_num_threads(1)  # shared busy CPU measured 10x slower than one)
    name = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} thread(s)"
    t0 = time.perf_counter()
    bb = load_backbone("sd-v1-4-random", device=device, dtype=dtype, resolution=resolution)
    click.echo(
        f"sd-v1-4-random (SD-1.4 architecture, random weights) at {resolution}², T = {steps}, "
        f"guidance 7.5, batch {batch}, {dtype}, {name}; loaded in {time.perf_counter() - t0:.1f} s"
    )
    prompts = ["a photo of a dog"] * batch

    text = torch.cat([bb.encode_text([""] * batch), bb.encode_text(prompts)])
    z = torch.randn((2 * batch, 4, bb.latent_side, bb.latent_side), device=bb.device)
    bb.eps(z, 501, text)  # warm-up
    plain, captured = [], []
    for _ in range(repeats):  # alternate; the fastest of each (load only ever adds time)
        plain.append(_timed(lambda: bb.eps(z, 501, text), sync))
        with bb.capturing(Capture(features=False), cfg=True):
            captured.append(_timed(lambda: bb.eps(z, 501, text), sync))
    t_pass, t_pass_cap = min(plain), min(captured)

    with tempfile.TemporaryDirectory() as tmp:
        opts = SynthOptions(
            n=n,
            backbone="sd-v1-4-random",
            resolution=resolution,
            num_steps=steps,
            batch_size=batch,
            workers=0,
            filter="none",
            device=device,
            dtype=dtype,
        )
        synth = Synthesizer(opts, Path(tmp) / "out", backbone=bb, progress=False)
        summary = synth.run()
    t = summary["timings_s"]
    batches = -(-n // batch)
    capture = min(max(0.0, t_pass_cap - t_pass) * steps * batches, t["sampling"])
    shares = {
        "sampling": t["sampling"] - capture,
        "capture": capture,
        "AttentionCut": t["cut"],
        "writing": t["write"],
    }
    wall = t["wall"]
    other = max(0.0, wall - sum(shares.values()))
    pair = wall / n
    click.echo(
        f"one UNet pass (batch {2 * batch}, fastest of {repeats}): {t_pass:.3f} s without "
        f"capture, {t_pass_cap:.3f} s with (+{100 * (t_pass_cap / t_pass - 1):.1f}%)"
    )
    click.echo(
        f"{n} pairs in {wall:.1f} s: {n / wall:.3f} pairs/s, {pair:.2f} s per pair = "
        f"{pair / (steps * t_pass / batch):.2f} x its T UNet passes ({batches} batches)"
    )
    for key, value in [*shares.items(), ("other (prompts, bookkeeping)", other)]:
        click.echo(f"  {key:28s} {value:8.2f} s  {100 * value / wall:5.1f} %")
    if cuda:
        ok = "ok" if n / wall >= TARGET_PAIRS_PER_S else "MISS"
        click.echo(f"target >= {TARGET_PAIRS_PER_S} pairs/s at 512², T = 40 (H100/H200): {ok}")
    else:
        click.echo(
            f"the GPU target (>= {TARGET_PAIRS_PER_S} pairs/s on one H100/H200 at 512², T = 40, "
            "bf16) cannot be measured on a CPU"
        )
