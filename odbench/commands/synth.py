"""``odbench synth``: make a synthetic image/mask dataset with Stable Diffusion + AttentionCut
(DiffusionSeg Sec. 3.2), resumable and sharded; ``odbench synth merge`` joins shard folders."""

from __future__ import annotations

import json
from pathlib import Path

import click

from odbench.commands import options
from odbench.errors import UserError


def _shard(value: str | None) -> tuple[int, int] | None:
    """``--shard I/N`` as (I, N), parsed by :class:`odbench.distributed.Shard` (one rule for
    every sharded command: shard I takes the indices I, I + N, I + 2N, ...)."""
    if value is None:
        return None
    from odbench.distributed import Shard

    shard = Shard.parse(value)
    return shard.index, shard.count


@click.group("synth", invoke_without_command=True)
@click.option("--n", "n", type=click.IntRange(min=1), help="Samples to generate (indices 0..N-1).")
@click.option(
    "--out", type=click.Path(path_type=Path), help="Output folder (resumed if it exists)."
)
@click.option(
    "--backbone",
    default=None,
    help="sd-v1-4 (card default), sd-tiny, sd-v1-4-random, a hub id or folder.",
)
@click.option(
    "--classes",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Class names, one per line (default: the 675 coarse ImageNet groups).",
)
@click.option(
    "--prompts",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help='JSONL prompts: {"class", "prompt", "class_words"?} per line.',
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--filter",
    "filter_",
    type=click.Choice(["clip", "mask", "none"]),
    default=None,
    help="clip: CLIP agreement + mask rules (card default); mask: mask rules only; none: keep all.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Prompts per UNet batch (card default).",
)
@options.device()
@click.option(
    "--dtype",
    type=click.Choice(["auto", "fp32", "fp16", "bf16"]),
    default="auto",
    show_default=True,
)
@options.workers(
    "AttentionCut worker threads (card default; 0 = inline).", type=click.IntRange(min=0)
)
@click.option("--shard", default=None, help="I/N: make the samples with index = I mod N.")
@click.option(
    "--steps",
    "num_steps",
    type=click.IntRange(min=1),
    default=None,
    help="DDIM steps T (card default 40).",
)
@click.option(
    "--guidance",
    type=float,
    default=None,
    help="Classifier-free guidance scale (card default 7.5).",
)
@click.option(
    "--resolution",
    type=click.IntRange(min=8),
    default=None,
    help="Image side override (e.g. small tiny-model runs).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
@click.pass_context
def synth(
    ctx: click.Context,
    n: int | None,
    out: Path | None,
    backbone: str | None,
    classes: Path | None,
    prompts: Path | None,
    seed: int,
    filter_: str | None,
    batch_size: int | None,
    device: str,
    dtype: str,
    workers: int | None,
    shard: str | None,
    num_steps: int | None,
    guidance: float | None,
    resolution: int | None,
    as_json: bool,
) -> None:
    """Make (or resume) a synthetic dataset: images/, masks/, manifest.jsonl, manifest.json.

    Deterministic given --seed (and batch size, dtype, device kind); sample ids come from the seed
    and the index, so shards made with --shard I/N merge (`odbench synth merge`) into exactly
    what one unsharded run writes."""
    if ctx.invoked_subcommand is not None:
        return
    if n is None or out is None:
        raise UserError("odbench synth needs --n N and --out DIR (see --help)")
    from odbench.distributed import detect_world
    from odbench.synthesis.pipeline import SynthOptions, synthesize

    world = detect_world(device)  # accelerate launch / torchrun: one GPU and part each
    try:
        opts = SynthOptions(
            n=n,
            seed=seed,
            backbone=backbone,
            classes=classes,
            prompts=prompts,
            filter=filter_,
            batch_size=batch_size,
            device=world.device(device),
            dtype=dtype,
            workers=workers,
            shard=_shard(shard),
            num_steps=num_steps,
            guidance=guidance,
            resolution=resolution,
        )
        summary = synthesize(opts, out, world=world)
    finally:
        world.close()
    if not world.is_main:
        return
    if as_json:
        click.echo(json.dumps(summary, indent=1))
        return
    c = summary["counts"]
    rejected = ", ".join(f"{k} {v}" for k, v in c["rejected"].items() if v) or "none"
    t = summary["timings_s"]
    click.echo(
        f"{summary['out']}: {c['kept']} kept of {c['generated']} generated "
        f"(rejected: {rejected}); this run {t['samples']:.0f} samples in {t['wall']:.1f} s "
        f"({summary['samples_per_s']} samples/s; sampling {t['sampling']:.1f} s, CLIP "
        f"{t['clip']:.1f} s, AttentionCut {t['cut']:.1f} s, writing {t['write']:.1f} s)"
    )


@synth.command("merge")
@click.argument(
    "folders", nargs=-1, required=True, type=click.Path(path_type=Path, file_okay=False)
)
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    help="New folder for the merged dataset.",
)
def merge_cmd(folders: tuple[Path, ...], out: Path) -> None:
    """Merge the shard folders of one run into OUT: the folder an unsharded run writes (up to
    float rounding of the images, which depends on a sample's place in its batch; README)."""
    from odbench.synthesis.store import merge

    counts = merge(folders, out)
    click.echo(
        f"{out}: merged {len(folders)} shards, {counts['kept']} kept of {counts['generated']}"
    )
