"""Benchmarks behind ``odbench bench NAME``: speed as ratios against a reference run in the same
process, measured per core."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from odbench.commands import options
from odbench.errors import UserError

#: The shared real data beside a source checkout (``../shared/data``), when present.
SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"

#: The side SD-1.4's images must be a multiple of (VAE x8, then the UNet's three
#: down-samplings x8): ``--resolution`` of the benchmarks on ``sd-v1-4-random``.
SD_MULTIPLE = 64

#: ``--dtype`` of the benchmarks on SD-1.4 (default: the device's).
SD_DTYPES = ("fp32", "fp16", "bf16")

#: ``--data-root`` of the benchmarks that read real images.
data_root_option = options.data_root(
    f"Data root holding ECSSD/ (default: $ODBENCH_DATA, else {SHARED_DATA})."
)


def ecssd_images(data_root: Path | None, fallback: str) -> Path:
    """``<data root>/ECSSD/images`` (data root: ``--data-root`` > ``$ODBENCH_DATA`` >
    :data:`SHARED_DATA`), or one loud error line naming where it looked and ``fallback`` (the
    option that runs the benchmark without real images)."""
    import os

    env = os.environ.get("ODBENCH_DATA", "")
    root = data_root if data_root is not None else Path(env) if env else SHARED_DATA
    folder = root / "ECSSD" / "images"
    if not folder.is_dir() or not any(folder.glob("*.jpg")):
        raise UserError(
            f"{folder}: no ECSSD images; pass --data-root (or set $ODBENCH_DATA) to the folder "
            f"holding ECSSD/, or {fallback}"
        )
    return folder


def read_pil_rgb(path: Path) -> Any:
    """``path`` as an RGB PIL image, read as the reference loops read it (Pillow, no EXIF
    rotation); an unreadable or truncated file is one error line naming it."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except OSError as e:  # UnidentifiedImageError, truncated data
        raise UserError(
            f"{path}: unreadable or corrupt image; replace it, or pass --data-root to another "
            "copy of ECSSD"
        ) from e


def multiple_of(m: int) -> Callable[[click.Context, click.Parameter, int | None], int | None]:
    """A click callback: the option's value is ``None`` or a positive multiple of ``m``."""

    def check(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
        if value is not None and (value < m or value % m):
            raise click.BadParameter(f"{value} is not a positive multiple of {m}")
        return value

    return check


def batch_sizes(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A click callback: ``None`` or comma-separated positive integers (``1,4,16``)."""
    if value is None:
        return None
    parts = [p.strip() for p in value.split(",")]
    if not all(p.isdigit() and int(p) > 0 for p in parts):
        raise click.BadParameter(
            f"{value!r}: give positive integers separated by commas, e.g. 1,4,16"
        )
    return value


@contextmanager
def one_thread() -> Iterator[None]:
    """Limit BLAS/OpenMP pools (threadpoolctl), OpenCV and, if loaded, torch to one thread."""
    import cv2
    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")
    torch_threads = torch.get_num_threads() if torch is not None else None
    cv2_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    if torch is not None:
        torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        cv2.setNumThreads(cv2_threads)
        if torch is not None and torch_threads is not None:
            torch.set_num_threads(torch_threads)


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its finished, waited-for children (the
    forked workers of score and eval)."""
    import os

    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def interleaved(
    fns: Mapping[str, Callable[[], object]], rounds: int
) -> dict[str, tuple[float, float]]:
    """(best wall seconds, CPU seconds of that run) of each over ``rounds`` interleaved rounds."""
    best = dict.fromkeys(fns, (float("inf"), 0.0))
    for _ in range(rounds):
        for name, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            best[name] = min(best[name], (time.perf_counter() - t0, time.process_time() - c0))
    return best
