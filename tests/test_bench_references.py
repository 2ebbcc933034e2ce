"""The reference loops of ``odbench bench runner``'s per-method part compute what eval predicts:
on tiny backbones, each loop's map of an image file equals eval's saved prediction of it (so the
throughput comparison times the same computation)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from odbench.bench.throughput import build_case
from odbench.cache import quantize
from odbench.data.base import create_dataset
from odbench.metrics.protocols import DEFAULT_PROTOCOL, get_protocol
from odbench.runner import run

#: Method, tiny extractor, largest |difference| allowed on the saved 16-bit scale (soft maps:
#: eval feeds the decoders batches, the reference one image, so the last float bits may differ).
CASES = [
    ("tokencut", "dino-tiny", 0),
    ("lost", "dino-tiny", 0),
    ("dsm", "dino-tiny", 0),
    ("found", "dino-tiny", 0),
    ("dino-decoder", "dino-tiny", 2),
    ("clip-decoder", "clip-tiny", 2),
    ("moco-decoder", "moco-tiny", 2),
    ("attentioncut", "sd-tiny", 0),
]


def write_folder(root: Path) -> None:
    """Five JPEG images of odd sizes (not multiples of any patch size; one larger than the
    decoders' resolution, so that it is downsampled): planted blobs, bright or dark, one or two
    (so that the component steps matter)."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    sizes = [(75, 101), (90, 67), (250, 330), (96, 140), (130, 90)]
    for i, (h, w) in enumerate(sizes):
        yy, xx = np.mgrid[:h, :w]
        mask = ((yy - h * 0.45) / (h / 4)) ** 2 + ((xx - w * 0.55) / (w / 5)) ** 2 <= 1
        if i >= 3:  # a second blob, apart from the first
            mask |= ((yy - h * 0.8) / (h / 8)) ** 2 + ((xx - w * 0.15) / (w / 9)) ** 2 <= 1
        low, high = (0, 110), (140, 256)
        if i % 2:  # dark object on a bright background
            low, high = high, low
        image = rng.integers(*low, (h, w, 3), dtype=np.uint8)
        image[mask] = rng.integers(*high, 3, dtype=np.uint8)
        Image.fromarray(image).save(root / "images" / f"im{i}.jpg", quality=90)
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / f"im{i}.png")


def graph_falls_apart(method: Any, image: np.ndarray) -> bool:
    """Whether DSM's graph of ``image`` has a second zero eigenvalue (a disconnected graph: the
    Fiedler vector is then any vector of a 2-D null space, in the original as in odbench, so
    two solvers need not agree)."""
    from scipy.linalg import eigh

    from odbench.methods.dsm import feature_affinity

    w = feature_affinity(method.features(image).keys)
    d = np.diag(w.sum(axis=1))
    return bool(eigh(d - w, d, eigvals_only=True)[1] < 1e-9)


@pytest.mark.parametrize(("name", "backbone", "tolerance"), CASES)
def test_reference_loop_maps_equal_eval_predictions(
    tmp_path: Path, name: str, backbone: str, tolerance: int
) -> None:
    write_folder(tmp_path / "data")
    dataset = create_dataset("folder", data_root=tmp_path / "data")
    steps = {"num_steps": 2} if name == "attentioncut" else {}  # T = 40 costs minutes
    method, reference = build_case(name, backbone, tmp_path, **steps)
    preds = tmp_path / "preds"
    run(
        method,
        dataset,
        get_protocol(DEFAULT_PROTOCOL),
        dataset_name="folder",
        cache_dir=tmp_path / "cache",
        save_preds=preds,
        results_dir=None,
    )
    ids = dataset.ids()
    assert len(ids) == 5
    if name == "dsm":
        ids = [i for i in ids if not graph_falls_apart(method, dataset.load(i).image)]
        assert len(ids) >= 3
    for sample_id in ids:
        saved = np.asarray(Image.open(preds / f"{sample_id}.png")).astype(np.int64)
        ours = quantize(reference(dataset.mask_files(sample_id)[0])).astype(np.int64)
        assert ours.shape == saved.shape, sample_id
        worst = int(np.abs(ours - saved).max())
        assert worst <= tolerance, f"{name} {sample_id}: differs by {worst} / 65535"
        assert saved.min() < saved.max(), f"{name} {sample_id}: a constant map proves little"


def test_runner_dry_run_prints_the_plan_and_refuses_unknown_methods(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from odbench.bench.runner import cli

    for folder, image, suffix in (
        ("images", Image.new("RGB", (8, 8)), ".jpg"),
        ("ground_truth_mask", Image.new("L", (8, 8)), ".png"),
    ):
        (tmp_path / "ECSSD" / folder).mkdir(parents=True)
        for name in ("a", "b"):  # the plan reads the dataset: images with their masks
            image.save(tmp_path / "ECSSD" / folder / f"{name}{suffix}")
    args = ["--dry-run", "--data-root", str(tmp_path), "--memory-n", "0"]
    out = CliRunner().invoke(cli, [*args, "--methods", "dsm,found", "--method-images", "2"])
    assert out.exit_code == 0, out.output
    assert "nothing is run" in out.output and "memory: skipped" in out.output
    assert "dsm on dino-vits16-random" in out.output and "found on dino-vits8-random" in out.output
    assert "tokencut on" not in out.output  # only the methods asked for
    out = CliRunner().invoke(cli, [*args, "--methods", "dsm,nope"])
    assert out.exit_code == 2 and "no throughput case for nope" in out.output
