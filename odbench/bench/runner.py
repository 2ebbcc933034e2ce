"""``odbench bench runner``: eval's pipeline against a plain decode of the same files, its memory
against the dataset's size, and each method's throughput against its reference loop.

1. **Pipeline** (``--n`` real ECSSD images, center-prior: a method that costs almost nothing, so the
   pipeline is what is timed), best of ``--rounds`` interleaved rounds (one of each timing per
   round, so a burst of load on the shared machine hits them alike): (a) a plain, single-process
   decode of every image and mask file the run reads (``Dataset.load``: the floor any evaluation
   pays); (s) eval's per-image steps (decode, predict, check + quantize, store, score) called one
   after the other in a plain loop, each step timed: what eval must do, without its claims, look-ups
   and pipeline; (s2) that loop in two processes (this one and one forked), each over every other
   image: what two processes gain on this machine with no pipeline at all, the ceiling of
   (b)/(c); (b) ``eval`` with one worker; (c) with two. Each eval starts from an empty
   prediction cache and writes no results file, so it decodes, predicts, stores and scores every
   image.  Reported: the steps' times per image, (s)/(a) and (b) - (s) (what the steps cost beyond
   decoding, and the glue), the steps but storing over their own decode (the least eval with one
   worker can cost, whatever its cache costs), (b)/(a) (target <= 1.2: the pipeline adds little to
   decoding), (b)/(c) (target >= 1.6, goal 1.8: workers scale) beside (s)/(s2) and (c)/(s2), and
   whether (b) and (c) gave identical metrics and records.  "1 worker": decoding, the model,
   storing and scoring all in this process, one image after the other; "2 workers": this
   process and one forked from it (:class:`odbench.forked.Pipeline`).  Wall-clock times, with the
   CPU time per image of all the processes of a timing (``getrusage`` of this one and of its
   reaped workers; the least of the rounds: CPU time inflates less than wall time when others
   load the machine, but it does) and the load average before and after: the machine is shared.
2. **Memory** (``--memory-n``, 0: skipped): peak RSS of ``eval`` (a fresh process each: the
   ``VmHWM`` of the eval process) of center-prior and wctr on the first tenth and on
   all of ``--memory-n`` generated 64×48 images (target: within 10 %).
3. **Methods** (``--method-images``, 0: skipped; ``--methods`` picks some):
   :mod:`odbench.bench.throughput`, each method's eval against its original repository's
   per-image loop (:mod:`odbench.bench.references`), wall and CPU time.

``--dry-run`` prints the plan (and each method's expected time) without running anything;
``--n 0`` skips the pipeline part.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np

from odbench.bench import data_root_option, ecssd_images

TARGET_OVERHEAD = 1.2
TARGET_SPEEDUP = 1.6
GOAL_SPEEDUP = 1.8
TARGET_MEMORY = 1.10
#: eval's per-image steps, as the pipeline part times them one by one
STEPS = ("decode", "predict", "check + quantize", "store", "score")


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min)"


@click.command("runner")
@click.option(
    "--n",
    "n_images",
    type=click.IntRange(min=0),
    default=300,
    show_default=True,
    help="ECSSD images to time (0: skipped).",
)
@click.option(
    "--rounds",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Interleaved rounds (best kept).",
)
@click.option(
    "--memory-n",
    type=click.IntRange(min=0),
    default=5000,
    show_default=True,
    help="Generated images of the memory check (0: skipped).",
)
@click.option(
    "--method-images",
    type=click.IntRange(min=0),
    default=4,
    show_default=True,
    help="ECSSD images per method of the throughput part (full-size random architectures on "
    "CPU: 0.4-6 s per image per timing; see --dry-run).",
)
@click.option(
    "--methods",
    default="",
    help="Comma-separated methods of the throughput part (default: all; --dry-run lists them).",
)
@click.option(
    "--attentioncut-steps",
    type=click.IntRange(min=0),
    default=0,
    help="attentioncut's T in the throughput part (0: the card's 40; fewer for a quicker look "
    "at the same architecture, the row then says T).",
)
@click.option("--dry-run", is_flag=True, help="Print the plan and its expected time; run nothing.")
@data_root_option
def cli(
    n_images: int,
    rounds: int,
    memory_n: int,
    method_images: int,
    methods: str,
    attentioncut_steps: int,
    dry_run: bool,
    data_root: Path | None,
) -> None:
    """eval's pipeline vs a plain decode, its memory vs the dataset's size, methods vs their
    reference loops."""
    from odbench.bench.throughput import CASES, plan

    only = tuple(m.strip() for m in methods.split(",") if m.strip())
    unknown = sorted(set(only) - {c.name for c in CASES})
    if unknown:
        raise click.BadParameter(
            f"no throughput case for {', '.join(unknown)}; choose from "
            + ", ".join(c.name for c in CASES),
            param_hint="--methods",
        )
    root = ecssd_images(data_root, "run it where the real data is").parent.parent
    n_images, method_images = _available(root, n_images, method_images)
    if dry_run:
        click.echo(f"runner plan (data root {root}; nothing is run):")
        click.echo(
            f"  pipeline: {n_images} ECSSD images, {rounds} rounds"
            if n_images
            else "  pipeline: skipped"
        )
        click.echo(f"  memory: {memory_n} generated images" if memory_n else "  memory: skipped")
        if method_images:
            click.echo("\n".join(plan(method_images, rounds, only, attentioncut_steps)))
        return
    click.echo(f"runner: {os.cpu_count()} CPUs, shared: {load_average()}")
    if n_images:
        pipeline(root, n_images, rounds)
    if memory_n:
        memory(memory_n)
    if method_images:
        from odbench.bench.throughput import method_rows

        click.echo(
            f"methods: {method_images} ECSSD images each, best of {rounds} interleaved rounds"
        )
        click.echo("\n".join(plan(method_images, rounds, only, attentioncut_steps)))
        method_rows(root, method_images, rounds, click.echo, only, attentioncut_steps)
    click.echo(f"done: {load_average()}")


def _available(root: Path, *counts: int) -> tuple[int, ...]:
    """``counts`` of ECSSD images, each at most the number of ECSSD samples under ``root`` (a
    line says so when one is cut: a subset is never shown as more images than were timed)."""
    from odbench.data.base import create_dataset

    available = len(create_dataset("ecssd", data_root=root).ids())
    if any(c > available for c in counts):
        click.echo(f"only {available} ECSSD images under {root}: counts above it cut to it")
    return tuple(min(c, available) for c in counts)


def pipeline(root: Path, n_images: int, rounds: int) -> None:
    from odbench.bench.throughput import interleaved_cpu
    from odbench.cache import PredictionCache, quantize
    from odbench.data.base import create_dataset
    from odbench.forked import forked_map
    from odbench.methods.base import create_method
    from odbench.metrics.protocols import DEFAULT_PROTOCOL, get_protocol
    from odbench.metrics.saliency import score_image
    from odbench.phases import check_map
    from odbench.runner import run
    from odbench.scoring.folders import keep_freed_memory

    keep_freed_memory()  # what eval sets, process-wide: the decode floor gets it too
    dataset = create_dataset("ecssd", data_root=root)
    ids = dataset.ids()[:n_images]
    method = create_method("center-prior")
    protocol = get_protocol(DEFAULT_PROTOCOL)
    click.echo(f"pipeline: {len(ids)} ECSSD images from {root}, best of {rounds} rounds")
    results: dict[int, Any] = {}

    def decode() -> None:
        for sample_id in ids:
            dataset.load(sample_id)

    stage_times: list[dict[str, float]] = []

    def loop(chosen: list[str], cache: PredictionCache) -> dict[str, float]:
        """eval's per-image steps over ``chosen``, called one after the other in a plain loop (no
        claims, no look-ups, no pipeline), each timed: what eval does per image, without its
        glue."""
        spent = dict.fromkeys(STEPS, 0.0)
        for sample_id in chosen:
            t0 = time.perf_counter()
            sample = dataset.load(sample_id)
            assert sample.mask is not None  # ECSSD: every image has its mask
            t1 = time.perf_counter()
            (raw,) = method.predict([sample.image])
            t2 = time.perf_counter()
            q = quantize(check_map(method, sample, raw))
            t3 = time.perf_counter()
            cache.put(sample_id, q, None)
            t4 = time.perf_counter()
            score_image(q, sample.mask, protocol, sample_id)
            t5 = time.perf_counter()
            for key, t in zip(STEPS, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                spent[key] += t
        return spent

    def steps() -> None:
        with tempfile.TemporaryDirectory(prefix="odbench-bench-") as tmp:
            stage_times.append(loop(ids, PredictionCache(Path(tmp))))

    def steps_forked() -> None:
        """The plain loop in two processes, each over every other image (this one and one
        forked, as eval's two workers; index 0 of the map is nothing: it runs before forking)."""
        halves = [[], ids[0::2], ids[1::2]]
        with tempfile.TemporaryDirectory(prefix="odbench-bench-") as tmp:
            cache = PredictionCache(Path(tmp))
            with forked_map(lambda k: loop(halves[k], cache), len(halves), 2) as spent:
                for _ in spent:
                    pass

    def evaluate(workers: int) -> Callable[[], object]:
        def go() -> object:
            with tempfile.TemporaryDirectory(prefix="odbench-bench-") as tmp:
                results[workers] = run(
                    method,
                    dataset,
                    protocol,
                    dataset_name="ecssd",
                    limit=len(ids),
                    workers=workers,
                    cache_dir=Path(tmp),
                    results_dir=None,
                )
            return results[workers]

        return go

    decode()  # warm the page cache and imports
    evaluate(1)()
    fns = {
        "decode": decode,
        "steps": steps,
        "steps2": steps_forked,
        "one": evaluate(1),
        "two": evaluate(2),
    }
    best = interleaved_cpu(fns, rounds)
    labels = {
        "decode": "plain decode (1 process)",
        "steps": "eval's steps, plain loop",
        "steps2": "the loop in 2 processes",
        "one": "eval, 1 worker",
        "two": "eval, 2 workers",
    }
    n = len(ids)
    for key, t in best.items():
        click.echo(
            f"  {labels[key]:24s} {t.wall:6.2f} s wall  {1000 * t.wall / n:6.2f} ms/image;  "
            f"CPU {1000 * t.cpu / n:5.2f} ms/image (all its processes)"
        )
    spent = min(stage_times, key=lambda d: sum(d.values()))  # the round of least time
    click.echo(
        "  eval's steps, per image (the plain loop's fastest round): "
        + ", ".join(f"{k} {1000 * v / n:.2f} ms" for k, v in spent.items())
        + f"; the loop is {best['steps'].wall / best['decode'].wall:.2f}x the plain decode, eval "
        f"(1 worker) {1000 * (best['one'].wall - best['steps'].wall) / n:+.2f} ms/image beyond it"
    )
    unstored = (sum(spent.values()) - spent["store"]) / spent["decode"]
    click.echo(
        f"  the steps but storing, per image, are {unstored:.2f}x their decode: the least a "
        "1-worker eval that checks, quantizes and scores each map can cost, even with a free cache"
    )
    beyond = {k: 1000 * (best[k].cpu - best["decode"].cpu) / n for k in ("one", "two")}
    click.echo(
        f"  CPU beyond decoding: 1 worker {beyond['one']:+.2f} ms/image, 2 workers "
        f"{beyond['two']:+.2f} ms/image"
    )
    overhead = best["one"].wall / best["decode"].wall
    speedup = best["one"].wall / best["two"].wall
    verdict = "meets" if overhead <= TARGET_OVERHEAD else "MISSES"
    click.echo(f"  1 worker vs decode: {overhead:.2f}x ({verdict} <= {TARGET_OVERHEAD}x)")
    verdict = "meets" if speedup >= TARGET_SPEEDUP else "MISSES"
    goal = "goal met" if speedup >= GOAL_SPEEDUP else f"goal {GOAL_SPEEDUP}x"
    click.echo(
        f"  2 workers vs 1:     {speedup:.2f}x faster ({verdict} >= {TARGET_SPEEDUP}x; {goal})"
    )
    ceiling = best["steps"].wall / best["steps2"].wall
    glue = best["two"].wall / best["steps2"].wall
    click.echo(
        f"  the plain loop in 2 processes vs 1: {ceiling:.2f}x faster (what two processes gain "
        f"here, with no pipeline); eval's 2 workers take {glue:.2f}x its time"
    )
    one, two = results[1], results[2]
    same = one.metrics == two.metrics and all(
        np.array_equal(v, two.records.arrays()[k]) for k, v in one.records.arrays().items()
    )
    click.echo(f"  metrics and records identical across worker counts: {'yes' if same else 'NO'}")


def write_images(folder: Path, n: int) -> None:
    """``n`` 64×48 JPEG images with a bright ellipse and their PNG masks."""
    from odbench.imageio import write_png

    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    yy, xx = np.mgrid[:48, :64]
    import cv2

    for i in range(n):
        cy, cx, ry, rx = (
            rng.integers(12, 36),
            rng.integers(16, 48),
            rng.integers(6, 14),
            rng.integers(8, 20),
        )
        mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        image = rng.integers(0, 120, (48, 64, 3), dtype=np.uint8)
        image[mask] = rng.integers(120, 256, 3, dtype=np.uint8)
        cv2.imwrite(str(folder / "images" / f"{i:05d}.jpg"), image[..., ::-1])
        write_png(folder / "masks" / f"{i:05d}.png", mask.astype(np.uint8) * 255)


EVAL = """
import sys
from pathlib import Path
from odbench.runner import run_eval
method, root, n, cache = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
run_eval(method, "folder", data_root=root, limit=n, workers=2, cache_dir=cache, results_dir=None)
status = Path("/proc/self/status").read_text().split("\\n")
print(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
"""


def peak_rss_mib(method: str, root: Path, n: int, cache: Path) -> float:
    """Peak RSS (MiB) of a fresh ``eval`` process (``VmHWM``: its own, since its start; the
    forked workers hold no records)."""
    args = [sys.executable, "-c", EVAL, method, str(root), str(n), str(cache)]
    out = subprocess.run(args, capture_output=True, text=True)
    if out.returncode != 0:
        raise click.ClickException(f"eval of {method} on {n} images failed: {out.stderr[-500:]}")
    return int(out.stdout.split()[-1]) / 1024  # kB


def memory(n: int) -> None:
    small = max(1, n // 10)
    click.echo(f"memory: peak RSS of eval (2 workers) on {small} and {n} generated 64x48 images")
    with tempfile.TemporaryDirectory(prefix="odbench-bench-") as tmp:
        root = Path(tmp) / "data"
        write_images(root, n)
        for method in ("center-prior", "wctr"):
            rss = [peak_rss_mib(method, root, k, Path(tmp) / f"cache-{k}") for k in (small, n)]
            ratio = rss[1] / rss[0]
            verdict = "meets" if ratio <= TARGET_MEMORY else "MISSES"
            click.echo(
                f"  {method:14s} {rss[0]:7.1f} MiB on {small}, {rss[1]:7.1f} MiB on {n}: "
                f"{ratio:.3f}x ({verdict} <= {TARGET_MEMORY}x)"
            )
