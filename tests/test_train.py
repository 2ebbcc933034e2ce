"""``odbench train`` end to end (unet-e2e on toy at 32²): checkpoints, resume, eval --checkpoint."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from odbench.checkpoint import CheckpointError, file_sha256, load_checkpoint
from odbench.cli import main
from odbench.data.base import create_dataset
from odbench.methods.base import create_method
from odbench.models.build import to_batch
from odbench.training import TrainError, train


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One thread: on a shared, loaded CPU two OpenMP threads spin and run ~10x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _train(out: Path, model: str = "unet", **kw: Any) -> Any:
    return train(data="toy", model=model, out=out, resolution=32, val_split=0.25, **kw)


def test_resume_continues_exactly_as_the_uninterrupted_run(tmp_path: Path) -> None:
    straight = _train(tmp_path / "a", steps=6)
    _train(tmp_path / "b", steps=3)
    resumed = _train(tmp_path / "b", steps=6, resume=True)
    assert straight.step == resumed.step == 6
    ca, wa, oa = load_checkpoint(tmp_path / "a", with_optimizer=True)
    cb, wb, ob = load_checkpoint(tmp_path / "b", with_optimizer=True)
    assert ca["step"] == cb["step"] == 6
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert oa is not None and ob is not None and oa["param_groups"] == ob["param_groups"]
    for i, state in oa["state"].items():
        for k, v in state.items():
            assert torch.equal(v, ob["state"][i][k]), (i, k)
    assert [h["step"] for h in cb["history"]] == [3, 6]
    assert cb["data"]["manifest_sha256"] == ca["data"]["manifest_sha256"]


def test_resume_refuses_a_different_run(tmp_path: Path) -> None:
    _train(tmp_path / "r", steps=2)
    with pytest.raises(CheckpointError, match=r"cannot resume: --lr was 0\.001 \(now 0\.01\);"):
        _train(tmp_path / "r", steps=4, resume=True, lr=0.01)
    with pytest.raises(TrainError, match="holds a training run already; pass --resume"):
        _train(tmp_path / "r", steps=4)
    with pytest.raises(TrainError, match="--resume: .* not found"):
        _train(tmp_path / "new", steps=4, resume=True)


def test_resume_is_refused_before_any_feature_is_computed(tmp_path: Path) -> None:
    """Other data (here --n) on --resume: refused before a feature of the new data is computed
    (SD features of a dataset cost hours), in one line saying what differs."""
    common: dict[str, Any] = dict(data="toy", features="dino-tiny", resolution=32)
    common.update(val_split=0.0, batch_size=3, cache_dir=tmp_path / "cache")
    train(out=tmp_path / "r", steps=1, n=6, **common)
    with pytest.raises(CheckpointError, match="the training data differ .6 samples of toy then"):
        train(out=tmp_path / "r", steps=2, n=9, resume=True, **common)
    assert len(list((tmp_path / "cache" / "features").glob("*/*.npy"))) == 6


def test_resume_past_or_at_the_end(tmp_path: Path) -> None:
    """--resume with fewer steps than the run has done is one line; with as many, the finished
    run is reported as it is (its validation IoU, its checkpoint untouched: a SLURM job requeued
    after the end changes nothing)."""
    done = _train(tmp_path / "r", steps=3)
    sha = file_sha256(tmp_path / "r" / "checkpoint.safetensors")
    with pytest.raises(TrainError, match="at step 3 already, past 2 steps; give --steps above 3"):
        _train(tmp_path / "r", steps=2, resume=True)
    again = _train(tmp_path / "r", steps=3, resume=True)
    assert again.step == 3 and again.val_iou == done.val_iou
    assert file_sha256(tmp_path / "r" / "checkpoint.safetensors") == sha
    # readable as the config beside it is (mkstemp's 0600 kept colleagues out of a shared run)
    modes = {
        (tmp_path / "r" / f).stat().st_mode & 0o777
        for f in ("checkpoint.safetensors", "config.json")
    }
    assert len(modes) == 1


@pytest.mark.parametrize("model", ["unet", "deeplabv3"])
def test_checkpoint_round_trip_gives_identical_predictions(tmp_path: Path, model: str) -> None:
    result = _train(tmp_path / "run", model, steps=2 if model == "deeplabv3" else 4)
    images = [create_dataset("toy").load(i).image for i in ("toy_00000", "toy_00003")]
    method = create_method(f"{model}-e2e", checkpoint=str(tmp_path / "run"))
    got = method.predict(images)
    with torch.no_grad():
        logits = result.model(to_batch(images, 32))
    for im, logit, pred in zip(images, logits, got):
        want = torch.sigmoid(F.interpolate(logit[None], size=im.shape[:2], mode="bilinear"))
        assert pred.shape == im.shape[:2]
        np.testing.assert_array_equal(pred, want[0, 0].numpy())


def test_eval_with_checkpoint_records_it_and_never_reuses_other_weights(tmp_path: Path) -> None:
    """Retraining into the same RUN_DIR gives new weights under the same path: the prediction
    cache must not serve the old run's maps."""
    runner = CliRunner()
    common = ["eval", "--method", "unet-e2e", "--dataset", "toy", "--limit", "4"]
    common += ["--results-dir", str(tmp_path / "res"), "--cache-dir", str(tmp_path / "cache")]
    common += ["--checkpoint", str(tmp_path / "run")]
    shas = []
    for steps in (2, 3):
        shutil.rmtree(tmp_path / "run", ignore_errors=True)
        _train(tmp_path / "run", steps=steps)
        shas.append(file_sha256(tmp_path / "run" / "checkpoint.safetensors"))
        r = runner.invoke(main, common)
        assert r.exit_code == 0, r.output
        assert "4 predicted, 0 from cache" in r.output
    r = runner.invoke(main, common)
    assert "0 predicted, 4 from cache" in r.output  # same weights: reused
    recorded = {}
    for path in (tmp_path / "res").glob("unet-e2e__toy__*.json"):
        ck = json.loads(path.read_text())["method"]["checkpoint"]
        assert ck["data"]["dataset"] == "toy" and len(ck["data"]["manifest_sha256"]) == 64
        recorded[ck["step"]] = ck["sha256"]
    assert recorded == {2: shas[0], 3: shas[1]} and shas[0] != shas[1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["eval", "--method", "unet-e2e", "--dataset", "toy"], "`odbench train --model unet"),
        (
            ["eval", "--method", "center-prior", "--dataset", "toy", "--checkpoint", "x"],
            "takes no --checkpoint",
        ),
        (
            ["eval", "--method", "unet-e2e", "--dataset", "toy", "--checkpoint", "nowhere"],
            "nowhere: no checkpoint here; make one with `odbench train",
        ),
        (
            ["train", "--model", "unt", "--data", "toy", "--out", "o"],
            "--model 'unt': expected one of",
        ),
        (["train", "--data", "toy", "--out", "o"], "exactly one of --model"),
        (
            ["train", "--features", "dinoo-vits16", "--data", "toy", "--out", "o"],
            "unknown feature extractor 'dinoo-vits16'. Did you mean 'dino-vits16'?",
        ),
        (
            ["train", "--features", "dino-tiny", "--data", "toy", "--out", "o"]
            + ["--extractor-option", "nmu_steps=2"],
            "--extractor-option: dino-tiny: unknown option(s) nmu_steps",
        ),
        (
            [
                "train",
                "--model",
                "unet",
                "--data",
                "toy",
                "--out",
                "o",
                "--steps",
                "2",
                "--epochs",
                "1",
            ],
            "--steps or --epochs",
        ),
        (
            ["train", "--model", "unet", "--data", "toy", "--out", "o", "--val-split", "1.5"],
            "--val-split must be in [0, 1)",
        ),
        (
            ["train", "--model", "unet", "--data", "toy", "--out", "o", "--device", "tpu"],
            "--device 'tpu'",
        ),
    ],
)
def test_bad_input_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        main, [*args, "--results-dir", "res"] if args[0] == "eval" else args
    )
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not (tmp_path / "res").exists()


def test_wrong_method_for_checkpoint(tmp_path: Path) -> None:
    _train(tmp_path / "run", steps=1)
    with pytest.raises(CheckpointError, match="trained for method 'unet-e2e', not 'deeplabv3-e2e'"):
        create_method("deeplabv3-e2e", checkpoint=str(tmp_path / "run"))


def test_deeplabv3_trunk_loads_torchvision_resnet50_safetensors(tmp_path: Path) -> None:
    """The ImageNet trunk path with a local file: torchvision ResNet-50 names, fc dropped; a file
    of another architecture is one CheckpointError naming it."""
    from safetensors.torch import save_file
    from torchvision.models import resnet18, resnet50

    from odbench.models.segmenters import build_segmenter

    torch.manual_seed(1)
    source = resnet50().state_dict()
    save_file({k: v.contiguous() for k, v in source.items()}, tmp_path / "r50.safetensors")
    model = build_segmenter(
        {"type": "deeplabv3", "trunk_weights": str(tmp_path / "r50.safetensors")},
        init_weights=True,
    )
    trunk = model.net.backbone.state_dict()
    assert trunk.keys() == {k for k in source if not k.startswith("fc.")}
    for k, v in trunk.items():
        assert torch.equal(v, source[k]), k
    save_file(resnet18().state_dict(), tmp_path / "r18.safetensors")
    with pytest.raises(CheckpointError, match=r"r18\.safetensors: not ResNet-50 weights"):
        build_segmenter(
            {"type": "deeplabv3", "trunk_weights": str(tmp_path / "r18.safetensors")},
            init_weights=True,
        )


def test_hub_checkpoint_that_cannot_be_fetched_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        CheckpointError, match=r"^hf:nobody/nothing: checkpoint\.safetensors is not in"
    ):
        create_method("unet-e2e", checkpoint="hf:nobody/nothing")


def test_sigterm_saves_a_checkpoint_that_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM (scancel, a SLURM time limit, a pre-emption) before the first ``save_every``
    checkpoint, arriving just after the optimizer step of step 3: the run stops at the next step
    boundary the processes agree on (after step 4), saves, and --resume continues exactly as the
    uninterrupted run (a signal raised at once would save the weights of step 3 as step 2, and
    the resumed run would apply step 3 twice)."""
    import os
    import signal

    import odbench.training.loop as t
    from odbench.checkpoint import read_config

    straight = _train(tmp_path / "straight", steps=5)
    real, calls = torch.optim.Adam.step, []

    def step(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = real(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    def unhandled(signum: int, frame: Any) -> None:
        raise RuntimeError("train did not handle SIGTERM")

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    previous = signal.signal(signal.SIGTERM, unhandled)
    try:
        with pytest.raises(t.Terminated, match="stopped by SIGTERM after step 4"):
            _train(tmp_path / "run", steps=5)  # the card saves every 500 steps
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert read_config(tmp_path / "run")["step"] == 4
    monkeypatch.setattr(torch.optim.Adam, "step", real)
    assert _train(tmp_path / "run", steps=5, resume=True).step == 5
    _, wa, _ = load_checkpoint(tmp_path / "straight")
    _, wb, _ = load_checkpoint(tmp_path / "run")
    assert straight.step == 5 and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_checkpoints_are_also_written_by_wall_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Besides every ``save_every`` steps (500 here), a checkpoint at least every
    ``SAVE_INTERVAL_S`` seconds: a run killed without warning loses at most that much."""
    import odbench.training.loop as t

    steps: list[int] = []
    real = t.save_checkpoint

    def save(run: Path, config: dict[str, Any], *args: Any) -> Any:
        steps.append(config["step"])
        return real(run, config, *args)

    monkeypatch.setattr(t, "save_checkpoint", save)
    monkeypatch.setattr(t, "SAVE_INTERVAL_S", 0.0)
    _train(tmp_path / "run", steps=3)
    assert steps == [1, 2, 3, 3]


# ------------------------------------------------------------------ disk full, logs, prepared data
_TRAIN_CLI = ["train", "--model", "unet", "--data", "toy", "--resolution", "32"]


def _cli(*args: str) -> Any:
    return CliRunner().invoke(main, [*_TRAIN_CLI, "--val-split", "0.25", "--threads", "1", *args])


def _last_line(output: str) -> str:
    return output.strip().splitlines()[-1]


def _full_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """safetensors' ``save_file`` on a full disk: part of the file written, then its error."""
    import safetensors.torch
    from safetensors import SafetensorError

    def save_file(tensors: Any, filename: str, metadata: Any = None) -> None:
        Path(filename).write_bytes(b"\0" * 64)
        raise SafetensorError(
            "Error while serializing: I/O error: No space left on device (os error 28)"
        )

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)


def test_disk_full_while_saving_is_one_line_and_keeps_the_last_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    assert _cli("--out", str(run), "--steps", "3").exit_code == 0
    sha = file_sha256(run / "checkpoint.safetensors")
    _full_disk(monkeypatch)
    result = _cli("--out", str(run), "--steps", "6", "--resume")
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert _last_line(result.output) == (
        f"error: {run}: no space left on the device; the checkpoint of step 3 is kept: free "
        f"some space and run the same command with --resume"
    )
    assert file_sha256(run / "checkpoint.safetensors") == sha  # nothing half-written
    assert sorted(p.name for p in run.iterdir()) == [
        ".prepared",
        "checkpoint.safetensors",
        "config.json",
    ]
    assert load_checkpoint(run)[0]["step"] == 3

    fresh = _cli("--out", str(tmp_path / "fresh"), "--steps", "2")
    assert fresh.exit_code == 2
    assert _last_line(fresh.output).endswith(
        "no space left on the device; no checkpoint was saved yet: free some space and run the "
        "same command again"
    )
    assert not (tmp_path / "fresh" / "checkpoint.safetensors").exists()


def test_disk_full_while_preparing_leaves_no_prepared_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from odbench.training import data

    real = data._NpyRows.write

    def write(self: Any, i: int, row: np.ndarray) -> None:
        if i == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, i, row)

    monkeypatch.setattr(data._NpyRows, "write", write)
    result = _cli("--out", str(tmp_path / "run"), "--steps", "2")
    assert result.exit_code == 2, result.output
    assert "no space left on the device; no checkpoint was saved yet" in _last_line(result.output)
    assert list((tmp_path / "run").iterdir()) == []


def test_a_log_gets_progress_lines_ending_on_the_reported_iou(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stderr not a terminal (CliRunner, nohup, SLURM): one line per step here (4 steps < 50),
    and a run stopped between validations (by --minutes, here after step 2) validates once
    more: the last line shows the held-out IoU the summary reports."""
    from odbench.training.loop import Loop

    real = Loop.step

    def step(self: Loop, *args: Any) -> tuple[float, bool, bool]:
        value, _, signalled = real(self, *args)
        return value, self.state.step >= 2, signalled  # out of --minutes after step 2

    monkeypatch.setattr(Loop, "step", step)
    result = _cli("--out", str(tmp_path / "run"), "--steps", "4", "--minutes", "60")
    monkeypatch.undo()
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    steps = [line for line in lines if line.startswith("train ")]
    assert steps[0].startswith("train 1/4  loss ") and "held-out IoU -" in steps[0], lines
    assert steps[1].startswith("train 2/4  loss ") and "held-out IoU -" in steps[1], lines
    iou = json.loads((tmp_path / "run" / "config.json").read_text())["history"][-1]["val_iou"]
    assert f"held-out IoU {iou:.3f}" in steps[-1], lines
    assert f"IoU {iou:.3f} on the " in lines[-2] and "held-out pairs" in lines[-2], lines

    full = _cli("--out", str(tmp_path / "full"), "--steps", "4")
    steps = [line for line in full.output.splitlines() if line.startswith("train ")]
    assert [s.split("  ")[0] for s in steps] == [f"train {i}/4" for i in range(1, 5)]


def _folder_data(folder: Path, n: int) -> Path:
    from odbench.data.toy import ToyDataset
    from odbench.imageio import write_png

    toy = ToyDataset(n=n, seed=0)
    for sample_id in toy.ids():
        s = toy.load(sample_id)
        write_png(folder / "images" / f"{sample_id}.png", s.image)
        write_png(folder / "masks" / f"{sample_id}.png", s.mask)
    return folder


def test_resume_reuses_the_prepared_pairs_which_are_never_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from odbench.data.folder import FolderDataset

    data = _folder_data(tmp_path / "data", 8)
    loads: list[str] = []
    real = FolderDataset.load

    def load(self: Any, sample_id: str) -> Any:
        loads.append(sample_id)
        return real(self, sample_id)

    monkeypatch.setattr(FolderDataset, "load", load)
    common: dict[str, Any] = dict(data="folder", data_root=data, model="unet", resolution=32)
    common.update(val_split=0.25)
    straight = train(out=tmp_path / "a", steps=4, **common)
    train(out=tmp_path / "b", steps=2, **common)
    loads.clear()
    resumed = train(out=tmp_path / "b", steps=4, resume=True, **common)
    assert loads == []  # nothing read again
    wa, wb = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)

    # damaged since: prepared again, the run goes on
    with (tmp_path / "b" / ".prepared" / "images.npy").open("r+b") as f:
        f.truncate(200)
    assert train(out=tmp_path / "b", steps=5, resume=True, **common).step == 5
    assert len(loads) == 8

    # a mask file changed: never served stale, so the data differ from the checkpoint's
    mask = data / "masks" / f"{sorted(p.stem for p in (data / 'masks').iterdir())[0]}.png"
    from odbench.imageio import read_gray, write_png

    write_png(mask, 255 - read_gray(mask))
    with pytest.raises(CheckpointError, match="the training data differ"):
        train(out=tmp_path / "b", steps=6, resume=True, **common)


def test_tiny_extractor_trains_at_its_own_small_size_and_steps(tmp_path: Path) -> None:
    """`odbench train --features sd-tiny` without --resolution trains at sd-tiny's 64 px with
    T = 2 (its registry entry), not at the sd card's 512 px with T = 40 (over 10 minutes on 2
    cores); --resolution still wins; the decoder card is the one of the extractor's family."""
    from odbench.distributed import World
    from odbench.training.options import card_for_features, setup

    def run_setup(**overrides: Any) -> Any:
        return setup(
            World(),
            data="toy",
            out=tmp_path / "r",
            model=None,
            features="sd-tiny",
            data_root=None,
            n=4,
            steps=1,
            epochs=None,
            resume=False,
            device="cpu",
            cache_dir=tmp_path / "cache",
            extractor_options=None,
            cache_only=False,
            overrides={"resolution": None, **overrides},
        )

    found = run_setup()
    assert found.resolution == 64 and found.extractor.num_steps == 2
    assert run_setup(resolution=32).resolution == 32
    assert card_for_features("sd-tiny").raw["training"]["resolution"] == 512  # the paper's
    assert card_for_features("dino-vits8") is card_for_features("dino-tiny")
    assert card_for_features("moco-v3-vitb16").raw["model"]["family"] == "moco"
