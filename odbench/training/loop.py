"""The training loop: one optimizer step per global batch, validation every ``val_every`` steps,
checkpoints every ``save_every`` steps and at least every :data:`SAVE_INTERVAL_S` seconds, at the
end, and on Ctrl-C or SIGTERM (always between two steps)."""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from odbench.checkpoint import save_checkpoint
from odbench.distributed import World, peer_failure, short_error
from odbench.feature_cache import FeatureCacheError
from odbench.training.data import Inputs, batch_rows, flips
from odbench.training.options import Setup, TrainError, run_options

#: Seconds of wall time between checkpoints besides every ``save_every`` steps, so that a run
#: killed without warning (SIGKILL, the OOM killer, a node failure) loses at most this much work.
SAVE_INTERVAL_S = 300.0


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


#: Lines a log gets for a training run when stderr is not a terminal (nohup, SLURM): one every
#: ``total // LOG_LINES`` steps, and at least one every :data:`LOG_INTERVAL_S` seconds.
LOG_LINES = 50
LOG_INTERVAL_S = 300.0


@contextmanager
def progress_bar(show: bool, total: int, done: int) -> Iterator[Callable[..., None]]:
    """The training bar: steps, mean loss of the last 20 steps, IoU on the held-out validation
    split, ETA; plain lines (:class:`_Lines`) where stderr is not a terminal."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    if show and not console.is_terminal:
        yield _Lines("train", total, done, max(1, total // LOG_LINES), {"loss": "-", "iou": "-"})
        return
    columns = (
        TextColumn("train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}  held-out IoU {task.fields[iou]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, disable=not show) as progress:
        task = progress.add_task("train", total=total, completed=done, loss="-", iou="-")

        def update(advance: int = 0, **fields: Any) -> None:
            progress.update(task, advance=advance, **fields)

        yield update


@contextmanager
def count_bar(show: bool, total: int, label: str) -> Iterator[Callable[[int], None]]:
    """A plain counting bar (preparing samples, caching features); lines where stderr is not a
    terminal."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    if show and not console.is_terminal:
        yield _Lines(label, total, 0, max(1, total // 10), {})
        return
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, disable=not show) as progress:
        task = progress.add_task(label, total=total)
        yield lambda n: progress.advance(task, n)


class _Lines:
    """Progress as one line per ``every`` items (and at the end, after :data:`LOG_INTERVAL_S`
    seconds without one, and when a figure changes between steps) on stderr: what a log file
    can show of a bar."""

    def __init__(
        self, label: str, total: int, done: int, every: int, fields: dict[str, Any]
    ) -> None:
        self.label, self.total, self.done, self.every = label, total, done, every
        self.fields = fields
        self.first = done
        self.start = self.last = time.perf_counter()

    def __call__(self, advance: int = 0, **fields: Any) -> None:
        self.done += advance
        self.fields.update(fields)
        now = time.perf_counter()
        due = self.done % self.every == 0 or self.done >= self.total
        if (advance and (due or now - self.last >= LOG_INTERVAL_S)) or (not advance and fields):
            self.last = now
            print(self.line(now), file=sys.stderr, flush=True)

    def line(self, now: float) -> str:
        elapsed = now - self.start
        rate = (self.done - self.first) / elapsed if elapsed > 0 else 0.0
        eta = _clock((self.total - self.done) / rate) if rate > 0 else "-"
        parts = [f"{self.label} {self.done}/{self.total}"]
        if "loss" in self.fields:
            parts.append(f"loss {self.fields['loss']}  held-out IoU {self.fields['iou']}")
        parts.append(f"elapsed {_clock(elapsed)}  ETA {eta}")
        return "  ".join(parts)


def _clock(seconds: float) -> str:
    """``h:mm:ss``."""
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


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
class Batches:
    """The run's data as the loop reads it."""

    inputs: Inputs
    train_rows: np.ndarray
    val_rows: np.ndarray
    total: int  # the run's length in steps
    steps_per_epoch: int
    info: dict[str, Any]  # the checkpoint's ``data`` block


@dataclass
class RunState:
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


class Loop:
    """One run's training: the network (``net``; ``wrapped`` by DDP under a launcher), its
    optimizer and state, and the checkpoints it writes into ``out`` (rank 0 only)."""

    def __init__(
        self,
        world: World,
        setup: Setup,
        out: Path,
        batches: Batches,
        net: Any,
        wrapped: Any,
        optimizer: Any,
        state: RunState,
        resumed: bool,
    ) -> None:
        import torch

        self.world, self.setup, self.out, self.batches = world, setup, out, batches
        self.net, self.optimizer, self.state = net, optimizer, state
        self.wrapped = wrapped
        self.device = str(torch.device(setup.device))
        self.saved = state.step if resumed else None  # the step of the run folder's checkpoint
        r = setup.resolution
        if setup.extractor is not None:

            def forward(x: Any) -> Any:
                return wrapped(x, size=(r, r))

            def evaluate(x: Any) -> Any:
                return net(x, size=(r, r))

            self.forward, self.evaluate = forward, evaluate
        else:
            self.forward, self.evaluate = wrapped, net

    def config(self) -> dict[str, Any]:
        """The checkpoint's config at the current step."""
        from odbench.provenance import git_commit

        setup = self.setup
        return {
            "card": {"name": setup.card.name, "sha256": setup.card.sha256},
            "model": setup.spec,
            "training": run_options(setup.opts),
            "resolution": setup.resolution,
            "extractor": setup.extractor_info,
            "data": self.batches.info,
            "step": self.state.step,
            "epoch": self.state.step / self.batches.steps_per_epoch,
            "target_steps": self.batches.total,
            "seeds": {"seed": setup.seed},
            "history": self.state.history,
            "processes": self.world.size,
            "git_commit": git_commit(),
        }

    def save(self) -> None:
        if self.world.is_main:
            save_checkpoint(
                self.out, self.config(), self.net.state_dict(), self.optimizer.state_dict()
            )
        self.saved = self.state.step

    def validate(self, losses: list[float], since: float) -> float:
        """Validation IoU now, appended to the history with the mean loss of the last
        ``val_every`` steps."""
        iou = val_iou(
            self.net, self.batches.inputs, self.batches.val_rows, self.evaluate, self.device
        )
        val_every = max(1, int(self.setup.opts["val_every"]))
        self.state.history.append(
            {
                "step": self.state.step,
                "loss": float(np.mean(losses[-val_every:])) if losses else float("nan"),
                "val_iou": iou,
                "seconds": time.perf_counter() - since,
            }
        )
        return iou

    def step(self, signals: _StopSignals, deadline: float) -> tuple[float, bool, bool]:
        """One optimizer step: (the global batch's loss, stop now: out of --minutes, a signal
        arrived)."""
        world, opts, state = self.world, self.setup.opts, self.state
        seed = self.setup.seed
        rows = batch_rows(self.batches.train_rows, self.setup.batch_size, seed, state.step)
        flip = flips(seed, state.step, len(rows), bool(opts["hflip"]))
        # This rank's strided share of the global batch; its loss (a mean over its share)
        # weighted by the share's size, so that the gradients DDP averages over ranks are those
        # of the global batch's mean loss.
        share = len(rows[world.rank :: world.size]) / len(rows)
        mine, mine_flip = rows[world.rank :: world.size], flip[world.rank :: world.size]
        x, target = self.batches.inputs.batch(mine, mine_flip, self.device)
        if opts.get("loss") == "found":  # FOUND's own loss on the head's patch logits
            from odbench.training.found import found_loss

            images = np.asarray(self.batches.inputs.prepared.images[mine])
            images = np.where(mine_flip[:, None, None, None], images[..., ::-1], images)
            loss = found_loss(self.wrapped(x), x[1], images, state.step, opts)
        else:
            loss = soft_dice_bce(
                self.forward(x), target, float(opts["bce_weight"]), float(opts["dice_weight"])
            )
        if "lr_step" in opts:  # StepLR, from the step alone (a resumed run continues it)
            lr = float(opts["lr"]) * float(opts["lr_gamma"]) ** (state.step // int(opts["lr_step"]))
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        (loss * (share * world.size) if world.size > 1 else loss).backward()
        value, stop, signalled = _agree(
            world,
            loss.detach() * share,
            time.perf_counter() >= deadline,
            signals.received is not None,
        )
        if not math.isfinite(value):  # BatchNorm's statistics took it in: not saved
            raise _not_finite(
                value, state.step, self.saved, self.batches.inputs, rows[world.rank :: world.size]
            )
        self.optimizer.step()
        state.step += 1
        return value, stop, signalled

    def run(self, minutes: float | None, resumed: bool, show_progress: bool) -> TrainResult:
        """Train up to the run's length or ``minutes``; checkpoint as the module docstring says."""
        state = self.state
        start = time.perf_counter()
        deadline = start + minutes * 60.0 if minutes is not None else math.inf
        losses: list[float] = []
        iou = float(state.history[-1]["val_iou"]) if state.history else float("nan")
        first_step = state.step
        with progress_bar(show_progress, self.batches.total, state.step) as update:
            iou = self._train(update, deadline, losses, start, iou)
            if self.world.is_main and (
                not state.history or state.history[-1]["step"] != state.step
            ):
                iou = self.validate(losses, start)
                update(0, iou=f"{iou:.3f}")  # the bar ends on the figure the run reports
        if state.step != first_step or not resumed:  # a finished run resumed is left as it is
            self.save()
        return TrainResult(
            self.out,
            self.config() if self.world.is_main else {},
            state.step,
            iou,
            time.perf_counter() - start,
            0,
            self.net.eval(),
            self.world.rank,
            self.world.size,
        )

    def _train(
        self,
        update: Callable[..., None],
        deadline: float,
        losses: list[float],
        start: float,
        iou: float,
    ) -> float:
        """Steps up to the run's length, ``deadline`` or a signal; the last validation IoU."""
        state, total = self.state, self.batches.total
        val_every = max(1, int(self.setup.opts["val_every"]))
        save_every = max(1, int(self.setup.opts["save_every"]))
        stop = time.perf_counter() >= deadline
        next_save = start + SAVE_INTERVAL_S
        with _stop_signals() as signals:
            try:
                while state.step < total and not stop:
                    value, stop, signalled = self.step(signals, deadline)
                    losses.append(value)
                    fields: dict[str, Any] = {"loss": f"{np.mean(losses[-20:]):.4f}"}
                    if self.world.is_main and (state.step % val_every == 0 or state.step == total):
                        iou = self.validate(losses, start)
                        fields["iou"] = f"{iou:.3f}"
                    update(1, **fields)
                    if signalled:
                        self.save()
                        raise Terminated(
                            signals.received or "a signal to another process", state.step
                        )
                    if state.step % save_every == 0 or time.perf_counter() >= next_save:
                        self.save()
                        next_save = time.perf_counter() + SAVE_INTERVAL_S
            except Exception as e:
                if self.world.size > 1 and peer_failure(e):
                    # Not saved: the step in flight may have updated BatchNorm's statistics.
                    raise TrainError(
                        f"another process of this launch stopped ({short_error(e)}); "
                        f"{self._kept()}: run the same command again"
                        f"{' with --resume' if self.saved is not None else ''}"
                    ) from e
                raise
        return iou

    def _kept(self) -> str:
        if self.saved is None:
            return "no checkpoint was saved yet"
        return f"the checkpoint of step {self.saved} is kept"


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
