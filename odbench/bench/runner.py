"""``odbench bench runner``: the runner's input pipeline against a plain decode of the same files.

Three timings over the first ``--n`` real ECSSD images, each the best of ``--repeats`` runs in
this process: (a) a plain, single-threaded decode of every image and mask file the run reads
(``Dataset.load``: the floor any evaluation pays); (b) ``eval``
of ``center-prior`` (a method that costs almost nothing, so the pipeline is what is timed) with
one worker; (c) the same with two workers.  Each eval starts from an empty prediction cache and
writes no results file, so it decodes, predicts, stores and scores every image.  Reported: (b)/(a)
(target <= 1.2: the pipeline adds little to decoding) and (b)/(c) (target >= 1.6: workers
scale).  Wall-clock times: on a shared, busy machine they are noisy; the CPU time of the process
is printed beside them.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import click

from odbench.bench import data_root_option, ecssd_images

TARGET_OVERHEAD = 1.2
TARGET_SPEEDUP = 1.6


def _best(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(best wall seconds, CPU seconds of that run) over ``repeats`` runs."""
    best = (float("inf"), 0.0)
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        best = min(best, (wall, cpu))
    return best


@click.command("runner")
@click.option("--n", "n_images", default=300, show_default=True, help="ECSSD images to time.")
@click.option("--repeats", default=3, show_default=True, help="Runs per timing (best kept).")
@data_root_option
def cli(n_images: int, repeats: int, data_root: Path | None) -> None:
    """eval of center-prior on real ECSSD vs a plain decode: 1 worker vs decode, 2 vs 1."""
    from odbench.data.base import create_dataset
    from odbench.methods.base import create_method
    from odbench.metrics.protocols import DEFAULT_PROTOCOL, get_protocol
    from odbench.runner import run

    root = ecssd_images(data_root, "run it where the real data is").parent.parent
    dataset = create_dataset("ecssd", data_root=root)
    ids = dataset.ids()[:n_images]
    method = create_method("center-prior")
    protocol = get_protocol(DEFAULT_PROTOCOL)
    click.echo(
        f"runner: {len(ids)} ECSSD images from {root}, best of {repeats}, "
        f"{os.cpu_count()} CPUs (shared: timings are noisy)"
    )

    def decode() -> None:
        for sample_id in ids:
            dataset.load(sample_id)

    def evaluate(workers: int) -> Callable[[], object]:
        def go() -> object:
            with tempfile.TemporaryDirectory(prefix="odbench-bench-") as tmp:
                return run(
                    method,
                    dataset,
                    protocol,
                    dataset_name="ecssd",
                    limit=len(ids),
                    workers=workers,
                    cache_dir=Path(tmp),
                    results_dir=None,
                )

        return go

    decode()  # warm the page cache and imports
    evaluate(1)()
    t_decode = _best(decode, repeats)
    t_one = _best(evaluate(1), repeats)
    t_two = _best(evaluate(2), repeats)
    for label, (wall, cpu) in (
        ("plain decode (1 thread)", t_decode),
        ("eval, 1 worker", t_one),
        ("eval, 2 workers", t_two),
    ):
        click.echo(
            f"  {label:24s} {wall:6.2f} s wall  {1000 * wall / len(ids):6.2f} ms/image  "
            f"(CPU {cpu:.2f} s)"
        )
    overhead = t_one[0] / t_decode[0]
    speedup = t_one[0] / t_two[0]
    verdict = "meets" if overhead <= TARGET_OVERHEAD else "MISSES"
    click.echo(f"  1 worker vs decode: {overhead:.2f}x ({verdict} <= {TARGET_OVERHEAD}x)")
    verdict = "meets" if speedup >= TARGET_SPEEDUP else "MISSES"
    click.echo(f"  2 workers vs 1:     {speedup:.2f}x faster ({verdict} >= {TARGET_SPEEDUP}x)")
