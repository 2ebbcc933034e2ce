"""``odbench train`` across processes: data-parallel under torchrun (gloo on CPU) follows the
one-process optimisation of the same global batch; the feature cache is filled once, split
across ranks or ``--cache-only --shard I/N`` tasks; rank 0 alone writes the run folder."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_distributed import _free_port

from odbench.checkpoint import load_checkpoint
from odbench.cli import main
from odbench.training import train

#: 12 toy images, 9 for training: a global batch of 5 splits 3 + 2 across two ranks (unequal
#: shares must weigh the loss by their size); dino-tiny's decoder has BatchNorm layers.
COMMON = ["--features", "dino-tiny", "--data", "toy", "--n", "12", "--val-split", "0.25"]
COMMON += ["--resolution", "64", "--device", "cpu"]


#: ``odbench`` under an audit hook that logs every write into the run folder (file opened for
#: writing, created, renamed, removed) to ``<logs>/rank<RANK>``.
AUDITED = """
import os, runpy, sys
log = open(os.path.join({logs!r}, "rank" + os.environ["RANK"]), "a")
WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT

def hook(event, args):
    if event == "open" and isinstance(args[0], (str, os.PathLike)):
        mode, flags = args[1], args[2] or 0
        if not (mode and any(c in mode for c in "wax+")) and not flags & WRITE:
            return
    elif event not in ("os.rename", "os.mkdir", "os.remove", "shutil.rmtree"):
        return
    if str(args[0]).startswith({run!r}):
        log.write(event + " " + str(args[0]) + "\\n")
        log.flush()

sys.addaudithook(hook)
sys.argv[0] = "odbench"
runpy.run_module("odbench", run_name="__main__")
"""


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _cache_files(cache: Path) -> dict[str, np.ndarray]:
    return {p.name: np.load(p) for p in sorted((cache / "features").glob("*/*.npy"))}


def _assert_same_cache(a: Path, b: Path) -> None:
    fa, fb = _cache_files(a), _cache_files(b)
    assert fa.keys() == fb.keys() and len(fa) == 12
    for name in fa:  # batches of other compositions: the same features to fp16 rounding
        np.testing.assert_allclose(fa[name], fb[name], rtol=1e-3, atol=1e-3)


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.slow
def test_two_process_training_follows_the_one_process_run(tmp_path: Path) -> None:
    """One step on one process, then ``torchrun --nproc-per-node 2 -m odbench -- train --resume``
    for three more with a global batch of 5: the same weights and optimizer state as four steps
    on one process (to float rounding), each image's features computed once between the two
    ranks, and only rank 0 writes (one run folder, one report)."""
    common: dict[str, Any] = dict(data="toy", features="dino-tiny", n=12, resolution=64)
    common.update(val_split=0.25, device="cpu", batch_size=5)
    train(out=tmp_path / "one", cache_dir=tmp_path / "c1", steps=4, **common)
    train(out=tmp_path / "two", cache_dir=tmp_path / "c3", steps=1, **common)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    launcher += ["--master-addr", "127.0.0.1", "--master-port", str(_free_port())]
    args = ["train", *COMMON, "--batch-size", "5", "--steps", "4", "--resume"]
    args += ["--out", str(tmp_path / "two"), "--cache-dir", str(tmp_path / "c2")]
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "writes").mkdir()
    wrapper = tmp_path / "audited.py"
    wrapper.write_text(AUDITED.format(run=str(tmp_path / "two"), logs=str(tmp_path / "writes")))
    run = subprocess.run(
        [*launcher, str(wrapper), "--", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("checkpoint: ") == 1 and "2 processes" in run.stdout, run.stdout
    assert "features: 12 images computed" in run.stdout  # 6 + 6: none twice

    c1, w1, o1 = load_checkpoint(tmp_path / "one", with_optimizer=True)
    c2, w2, o2 = load_checkpoint(tmp_path / "two", with_optimizer=True)
    assert c1["step"] == c2["step"] == 4 and c2["processes"] == 2
    assert w1.keys() == w2.keys()
    diffs = torch.cat([(w1[k].double() - w2[k].double()).abs().flatten() for k in w1])
    # Adam divides by √v: where a gradient is ~0 its rounding (a sum split in two) can move a
    # weight by up to lr per step, so a handful may differ by ~1e-4; every other weight is equal
    # to 1e-5 (a per-rank BatchNorm or an unweighted 3/2 split moves most of them further).
    assert (diffs > 1e-5).float().mean() < 1e-4 and diffs.max() < 3e-4, (diffs > 1e-5).sum()
    assert o1 is not None and o2 is not None
    for i, state in o1["state"].items():
        np.testing.assert_allclose(state["step"], o2["state"][i]["step"])

    assert _files(tmp_path / "two") == _files(tmp_path / "one")  # the same run folder
    writes = {p.name: p.read_text().splitlines() for p in (tmp_path / "writes").iterdir()}
    assert writes.keys() == {"rank0", "rank1"} and writes["rank0"] and not writes["rank1"], writes
    left = [p.name for p in (tmp_path / "tmp").iterdir()]
    assert [n for n in left if not n.startswith("torchelastic_")] == []  # rank 1's copy is gone
    _assert_same_cache(tmp_path / "c1", tmp_path / "c2")
    assert not list((tmp_path / "c2").rglob("*.claim"))


def test_cache_shards_fill_the_cache_that_training_then_reads(tmp_path: Path) -> None:
    """``--cache-only --shard 0/2`` and ``1/2`` (a SLURM array) compute disjoint halves of the
    one-process cache and write nothing else; the training run after them extracts nothing."""
    train(
        data="toy",
        features="dino-tiny",
        n=12,
        val_split=0.25,
        resolution=64,
        device="cpu",
        out=tmp_path / "one",
        cache_dir=tmp_path / "c1",
        steps=1,
    )
    runner = CliRunner()
    cache = ["--cache-dir", str(tmp_path / "c2")]
    for index in (0, 1):
        r = runner.invoke(main, ["train", *COMMON, *cache, "--cache-only", "--shard", f"{index}/2"])
        assert r.exit_code == 0, r.output
        assert f"features of 6 images (shard {index}/2): 6 computed, 0 already cached" in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c1", "c2", "one"]  # no run folder
    _assert_same_cache(tmp_path / "c1", tmp_path / "c2")
    r = runner.invoke(main, ["train", *COMMON, *cache, "--cache-only", "--shard", "1/2"])
    assert "6 images (shard 1/2): 0 computed, 6 already cached" in r.output
    r = runner.invoke(
        main, ["train", *COMMON, *cache, "--steps", "1", "--out", str(tmp_path / "r")]
    )
    assert r.exit_code == 0, r.output
    assert "features: 0 images computed" in r.output


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--cache-only", "--shard", "2/2"], "--shard '2/2': expected I/N with 0 <= I < N"),
        (["--cache-only", "--shard", "x"], "--shard 'x': expected I/N"),
        (["--cache-only", "--shard", "0/0"], "--shard '0/0': expected I/N"),
        (["--shard", "0/2", "--out", "run"], "--shard splits the feature caching only"),
        ([], "--out is required (except with --cache-only)"),
    ],
)
def test_bad_shard_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["train", *COMMON, "--cache-dir", "c", *extra])
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert list(tmp_path.iterdir()) == []


class SlowExtractor:
    """One level of 2 channels at stride 4, 50 ms a batch: slow enough for two processes
    filling one cache to meet."""

    name = identity = "slow-test"
    channels, strides = [2], [4]

    def extract(self, images: torch.Tensor) -> list[torch.Tensor]:
        import time

        time.sleep(0.05)
        return [images[:, :2, ::4, ::4] * 2.0]


def _fill_child(cache: str, hashes: list[str], results: object) -> None:
    from odbench.feature_cache import FeatureCache

    torch.set_num_threads(1)
    entry = FeatureCache(Path(cache)).entry(SlowExtractor(), 16)
    images = np.stack([np.full((3, 16, 16), i, np.uint8) for i in range(len(hashes))])
    computed = entry.fill(SlowExtractor(), hashes, lambda pos: images[pos], 2, lambda k: None)
    results.put(computed)  # type: ignore[attr-defined]


def test_two_processes_filling_one_cache_compute_each_image_once(tmp_path: Path) -> None:
    """Two processes fill the same images into one cache at the same time (as two SLURM tasks
    or two users might): claim files make them share the work, every image once."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    hashes = [f"{i:064x}" for i in range(8)]
    procs = [
        ctx.Process(target=_fill_child, args=(str(tmp_path), hashes, results)) for _ in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    counts = [results.get(timeout=5) for _ in procs]
    assert sum(counts) == 8, counts
    files = _cache_files(tmp_path)
    assert sorted(files) == [f"{h}.npy" for h in hashes] and not list(tmp_path.rglob("*.claim"))
    for i, h in enumerate(hashes):
        assert np.all(files[f"{h}.npy"] == np.float16(2 * i / 255))
