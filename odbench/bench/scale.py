"""``odbench bench scale``: the same ``eval`` with 1 and with 2 processes (target >= 1.7x).

Runs ``python -m odbench eval`` once as one process and once under ``torchrun --nproc-per-node
2`` (gloo on loopback), each with a fresh prediction cache, ``--workers 1`` and every thread
pool limited to one thread (``OMP_NUM_THREADS=1`` …), so one process uses one core.  The method is CPU-bound (wCtr
by default) over the first ``--n`` images of the real ECSSD.  Reports the speed-up of the
evaluation itself (the results' ``wall_time_s``: from the first image to the written result,
the ranks' start-up excluded) and end to end (process start to exit, torch and accelerate
imports included), and checks that both runs produced the same metrics.  On a machine shared
with other work the wall-clock figure says as much about the load as about odbench: the load
average is printed beside it, and so is the speed-up two idle cores would give (the one
process's CPU time over the slowest rank's, which other processes' load does not change).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from odbench.bench import data_root_option, ecssd_images

TARGET_SPEEDUP = 1.7
_ONE_THREAD = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def failure_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The line that says why a run failed: odbench's own ``error:`` line (under torchrun it is
    followed by the launcher's report of the failed ranks), else the last line of output."""
    lines = [ln.strip() for ln in f"{proc.stdout}\n{proc.stderr}".splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(("error:", "Error:"))]
    return (errors or lines or ["(no output)"])[-1]


def _timed_eval(launcher: list[str], args: list[str], out: Path) -> tuple[float, dict[str, Any]]:
    """(end-to-end seconds, results JSON) of one ``eval`` writing into ``out``."""
    env = {**os.environ, **dict.fromkeys(_ONE_THREAD, "1")}
    cmd = [*launcher, "-m", "odbench", "eval", *args, "--results-dir", str(out / "results")]
    cmd += ["--cache-dir", str(out / "cache")]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise click.ClickException(f"{' '.join(cmd[:6])} … failed: {failure_line(proc)}")
    (path,) = sorted((out / "results").glob("*.json"))
    return elapsed, json.loads(path.read_text())


@click.command("scale")
@click.option(
    "--n",
    "n_images",
    type=click.IntRange(min=2),
    default=200,
    show_default=True,
    help="Images to evaluate (at least one per process).",
)
@click.option("--method", default="wctr", show_default=True, help="A CPU-bound method.")
@click.option("--toy", is_flag=True, help="Use the generated toy dataset instead of ECSSD.")
@data_root_option
def cli(n_images: int, method: str, toy: bool, data_root: Path | None) -> None:
    """eval with 1 and 2 processes on CPU: the speed-up (target >= 1.7x)."""
    from odbench.data.base import create_dataset

    if toy:
        args = ["--method", method, "--dataset", "toy", "--limit", str(n_images)]
        what = "toy"
        available = len(create_dataset("toy").ids())
    else:
        root = ecssd_images(data_root, "pass --toy").parent.parent
        args = ["--method", method, "--dataset", "ecssd", "--data-root", str(root)]
        args += ["--limit", str(n_images)]
        what = f"ECSSD from {root}"
        available = len(create_dataset("ecssd", data_root=root).ids())
    args += ["--device", "cpu", "--workers", "1"]  # one process = one core
    one_proc = [sys.executable]
    two_procs = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    two_procs += ["--master-addr", "127.0.0.1", "--master-port", str(_free_port())]
    shown = min(n_images, available)  # --limit beyond the dataset evaluates all of it
    click.echo(f"scale: {method} on the first {shown} images of {what}, one thread per process")
    with tempfile.TemporaryDirectory(prefix="odbench-scale-") as tmp:
        two_procs += ["--log-dir", str(Path(tmp) / "torchrun")]  # not /tmp/torchelastic_*
        e1, r1 = _timed_eval(one_proc, args, Path(tmp) / "one")
        e2, r2 = _timed_eval(two_procs, args, Path(tmp) / "two")
    if r1["metrics"] != r2["metrics"]:
        raise click.ClickException("1 and 2 processes gave different metrics: a bug; report it")
    n = r1["dataset"]["n_evaluated"]
    if n != n_images:
        click.echo(f"  (the dataset has {n} images: all of them were evaluated)")
    w1, w2 = float(r1["wall_time_s"]), float(r2["wall_time_s"])
    for label, wall, total in (("1 process  ", w1, e1), ("2 processes", w2, e2)):
        click.echo(
            f"  {label}  eval {wall:7.1f} s ({n / wall:5.2f} images/s)   end to end {total:7.1f} s"
        )
    speedup = w1 / w2
    click.echo(
        f"  speed-up    eval {speedup:.2f}x   end to end {e1 / e2:.2f}x   (metrics identical)"
    )
    # What two idle cores would give: the one process's CPU time over the slowest rank's (each
    # rank busy on its own core); the load of other processes does not enter it.
    ranks = [float(p["cpu_time_s"]) for p in r2["merged_from"]]
    cpu_speedup = float(r1["cpu_time_s"]) / max(ranks)
    click.echo(
        f"  CPU time    1 process {float(r1['cpu_time_s']):.1f} s, ranks "
        + " + ".join(f"{c:.1f}" for c in ranks)
        + f" s: {cpu_speedup:.2f}x on two idle cores"
    )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    click.echo(
        f"  machine: {os.cpu_count()} CPUs, load average {load} (other work slows both runs)"
    )
    verdict = "meets" if speedup >= TARGET_SPEEDUP else "MISSES"
    click.echo(f"  {verdict} the target of {TARGET_SPEEDUP:g}x (eval, wall clock)")
