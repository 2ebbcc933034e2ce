"""The segment decoder on frozen tiny random features: it learns, its feature cache is reused and
invalidated, and ``odbench eval`` runs the trained decoders end to end."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import odbench.feature_cache
import odbench.features
from odbench.checkpoint import CheckpointError
from odbench.cli import main
from odbench.data.toy import ToyDataset
from odbench.imageio import write_png
from odbench.methods.base import create_method
from odbench.training import train


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One thread: on a shared, loaded CPU two OpenMP threads spin and run ~10x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _toy_folder(folder: Path, n: int, seed: int = 0) -> Path:
    """``n`` toy samples written as ``images/`` + ``masks/`` PNGs (a ``folder`` dataset)."""
    toy = ToyDataset(n=n, seed=seed)
    for sample_id in toy.ids():
        s = toy.load(sample_id)
        write_png(folder / "images" / f"{sample_id}.png", s.image)
        write_png(folder / "masks" / f"{sample_id}.png", s.mask)
    return folder


class CountingExtractor:
    """Wraps a real extractor and counts ``extract`` calls."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def extract(self, images: torch.Tensor) -> list[torch.Tensor]:
        self.calls += 1
        return self.inner.extract(images)  # type: ignore[no-any-return]


@pytest.fixture()
def counted(monkeypatch: pytest.MonkeyPatch) -> list[CountingExtractor]:
    """Every extractor ``odbench train`` loads, counted."""
    made: list[CountingExtractor] = []
    real = odbench.features.load_extractor

    def load(name: str, **kw: Any) -> CountingExtractor:
        made.append(CountingExtractor(real(name, **kw)))
        return made[-1]

    monkeypatch.setattr(odbench.features, "load_extractor", load)
    return made


def _iou(pred: np.ndarray, mask: np.ndarray) -> float:
    p, g = pred > 0.5, mask >= 128
    union = np.sum(p | g)
    return float(np.sum(p & g) / union) if union else 1.0


def test_decoder_learns_toy_from_tiny_random_features(tmp_path: Path) -> None:
    """The segment decoder on frozen clip-tiny features (random weights, stride 8) learns the toy
    shapes: the loss falls and held-out toy images (another seed) reach IoU >= 0.8."""
    data = _toy_folder(tmp_path / "data", 48)
    result = train(
        data="folder",
        data_root=data,
        features="clip-tiny",
        out=tmp_path / "run",
        steps=150,
        resolution=128,
        val_split=0.1,
        val_every=50,
        cache_dir=tmp_path / "cache",
    )
    losses = [h["loss"] for h in result.config["history"]]
    assert len(losses) == 3 and losses[-1] < 0.6 * losses[0], losses
    held = ToyDataset(n=24, seed=1)
    samples = [held.load(i) for i in held.ids()]
    method = create_method("clip-decoder", checkpoint=str(tmp_path / "run"))
    preds = method.predict([s.image for s in samples])
    iou = float(np.mean([_iou(p, s.mask) for p, s in zip(preds, samples)]))
    assert iou >= 0.8, iou


def test_feature_cache_is_reused_and_invalidated(
    tmp_path: Path, counted: list[CountingExtractor], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _toy_folder(tmp_path / "data", 12)
    common: dict[str, Any] = dict(data="folder", data_root=data, features="dino-tiny")
    common.update(resolution=64, batch_size=4, val_split=0.25, cache_dir=tmp_path / "cache")
    first = train(out=tmp_path / "a", epochs=3, **common)
    assert counted[-1].calls == 3 and first.features_computed == 12  # 12 images / 4, once
    files = sorted((tmp_path / "cache" / "features").glob("*/*.npy"))
    assert len(files) == 12
    rows = cached_rows(tmp_path / "cache", counted[-1], 64, data)
    fresh = counted[-1].inner.extract(torch.from_numpy(first_images(tmp_path / "a")))
    for cached, level in zip(rows.take(np.arange(12)), fresh):
        np.testing.assert_allclose(cached, level.numpy(), rtol=2e-3, atol=2e-3)

    again = train(out=tmp_path / "b", epochs=1, **common)
    assert counted[-1].calls == again.features_computed == 0  # same images, same extractor

    image = tmp_path / "data" / "images" / "toy_00005.png"
    pixels = np.array(ToyDataset(n=12).load("toy_00005").image)
    pixels[0, 0] = 255 - pixels[0, 0]
    write_png(image, pixels)
    changed = train(out=tmp_path / "c", epochs=1, **common)
    assert counted[-1].calls == changed.features_computed == 1  # one image changed: recomputed

    real = odbench.features.load_extractor

    class OtherWeights(CountingExtractor):
        identity = "dino-tiny|another-revision"

    monkeypatch.setattr(
        odbench.features, "load_extractor", lambda name, **kw: OtherWeights(real(name, **kw))
    )
    other = train(out=tmp_path / "d", epochs=1, **common)
    assert other.features_computed == 12  # another weights revision: recomputed
    assert len(list((tmp_path / "cache" / "features").glob("*/meta.json"))) == 2


def cached_rows(cache: Path, extractor: Any, resolution: int, data: Path) -> Any:
    """The cached features of a folder dataset's images, in its order."""
    from odbench.data.base import create_dataset
    from odbench.feature_cache import FeatureCache
    from odbench.training.data import content_hash

    ds = create_dataset("folder", data_root=data)
    hashes = [content_hash(ds.load(i).image) for i in ds.ids()]
    return FeatureCache(cache).entry(extractor, resolution).rows(hashes)


def first_images(run: Path) -> np.ndarray:
    """The prepared training images of a run, as the float batch the extractor saw."""
    return np.load(run / ".prepared" / "images.npy").astype(np.float32) / 255.0


def _eval(tmp_path: Path, *args: str) -> Any:
    return CliRunner().invoke(
        main,
        ["eval", "--dataset", "toy", "--limit", "3", "--results-dir", str(tmp_path / "res")]
        + ["--cache-dir", str(tmp_path / "cache"), *args],
    )


@pytest.mark.slow
def test_reproduce_tiny_then_noprior_then_resume(tmp_path: Path) -> None:
    """odbench reproduce diffusionseg --scale tiny: synthesize with a random tiny SD, train the
    decoder on sd-tiny features, evaluate diffusionseg on toy (inversion, features, decoder,
    metrics, mask -> box CorLoc) and on the benchmarks present under --data-root (3 images
    each; absent ones listed), a table beside the paper; the w/o-prior variant and a
    disagreeing --backbone on that checkpoint; a rerun resumes every stage."""
    from PIL import Image

    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    for sub in ("images", "ground_truth_mask"):
        (data / "ECSSD" / sub).mkdir(parents=True)
    for i in range(4):  # an ECSSD in its official layout, 4 of its images
        img = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
        Image.fromarray(img).save(data / "ECSSD" / "images" / f"{i:04d}.jpg")
        gt = np.zeros((40, 56), np.uint8)
        gt[10:30, 15:40] = 255
        Image.fromarray(gt).save(data / "ECSSD" / "ground_truth_mask" / f"{i:04d}.png")
    out = tmp_path / "repro"
    args = ["reproduce", "diffusionseg", "--scale", "tiny", "--out", str(out)]
    r = CliRunner().invoke(main, [*args, "--data-root", str(data)])
    assert r.exit_code == 0, r.output
    assert "toy        saliency:" in r.output and "toy        localization: corloc" in r.output
    assert "the first 3 images of each" in r.output
    assert "ecssd      saliency:" in r.output and "duts_te: absent, skipped" in r.output
    (path,) = (out / "results").glob("diffusionseg__ecssd__*.json")
    assert json.loads(path.read_text())["n_predicted"] == 3
    board = (out / "leaderboard.md").read_text()
    assert "| toy | " in board and "| DiffusionSeg † (reported" in board
    (path,) = (out / "results").glob("diffusionseg__toy__*.json")
    first = json.loads(path.read_text())
    ck = first["method"]["checkpoint"]
    assert ck["data"]["dataset"] == "synthetic" and ck["data"]["n_samples"] == 6
    assert ck["extractor"]["name"] == "sd-tiny" and ck["extractor"]["options"] == {"num_steps": 2}
    assert "T=2" in ck["eval_extractor"] and "prior=none" not in ck["eval_extractor"]
    assert first["n_predicted"] == 3

    run = str(out / "run")
    r = _eval(tmp_path, "--method", "diffusionseg.noprior", "--checkpoint", run)
    assert r.exit_code == 0, r.output
    (path,) = (tmp_path / "res").glob("diffusionseg.noprior__toy__*.json")
    ck = json.loads(path.read_text())["method"]["checkpoint"]
    assert "prior=none" in ck["eval_extractor"] and "T=2" in ck["eval_extractor"]
    r = _eval(tmp_path, "--method", "diffusionseg", "--checkpoint", run, "--backbone", "sd-v1-4")
    assert r.exit_code == 2 and r.output.count("\n") == 1
    assert "--backbone sd-v1-4 disagrees with the checkpoint" in r.output

    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "already trained (10 steps)" in r.output
    runs = [json.loads(p.read_text()) for p in (out / "results").glob("diffusionseg__toy__*.json")]
    assert sorted(x["n_predicted"] for x in runs) == [0, 3]


def test_eval_dino_decoder_end_to_end(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(data="toy", features="dino-tiny", out=run, steps=3, resolution=64, n=6)
    r = _eval(tmp_path, "--method", "dino-decoder", "--checkpoint", str(run))
    assert r.exit_code == 0, r.output
    (path,) = (tmp_path / "res").glob("dino-decoder__toy__*.json")
    results = json.loads(path.read_text())
    assert results["method"]["checkpoint"]["extractor"]["name"] == "dino-tiny"
    assert 0.0 <= results["metrics"]["saliency"]["iou"] <= 1.0
    with pytest.raises(CheckpointError, match="trained for method 'dino-decoder'"):
        create_method("clip-decoder", checkpoint=str(run))


def test_a_damaged_cached_feature_file_is_named_not_trained_on(tmp_path: Path) -> None:
    """A truncated cached feature file is computed again; one overwritten with NaN (damaged on
    disk; odbench stores only finite values) stops training with one line naming the file, the
    last checkpoint kept as it was; deleting the file and resuming recomputes it and trains on."""
    from odbench.checkpoint import load_checkpoint
    from odbench.feature_cache import FeatureCacheError

    common: dict[str, Any] = dict(data="toy", features="dino-tiny", resolution=32, n=6)
    common.update(batch_size=5, val_split=0.0, cache_dir=tmp_path / "cache")
    train(out=tmp_path / "a", steps=1, **common)
    damaged, cut = sorted((tmp_path / "cache" / "features").glob("*/*.npy"))[2:4]
    row = np.load(damaged)
    row[5] = np.nan
    np.save(damaged, row)
    size = cut.stat().st_size
    with cut.open("r+b") as f:  # a truncated file (a copy cut short) is computed again
        f.truncate(size // 2)
    with pytest.raises(FeatureCacheError, match=f"^{damaged}: cached features hold NaN"):
        train(out=tmp_path / "a", steps=3, resume=True, **common)
    assert cut.stat().st_size == size
    config, weights, _ = load_checkpoint(tmp_path / "a")
    assert config["step"] == 1 and all(torch.isfinite(w).all() for w in weights.values())
    damaged.unlink()
    resumed = train(out=tmp_path / "a", steps=3, resume=True, **common)
    assert resumed.step == 3 and resumed.features_computed == 1


def test_a_feature_file_damaged_while_in_use_is_one_line(tmp_path: Path) -> None:
    """A cached file cut short after the run checked it: reading it names it (was numpy's
    'cannot reshape array' traceback mid-training)."""
    from odbench.feature_cache import FeatureCacheError

    entry = odbench.feature_cache.FeatureEntry(tmp_path, "x", 32, [(2, 2, 2)])
    entry.store("a", np.ones(8, np.float16))
    entry.store("b", np.ones(8, np.float16))
    rows = entry.rows(["a", "b"])
    assert rows.take([0, 1])[0].shape == (2, 2, 2, 2)
    with entry.path("b").open("r+b") as f:
        f.truncate(entry.path("b").stat().st_size - 4)
    with pytest.raises(FeatureCacheError, match=f"^{entry.path('b')}: cached features damaged"):
        rows.take([0, 1])
