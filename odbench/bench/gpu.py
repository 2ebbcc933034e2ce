"""``odbench bench gpu``: the one GPU check, in one command (≤ 8 min on one H100 / H200).

Steps (each timed, each a section of the markdown report):

1. the ``gpu``-marked tests (``pytest -m gpu``);
2. SD-1.4 (real architecture, random weights) DDIM inversion + reverse pass with capture at
   512², T = 40, bf16, batches 1 / 4 / 16: images/s, TFLOP/s against the device's peak, peak
   memory with and without capture (:mod:`odbench.bench.backbone`);
3. every frozen feature extractor (full-size random variants): images/s at 224² and 448²
   (SD at 256² and 448²: its input must be a multiple of 64; other sides round down to a multiple
   of the extractor's patch);
4. AttentionCut end to end on 16 toy images with the full-size random SD;
5. FOUND end to end (``found``, ``found.multi``, ``found.bs``) on 16 random 320×400 images with
   ``dino-vits8-random`` and a random head in FOUND's released format;
6. training-free methods end to end (:data:`METHOD_ROWS`: Deep Spectral Methods on DINO,
   TokenCut, LOST and their "+BS" variants on DINOv2 ViT-S/14 and ViT-B/14 with registers,
   MaskCut and ProMerge on DINO ViT-B/8 at their 480²) on the toy images of step 4 (96 × 128:
   no multiple of 14): images/s, the device part (``forward``) and the CPU part
   (``postprocess``) timed apart (MaskCut and ProMerge have no split: their eigen-solves or
   prompts and their CRF count in ``forward``).

The report goes to ``benchmarks/gpu/<device>-<date>.md`` (``--out`` to change).
``--dry-run`` runs every step on the CPU with the tiny models (tiny SD at 32², T = 2; tiny
extractors at 32² and 64² (28², 56² at patch 14); AttentionCut on 4 toy images; FOUND on 4 64²
images with dino-tiny; the training-free methods on their tiny backbones; the gpu tests only
collected), in well
under 3 minutes, so the command never rots; it writes a report only when ``--out`` is given.
"""

from __future__ import annotations

import datetime as dt
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from odbench.commands import options

#: The frozen extractors measured, full-size (GPU) and tiny (dry run).
EXTRACTORS = {
    "full": [
        "dino-vits16-random",
        "dino-vits8-random",
        "dino-vitb8-random",
        "moco-v3-vitb16-random",
        "clip-vitb16-random",
        "dinov2-vits14-random",
        "dinov2-vitb14-random",
        "dinov2-vitb14-reg-random",
        "sd-v1-4-random",
    ],
    "tiny": ["dino-tiny", "moco-tiny", "clip-tiny", "dinov2-tiny", "sd-tiny"],
}


#: Training-free methods timed end to end: (method, backbone), full-size (GPU) and tiny (dry run).
#: TokenCut / LOST and their "+BS" variants on DINOv2 (patch 14 on images of no multiple of 14).
KEY_METHODS = ("tokencut", "tokencut.bs", "lost", "lost.bs")
METHOD_ROWS = {
    "full": [("dsm", "dino-vits16-random"), ("dsm", "dino-vitb8-random")]
    + [(m, b) for b in ("dinov2-vits14-random", "dinov2-vitb14-reg-random") for m in KEY_METHODS]
    + [("maskcut", "dino-vitb8-random"), ("promerge", "dino-vitb8-random")],
    "tiny": [("dsm", "dino-tiny")]
    + [(m, "dinov2-tiny") for m in KEY_METHODS]
    + [("maskcut", "dino-tiny"), ("promerge", "dino-tiny")],
}


@dataclass
class Plan:
    """What one run measures (the GPU plan or the CPU dry-run plan)."""

    device: str
    dtype: str
    resolution: int
    steps: int
    batches: tuple[int, ...]
    extractors: list[str]
    sides: tuple[int, ...]
    sd_sides: tuple[int, ...]
    extractor_batch: int
    sd_extractor_steps: int
    ac_backbone: str
    ac_images: int
    ac_steps: int | None  # None: the card's T
    dry_run: bool
    lines: list[str] = field(default_factory=list)

    @classmethod
    def make(cls, dry_run: bool, device: str) -> Plan:
        if dry_run:
            return cls("cpu", "fp32", 32, 2, (1, 2), EXTRACTORS["tiny"], (32, 64), (32, 64), 2, 1,
                       "sd-tiny", 4, 1, True)  # fmt: skip
        return cls(device, "bf16", 512, 40, (1, 4, 16), EXTRACTORS["full"], (224, 448),
                   (256, 448), 16, 10, "sd-v1-4-random", 16, None, False)  # fmt: skip

    def say(self, line: str = "") -> None:
        click.echo(line)
        self.lines.append(line)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def step_gpu_tests(plan: Plan) -> None:
    """pytest -m gpu (dry run: collected only, they need CUDA)."""
    args = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider"]
    if plan.dry_run:
        args.append("--collect-only")
    tests = Path(__file__).resolve().parents[2] / "tests"
    if not tests.is_dir():
        plan.say("- gpu tests: no tests/ folder beside the package (installed wheel): skipped")
        return
    t0 = time.perf_counter()
    r = subprocess.run([*args, str(tests)], capture_output=True, text=True, check=False)
    tail = (r.stdout.strip().splitlines() or ["(no output)"])[-1]
    plan.say(f"- `pytest -m gpu{' --collect-only' if plan.dry_run else ''}`: {tail} "
             f"(exit {r.returncode}, {time.perf_counter() - t0:.0f} s)")  # fmt: skip
    if r.returncode not in (0, 5):  # 5: nothing collected
        plan.say("```\n" + "\n".join(r.stdout.splitlines()[-30:]) + "\n```")


def step_inversion(plan: Plan) -> None:
    """Inversion + reverse with capture: images/s, TFLOP/s vs peak, memory with/without."""
    import torch

    from odbench.backbones.diffusion import load_backbone
    from odbench.bench.backbone import _peak_tflops, count_flops, measure, time_passes

    name = "sd-tiny" if plan.dry_run else "sd-v1-4-random"
    cuda = plan.device.startswith("cuda")
    bb = load_backbone(name, device=plan.device, dtype=plan.dtype, resolution=plan.resolution)
    flops = count_flops(bb, 1)
    dev = torch.cuda.get_device_name() if cuda else platform.processor() or "cpu"
    peak = _peak_tflops(dev) if cuda else None
    plan.say(f"{name}, {plan.dtype}, {plan.resolution}², T = {plan.steps}; one UNet pass at "
             f"batch 1: {flops / 1e12:.4f} TFLOP; device peak "
             f"{f'{peak:.0f} TFLOP/s (dense bf16)' if peak else 'unknown'}")  # fmt: skip
    plan.say()
    plan.say("| batch | images/s plain | images/s captured | UNet TFLOP/s | of peak | "
             "peak mem plain | peak mem captured | capture state |")  # fmt: skip
    plan.say("|---|---|---|---|---|---|---|---|")
    mib = 2**20
    for b in plan.batches:
        plain = measure(bb, b, plan.steps, capture=False)
        cap = measure(bb, b, plan.steps, capture=True)
        passes = time_passes(bb, b, 2)
        tflops = flops * b / min(passes[0]) / 1e12
        share = f"{tflops / peak:.0%}" if peak else "-"
        if cuda:
            mem = (f"{plain['peak_memory_bytes'] / mib:.0f} MiB",
                   f"{cap['peak_memory_bytes'] / mib:.0f} MiB")  # fmt: skip
        else:
            mem = (f"+{passes[2][0] / mib:.0f} MiB RSS/pass", f"+{passes[2][1] / mib:.0f} MiB")
        plan.say(f"| {b} | {plain['images_per_s']:.3f} | {cap['images_per_s']:.3f} | "
                 f"{tflops:.2f} | {share} | {mem[0]} | {mem[1]} | "
                 f"{cap['capture_state_bytes'] / mib:.1f} MiB |")  # fmt: skip
    del bb
    if cuda:
        torch.cuda.empty_cache()


def step_extractors(plan: Plan) -> None:
    """images/s of each frozen extractor at two sizes (random weights, batch ``extractor_batch``)."""
    import torch

    from odbench.features import load_extractor

    plan.say("| extractor | " + " | ".join(f"side {i + 1}" for i in range(len(plan.sides)))
             + " | maps |")  # fmt: skip
    plan.say("|---|" + "---|" * (len(plan.sides) + 1))
    for name in plan.extractors:
        sd = name.startswith("sd")
        opts: dict[str, Any] = {"num_steps": plan.sd_extractor_steps} if sd else {}
        if sd:
            opts["dtype"] = plan.dtype
        fx = load_extractor(name, device=plan.device, **opts)
        if not sd and plan.dtype == "bf16":
            fx.to(plan.device, torch.bfloat16)
        cells = []
        for wanted in plan.sd_sides if sd else plan.sides:
            side = wanted // fx.input_multiple * fx.input_multiple  # 224 -> 224 at patch 14
            x = torch.rand(plan.extractor_batch, 3, side, side, generator=torch.Generator())
            fx.extract(x[:1])  # warm-up
            _sync(plan.device)
            t0 = time.perf_counter()
            maps = fx.extract(x)
            _sync(plan.device)
            cells.append(f"{side}²: {plan.extractor_batch / (time.perf_counter() - t0):.2f} img/s")
        shapes = ", ".join(f"{c}@/{s}" for c, s in zip(fx.channels, fx.strides))
        plan.say(f"| {name} | " + " | ".join(cells) + f" | {shapes} |")
        assert all(torch.isfinite(m).all() for m in maps), f"{name}: non-finite features"
        del fx, maps
    if sd:
        plan.say()
        plan.say(f"(SD: T = {plan.sd_extractor_steps} inversion + reverse steps, random CLIP "
                 "prior; images/s scale as 1/T)")  # fmt: skip


def step_attentioncut(plan: Plan) -> None:
    """AttentionCut end to end (prior, inversion, capture, cut) on toy images."""
    from odbench.data.base import create_dataset
    from odbench.methods.base import create_method

    ds = create_dataset("toy")
    images = [ds.load(i).image for i in ds.ids()[: plan.ac_images]]
    kw: dict[str, Any] = {"backbone": plan.ac_backbone}
    if plan.ac_steps is not None:
        kw["num_steps"] = plan.ac_steps
    method: Any = create_method("attentioncut", device=plan.device, **kw)
    method.predict(images[:1])  # loads SD and the prior, warms up
    t0 = time.perf_counter()
    maps = []
    for i in range(0, len(images), 4):
        maps += method.predict(images[i : i + 4])
    dt_s = time.perf_counter() - t0
    ok = all(
        m.shape == im.shape[:2] and 0 <= m.min() and m.max() <= 1 for m, im in zip(maps, images)
    )
    plan.say(f"attentioncut on {len(images)} toy images, backbone {plan.ac_backbone}, "
             f"T = {method.hparams['num_steps']}, batches of 4: {dt_s:.1f} s, "
             f"{len(images) / dt_s:.3f} images/s; maps valid: {ok}")  # fmt: skip


def step_found(plan: Plan) -> None:
    """FOUND's variants end to end on random images: images/s of the device part (backbone +
    head) and of the whole (with the single-component / bilateral-solver post-processing)."""
    import tempfile

    import numpy as np
    import torch

    from odbench.methods.base import create_method

    backbone, n, shape = ("dino-tiny", 4, (64, 64)) if plan.dry_run else (
        "dino-vits8-random", 16, (320, 400))  # fmt: skip
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (*shape, 3), dtype=np.uint8) for _ in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        head = Path(tmp) / "decoder_weights.pt"
        channels = 48 if plan.dry_run else 384
        torch.save({"decoder": torch.nn.Conv2d(channels, 1, 1).state_dict()}, head)
        for name in ("found", "found.multi", "found.bs"):
            method: Any = create_method(name, device=plan.device, backbone=backbone,
                                        checkpoint=str(head))  # fmt: skip
            method.predict(images[:1])  # loads the backbone, warms up
            _sync(plan.device)
            t0 = time.perf_counter()
            raws = method.forward(images)
            _sync(plan.device)
            t1 = time.perf_counter()
            maps = [method.postprocess(im, r, method.hparams) for im, r in zip(images, raws)]
            t2 = time.perf_counter()
            ok = all(m.shape == shape and 0 <= m.min() and m.max() <= 1 for m in maps)
            plan.say(f"- {name}, {backbone}, {n} images {shape[0]}×{shape[1]}: device part "
                     f"{n / (t1 - t0):.2f} images/s, end to end {n / (t2 - t0):.2f} images/s "
                     f"(post-processing {(t2 - t1) / n * 1e3:.0f} ms/image on the CPU); "
                     f"maps valid: {ok}")  # fmt: skip


def step_methods(plan: Plan) -> None:
    """Each of :data:`METHOD_ROWS` on the toy images: images/s end to end, and per image the
    device part (``forward``) and the CPU part (``postprocess``, run here in this process)."""
    from odbench.data.base import create_dataset
    from odbench.methods.base import create_method

    ds = create_dataset("toy", n=plan.ac_images + 1)  # + the warm-up's own image: LOST
    *images, warm = [ds.load(i).image for i in ds.ids()]  # remembers the images it saw
    plan.say("| method | backbone | images/s end to end | forward ms/image | postprocess ms/image "
             "| maps valid |")  # fmt: skip
    plan.say("|---|---|---|---|---|---|")
    for name, backbone in METHOD_ROWS["tiny" if plan.dry_run else "full"]:
        method: Any = create_method(name, device=plan.device, backbone=backbone)
        method.predict([warm])  # loads the model, warms up
        _sync(plan.device)
        t0 = time.perf_counter()
        raws = method.forward(images)
        _sync(plan.device)
        t1 = time.perf_counter()
        post = type(method).postprocess
        maps = [post(im, r, method.hparams) for im, r in zip(images, raws)]
        t2 = time.perf_counter()
        ok = all(m.shape == im.shape[:2] and 0 <= m.min() and m.max() <= 1
                 for m, im in zip(maps, images))  # fmt: skip
        n = len(images)
        plan.say(f"| {name} | {backbone} | {n / (t2 - t0):.2f} | {1000 * (t1 - t0) / n:.1f} | "
                 f"{1000 * (t2 - t1) / n:.1f} | {ok} |")  # fmt: skip
        del method


STEPS = (
    ("gpu-marked tests", step_gpu_tests),
    ("Inversion + capture", step_inversion),
    ("Frozen extractors", step_extractors),
    ("AttentionCut end to end", step_attentioncut),
    ("FOUND end to end", step_found),
    ("Training-free methods end to end", step_methods),
)


def device_slug(device: str) -> str:
    import torch

    name = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "device"


def run(dry_run: bool, device: str | None, out: Path | None) -> Path | None:
    import torch

    from odbench.errors import UserError
    from odbench.outputs import check_output_folder

    device = "cpu" if dry_run else (device or "cuda")
    if not dry_run and not device.startswith("cuda"):  # the full-size plan: hours on a CPU
        raise UserError(
            f"--device {device}: odbench bench gpu measures a CUDA device (cuda or cuda:N); "
            "use --dry-run to run its steps on the CPU"
        )
    if out is not None:
        check_output_folder(out, "--out")  # fail now, not after the run
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("odbench bench gpu: torch sees no CUDA device; use --dry-run on a CPU")
    if out is None and not dry_run:
        out = Path("benchmarks") / "gpu"
    plan = Plan.make(dry_run, device)
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    target = None if out is None else out / f"{device_slug(device)}-{date}.md"
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)  # fail now, not after the run
    plan.say(f"# odbench bench gpu{' --dry-run' if dry_run else ''}: {device_slug(device)}, {date}")
    plan.say()
    plan.say(f"torch {torch.__version__}, device {device}, python {platform.python_version()}")
    total = time.perf_counter()
    for title, fn in STEPS:
        plan.say()
        plan.say(f"## {title}")
        plan.say()
        t0 = time.perf_counter()
        fn(plan)
        plan.say()
        plan.say(f"({time.perf_counter() - t0:.1f} s)")
    plan.say()
    plan.say(f"Total {time.perf_counter() - total:.0f} s.")
    if target is not None:
        from odbench.imageio import atomic_write_bytes

        atomic_write_bytes(target, ("\n".join(plan.lines) + "\n").encode())
        click.echo(f"report written to {target}")
    return target


@click.command("gpu")
@click.option("--dry-run", is_flag=True, help="Every step on the CPU with tiny models (< 3 min).")
@options.device(default=None, help="CUDA device (default cuda).")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Report folder (default benchmarks/gpu; a dry run writes one only with --out).",
)
def cli(dry_run: bool, device: str | None, out: Path | None) -> None:
    """The GPU check: gpu tests, SD inversion + capture, extractors, AttentionCut, FOUND,
    training-free methods; a report."""
    run(dry_run, device, out)
