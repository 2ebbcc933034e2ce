"""``odbench bench backbone``: speed and memory of DDIM inversion + reverse pass + capture.

The model is SD-1.4's real architecture with random weights (``load_backbone("sd-v1-4-random")``:
UNet 859.5 M, VAE 83.7 M, text encoder 123.1 M parameters, the real config values; no download),
run through the same :meth:`DiffusionBackbone.invert` code path as the real model.  Each UNet pass
is timed by forward hooks on the UNet, so inversion passes (never captured) and reverse passes
(captured or not) are told apart, and the capture overhead is a ratio measured in one process:

* without capture (``NO_CAPTURE``) and with the default capture (cross-attention of all layers at
  the down-path sides, self-attention running sums, the six Eq. 8 feature blocks);
* FLOPs of one UNet pass counted with ``torch.utils.flop_counter`` during the warm-up pass;
* memory: on CUDA ``max_memory_allocated`` with and without capture; on CPU the peak RSS above
  the pre-pass level (sampled, :class:`PeakRSS`) of one plain and one captured UNet pass; and the
  exact size of the capture state (running sums) after an ``invert``.

Capture overhead: single UNet passes at t = 501 alternate without and with capture installed
(``DiffusionBackbone.capturing``), ``--repeats`` times each; the fastest pass of each condition
is kept (load from other processes on a shared machine only ever adds time).  The end-to-end
``invert`` runs (once per condition) give images/s, image-passes/s and the capture state size.

Defaults: CPU -> 256² images, T = 2, batch 1, fp32; CUDA -> 512², T = 40, batches 1, 4, 16, bf16.
"""

from __future__ import annotations

import json
import platform
import resource
import threading
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import click

from odbench.bench import SD_DTYPES, SD_MULTIPLE, batch_sizes, multiple_of
from odbench.commands import options

#: Dense fp16/bf16 tensor-core peak, TFLOP/s, by device-name substring (vendor data sheets).
PEAK_TFLOPS = {"H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0}


def _peak_tflops(device_name: str) -> float | None:
    for key, value in PEAK_TFLOPS.items():
        if key in device_name:
            return value
    return None


class PassTimer:
    """Wall time of every UNet forward (synchronising CUDA), via forward hooks."""

    def __init__(self, unet: Any, cuda: bool) -> None:
        import torch

        self.times: list[float] = []
        self._sync = torch.cuda.synchronize if cuda else (lambda: None)
        self._t0 = 0.0
        self._handles = [
            unet.register_forward_pre_hook(self._start),
            unet.register_forward_hook(self._stop),
        ]

    def _start(self, *args: Any) -> None:
        self._sync()
        self._t0 = time.perf_counter()

    def _stop(self, *args: Any) -> None:
        self._sync()
        self.times.append(time.perf_counter() - self._t0)

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


class PeakRSS:
    """Peak resident memory above the level at entry, sampled every ``interval`` s by a thread.

    Large tensors (the 64 MiB attention matrices) are mmap-allocated by glibc and returned on
    free, so the RSS follows live tensor memory closely on Linux."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.base = self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self.base = self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())

    @property
    def extra(self) -> int:
        return self.peak - self.base


def _capture_state_bytes(caps: Any) -> int:
    """Bytes of the running sums behind a Captures (all-token cross maps, self sums, features)."""
    tensors = [*(caps.cross_all or {}).values(), *caps.self_attn.values(), *caps.features.values()]
    return int(sum(t.numel() * t.element_size() for t in tensors))


def count_flops(bb: Any, batch: int) -> int:
    """FLOPs of one UNet pass at the backbone's resolution (torch's flop counter)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    side = bb.latent_side
    x = torch.randn(batch, 4, side, side, device=bb.device)
    text = bb.encode_text(["a photo of a dog"] * batch)
    with FlopCounterMode(display=False) as counter:
        bb.eps(x, 501, text)
    return int(counter.get_total_flops())


def measure(bb: Any, batch: int, steps: int, capture: bool) -> dict[str, Any]:
    """One ``invert`` of ``batch`` random images; per-pass times split inversion / reverse."""
    import numpy as np
    import torch

    from odbench.backbones.diffusion import NO_CAPTURE, Capture

    cuda = bb.device.type == "cuda"
    images = np.random.default_rng(0).integers(0, 256, (batch, 64, 64, 3), dtype=np.uint8)
    prompt, idx = bb.class_prompt("great white shark")
    cap = Capture(keep_all_tokens=True) if capture else NO_CAPTURE
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    timer = PassTimer(bb.unet, cuda)
    t0 = time.perf_counter()
    try:
        out = bb.invert(images, prompt, idx, num_steps=steps, capture=cap, decode=False)
    finally:
        timer.remove()
    total = time.perf_counter() - t0
    inv, rev = timer.times[:steps], timer.times[steps:]
    result: dict[str, Any] = {
        "batch": batch,
        "capture": capture,
        "seconds_total": total,
        "seconds_per_inversion_pass": float(np.mean(inv)),
        "seconds_per_reverse_pass": float(np.mean(rev)),
        "images_per_s": batch / total,
        "image_passes_per_s": 2 * steps * batch / sum(timer.times),
        "capture_state_bytes": _capture_state_bytes(out.captures),
        "finite": bool(out.finite.all()),
    }
    if cuda:
        result["peak_memory_bytes"] = int(torch.cuda.max_memory_allocated())
    return result


def time_passes(bb: Any, batch: int, repeats: int) -> tuple[list[float], list[float], list[int]]:
    """Seconds of single UNet passes, alternating plain / captured (default Capture), and on CPU
    the peak RSS above the pre-pass level of the first plain and the first captured pass."""
    import torch

    from odbench.backbones.diffusion import Capture

    cuda = bb.device.type == "cuda"
    side = bb.latent_side
    x = torch.randn(batch, 4, side, side, generator=torch.Generator().manual_seed(0))
    x = x.to(bb.device)
    text = bb.encode_text(["a photo of a great white shark"] * batch)
    plain: list[float] = []
    captured: list[float] = []
    peaks: list[int] = []
    for r in range(repeats):
        for times, capture in ((plain, False), (captured, True)):
            if cuda:
                torch.cuda.synchronize()
            with PeakRSS() if r == 0 and not cuda else nullcontext() as rss:
                t0 = time.perf_counter()
                if capture:
                    with bb.capturing(Capture()):
                        bb.eps(x, 501, text)
                else:
                    bb.eps(x, 501, text)
                if cuda:
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
            if rss is not None:
                peaks.append(rss.extra)
    return plain, captured, peaks


@click.command("backbone")
@options.device(default=None, help="cpu or cuda (default: cuda when available).")
@click.option(
    "--dtype",
    type=click.Choice(SD_DTYPES),
    default=None,
    help="Default: fp32 cpu, bf16 cuda.",
)
@click.option(
    "--resolution",
    type=int,
    default=None,
    callback=multiple_of(SD_MULTIPLE),
    help=f"Image side, a multiple of {SD_MULTIPLE} (default 256 cpu, 512 cuda).",
)
@click.option(
    "--steps",
    type=click.IntRange(1, 1000),
    default=None,
    help="DDIM steps T (default 2 cpu, 40 cuda).",
)
@click.option(
    "--batches",
    default=None,
    callback=batch_sizes,
    help="Comma-separated batch sizes (default 1 / 1,4,16).",
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Passes per condition.",
)
@click.option("--json-out", type=click.Path(dir_okay=False), default=None, help="Write results.")
def cli(
    device: str | None,
    dtype: str | None,
    resolution: int | None,
    steps: int | None,
    batches: str | None,
    repeats: int,
    json_out: str | None,
) -> None:
    """SD-1.4 (random weights) inversion + reverse + capture: s/pass, overhead, memory."""
    import torch

    from odbench.backbones.diffusion import load_backbone
    from odbench.distributed import resolve_device
    from odbench.outputs import check_output_file

    if json_out:
        check_output_file(json_out, "--json-out")  # fail now, not after the run
    device = resolve_device(device or "auto")
    cuda = device.startswith("cuda")
    dtype = dtype or ("bf16" if cuda else "fp32")
    resolution = resolution or (512 if cuda else 256)
    steps = steps or (40 if cuda else 2)
    sizes = [int(b) for b in (batches or ("1,4,16" if cuda else "1")).split(",")]
    name = torch.cuda.get_device_name() if cuda else platform.processor() or "cpu"
    click.echo(
        f"device {device} ({name}), {dtype}, {resolution}² images, T={steps}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    t0 = time.perf_counter()
    bb = load_backbone("sd-v1-4-random", device=device, dtype=dtype, resolution=resolution)
    click.echo(f"built SD-1.4 architecture (random weights) in {time.perf_counter() - t0:.1f} s")
    flops = count_flops(bb, 1)  # also the warm-up pass
    click.echo(f"UNet pass at {resolution}², batch 1: {flops / 1e12:.3f} TFLOP")
    rows = []
    for b in sizes:
        plain = measure(bb, b, steps, capture=False)
        cap = measure(bb, b, steps, capture=True)
        passes = time_passes(bb, b, repeats)
        rows.append(_report(plain, cap, passes, flops, name, cuda))
    if json_out:
        from odbench.imageio import atomic_write_bytes

        doc = {
            "benchmark": "backbone",
            "device": device,
            "device_name": name,
            "dtype": dtype,
            "resolution": resolution,
            "steps": steps,
            "flops_per_pass": flops,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "rows": rows,
        }
        atomic_write_bytes(Path(json_out), (json.dumps(doc, indent=1) + "\n").encode())


def _report(
    plain: dict[str, Any],
    cap: dict[str, Any],
    passes: tuple[list[float], list[float], list[int]],
    flops: int,
    name: str,
    cuda: bool,
) -> dict[str, Any]:
    b = plain["batch"]
    best_plain, best_cap = min(passes[0]), min(passes[1])
    overhead = best_cap / best_plain - 1.0
    tflops = flops * b / best_plain / 1e12
    peak = _peak_tflops(name) if cuda else None
    click.echo(
        f"batch {b}: UNet pass {best_plain:.3f} s plain, {best_cap:.3f} s captured "
        f"(best of {len(passes[0])}) -> capture overhead {overhead:+.1%}; "
        f"{tflops:.3f} TFLOP/s" + (f" ({tflops / peak:.0%} of {peak:.0f} peak)" if peak else "")
    )
    click.echo(
        f"  invert (T inversion + T reverse passes): {plain['images_per_s']:.4f} images/s plain, "
        f"{cap['images_per_s']:.4f} captured; {plain['image_passes_per_s']:.3f} image-passes/s; "
        f"finite: {plain['finite'] and cap['finite']}"
    )
    mib = 2**20
    if cuda:
        click.echo(
            f"  peak GPU memory {plain['peak_memory_bytes'] / mib:.0f} MiB plain, "
            f"{cap['peak_memory_bytes'] / mib:.0f} MiB captured "
            f"(+{(cap['peak_memory_bytes'] - plain['peak_memory_bytes']) / mib:.0f} MiB)"
        )
    else:
        rss_plain, rss_cap = passes[2]
        click.echo(
            f"  peak RSS above the pre-pass level: {rss_plain / mib:.0f} MiB plain pass, "
            f"{rss_cap / mib:.0f} MiB captured pass -> capture adds {(rss_cap - rss_plain) / mib:.0f} MiB"
        )
    click.echo(f"  capture state (running sums): {cap['capture_state_bytes'] / mib:.1f} MiB")
    return {
        "plain": plain,
        "captured": cap,
        "pass_seconds_plain": passes[0],
        "pass_seconds_captured": passes[1],
        "capture_overhead": overhead,
        "tflops": tflops,
        "peak_tflops": peak,
        "pass_peak_rss_extra_bytes": passes[2],
    }
