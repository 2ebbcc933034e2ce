"""Making a synthetic dataset (DiffusionSeg Sec. 3.2): prompts -> SD images with classifier-free
guidance and attention capture -> AttentionCut masks -> noise reduction -> the output folder.

Per batch of prompts (main thread, the accelerator):

1. :meth:`DiffusionBackbone.generate` samples with guidance (T DDIM steps, eta 0) and captures,
   from the conditional branch only, what AttentionCut reads: the class tokens' cross-attention
   per layer and the self-attention per map side, as running sums over steps (and layers)
   aggregated on the fly in the attention processors — no per-step or per-head map is kept, and
   no Eq. 8 features are captured.  Each sample's initial noise comes from its own seed
   (:func:`~odbench.synthesis.prompts.noise_seed`), and every batch is padded to the batch size
   (copies of its last prompt, discarded), so an image depends on (seed, index) only — up to float
   rounding, which torch's kernels do differently at another place in the batch — never on the
   shard or on which other samples share its batch.
2. CLIP zero-shot classification of the batch (``filter = "clip"``): a sample whose top-1 coarse
   class is not its intended class is rejected (``clip_disagrees``) and not cut.
3. The rest go to a queue of CPU worker threads (``workers``; 0 runs inline) that run AttentionCut
   through the ``attentioncut`` method's own code (:meth:`AttentionCut.cut_maps`: Eq. 2
   aggregation, Eqs. 3-6, post-processing, the card's hyperparameters), binarise at 0.5, apply the
   mask rules (empty, tiny, nearly full, touching all four borders) and write the sample.  Threads,
   not processes: the cut is ~12 ms at 64² and numpy / OpenCV / PNG encoding release the GIL,
   while a process would need the 64 MiB self-attention of every sample pickled to it.  At most
   ``2 x workers + batch size`` samples wait in the queue (memory bound), so sampling runs ahead
   of the cut but never without limit.

Rejections are counted by reason in every record, in ``manifest.json`` and in the run summary.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import odbench
from odbench.errors import OdbenchError
from odbench.synthesis.prompts import (
    PromptBank,
    PromptError,
    PromptList,
    PromptSpec,
    default_classes,
    noise_seed,
    read_classes,
    read_prompts,
)
from odbench.synthesis.store import REASONS, SynthStore, check_target, sample_id

FILTERS = ("clip", "mask", "none")
FLUSH_EVERY_S = 60.0  # rewrite the manifests this often during a run (records are always current)
#: Hyperparameters of the cut method that change the mask (recorded in the run's config).
CUT_KEYS = (
    "terms",
    "lambda_phi",
    "lambda_psi",
    "lam",
    "tau",
    "n_seeds",
    "seed",
    "neighbourhood",
    "eps",
    "min_area",
    "top_k",
    "cut_resolution",
    "bilateral_solver",
)


class OptionError(OdbenchError, ValueError):
    """Options that do not fit together; the message says which and how to fix them."""


class SynthInterrupted(RuntimeError):
    """Raised by the ``fail_after`` test hook (a simulated kill)."""


def card_settings() -> dict[str, Any]:
    """The ``[synthesis]`` table of ``datasets/synthetic.toml``."""
    from odbench.cards import dataset_card

    card = dataset_card("synthetic")
    if card is None or "synthesis" not in card.raw:
        raise FileNotFoundError("datasets/synthetic.toml: no [synthesis] table")
    return dict(card.raw["synthesis"])


@dataclass
class SynthOptions:
    """A run's options; ``None`` takes the card's value (``card_settings``)."""

    n: int
    seed: int = 0
    backbone: str | None = None
    classes: Path | None = None
    prompts: Path | None = None
    filter: str | None = None
    batch_size: int | None = None
    device: str = "auto"
    dtype: str = "auto"
    workers: int | None = None
    shard: tuple[int, int] | None = None
    num_steps: int | None = None
    guidance: float | None = None
    resolution: int | None = None  # override the backbone's image side (tiny tests)

    def resolved(self) -> SynthOptions:
        card = card_settings()
        out = SynthOptions(**self.__dict__)
        for key in ("backbone", "filter", "batch_size", "workers", "num_steps", "guidance"):
            if getattr(out, key) is None:
                setattr(out, key, card[key])
        if out.filter not in FILTERS:
            raise OptionError(f"--filter must be one of {', '.join(FILTERS)}, not {out.filter!r}")
        if out.classes is not None and out.prompts is not None:
            raise OptionError("give --classes or --prompts, not both (a prompt file names classes)")
        if out.shard is not None and not 0 <= out.shard[0] < out.shard[1]:
            raise OptionError(f"--shard I/N needs 0 <= I < N, got {out.shard[0]}/{out.shard[1]}")
        if out.device == "auto":
            import torch

            out.device = "cuda" if torch.cuda.is_available() else "cpu"
        if out.dtype == "auto":
            out.dtype = card["dtype_cuda"] if out.device.startswith("cuda") else "fp32"
        return out


@dataclass
class Timings:
    """Seconds per stage, summed over samples (worker stages overlap sampling)."""

    sampling: float = 0.0  # generate(): UNet passes with capture + VAE decode
    clip: float = 0.0
    cut: float = 0.0  # AttentionCut incl. aggregation and post-processing
    write: float = 0.0
    wall: float = 0.0
    samples: int = 0

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in self.__dict__.items()}


@dataclass
class MaskRules:
    min_foreground: float
    max_foreground: float
    reject_all_borders: bool

    def verdict(self, mask: np.ndarray) -> tuple[str | None, dict[str, Any]]:
        """The first failing rule (``REASONS``) or None, and the measurements."""
        frac = float(mask.mean())
        borders = int(mask[0].any()) + int(mask[-1].any())
        borders += int(mask[:, 0].any()) + int(mask[:, -1].any())
        info = {"foreground": round(frac, 6), "borders": borders}
        if frac == 0.0:
            return "mask_empty", info
        if frac < self.min_foreground:
            return "mask_tiny", info
        if frac > self.max_foreground:
            return "mask_nearly_full", info
        if self.reject_all_borders and borders == 4:
            return "mask_all_borders", info
        return None, info


@dataclass
class Synthesizer:
    """One run: resolved options, the prompt source, the models and the output store."""

    opts: SynthOptions
    out: Path
    backbone: Any = None
    prior: Any = None
    progress: bool = True
    fail_after: int | None = None  # test hook: raise SynthInterrupted after this many samples
    world: Any = None  # odbench.distributed.World of a launch (None: one process)
    timings: Timings = field(default_factory=Timings)

    def __post_init__(self) -> None:
        self.opts = self.opts.resolved()
        card = card_settings()
        if self.opts.prompts is not None:
            self.source: PromptBank | PromptList = read_prompts(self.opts.prompts)
        else:
            classes = (
                read_classes(self.opts.classes)
                if self.opts.classes is not None
                else default_classes()
            )
            self.source = PromptBank.from_card(card.get("prompts", {}), classes)
        self.rules = MaskRules(
            float(card["min_foreground"]),
            float(card["max_foreground"]),
            bool(card["reject_all_borders"]),
        )
        from odbench.methods.base import create_method

        self.cutter: Any = create_method(str(card["cut_method"]))
        self.card = card
        check_target(self.out)  # before minutes of model loading
        if self.backbone is None:
            self.backbone = self._load_backbone()
        if isinstance(self.source, PromptList):  # every prompt's class words within 77 tokens
            for e in self.source.entries:
                try:
                    self.backbone.token_indices(e.prompt, e.class_words)
                except ValueError as err:
                    raise PromptError(f"{self.opts.prompts}: {err}; shorten the prompt") from err
        self._header = self.header()
        if self.world is None or self.world.size == 1:
            self.store = SynthStore(self.out, self._header, self.opts.shard)
        else:
            self._open_shared()
        beyond = max(self.store.records, default=-1)
        if beyond >= self.opts.n:
            raise OptionError(
                f"{self.out}: holds samples up to index {beyond}; a run only grows: give "
                f"--n {beyond + 1} or more (or a new --out)"
            )

    def _open_shared(self) -> None:
        assert self.world is not None
        # a launch: rank 0 opens (creates, cleans) the folder before the others join it
        if not self.world.is_main:
            self.world.barrier()
        self.store = SynthStore(self.out, self._header, self.opts.shard, self.world.is_main)
        if self.world.is_main:
            self.world.barrier()

    def _load_backbone(self) -> Any:
        from odbench.backbones.diffusion import WeightsNotFoundError, load_backbone

        try:
            return load_backbone(
                str(self.opts.backbone),
                device=self.opts.device,
                dtype=self.opts.dtype,
                resolution=self.opts.resolution,
            )
        except WeightsNotFoundError as e:
            raise FileNotFoundError(str(e)) from e
        except ValueError as e:  # an option the backbone refuses (--resolution, --dtype)
            raise OptionError(str(e)) from e

    def header(self) -> dict[str, Any]:
        o, bb = self.opts, self.backbone
        config: dict[str, Any] = {
            "seed": o.seed,
            "backbone": bb.spec.name,
            "resolution": bb.resolution,
            "dtype": bb.dtype_name,
            "num_steps": o.num_steps,
            "guidance": o.guidance,
            "eta": 0.0,
            "batch_size": o.batch_size,
            "prompts": self.source.describe(),
            "filter": o.filter,
            "mask_rules": dict(self.rules.__dict__),
            "cut": {
                "method": self.card["cut_method"],
                **{k: self.cutter.hparams[k] for k in CUT_KEYS if k in self.cutter.hparams},
            },
        }
        if o.filter == "clip":
            config["clip"] = f"{self.card['clip_model']}/{self.card['clip_pretrained']}"
        model = {"name": bb.spec.name, "repo_id": bb.spec.repo_id, "revision": bb.spec.revision}
        return {"config": config, "model": model, "odbench": odbench.__version__}

    # -- the CLIP filter
    def _prior(self) -> Any:
        if self.prior is None:
            from odbench.backbones.clip_prior import ClipPrior, CoarseGroups, load_coarse_groups

            groups = load_coarse_groups()
            if not set(self.source.classes) <= set(groups.groups):  # own labels: own classifier
                names = tuple(self.source.classes)
                groups = CoarseGroups(names, names)
            if self.backbone.spec.random == "tiny":
                self.prior = ClipPrior.tiny(device=self.opts.device, groups=groups)
            else:
                from odbench.backbones.diffusion import WeightsNotFoundError

                try:
                    self.prior = ClipPrior.load(
                        self.card["clip_model"], self.card["clip_pretrained"], self.opts.device
                    )
                except WeightsNotFoundError as e:
                    raise FileNotFoundError(str(e)) from e
                self.prior.groups = groups
        return self.prior

    # -- one sample's CPU part (runs on a worker thread)
    def _finish(
        self,
        record: dict[str, Any],
        image: np.ndarray,
        cross: list[np.ndarray],
        selfs: list[tuple[np.ndarray, float]],
    ) -> tuple[dict[str, Any], float, float]:
        t0 = time.perf_counter()
        soft = self.cutter.cut_maps(image, cross, selfs)
        mask = soft > 0.5
        t1 = time.perf_counter()
        reason, info = self.rules.verdict(mask)
        record["checks"]["mask"] = {**info, "verdict": reason or "ok"}
        self._decide(record, reason)
        png = (mask.astype(np.uint8) * 255) if record["kept"] else None
        self.store.add(record, image if record["kept"] else None, png)
        return record, t1 - t0, time.perf_counter() - t1

    def _decide(self, record: dict[str, Any], reason: str | None) -> None:
        applies = reason is not None and (
            self.opts.filter == "clip"
            or (self.opts.filter == "mask" and reason != "clip_disagrees")
        )
        applies = applies or reason == "non_finite"
        record["kept"] = not applies
        record["reason"] = reason if applies else None
        if record["kept"]:
            record["image"] = f"images/{record['id']}.png"
            record["mask"] = f"masks/{record['id']}.png"

    def _record(self, index: int, spec: PromptSpec, tokens: list[int]) -> dict[str, Any]:
        h = self._header
        return {
            "id": sample_id(self.opts.seed, index),
            "index": index,
            "class": spec.cls,
            "prompt": spec.prompt,
            "class_words": spec.class_words,
            "token_indices": tokens,
            "seed": self.opts.seed,
            "noise_seed": noise_seed(self.opts.seed, index),
            "model": h["model"],
            "odbench": h["odbench"],
            "checks": {},
            "kept": False,
            "reason": None,
            "image": None,
            "mask": None,
        }

    # -- the run
    def todo(self) -> list[int]:
        """This process's indices not yet done: its shard's (``--shard I/N``), and under a
        launcher of W processes rank r's part of it (``Shard.split``: shard I + N r of N W)."""
        from odbench.distributed import Shard

        shard = Shard(*(self.opts.shard or (0, 1)))
        if self.world is not None and self.world.size > 1:
            shard = shard.split(self.world.size, self.world.rank)
        return [i for i in shard.take(range(self.opts.n)) if not self.store.done(i)]

    def run(self) -> dict[str, Any]:
        from odbench.backbones.diffusion import Capture
        from odbench.methods.diffusion import attention_maps

        o, bb = self.opts, self.backbone
        todo = self.todo()
        batch_size = int(o.batch_size or 1)
        workers = int(o.workers or 0)
        pool = ThreadPoolExecutor(workers, thread_name_prefix="cut") if workers else None
        pending: deque[Future[Any]] = deque()
        limit = 2 * workers + batch_size
        capture = Capture(features=False)
        t_start = last_flush = time.perf_counter()
        written = 0
        bar = _Progress(len(todo), self.store, enabled=self.progress)

        def collect(result: tuple[dict[str, Any], float, float]) -> None:
            nonlocal written
            rec, cut_s, write_s = result
            self.timings.cut += cut_s
            self.timings.write += write_s
            written += 1
            bar.advance(bool(rec["kept"]))
            if self.fail_after is not None and written >= self.fail_after:
                raise SynthInterrupted(f"test hook: stopped after {written} samples")

        try:
            for start in range(0, len(todo), batch_size):
                batch = todo[start : start + batch_size]
                specs = [self.source.spec(o.seed, i) for i in batch]
                tokens = [bb.token_indices(s.prompt, s.class_words) for s in specs]
                seeds = [noise_seed(o.seed, i) for i in batch]
                pad = batch_size - len(batch)
                t0 = time.perf_counter()
                gen = bb.generate(
                    [s.prompt for s in specs] + [specs[-1].prompt] * pad,
                    tokens + [tokens[-1]] * pad,
                    num_steps=int(o.num_steps or 40),
                    guidance=float(o.guidance or 1.0),
                    seed=seeds + [seeds[-1]] * pad,
                    capture=capture,
                )
                t1 = time.perf_counter()
                self.timings.sampling += t1 - t0
                images = [np.ascontiguousarray(im) for im in gen.images[: len(batch)]]
                predicted: list[str | None] = [None] * len(batch)
                if o.filter == "clip":
                    predicted = list(self._prior().classify(images))
                self.timings.clip += time.perf_counter() - t1
                for b, (index, spec) in enumerate(zip(batch, specs)):
                    rec = self._record(index, spec, tokens[b])
                    if predicted[b] is not None:
                        rec["checks"]["clip"] = {"predicted": predicted[b]}
                    early = None
                    if not bool(gen.finite[b]):
                        early = "non_finite"
                    elif predicted[b] is not None and predicted[b] != spec.cls:
                        early = "clip_disagrees"
                    if early is not None:
                        self._decide(rec, early)
                        self.store.add(rec, None, None)
                        collect((rec, 0.0, 0.0))
                        continue
                    cross, selfs = attention_maps(gen.captures, b)
                    job: Callable[[], Any] = _bind(self._finish, rec, images[b], cross, selfs)
                    if pool is None:
                        collect(job())
                    else:
                        pending.append(pool.submit(job))
                    while len(pending) > limit or (pending and pending[0].done()):
                        collect(pending.popleft().result())
                del gen
                if time.perf_counter() - last_flush > FLUSH_EVERY_S:  # manifests kept current
                    if self.world is not None and self.world.size > 1:
                        self.store.reload()  # the other ranks' samples too
                    self.store.flush()
                    last_flush = time.perf_counter()
            while pending:
                collect(pending.popleft().result())
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            bar.close()
            self.timings.wall = time.perf_counter() - t_start
            self.timings.samples = written
        if self.world is not None and self.world.size > 1:
            parts = self.world.gather(self.timings.as_dict())  # also: every rank is done
            if parts is not None:
                self.store.reload()
                self.timings = Timings(**{k: sum(p[k] for p in parts) for k in Timings().as_dict()})
                self.timings.wall = max(p["wall"] for p in parts)
        self.store.finish(o.n)
        return self.summary()

    def summary(self) -> dict[str, Any]:
        counts = self.store.counts()
        t = self.timings
        return {
            "out": str(self.out),
            "shard": list(self.opts.shard) if self.opts.shard else None,
            "counts": counts,
            "rejection_rate": round(1 - counts["kept"] / max(counts["generated"], 1), 4),
            "samples_per_s": round(t.samples / t.wall, 4) if t.wall > 0 else None,
            "timings_s": t.as_dict(),
            "device": self.opts.device,
            "processes": 1 if self.world is None else self.world.size,
        }


def _bind(fn: Callable[..., Any], *args: Any) -> Callable[[], Any]:
    return lambda: fn(*args)


class _Progress:
    """A rich progress bar with samples/s and the rejection rate (no-op when disabled)."""

    def __init__(self, total: int, store: SynthStore, enabled: bool) -> None:
        counts = store.counts()
        self.generated, self.kept = counts["generated"], counts["kept"]
        self.progress: Any = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("synth"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("rejected {task.fields[rejected]}"),
            TimeRemainingColumn(),
            transient=True,
            console=Console(stderr=True),
        )
        self.t0 = time.perf_counter()
        self.done = 0
        self.task = self.progress.add_task("synth", total=total, rate="-", rejected="-")
        self.progress.start()

    def advance(self, kept: bool) -> None:
        if self.progress is None:
            return
        self.done += 1
        self.generated += 1
        self.kept += int(kept)
        rate = self.done / max(time.perf_counter() - self.t0, 1e-9)
        rejected = 1 - self.kept / self.generated
        self.progress.update(
            self.task, advance=1, rate=f"{rate:.2f} samples/s", rejected=f"{rejected:.0%}"
        )

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def synthesize(opts: SynthOptions, out: str | Path, **kw: Any) -> dict[str, Any]:
    """Make (or resume) a synthetic dataset in ``out``; returns the run summary."""
    return Synthesizer(opts, Path(out), **kw).run()


__all__ = ["REASONS", "SynthOptions", "Synthesizer", "synthesize"]
