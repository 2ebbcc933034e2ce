"""``odbench train``: the segment decoder on frozen features, or a segmenter end to end.

Two kinds of run, both driven by a method card's ``[model]`` and ``[training]`` tables (the
defaults live there, with their reasons, never here):

- ``--features NAME``: a frozen feature extractor (``sd-v1-4``, ``dino-vits16``, ``sd-tiny``, …)
  and the :class:`~odbench.models.decoder.SegmentDecoder` of the card of its family
  (``diffusionseg``, ``dino-decoder``, ``moco-decoder``, ``clip-decoder``).  Features are computed
  once and cached on disk (:mod:`odbench.feature_cache`), so every epoch costs only the decoder.
- ``--model unet|deeplabv3``: ``unet-e2e`` / ``deeplabv3-e2e`` trained end to end (Table 3).

Data: every sample is read once per run (per process), hashed (pixels and mask) and resized to the training
resolution into memory-mapped arrays in ``RUN_DIR/.prepared/``; the hashes give the data
manifest recorded in the checkpoint and key the feature cache.  A ``--val-split`` fraction is
held out (seeded); validation IoU (per image at 0.5, averaged) is shown in the progress bar.

Determinism: the model's initial weights come from the seed; the sample order of epoch ``e`` is
a permutation drawn from ``(seed, e)`` and the flips of step ``s`` from ``(seed, s)``, so a run
resumed from step ``k`` continues exactly as the uninterrupted run (same batches, same optimizer
state).  Checkpoints (:mod:`odbench.checkpoint`) are written every ``save_every`` steps, at
least every :data:`SAVE_INTERVAL_S` seconds, at the end, and on Ctrl-C or SIGTERM.

Data-parallel training (``torchrun``/``accelerate launch``, ``W`` processes): accelerate wraps the
model in DDP; ``batch_size`` is the global batch and every rank draws the same global batch as one
process would, takes every ``W``-th sample of it from its rank on, and weighs its loss by its
share's size, so the averaged gradient is that of the global batch; BatchNorm uses the global
batch's statistics (:mod:`odbench.syncbn`).  The feature cache is filled in strided shares (claim
files), then every rank trains from all of it.  Rank 0 alone writes the run folder; the others
prepare the data in a temporary folder.  ``docs/cluster.md`` has the commands.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from odbench.cards import MethodCard, method_cards
from odbench.checkpoint import (
    CHECKPOINT_FILE,
    CheckpointError,
    load_checkpoint,
    read_config,
    save_checkpoint,
)
from odbench.distributed import Shard, World, detect_world, peer_failure, short_error
from odbench.errors import OdbenchError
from odbench.feature_cache import FeatureCache, FeatureCacheError, FeatureEntry, FeatureRows
from odbench.outputs import check_output_folder

PREPARED_DIR = ".prepared"

#: Seconds of wall time between checkpoints besides every ``save_every`` steps, so that a run
#: killed without warning (SIGKILL, the OOM killer, a node failure) loses at most this much work.
SAVE_INTERVAL_S = 300.0


class TrainError(OdbenchError, ValueError):
    """A training run that cannot start or continue; one line naming the fix."""


# ----------------------------------------------------------------------------------- options
def card_for_model(model: str) -> MethodCard:
    """``--model unet`` -> the ``unet-e2e`` card."""
    cards = {
        c.raw["model"]["type"]: c
        for c in method_cards().values()
        if c.raw.get("model", {}).get("type") not in (None, "decoder") and c.parent is None
    }
    if model not in cards:
        raise TrainError(f"--model {model!r}: expected one of {', '.join(sorted(cards))}")
    return cards[model]


def card_for_features(features: str) -> MethodCard:
    """``--features dino-vits16`` -> the decoder card of the ``dino`` family (the extractor
    name's first dash-separated word)."""
    family = features.split("-")[0]
    for card in method_cards().values():
        model = card.raw.get("model", {})
        if model.get("type") == "decoder" and model.get("family") == family and card.parent is None:
            return card
    raise TrainError(f"--features {features!r}: no decoder card for the {family!r} family")


def training_options(card: MethodCard, **overrides: Any) -> dict[str, Any]:
    """The card's ``[training]`` table with the given (non-None) options overriding it."""
    options = dict(card.raw.get("training", {}))
    if not options:
        raise TrainError(f"{card.path}: card has no [training] table")
    for key, value in overrides.items():
        if value is not None:
            if key not in options:
                raise TrainError(f"{card.path}: [training] has no {key!r}")
            options[key] = value
    return options


# -------------------------------------------------------------------------------------- data
@dataclass
class Prepared:
    """The run's samples at the training resolution (memory-mapped ``.npy`` files)."""

    ids: list[str]
    images: np.ndarray  # [N, 3, R, R] uint8
    masks: np.ndarray  # [N, R, R] uint8, soft GT scaled to 0..255
    image_hashes: list[str]
    manifest_sha256: str


def content_hash(arr: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and bytes."""
    h = hashlib.sha256(f"{arr.dtype}:{arr.shape}:".encode())
    h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def select_ids(ids: list[str], n: int | None, seed: int) -> list[str]:
    """All ids, or ``n`` of them drawn at random (seeded), in sorted order."""
    if n is None or n >= len(ids):
        return list(ids)
    chosen = np.random.default_rng([seed, 7]).choice(len(ids), size=n, replace=False)
    return [ids[i] for i in sorted(chosen)]


def prepare(
    dataset: Any,
    ids: list[str],
    resolution: int,
    folder: Path,
    progress: Callable[[int], None],
    image_rows: set[int] | None = None,
) -> Prepared:
    """Read, hash and resize every sample (the resize :func:`odbench.models.build.to_batch`
    applies at evaluation) into ``folder``.  With ``image_rows``, only those rows' images are
    stored (the others stay unwritten, a sparse file): a rank that trains from cached features
    needs the images of its own share only."""
    import torch
    import torch.nn.functional as F

    from odbench.imageio import to_unit
    from odbench.models.build import to_batch

    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    r = resolution
    images = np.lib.format.open_memmap(folder / "images.npy", "w+", np.uint8, (len(ids), 3, r, r))
    masks = np.lib.format.open_memmap(folder / "masks.npy", "w+", np.uint8, (len(ids), r, r))
    image_hashes, rows = [], []
    for i, sample_id in enumerate(ids):
        sample = dataset.load(sample_id)
        if sample.mask is None:
            raise TrainError(f"sample {sample_id!r} of the training data has no GT mask")
        image_hashes.append(content_hash(sample.image))
        rows.append([sample_id, image_hashes[-1], content_hash(sample.mask)])
        if image_rows is None or i in image_rows:
            images[i] = (to_batch([sample.image], r)[0] * 255.0).round().to(torch.uint8).numpy()
        m = torch.from_numpy(to_unit(sample.mask).astype(np.float32))[None, None]
        m = F.interpolate(m, size=(r, r), mode="bilinear", antialias=True, align_corners=False)
        masks[i] = (m[0, 0].clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()
        progress(1)
    images.flush()
    masks.flush()
    manifest = hashlib.sha256(json.dumps(rows).encode()).hexdigest()
    return Prepared(list(ids), images, masks, image_hashes, manifest)


def split_rows(n: int, val_split: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows): ``round(val_split · n)`` rows (at least one when the
    fraction is positive) held out at random, seeded."""
    n_val = max(1, round(val_split * n)) if val_split > 0 else 0
    if n - n_val < 1:
        raise TrainError(f"{n} samples leave none for training with --val-split {val_split}")
    perm = np.random.default_rng([seed, 11]).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


# ---------------------------------------------------------------------------------- the loop
def soft_dice_bce(logits: Any, target: Any, bce_weight: float, dice_weight: float) -> Any:
    """``w_bce · BCE(σ(z), g) + w_dice · (1 − (2 Σ p g + 1) / (Σ p + Σ g + 1))`` with the soft
    dice per image (Milletari et al., 3DV 2016), both averaged over the batch."""
    import torch
    import torch.nn.functional as F

    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits).flatten(1)
    g = target.flatten(1)
    dice = 1.0 - (2.0 * (p * g).sum(1) + 1.0) / (p.sum(1) + g.sum(1) + 1.0)
    return bce_weight * bce + dice_weight * dice.mean()


def batch_rows(train_rows: np.ndarray, batch_size: int, seed: int, step: int) -> np.ndarray:
    """The rows of step ``step``: epoch ``step // steps_per_epoch`` of a seeded per-epoch
    permutation, full batches only (the last partial batch of an epoch is dropped)."""
    spe = steps_per_epoch(len(train_rows), batch_size)
    epoch, pos = divmod(step, spe)
    perm = np.random.default_rng([seed, epoch]).permutation(len(train_rows))
    bs = min(batch_size, len(train_rows))
    return np.sort(train_rows[perm[pos * bs : (pos + 1) * bs]])


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    return max(1, n_train // batch_size)


def flips(seed: int, step: int, n: int, enabled: bool) -> np.ndarray:
    """Which samples of step ``step`` are flipped left-right (p = 0.5, seeded by the step)."""
    if not enabled:
        return np.zeros(n, dtype=bool)
    return np.random.default_rng([seed, 13, step]).random(n) < 0.5


@dataclass
class Inputs:
    """What a step reads: images (end to end) or cached feature levels (decoder), and masks."""

    prepared: Prepared
    features: FeatureRows | None = None  # the cached feature levels of the prepared images

    def batch(self, rows: np.ndarray, flip: np.ndarray, device: str) -> tuple[Any, Any]:
        import torch

        def load(arr: np.ndarray, scale: float) -> Any:
            t = torch.from_numpy(np.asarray(arr, dtype=np.float32) * scale)
            if flip.any():
                idx = torch.from_numpy(np.nonzero(flip)[0])
                t[idx] = t[idx].flip(-1)
            return t.to(device)

        target = load(self.prepared.masks[rows], 1.0 / 255.0)[:, None]
        if self.features is None:
            return load(self.prepared.images[rows], 1.0 / 255.0), target
        return [load(level, 1.0) for level in self.features.take(rows)], target


@dataclass
class RunState:
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def val_iou(model: Any, inputs: Inputs, rows: np.ndarray, forward: Any, device: str) -> float:
    """Mean per-image IoU of ``σ(logits) > 0.5`` vs ``GT ≥ 0.5`` at the training resolution
    (empty vs empty = 1)."""
    import torch

    if len(rows) == 0:
        return float("nan")
    model.eval()
    ious = []
    with torch.no_grad():
        for start in range(0, len(rows), 16):
            chunk = rows[start : start + 16]
            x, target = inputs.batch(chunk, np.zeros(len(chunk), dtype=bool), device)
            pred = (forward(x) > 0).flatten(1)
            gt = (target >= 0.5).flatten(1)
            inter = (pred & gt).sum(1).float()
            union = (pred | gt).sum(1).float()
            ious += torch.where(union > 0, inter / union.clamp(min=1), 1.0).tolist()
    model.train()
    return float(np.mean(ious))


@contextmanager
def _progress(show: bool, total: int, done: int) -> Iterator[Callable[..., None]]:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}  val IoU {task.fields[iou]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), disable=not show) as progress:
        task = progress.add_task("train", total=total, completed=done, loss="-", iou="-")

        def update(advance: int = 0, **fields: Any) -> None:
            progress.update(task, advance=advance, **fields)

        yield update


@contextmanager
def _count(show: bool, total: int, label: str) -> Iterator[Callable[[int], None]]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), disable=not show) as progress:
        task = progress.add_task(label, total=total)
        yield lambda n: progress.advance(task, n)


@dataclass
class TrainResult:
    run_dir: Path
    config: dict[str, Any]  # empty on ranks other than 0
    step: int
    val_iou: float
    seconds: float
    features_computed: int = 0  # images whose features this run extracted (all processes)
    model: Any = None  # the trained network, in eval mode
    rank: int = 0  # this process's rank under a launcher (only rank 0 wrote anything)
    processes: int = 1


@dataclass
class CacheResult:
    """What ``--cache-only`` did: ``n_images`` of this shard, ``computed`` of them extracted now
    (by all processes of the launch), the rest found cached."""

    shard: Shard
    n_images: int
    computed: int
    rank: int = 0
    processes: int = 1


class Terminated(KeyboardInterrupt):
    """SIGTERM (``scancel``, a pre-emption, a time limit, torchrun stopping its workers) or Ctrl-C
    while training: raised once the step in flight has finished and its checkpoint is saved."""

    def __init__(self, signame: str, step: int) -> None:
        super().__init__(
            f"stopped by {signame} after step {step}; its checkpoint was saved: run the same "
            f"command with --resume to continue"
        )
        self.step = step


class _StopSignals:
    """SIGTERM and SIGINT noted rather than raised while training, so that a run always stops
    between two steps (a signal raised inside ``optimizer.step()`` would leave some weights
    updated and others not, and the checkpoint saved next would resume a different run).  A
    second signal while the first is pending stops at once (nothing more is saved)."""

    def __init__(self) -> None:
        self.received: str | None = None

    def __call__(self, signum: int, frame: Any) -> None:
        if self.received is not None:
            raise KeyboardInterrupt(f"{signal.Signals(signum).name} again")
        self.received = signal.Signals(signum).name


@contextmanager
def _stop_signals() -> Iterator[_StopSignals]:
    """Install :class:`_StopSignals` for SIGTERM and SIGINT (main thread only)."""
    noted = _StopSignals()
    if threading.current_thread() is not threading.main_thread():
        yield noted
        return
    previous = {sig: signal.signal(sig, noted) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield noted
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@dataclass
class _Setup:
    """What both training and ``--cache-only`` need, checked: options, model spec, extractor,
    dataset and the ids drawn from it."""

    data: str
    n: int | None
    card: MethodCard
    opts: dict[str, Any]
    spec: dict[str, Any]
    device: str
    dataset: Any
    ids: list[str]
    extractor: Any = None
    extractor_info: dict[str, Any] | None = None
    resumed: dict[str, Any] | None = None  # rank 0 with --resume: the checkpoint's config

    @property
    def seed(self) -> int:
        return int(self.opts["seed"])

    @property
    def resolution(self) -> int:
        return int(self.opts["resolution"])

    @property
    def batch_size(self) -> int:
        return int(self.opts["batch_size"])


def _setup(
    world: World,
    *,
    data: str,
    out: Path | None,
    model: str | None,
    features: str | None,
    data_root: Path | None,
    n: int | None,
    steps: int | None,
    epochs: int | None,
    resume: bool,
    device: str,
    cache_dir: Path | None,
    extractor_options: dict[str, Any] | None,
    cache_only: bool,
    shard: Shard | None,
    overrides: dict[str, Any],
) -> _Setup:
    from odbench.data.base import create_dataset
    from odbench.runner import EvalError, resolve_device

    try:
        device = world.device(resolve_device(device))
    except EvalError as e:
        raise TrainError(str(e)) from e
    if (model is None) == (features is None):
        raise TrainError("give exactly one of --model (end to end) or --features (decoder)")
    if steps is not None and epochs is not None:
        raise TrainError("give --steps or --epochs, not both")
    if cache_only and features is None:
        raise TrainError("--cache-only fills the feature cache of --features; give --features")
    if shard is not None and not cache_only:
        raise TrainError(
            "--shard splits the feature caching only: use it with --cache-only, then train "
            "without either (or under a launcher)"
        )
    card = card_for_model(model) if model is not None else card_for_features(str(features))
    opts = training_options(card, **overrides)
    seed, resolution, bs = int(opts["seed"]), int(opts["resolution"]), int(opts["batch_size"])
    if not 0.0 <= float(opts["val_split"]) < 1.0:
        raise TrainError(f"--val-split must be in [0, 1), got {opts['val_split']}")
    for name, value in (
        ("--steps", steps),
        ("--epochs", epochs),
        ("--n", n),
        ("--batch-size", bs),
        ("--resolution", resolution),
    ):
        if value is not None and value < 1:
            raise TrainError(f"{name} must be >= 1, got {value}")
    if not float(opts["lr"]) > 0.0:
        raise TrainError(f"--lr must be > 0, got {opts['lr']}")
    if not cache_only:
        if out is None:
            raise TrainError("--out is required (except with --cache-only)")
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise TrainError(f"--out {out}: exists and is not a folder")
        if world.is_main:  # the run folder is rank 0's alone (it may not exist on other nodes)
            check_output_folder(out, "--out")
            has_ckpt = (out / CHECKPOINT_FILE).is_file()
            if has_ckpt and not resume:
                raise TrainError(
                    f"--out {out}: holds a training run already; pass --resume to continue it or "
                    f"choose another folder"
                )
            if resume and not has_ckpt:
                raise TrainError(
                    f"--resume: {out / CHECKPOINT_FILE} not found; start without --resume"
                )
    if features is not None:
        check_output_folder(FeatureCache(cache_dir).folder, "--cache-dir")

    # The extractor first: a bad name fails before any data is read.
    setup = _Setup(data, n, card, opts, dict(card.raw["model"]), device, None, [])
    if features is not None:
        from odbench.features import load_extractor

        try:
            extractor = load_extractor(features, device=device, **(extractor_options or {}))
        except TypeError as e:  # the builders' "unknown option(s)"
            if "unknown option" not in str(e):
                raise
            raise TrainError(f"--extractor-option: {e}") from e
        if resolution % extractor.input_multiple:
            raise TrainError(
                f"resolution {resolution} is not a multiple of {extractor.input_multiple} "
                f"(what {features} needs); pass --resolution"
            )
        setup.spec.update(channels=list(extractor.channels), strides=list(extractor.strides))
        setup.extractor = extractor
        setup.extractor_info = {
            "name": features,
            "identity": extractor.identity,
            "options": dict(extractor_options or {}),
            "channels": list(extractor.channels),
            "strides": list(extractor.strides),
        }
    elif "trunk_weights" in opts:
        setup.spec["trunk_weights"] = opts["trunk_weights"]
    if resume and world.is_main and out is not None:
        # Before any data is read or feature computed: a resume that is refused costs nothing.
        setup.resumed = read_config(out)
        _check_resumable(
            out, setup.resumed, card, setup.spec, run_options(opts), setup.extractor_info, None
        )
    setup.dataset = create_dataset(data, data_root=data_root)
    setup.ids = select_ids(setup.dataset.ids(), n, seed)
    if not cache_only:
        n_train = len(split_rows(len(setup.ids), float(opts["val_split"]), seed)[0])
        if min(bs, n_train) < world.size:
            raise TrainError(
                f"a global batch of {min(bs, n_train)} cannot be split across {world.size} "
                f"processes (each needs a sample); raise --batch-size or use fewer processes"
            )
        total = target_steps(n_train, bs, steps, epochs, opts)
        done = int(setup.resumed["step"]) if setup.resumed is not None else 0
        if done > total:
            given = f"--epochs {epochs} ({total} steps)" if epochs is not None else f"{total} steps"
            raise TrainError(
                f"--resume: the run in {out} is at step {done} already, past {given}; give "
                f"--steps above {done} to train it further"
            )
    return setup


def run_options(opts: dict[str, Any]) -> dict[str, Any]:
    """The training options a run keeps when resumed (all but its length)."""
    return {k: v for k, v in opts.items() if k != "steps"}


def target_steps(
    n_train: int, batch_size: int, steps: int | None, epochs: int | None, opts: dict[str, Any]
) -> int:
    """The run's length in steps: ``--epochs``, else ``--steps``, else the card's."""
    if epochs is not None:
        return epochs * steps_per_epoch(n_train, batch_size)
    return int(steps or opts["steps"])


def _fill(
    entry: FeatureEntry,
    setup: _Setup,
    prepared: Prepared,
    rows: list[int],
    progress: Callable[[int], None],
) -> int:
    """Cache the features of the prepared ``rows``; the number of images extracted."""
    hashes = [prepared.image_hashes[r] for r in rows]
    return entry.fill(
        setup.extractor,
        hashes,
        lambda positions: prepared.images[[rows[p] for p in positions]],
        setup.batch_size,
        progress,
        setup.device,
    )


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
    features: str,
    data_root: Path | None = None,
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
        setup = _setup(
            world,
            data=data,
            out=None,
            model=None,
            features=features,
            data_root=data_root,
            n=n,
            steps=None,
            epochs=None,
            resume=False,
            device=device,
            cache_dir=cache_dir,
            extractor_options=extractor_options,
            cache_only=True,
            shard=shard,
            overrides=overrides,
        )
        whole = shard or Shard()
        chosen = whole.split(world.size, world.rank).take(setup.ids)
        entry = FeatureCache(cache_dir).entry(setup.extractor, setup.resolution)
        show = show_progress and world.is_main
        with tempfile.TemporaryDirectory(prefix="odbench-cache-") as tmp:
            with _count(show, len(chosen), "prepare") as advance:
                prepared = prepare(
                    setup.dataset, chosen, setup.resolution, Path(tmp) / PREPARED_DIR, advance
                )
            with _count(show, len(chosen), "features") as advance:
                computed = _fill(entry, setup, prepared, list(range(len(chosen))), advance)
        counts = world.gather(computed)
        return CacheResult(
            whole,
            len(whole.take(setup.ids)),
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
    """Train and checkpoint into ``out`` (see the module docstring).  ``overrides`` replace
    entries of the card's ``[training]`` table (``resolution``, ``batch_size``, ``lr``, ``seed``,
    ``val_split``, …); ``minutes`` stops the run at a wall-clock budget.  Under a launcher
    (torchrun, accelerate launch) every rank runs this (module docstring)."""
    with _launched(device) as world:
        setup = _setup(
            world,
            data=data,
            out=out,
            model=model,
            features=features,
            data_root=data_root,
            n=n,
            steps=steps,
            epochs=epochs,
            resume=resume,
            device=device,
            cache_dir=cache_dir,
            extractor_options=extractor_options,
            cache_only=False,
            shard=None,
            overrides=overrides,
        )
        with ExitStack() as stack:
            # Rank 0 prepares into the run folder; the others, which write nothing there, into
            # a temporary folder of their own (removed at the end).
            prepared_dir = Path(out) / PREPARED_DIR
            if not world.is_main:
                tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="odbench-train-"))
                prepared_dir = Path(tmp) / PREPARED_DIR
            return _train(
                world,
                setup,
                Path(out),
                prepared_dir,
                steps,
                epochs,
                minutes,
                resume,
                cache_dir,
                show_progress and world.is_main,
            )


def _train(
    world: World,
    setup: _Setup,
    out: Path,
    prepared_dir: Path,
    steps: int | None,
    epochs: int | None,
    minutes: float | None,
    resume: bool,
    cache_dir: Path | None,
    show_progress: bool,
) -> TrainResult:
    import torch

    from odbench.models.build import build_model

    card, opts, spec, device = setup.card, setup.opts, setup.spec, setup.device
    seed, resolution, bs = setup.seed, setup.resolution, setup.batch_size
    ids = setup.ids
    everything = list(range(len(ids)))
    mine = Shard(world.rank, world.size).take(everything)  # this rank's share of the features
    from_features = setup.extractor is not None
    with _count(show_progress, len(ids), "prepare") as advance:
        prepared = prepare(
            setup.dataset,
            ids,
            resolution,
            prepared_dir,
            advance,
            set(mine) if from_features and not world.is_main else None,
        )
    train_rows, val_rows = split_rows(len(ids), float(opts["val_split"]), seed)
    spe = steps_per_epoch(len(train_rows), bs)
    total = target_steps(len(train_rows), bs, steps, epochs, opts)
    data_info = {
        "dataset": setup.data,
        "describe": setup.dataset.describe(),
        "manifest_sha256": prepared.manifest_sha256,
        "n_samples": len(ids),
        "n_train": len(train_rows),
        "n_val": len(val_rows),
        "n_requested": setup.n,
    }
    run_opts = run_options(opts)
    if setup.resumed is not None:  # the data too, before computing any feature
        _check_resumable(out, setup.resumed, card, spec, run_opts, setup.extractor_info, data_info)

    inputs = Inputs(prepared)
    computed = 0
    if setup.extractor is not None:
        entry = FeatureCache(cache_dir).entry(setup.extractor, resolution)
        with _count(show_progress, len(mine), "features") as advance:
            computed = _fill(entry, setup, prepared, mine, advance)
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

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the run's seed: every rank builds the same initial weights
        net = build_model(spec, init_weights=not resume)
    if world.size > 1:
        from odbench.syncbn import convert_batchnorm

        net = convert_batchnorm(net)  # statistics of the global batch, as on one process
    net.to(device).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=float(opts["lr"]))
    state = RunState()
    if resume:
        loaded: tuple[dict[str, Any], dict[str, Any] | None, int, list[Any]] | None = None
        if world.is_main:  # the others may not see the run folder (another node)
            old, weights, optim_state = load_checkpoint(out, with_optimizer=True)
            _check_resumable(out, old, card, spec, run_opts, setup.extractor_info, data_info)
            loaded = (weights, optim_state, int(old["step"]), list(old.get("history", [])))
        got = world.broadcast(loaded)
        assert got is not None
        weights, optim_state, step, history = got
        net.load_state_dict(weights)
        assert optim_state is not None
        optimizer.load_state_dict(optim_state)
        state = RunState(step, history)

    wrapped = net
    if world.size > 1:
        from accelerate import Accelerator

        # accelerate wraps the model in DistributedDataParallel (gradients averaged across
        # ranks in backward; rank 0's weights broadcast at the start).
        accelerator = Accelerator(cpu=torch.device(device).type == "cpu")
        wrapped = accelerator.prepare_model(net, device_placement=False)

    if setup.extractor is not None:

        def forward(x: Any) -> Any:
            return wrapped(x, size=(resolution, resolution))

        def evaluate(x: Any) -> Any:
            return net(x, size=(resolution, resolution))
    else:
        forward, evaluate = wrapped, net

    def config() -> dict[str, Any]:
        from odbench.results import git_commit

        return {
            "card": {"name": card.name, "sha256": card.sha256},
            "model": spec,
            "training": run_opts,
            "resolution": resolution,
            "extractor": setup.extractor_info,
            "data": data_info,
            "step": state.step,
            "epoch": state.step / spe,
            "target_steps": total,
            "seeds": {"seed": seed},
            "history": state.history,
            "processes": world.size,
            "git_commit": git_commit(),
        }

    saved = state.step if resume else None  # the step of the checkpoint in the run folder

    def save() -> None:
        nonlocal saved
        if world.is_main:
            save_checkpoint(out, config(), net.state_dict(), optimizer.state_dict())
        saved = state.step

    start = time.perf_counter()
    deadline = start + minutes * 60.0 if minutes is not None else math.inf
    val_every = max(1, int(opts["val_every"]))
    save_every = max(1, int(opts["save_every"]))
    losses: list[float] = []
    iou = float(state.history[-1]["val_iou"]) if state.history else float("nan")
    first_step = state.step
    dev = str(torch.device(device))
    stop = time.perf_counter() >= deadline
    next_save = start + SAVE_INTERVAL_S
    with _stop_signals() as signals, _progress(show_progress, total, state.step) as update:
        try:
            while state.step < total and not stop:
                rows = batch_rows(train_rows, bs, seed, state.step)
                flip = flips(seed, state.step, len(rows), bool(opts["hflip"]))
                # This rank's strided share of the global batch; its loss (a mean over its
                # share) weighted by the share's size, so that the gradients DDP averages over
                # ranks are those of the global batch's mean loss.
                share = len(rows[world.rank :: world.size]) / len(rows)
                x, target = inputs.batch(
                    rows[world.rank :: world.size], flip[world.rank :: world.size], dev
                )
                loss = soft_dice_bce(
                    forward(x), target, float(opts["bce_weight"]), float(opts["dice_weight"])
                )
                optimizer.zero_grad(set_to_none=True)
                (loss * (share * world.size) if world.size > 1 else loss).backward()
                value, stop, signalled = _agree(
                    world,
                    loss.detach() * share,
                    time.perf_counter() >= deadline,
                    signals.received is not None,
                )
                if not math.isfinite(value):  # BatchNorm's statistics took it in: not saved
                    raise _not_finite(
                        value, state.step, saved, inputs, rows[world.rank :: world.size]
                    )
                optimizer.step()
                state.step += 1
                losses.append(value)
                fields: dict[str, Any] = {"loss": f"{np.mean(losses[-20:]):.4f}"}
                if world.is_main and (state.step % val_every == 0 or state.step == total):
                    iou = val_iou(net, inputs, val_rows, evaluate, dev)
                    state.history.append(
                        {
                            "step": state.step,
                            "loss": float(np.mean(losses[-val_every:])),
                            "val_iou": iou,
                            "seconds": time.perf_counter() - start,
                        }
                    )
                    fields["iou"] = f"{iou:.3f}"
                update(1, **fields)
                if signalled:
                    save()
                    raise Terminated(signals.received or "a signal to another process", state.step)
                if state.step % save_every == 0 or time.perf_counter() >= next_save:
                    save()
                    next_save = time.perf_counter() + SAVE_INTERVAL_S
        except Exception as e:
            if world.size > 1 and peer_failure(e):
                # Not saved: the step in flight may have updated BatchNorm's statistics already.
                kept = (
                    f"the checkpoint of step {saved} is kept"
                    if saved is not None
                    else "no checkpoint was saved yet"
                )
                raise TrainError(
                    f"another process of this launch stopped ({short_error(e)}); {kept}: run "
                    f"the same command again{' with --resume' if saved is not None else ''}"
                ) from e
            raise
    if world.is_main and (not state.history or state.history[-1]["step"] != state.step):
        iou = val_iou(net, inputs, val_rows, evaluate, dev)
        state.history.append(
            {
                "step": state.step,
                "loss": float(np.mean(losses[-val_every:])) if losses else float("nan"),
                "val_iou": iou,
                "seconds": time.perf_counter() - start,
            }
        )
    if state.step != first_step or not resume:  # a finished run resumed is left as it is
        save()
    seconds = time.perf_counter() - start
    return TrainResult(
        out,
        config() if world.is_main else {},
        state.step,
        iou,
        seconds,
        computed,
        net.eval(),
        world.rank,
        world.size,
    )


def _agree(world: World, loss_share: Any, over: bool, signalled: bool) -> tuple[float, bool, bool]:
    """(the global batch's loss, whether any rank ran out of --minutes, whether any rank got
    SIGTERM / Ctrl-C): one all-reduce, so every rank stops after the same step."""
    if world.size == 1:
        return float(loss_share.item()), over, signalled
    import torch
    from accelerate.utils import reduce

    flags = torch.tensor([float(over), float(signalled)], device=loss_share.device)
    total = reduce(torch.cat([loss_share.float().reshape(1), flags]), "sum")
    return float(total[0].item()), bool(total[1].item() > 0), bool(total[2].item() > 0)


def _not_finite(
    value: float, step: int, saved: int | None, inputs: Inputs, rows: np.ndarray
) -> Exception:
    """The error for a loss of NaN / inf in step ``step + 1``: a cached feature file holding NaN
    or inf (damaged on disk: odbench stores only finite values) is named, else the run diverged.
    The checkpoint of step ``saved`` is left as it is."""
    kept = f"the checkpoint of step {saved} is kept" if saved is not None else "nothing was saved"
    if inputs.features is not None:
        for row in rows:
            if not all(np.isfinite(level).all() for level in inputs.features.take([row])):
                path = inputs.features.entry.path(inputs.features.hashes[int(row)])
                return FeatureCacheError(
                    f"{path}: cached features hold NaN or inf (a damaged file; {kept}); delete "
                    f"it and run the same command again (with --resume if a checkpoint exists): "
                    f"it is computed again"
                )
    return TrainError(
        f"the loss became {value} in step {step + 1} (training diverged: lower --lr; or the data "
        f"holds NaN); {kept}"
    )


#: The options of ``odbench train`` that set a ``[training]`` entry of the card.
_TRAINING_FLAGS = {
    k: "--" + k.replace("_", "-")
    for k in ("batch_size", "lr", "seed", "resolution", "val_split", "trunk_weights")
}


def _check_resumable(
    out: Path,
    old: dict[str, Any],
    card: MethodCard,
    spec: dict[str, Any],
    run_opts: dict[str, Any],
    extractor: dict[str, Any] | None,
    data: dict[str, Any] | None,
) -> None:
    """A resumed run must be the same run: card, model, training options, extractor and (when
    ``data`` is given) data.  One line listing every difference, by the option to give."""

    def same(a: Any, b: Any) -> bool:
        return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)

    diffs = []
    if old["card"]["name"] != card.name:
        diffs.append(f"the card was {old['card']['name']} (now {card.name})")
    else:
        for key in sorted(set(old["training"]) | set(run_opts)):
            then, now = old["training"].get(key), run_opts.get(key)
            if not same(then, now):
                what = _TRAINING_FLAGS.get(key, f"the card's [training] {key}")
                diffs.append(f"{what} was {then!r} (now {now!r})")
    then_x = old["extractor"] and old["extractor"]["identity"]
    now_x = extractor and extractor["identity"]
    if then_x != now_x:
        diffs.append(
            f"the features were {then_x!r} (now {now_x!r}: --features, --extractor-option)"
        )
    if not diffs and not same(old["model"], spec):
        diffs.append(f"the model was {old['model']!r} (now {spec!r})")
    if data is not None and old["data"]["manifest_sha256"] != data["manifest_sha256"]:
        diffs.append(
            f"the training data differ ({old['data']['n_samples']} samples of "
            f"{old['data']['dataset']} then, {data['n_samples']} of {data['dataset']} now: "
            f"--data, --data-root, --n, --seed, or the files changed)"
        )
    if diffs:
        raise CheckpointError(
            f"{out / CHECKPOINT_FILE}: cannot resume: {'; '.join(diffs)}; a resumed run keeps "
            f"its options: give the run's, or train into another --out"
        )
