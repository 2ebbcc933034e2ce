"""The weight resolver: offline or unreachable hub fails within seconds with one line naming a
command of the installed huggingface_hub CLI; local files win; checkpoints load weights-only."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from odbench.features import weights as W


def _hf_cli_exists() -> bool:
    from importlib.metadata import distribution

    eps = distribution("huggingface_hub").entry_points
    return any(ep.group == "console_scripts" and ep.name == "hf" for ep in eps)


def test_offline_hub_fails_in_one_line_naming_hf_download(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-odbench-test")
    t = time.perf_counter()
    with pytest.raises(W.WeightsNotFoundError) as e:
        W.hub_file("timm/vit_small_patch16_224.dino", "model.safetensors")
    assert time.perf_counter() - t < 5
    msg = str(e.value)
    assert "\n" not in msg and "HF_HUB_OFFLINE" in msg
    assert "hf download timm/vit_small_patch16_224.dino model.safetensors" in msg
    assert _hf_cli_exists()  # the command the message names is installed


def test_unreachable_hub_fails_fast_without_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", "/nonexistent-odbench-test")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setattr(W, "CONNECT_TIMEOUT", 1.0)
    t = time.perf_counter()
    with pytest.raises(W.WeightsNotFoundError, match=r"unreachable\);.*fetch with: hf download"):
        W.hub_snapshot("CompVis/stable-diffusion-v1-4", "abc", ("*.json",), size="4 GB")
    assert time.perf_counter() - t < 5


def test_url_checkpoint_offline_names_a_download_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: "/nonexistent-odbench-test")
    with pytest.raises(W.WeightsNotFoundError, match="fetch with: curl -L") as e:
        W.url_file("https://dl.fbaipublicfiles.com/x/dino_deitsmall8_300ep_pretrain.pth")
    assert "\n" not in str(e.value)


def test_local_file_and_weights_only_load(tmp_path: Path) -> None:
    import torch

    with pytest.raises(W.WeightsNotFoundError, match="no file at"):
        W.local_file(tmp_path / "missing.pth", "dino-vits8")
    good = tmp_path / "w.pth"
    torch.save({"a": torch.ones(2)}, good)
    assert torch.equal(W.load_state_dict(W.local_file(good, "x"))["a"], torch.ones(2))

    class Evil:
        def __reduce__(self) -> tuple[object, ...]:
            return (print, ("pwned",))

    bad = tmp_path / "evil.pth"
    torch.save({"a": Evil()}, bad)
    with pytest.raises(W.WeightsNotFoundError, match="weights_only"):
        W.load_state_dict(bad)


def test_missing_weights_are_one_cli_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from odbench.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-odbench-test")
    r = CliRunner().invoke(
        main,
        ["eval", "--method", "lost", "--dataset", "toy", "--limit", "1"]
        + ["--cache-dir", str(tmp_path), "--results-dir", str(tmp_path / "results")],
    )
    assert r.exit_code == 2
    assert "hf download timm/vit_small_patch16_224.dino" in r.output
    assert "Traceback" not in r.output
