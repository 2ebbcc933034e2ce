"""``odbench bench wctr``: wCtr images/s on one core (target >= 5 images/s per core).

Runs :func:`odbench.methods.wctr.wctr_saliency` on the first ``--n`` ECSSD images (``--toy``:
generated 300x400 toy images instead; without it, missing ECSSD is an error) with every
thread pool limited to one thread, and reports images/s together with the share of the time
spent in the superpixel stage (SLIC + graph) measured on the same images in the same process.
Rates are per CPU-second of this process (``time.process_time``), so other load on the machine
does not count against them; the wall-clock rate is printed beside.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np

from odbench.bench import data_root_option, ecssd_images, one_thread

TARGET_IMAGES_PER_S = 5.0


def _images(data_root: Path | None, n: int, toy: bool) -> tuple[list[np.ndarray], str]:
    if toy:
        from odbench.data.toy import ToyDataset

        ds = ToyDataset(n=n, size=(300, 400))  # ECSSD's typical size
        return [ds.load(i).image for i in ds.ids()], f"{n} 300x400 toy images (--toy)"
    from odbench.imageio import read_rgb

    folder = ecssd_images(data_root, "use --toy to time generated images")
    files = sorted(folder.glob("*.jpg"))[:n]
    return [read_rgb(f) for f in files], f"{len(files)} ECSSD images from {folder}"


@click.command("wctr")
@click.option(
    "--n",
    "n_images",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Images to time.",
)
@data_root_option
@click.option("--toy", is_flag=True, help="Time generated toy images instead of ECSSD.")
def cli(n_images: int, data_root: Path | None, toy: bool) -> None:
    """wCtr images/s on one core."""
    from odbench.cards import method_card
    from odbench.methods.wctr import build_graph, wctr_saliency

    card = method_card("wctr")
    hp = dict(card.hyperparameters) if card is not None else {}
    images, what = _images(data_root, n_images, toy)
    click.echo(f"wctr: {what}, one thread, the card's settings")
    with one_thread():
        wctr_saliency(images[0], **hp)  # warm-up (imports, caches)
        c0 = time.process_time()
        for im in images:
            build_graph(im, hp["pixels_per_superpixel"], hp["compactness"])
        c_graph = time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()
        for im in images:
            wctr_saliency(im, **hp)
        t_total, c_total = time.perf_counter() - t0, time.process_time() - c0
    n = len(images)
    rate = n / c_total
    click.echo(
        f"  full pipeline   {1000 * c_total / n:7.1f} ms CPU/image  {rate:6.2f} images/s per core "
        f"(wall clock {n / t_total:.2f} images/s)"
    )
    click.echo(
        f"  SLIC + graph    {1000 * c_graph / n:7.1f} ms CPU/image  "
        f"({100 * c_graph / c_total:.0f}% of the pipeline)"
    )
    verdict = "meets" if rate >= TARGET_IMAGES_PER_S else "MISSES"
    click.echo(f"  {verdict} the target of {TARGET_IMAGES_PER_S:g} images/s per core (CPU time)")
