"""``odbench train``: a segment decoder on frozen features, or a segmenter end to end."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from odbench.commands import options
from odbench.errors import UserError


@contextmanager
def train_errors() -> Iterator[None]:
    """SIGTERM or Ctrl-C as one line saying where the run stopped."""
    from odbench.training import Terminated

    try:
        yield
    except Terminated as e:  # after the step in flight, its checkpoint saved
        raise UserError(str(e)) from e
    except KeyboardInterrupt as e:
        raise UserError(
            "interrupted; nothing was saved since the last checkpoint (if any): run the same "
            "command again (with --resume once the run folder holds a checkpoint)"
        ) from e


@click.command("train")
@click.option(
    "--features",
    default=None,
    help="Frozen feature extractor (sd-v1-4, dino-vits16, sd-tiny, ...).",
)
@click.option("--model", default=None, help="End-to-end segmenter instead: unet or deeplabv3.")
@click.option(
    "--method",
    default=None,
    help="A method with its own training (found: FOUND's head on frozen DINO keys, its loss and "
    "schedule from its card); --features defaults to the card's.",
)
@click.option(
    "--data", required=True, help="Registered dataset (toy, duts_tr, synthetic, folder, ...)."
)
@options.data_root()
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Run folder (RUN_DIR); required except with --cache-only.",
)
@click.option("--n", type=int, default=None, help="Train on N samples drawn at random (seeded).")
@click.option(
    "--steps", type=int, default=None, help="Total optimizer steps (default: the card's)."
)
@click.option("--epochs", type=int, default=None, help="Total epochs instead of --steps.")
@click.option(
    "--minutes", type=float, default=None, help="Stop (and checkpoint) after this wall time."
)
@click.option(
    "--val-split", type=float, default=None, help="Held-out fraction (default: the card's)."
)
@click.option(
    "--resolution",
    type=int,
    default=None,
    help="Training resolution (default: the extractor's own where it has one, e.g. 64 for the "
    "tiny ones of odbench list features; else the card's).",
)
@click.option(
    "--batch-size",
    type=int,
    default=None,
    help="Global batch size, split across the processes of a launch (default: the card's).",
)
@click.option("--lr", type=float, default=None, help="Adam learning rate (default: the card's).")
@click.option("--seed", type=int, default=None, help="Seed (default: the card's).")
@click.option("--trunk-weights", default=None, help="deeplabv3: 'imagenet' or a .safetensors file.")
@click.option(
    "--extractor-option",
    "extractor_items",
    multiple=True,
    metavar="KEY=VALUE",
    help="Feature extractor option (TOML literal), e.g. num_steps=4 or prior=false; repeatable.",
)
@click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint.")
@options.device()
@click.option("--threads", type=int, default=None, help="torch CPU threads.")
@click.option(
    "--cache-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Feature cache root (default: $ODBENCH_CACHE or the user cache folder).",
)
@click.option(
    "--cache-only",
    is_flag=True,
    help="Only fill the feature cache of --features, then exit: no training, and the options "
    "of training alone (--out, --steps, --lr, --resume, ...) are not used.",
)
@click.option(
    "--shard",
    "shard_text",
    default=None,
    metavar="I/N",
    help="With --cache-only: cache shard I of N of the samples (every N-th from the I-th), e.g. "
    "$SLURM_ARRAY_TASK_ID/8.",
)
def train_cmd(
    features: str | None,
    model: str | None,
    method: str | None,
    data: str,
    data_root: Path | None,
    out: Path,
    n: int | None,
    steps: int | None,
    epochs: int | None,
    minutes: float | None,
    val_split: float | None,
    resolution: int | None,
    batch_size: int | None,
    lr: float | None,
    seed: int | None,
    trunk_weights: str | None,
    extractor_items: tuple[str, ...],
    resume: bool,
    device: str,
    threads: int | None,
    cache_dir: Path | None,
    cache_only: bool,
    shard_text: str | None,
) -> None:
    """Train and checkpoint into --out: safetensors weights + JSON config (card, extractor, data
    manifest, step, seeds).  Frozen features are cached on disk; --resume continues a run.
    Under torchrun / accelerate launch it trains data-parallel (--batch-size is the global
    batch); --cache-only [--shard I/N] fills the feature cache in parts (docs/cluster.md)."""
    from odbench.commands.evaluate import parse_set
    from odbench.distributed import Shard
    from odbench.training import fill_feature_cache, train

    try:
        extractor_options = parse_set(extractor_items)
    except UserError as e:
        raise UserError(str(e).replace("--set", "--extractor-option")) from e
    shard = Shard.parse(shard_text) if shard_text is not None else None
    if shard is not None and not cache_only:
        raise UserError(
            "--shard splits the feature caching only: use it with --cache-only, then train "
            "without either (or under a launcher)"
        )
    if out is None and not cache_only:
        raise UserError("--out is required (except with --cache-only)")
    with train_errors():
        if threads is not None:
            # spin-waiting OpenMP threads run ~5x slower on a shared, oversubscribed CPU
            os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
            import torch

            torch.set_num_threads(threads)
        # what picks the samples and keys their cached features: the same for --cache-only
        common: dict[str, Any] = {
            "data": data,
            "data_root": data_root,
            "n": n,
            "device": device,
            "cache_dir": cache_dir,
            "extractor_options": extractor_options,
            "show_progress": True,
            "val_split": val_split,
            "resolution": resolution,
            "batch_size": batch_size,
            "seed": seed,
        }
        if cache_only:
            if features is None and method is None:
                raise UserError(
                    "--cache-only fills the feature cache of --features; give --features"
                )
            cached = fill_feature_cache(features=features, method=method, shard=shard, **common)
            if cached.rank == 0:
                part = "" if cached.shard.whole else f" (shard {cached.shard})"
                click.echo(
                    f"features of {cached.n_images} images{part}: {cached.computed} computed, "
                    f"{cached.n_images - cached.computed} already cached"
                )
            return
        assert out is not None
        result = train(
            out=out,
            model=model,
            features=features,
            method=method,
            steps=steps,
            epochs=epochs,
            minutes=minutes,
            resume=resume,
            lr=lr,
            trunk_weights=trunk_weights,
            **common,
        )
    if result.rank != 0:
        return  # rank 0 reports for the launch
    c = result.config
    if features is not None or method is not None:
        click.echo(f"features: {result.features_computed} images computed")
    click.echo(
        f"{c['card']['name']}: step {result.step}/{c['target_steps']} on {c['data']['n_train']} "
        f"images of {c['data']['dataset']} ({result.seconds / 60:.1f} min"
        f"{f', {result.processes} processes' if result.processes > 1 else ''}), "
        f"IoU {result.val_iou:.3f} on the {c['data']['n_val']} held-out pairs"
    )
    click.echo(f"checkpoint: {result.run_dir / 'checkpoint.safetensors'}")
