"""``odbench train`` and ``odbench train --cache-only``: a run from its options to its last
checkpoint (see :mod:`odbench.training`)."""

from __future__ import annotations

import errno
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from odbench.checkpoint import CHECKPOINT_FILE, read_config
from odbench.distributed import Shard, World, detect_world, peer_failure, short_error
from odbench.feature_cache import FeatureCache
from odbench.training.data import (
    PREPARED_DIR,
    Inputs,
    fill_features,
    prepare,
    split_rows,
    steps_per_epoch,
)
from odbench.training.loop import Batches, Loop, RunState, TrainResult, count_bar
from odbench.training.options import Setup, TrainError, setup, target_steps
from odbench.training.resume import check_same_data, restore


@dataclass
class CacheResult:
    """What ``--cache-only`` did: ``n_images`` of this shard, ``computed`` of them extracted now
    (by all processes of the launch), the rest found cached."""

    shard: Shard
    n_images: int
    computed: int
    rank: int = 0
    processes: int = 1


@contextmanager
def _launched(device: str) -> Iterator[World]:
    """This process's place in its launch (one process without a launcher), closed on exit; a
    failure that comes from another rank (it stopped, the collective broke) is one line
    pointing at that rank's error."""
    world = detect_world(device)
    try:
        yield world
    except Exception as e:
        if world.size > 1 and peer_failure(e):
            raise TrainError(
                f"another process of this launch stopped ({short_error(e)}): see its error line "
                f"or the launcher's report; fix that and run the same command again"
            ) from e
        raise
    finally:
        world.close()


def fill_feature_cache(
    *,
    data: str,
    features: str | None,
    data_root: Path | None = None,
    method: str | None = None,
    n: int | None = None,
    shard: Shard | None = None,
    device: str = "auto",
    cache_dir: Path | None = None,
    extractor_options: dict[str, Any] | None = None,
    show_progress: bool = False,
    **overrides: Any,
) -> CacheResult:
    """``odbench train --cache-only [--shard I/N]``: cache the features of shard ``I`` of ``N``
    of the training samples (every ``N``-th of the ids ``odbench train`` draws, validation ones
    included; under a launcher each rank takes every ``W``-th of those) and nothing else: no run
    folder, the resized samples only in a temporary folder.  A later ``odbench train`` with the
    same data, ``--features``, extractor options, ``--resolution``, ``--n`` and ``--seed``
    trains from the filled cache without extracting anything."""
    with _launched(device) as world:
        found = setup(
            world,
            data=data,
            out=None,
            model=None,
            features=features,
            method=method,
            data_root=data_root,
            n=n,
            steps=None,
            epochs=None,
            resume=False,
            device=device,
            cache_dir=cache_dir,
            extractor_options=extractor_options,
            cache_only=True,
            overrides=overrides,
        )
        whole = shard or Shard()
        chosen = whole.split(world.size, world.rank).take(found.ids)
        entry = FeatureCache(cache_dir).entry(found.extractor, found.resolution)
        show = show_progress and world.is_main
        with tempfile.TemporaryDirectory(prefix="odbench-cache-") as tmp:
            with count_bar(show, len(chosen), "prepare") as advance:
                prepared = prepare(
                    found.dataset, chosen, found.resolution, Path(tmp) / PREPARED_DIR, advance
                )
            with count_bar(show, len(chosen), "features") as advance:
                computed = fill_features(
                    entry,
                    found.extractor,
                    prepared,
                    list(range(len(chosen))),
                    found.batch_size,
                    found.device,
                    advance,
                )
        counts = world.gather(computed)
        return CacheResult(
            whole,
            len(whole.take(found.ids)),
            sum(counts or [computed]),
            world.rank,
            world.size,
        )


def train(
    *,
    data: str,
    out: Path,
    model: str | None = None,
    features: str | None = None,
    method: str | None = None,
    data_root: Path | None = None,
    n: int | None = None,
    steps: int | None = None,
    epochs: int | None = None,
    minutes: float | None = None,
    resume: bool = False,
    device: str = "auto",
    cache_dir: Path | None = None,
    extractor_options: dict[str, Any] | None = None,
    show_progress: bool = False,
    **overrides: Any,
) -> TrainResult:
    """Train and checkpoint into ``out`` (see :mod:`odbench.training`).  ``overrides`` replace
    entries of the card's ``[training]`` table (``resolution``, ``batch_size``, ``lr``, ``seed``,
    ``val_split``, …); ``minutes`` stops the run at a wall-clock budget.  Under a launcher
    (torchrun, accelerate launch) every rank runs this."""
    with _launched(device) as world:
        found = setup(
            world,
            data=data,
            out=out,
            model=model,
            features=features,
            method=method,
            data_root=data_root,
            n=n,
            steps=steps,
            epochs=epochs,
            resume=resume,
            device=device,
            cache_dir=cache_dir,
            extractor_options=extractor_options,
            cache_only=False,
            overrides=overrides,
        )
        show = show_progress and world.is_main
        with ExitStack() as stack:
            # Rank 0 prepares into the run folder; the others, which write nothing there, into
            # a temporary folder of their own (removed at the end).
            prepared_dir = Path(out) / PREPARED_DIR
            if not world.is_main:
                tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="odbench-train-"))
                prepared_dir = Path(tmp) / PREPARED_DIR
            try:
                batches, computed = _batches(
                    world, found, Path(out), prepared_dir, steps, epochs, cache_dir, show
                )
                loop = _loop(world, found, Path(out), batches, resume)
                result = loop.run(minutes, resume, show)
            except OSError as e:
                if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                raise _disk_full(e, Path(out)) from e
            result.features_computed = computed
            return result


def _disk_full(error: OSError, out: Path) -> TrainError:
    """The line for a full disk (or quota) while training: where, and what is kept (the run
    folder's checkpoint is only ever replaced whole, so the last one saved is intact)."""
    where = Path(error.filename) if error.filename else out
    if not where.is_dir():
        where = where.parent
    if (out / CHECKPOINT_FILE).is_file():
        step = read_config(out).get("step")
        then = (
            f"the checkpoint of step {step} is kept: free some space and run the same command "
            f"with --resume"
        )
    else:
        then = "no checkpoint was saved yet: free some space and run the same command again"
    return TrainError(f"{where}: no space left on the device; {then}")


def _batches(
    world: World,
    found: Setup,
    out: Path,
    prepared_dir: Path,
    steps: int | None,
    epochs: int | None,
    cache_dir: Path | None,
    show: bool,
) -> tuple[Batches, int]:
    """The samples prepared, a resumed run's data checked, the features of this rank's share
    cached (decoder runs): the batches, and how many images' features the launch extracted."""
    ids = found.ids
    mine = Shard(world.rank, world.size).take(list(range(len(ids))))  # this rank's features
    from_features = found.extractor is not None
    with count_bar(show, len(ids), "prepare") as advance:
        prepared = prepare(
            found.dataset,
            ids,
            found.resolution,
            prepared_dir,
            advance,
            set(mine) if from_features and not world.is_main else None,
            reuse=world.is_main,  # the others prepare into a temporary folder
        )
    train_rows, val_rows = split_rows(len(ids), found.val_split, found.seed)
    info = {
        "dataset": found.data,
        "describe": found.dataset.describe(),
        "manifest_sha256": prepared.manifest_sha256,
        "n_samples": len(ids),
        "n_train": len(train_rows),
        "n_val": len(val_rows),
        "n_requested": found.n,
    }
    if found.resumed is not None:  # the data too, before computing any feature
        check_same_data(out, found.resumed, info)

    inputs = Inputs(prepared)
    computed = 0
    if found.extractor is not None:
        entry = FeatureCache(cache_dir).entry(found.extractor, found.resolution)
        with count_bar(show, len(mine), "features") as advance:
            computed = fill_features(
                entry, found.extractor, prepared, mine, found.batch_size, found.device, advance
            )
        world.barrier()
        missing = entry.missing(prepared.image_hashes)
        if missing:  # every rank's share is cached by now, unless ranks see different folders
            raise TrainError(
                f"{entry.folder}: the features of {len(missing)} of {len(ids)} images are "
                f"missing after every process cached its share: the processes do not share "
                f"this folder (other nodes?); give them one --cache-dir on a shared filesystem, "
                f"or fill it first with --cache-only"
            )
        computed = sum(world.gather(computed) or [computed])
        inputs.features = entry.rows(prepared.image_hashes)
    bs = found.batch_size
    total = target_steps(len(train_rows), bs, steps, epochs, found.opts)
    spe = steps_per_epoch(len(train_rows), bs)
    return Batches(inputs, train_rows, val_rows, total, spe, info), computed


def _loop(world: World, found: Setup, out: Path, batches: Batches, resume: bool) -> Loop:
    """The network built from the run's seed (every rank builds the same initial weights), its
    optimizer, a resumed run's checkpoint loaded; wrapped in DDP under a launcher."""
    import torch

    from odbench.models.build import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(found.seed)
        net = build_model(found.spec, init_weights=not resume)
    if world.size > 1:
        from odbench.syncbn import convert_batchnorm

        net = convert_batchnorm(net)  # statistics of the global batch, as on one process
    net.to(found.device).train()
    # Adam unless the card names AdamW (FOUND); weight decay: torch's default of each.
    kind = torch.optim.AdamW if found.opts.get("optimizer") == "adamw" else torch.optim.Adam
    optimizer = kind(net.parameters(), lr=float(found.opts["lr"]))
    state = RunState(*restore(world, out, net, optimizer)) if resume else RunState()
    wrapped = net
    if world.size > 1:
        from accelerate import Accelerator

        # accelerate wraps the model in DistributedDataParallel (gradients averaged across
        # ranks in backward; rank 0's weights broadcast at the start).
        accelerator = Accelerator(cpu=torch.device(found.device).type == "cpu")
        wrapped = accelerator.prepare_model(net, device_placement=False)
    return Loop(world, found, out, batches, net, wrapped, optimizer, state, resume)
