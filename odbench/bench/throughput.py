"""Per-method throughput of ``odbench eval`` against each method's natural reference loop (part of
``odbench bench runner``): the original repository's per-image loop
(:mod:`odbench.bench.references`), run on the same images with the same random full-size
weights, in the same process, torch at its default threads.

Methods and the architectures they run on (:data:`CASES`): tokencut, lost and dsm on
``dino-vits16-random``; found (a random 1×1-conv head) on ``dino-vits8-random``, the card's
ViT-S/8; the decoders (random decoder weights, the card's resolution and batch size) on their
extractors; attentioncut on ``sd-v1-4-random`` at the card's T = 40 (about 20 min per image per
timing on a 2-core CPU: only when ``--methods`` names it).  :func:`build_case` makes the method and its reference loop; the tests run it on
tiny backbones and check that the two give the same maps.

odbench's side is ``eval`` end to end with an empty cache (decode, predict, store and score every
image), with one and with two workers: it does more than the reference loop, which only computes
the maps.  Best of ``rounds`` interleaved rounds (one of each timing per round), each side's
best wall time and its least CPU time (``getrusage`` of this process and its waited-for
children: less sensitive to the load of a shared machine).  Reported per method: images/s and
CPU-seconds per image of each, eval / reference (target >= 1x on CPU).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from odbench.bench import cpu_seconds


@dataclass(frozen=True)
class Case:
    """A timed method: its full-size random architecture, the eval worker counts timed, the
    expected seconds per image of one timing on a loaded 2-core CPU (the plan's estimate), and
    whether it runs by default (else only when ``--methods`` names it)."""

    name: str
    backbone: str
    seconds: float
    workers: tuple[int, ...] = (1, 2)
    default: bool = True


CASES: tuple[Case, ...] = (
    Case("tokencut", "dino-vits16-random", 1.5),
    Case("lost", "dino-vits16-random", 1.5),
    Case("dsm", "dino-vits16-random", 1.6),
    Case("found", "dino-vits8-random", 4.0),
    Case("dino-decoder", "dino-vits16-random", 0.6),
    Case("clip-decoder", "clip-vitb16-random", 1.0),
    Case("moco-decoder", "moco-v3-vitb16-random", 1.0),
    # 512², T = 40: 80 UNet passes with capture per image (one worker: the UNet is all of it);
    # measured at T = 2: ~80 s per image (VAE, prior and 4 passes), so ~20 min at T = 40
    Case("attentioncut", "sd-v1-4-random", 1200.0, workers=(1,), default=False),
)


#: The card's T of attentioncut (what :data:`CASES` estimates its time for).
CARD_STEPS = 40


def seconds(case: Case, steps: int) -> float:
    """The expected seconds per image of one timing, with attentioncut at ``steps`` (0: the
    card's T)."""
    if case.name == "attentioncut" and steps:
        return case.seconds * steps / CARD_STEPS
    return case.seconds


def chosen(only: tuple[str, ...]) -> list[Case]:
    """The cases ``--methods`` names, else the default ones."""
    return [c for c in CASES if c.name in only] if only else [c for c in CASES if c.default]


@dataclass(frozen=True)
class Timing:
    """Best wall seconds and least CPU seconds (this process and its children) over rounds."""

    wall: float
    cpu: float


def interleaved_cpu(fns: Mapping[str, Callable[[], object]], rounds: int) -> dict[str, Timing]:
    """Each function once per round, in turn, ``rounds`` times: its best wall and least CPU."""
    wall = dict.fromkeys(fns, float("inf"))
    cpu = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            t0, c0 = time.perf_counter(), cpu_seconds()
            fn()
            wall[name] = min(wall[name], time.perf_counter() - t0)
            cpu[name] = min(cpu[name], cpu_seconds() - c0)
    return {k: Timing(wall[k], cpu[k]) for k in fns}


def _random_found_head(extractor: str, folder: Path) -> Path:
    """A random FOUND head for ``extractor``'s keys, saved as FOUND's released head converted to
    safetensors (``decoder.weight``, ``decoder.bias``)."""
    import torch
    from safetensors.torch import save_file

    from odbench.features import load_extractor
    from odbench.models.found import FoundHead

    torch.manual_seed(0)
    head = FoundHead(int(load_extractor(extractor).channels[0]))
    path = folder / f"found-head-{extractor}.safetensors"
    save_file({f"decoder.{k}": v.contiguous() for k, v in head.conv.state_dict().items()}, path)
    return path


def _random_decoder(card_name: str, extractor: str, folder: Path) -> Path:
    """An ``odbench train`` run folder for ``card_name`` with random decoder weights on
    ``extractor`` (the card's model spec and training resolution, step 0)."""
    import torch

    from odbench.cards import method_cards
    from odbench.checkpoint import save_checkpoint
    from odbench.features import load_extractor
    from odbench.models.build import build_model

    card = method_cards()[card_name]
    fx = load_extractor(extractor)
    spec = {**card.raw["model"], "channels": list(fx.channels), "strides": list(fx.strides)}
    torch.manual_seed(0)
    net = build_model(spec).eval()
    config = {
        "card": {"name": card.name, "sha256": card.sha256},
        "model": spec,
        "resolution": int(card.raw["training"]["resolution"]),
        "extractor": {
            "name": extractor,
            "identity": fx.identity,
            "options": {},
            "channels": list(fx.channels),
            "strides": list(fx.strides),
        },
        "data": None,
        "step": 0,
    }
    run = folder / f"{card_name}-{extractor}"
    save_checkpoint(run, config, net.state_dict())
    return run


def build_case(
    name: str, backbone: str, folder: Path, **overrides: Any
) -> tuple[Any, Callable[[Path], np.ndarray]]:
    """The method ``name`` on ``backbone`` with hyperparameter ``overrides`` (random weights of a
    head or decoder written under ``folder``) and its reference loop: a function of one image
    file to the map eval predicts."""
    from odbench.bench import references as ref
    from odbench.methods.base import create_method

    if name.endswith("-decoder"):
        method: Any = create_method(name, checkpoint=str(_random_decoder(name, backbone, folder)))
        fx, net, res = method.extractor, method.model, method.resolution
        return method, lambda f: ref.decoder_reference(fx, net, res, f)
    if name == "attentioncut":
        method = create_method(name, backbone=backbone, **overrides)
        return method, lambda f: ref.attentioncut_reference(method, f)
    if name == "found":
        head = _random_found_head(backbone, folder)
        method = create_method(name, backbone=backbone, checkpoint=str(head))
    else:
        method = create_method(name, backbone=backbone)
    vit = method.extractor()
    model, patch, hp = vit.model, vit.patch_size, method.hparams
    if name == "tokencut":
        tau, eps = float(hp["tau"]), float(hp["eps"])
        return method, lambda f: ref.tokencut_reference(model, f, patch, tau, eps)
    if name == "lost":
        k = int(hp["k_patches"])
        return method, lambda f: ref.lost_reference(model, f, patch, k)
    if name == "dsm":
        return method, lambda f: ref.dsm_reference(model, f, patch)
    if name == "found":
        return method, lambda f: ref.found_reference(model, method.head, f, patch)
    raise ValueError(f"no reference loop for method {name!r}")


def plan(n_images: int, rounds: int, only: tuple[str, ...] = (), steps: int = 0) -> list[str]:
    """One line per timed method (architecture, expected time); the opt-in ones when left out.
    ``steps``: attentioncut's T (0: the card's)."""
    lines = []
    for c in chosen(only):
        runs = (1 + len(c.workers)) * rounds * n_images
        t = f" at T = {steps or CARD_STEPS}" if c.name == "attentioncut" else ""
        lines.append(
            f"  {c.name} on {c.backbone}{t}: reference loop + eval ({'/'.join(map(str, c.workers))} "
            f"worker{'s' if c.workers != (1,) else ''}), {n_images} images x {rounds} rounds, "
            f"expect ~{seconds(c, steps) * runs / 60:.1f} min"
        )
    for c in CASES:
        if c not in chosen(only) and not c.default:
            lines.append(
                f"  {c.name} on {c.backbone}: only with --methods {c.name} (~{c.seconds / 60:.0f} "
                f"min per image per timing on CPU)"
            )
    return lines


def method_rows(
    root: Path,
    n_images: int,
    rounds: int,
    echo: Callable[[str], None],
    only: tuple[str, ...] = (),
    steps: int = 0,
) -> list[dict[str, Any]]:
    """One row per measured method: images/s and CPU-s per image of the reference loop and of
    eval (1 and 2 workers); ``steps``: attentioncut's T (0: the card's)."""
    from odbench.data.base import create_dataset

    dataset = create_dataset("ecssd", data_root=root)
    ids = dataset.ids()[:n_images]
    rows = []
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="odbench-bench-")))
        for c in chosen(only):
            rows.append(_measure(c, dataset, ids, rounds, echo, folder, steps))
    return rows


def _measure(
    case: Case,
    dataset: Any,
    ids: list[str],
    rounds: int,
    echo: Callable[[str], None],
    folder: Path,
    steps: int = 0,
) -> dict[str, Any]:
    from odbench.metrics.protocols import DEFAULT_PROTOCOL, get_protocol
    from odbench.runner import run

    files = [dataset.mask_files(i)[0] for i in ids]
    protocol = get_protocol(DEFAULT_PROTOCOL)
    name, backbone, workers = case.name, case.backbone, case.workers
    overrides = {"num_steps": steps} if name == "attentioncut" and steps else {}
    method, ref = build_case(name, backbone, folder, **overrides)

    def reference() -> None:
        for f in files:
            ref(f)

    def evaluate(workers: int, limit: int = len(ids)) -> Callable[[], None]:
        def go() -> None:
            getattr(method, "_cache", {}).clear()  # LOST remembers the images it has seen
            with tempfile.TemporaryDirectory(prefix="odbench-bench-") as tmp:
                run(
                    method,
                    dataset,
                    protocol,
                    dataset_name="ecssd",
                    limit=limit,
                    workers=workers,
                    cache_dir=Path(tmp),
                    results_dir=None,
                )

        return go

    ref(files[0])  # warm-up of both sides: weights paged in, torch's kernels chosen, imports
    evaluate(1, limit=1)()
    fns: dict[str, Callable[[], None]] = {"reference": reference}
    fns |= {f"eval {w}": evaluate(w) for w in workers}
    best = interleaved_cpu(fns, rounds)
    n = len(ids)
    r = best["reference"]
    cells = [
        f"reference {n / r.wall:.3f} img/s, {r.cpu / n:.2f} CPU-s/img",
    ]
    for w in workers:
        e = best[f"eval {w}"]
        cells.append(
            f"eval {w} worker{'s' if w > 1 else ''} {n / e.wall:.3f} img/s = "
            f"{r.wall / e.wall:.2f}x, {e.cpu / n:.2f} CPU-s/img = {r.cpu / e.cpu:.2f}x"
        )
    label = f"{name} ({backbone}" + (f", T = {steps}" if overrides else "") + ")"
    echo(f"  {label:36s} " + "; ".join(cells) + " (target >= 1x)")
    row: dict[str, Any] = {"method": label, "reference": (n / r.wall, r.cpu / n)}
    row |= {f"eval {w}": (n / best[f"eval {w}"].wall, best[f"eval {w}"].cpu / n) for w in workers}
    return row
