"""The registered AttentionCut / Table 5 methods: the baseline rules on planted features, and the
whole pipeline (CLIP prior → DDIM inversion with capture → cut) on the tiny random SD."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from odbench.cards import method_card
from odbench.methods.diffusion_baselines import (
    densecrf_foreground,
    kmeans_foreground,
    ncut_foreground,
)

OURS = [
    "attentioncut",
    *(f"attentioncut.row{r}" for r in range(1, 7)),
    "attentioncut.noprior",
    "kmeans-diffusion",
    "ncut-diffusion",
    "densecrf-diffusion",
]


def _planted(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.zeros((24, 24), bool)
    y, x = rng.integers(3, 9, 2)
    mask[y : y + rng.integers(8, 13), x : x + rng.integers(8, 13)] = True
    centre = 3.0 * np.linalg.qr(rng.normal(size=(16, 2)))[0].T  # two orthogonal directions
    feats = np.where(mask[..., None], centre[1], centre[0]) + rng.normal(0, 0.5, (24, 24, 16))
    a_c = np.clip(mask * 0.7 + rng.normal(0.15, 0.2, mask.shape), 0, 1)
    img = np.where(mask[..., None], rng.integers(0, 256, 3), rng.integers(0, 256, 3))
    return mask, feats, a_c, img.astype(np.uint8)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.mark.parametrize("seed", range(3))
def test_table5_rules_recover_a_planted_object(seed: int) -> None:
    mask, feats, a_c, img = _planted(seed)
    assert _iou(kmeans_foreground(feats, a_c, seed), mask) > 0.9
    assert _iou(ncut_foreground(feats), mask) > 0.8  # the complement would score < 0.3
    crf = {k: v for k, v in method_card("densecrf-diffusion").hyperparameters.items()}  # type: ignore[union-attr]
    assert _iou(densecrf_foreground(a_c, img, crf), mask) > _iou(a_c > 0.5, mask)


def test_kmeans_picks_the_cluster_with_more_cross_attention() -> None:
    mask, feats, a_c, _ = _planted(0)
    assert _iou(kmeans_foreground(feats, 1.0 - a_c), ~mask) > 0.9


@pytest.mark.parametrize("name", OURS)
def test_cards_carry_backbone_and_paper_numbers(name: str) -> None:
    card = method_card(name)
    assert card is not None and card.hyperparameters["backbone"] == "sd-v1-4"
    assert card.reported, f"{name}: no reported rows"
    for row in card.reported:
        assert row["source"] == "DiffusionSeg (Ma et al. 2023)"
        assert row["table"] in {"1a", "1b", "1c", "5", "6", "7"}
        assert all(0 < row[k] < 1 for k in ("acc", "iou", "max_fbeta") if k in row)


@pytest.mark.slow
@pytest.mark.parametrize(  # plain attentioncut: the eval test; rows 1-6 share its code path
    ("name", "extra"),
    [
        ("attentioncut", {"bilateral_solver": True, "cut_resolution": "image"}),
        ("attentioncut.noprior", {}),
        ("kmeans-diffusion", {}),
        ("ncut-diffusion", {}),
        ("densecrf-diffusion", {}),
    ],
)
def test_predict_on_the_tiny_backbone(
    name: str, extra: dict[str, object], toy_images: list[np.ndarray]
) -> None:
    """Each method's map is its rule applied to its own evidence (not just a map of the right
    shape): the evidence is deterministic, so it is computed again and the rule re-applied."""
    import cv2

    from odbench.methods import attentioncut as ac
    from odbench.methods import diffusion as dm
    from odbench.methods.base import create_method
    from odbench.methods.bilateral_solver import bilateral_refine

    method: Any = create_method(name, backbone="sd-tiny", num_steps=1, **extra)
    img = toy_images[0]
    h, w = img.shape[:2]
    (m,) = method.predict([img])
    assert m.shape == (h, w) and m.dtype == np.float32
    ev = method.evidence([img])[0]
    hp = method.hparams
    assert (ev.label == "") == (not hp["use_prior"])
    if name.startswith("attentioncut"):
        size = (h, w) if hp["cut_resolution"] == "image" else None
        want = dm.upsample_mask(
            ac.attention_cut(ev.a_c, ev.affinity, img, method.params, size), h, w
        )
        if hp["bilateral_solver"]:
            want = bilateral_refine(img, want)  # compared to 1e-6 below: float sums may reorder
    elif name == "kmeans-diffusion":
        want = dm.upsample_mask(kmeans_foreground(ev.features, ev.a_c, hp["seed"]), h, w)
    elif name == "ncut-diffusion":
        feats = dm.resize_channels(ev.features, hp["grid"], cv2.INTER_AREA)
        want = dm.upsample_mask(ncut_foreground(feats, hp["ncut_tau"], hp["ncut_eps"]), h, w)
    else:
        want = dm.upsample_mask(densecrf_foreground(ev.a_c, img, hp), h, w)
    np.testing.assert_allclose(m, want.astype(np.float32), atol=1e-6)
    assert m.max() > m.min() or name == "densecrf-diffusion"


@pytest.mark.slow
def test_eval_attentioncut_on_toy_with_the_tiny_backbone(tmp_path: Path) -> None:
    from odbench.cli import main

    res = CliRunner().invoke(
        main,
        [
            "eval",
            "--method",
            "attentioncut",
            "--dataset",
            "toy",
            "--limit",
            "4",
            "--backbone",
            "sd-tiny",
            "--set",
            "num_steps=1",
            "--results-dir",
            str(tmp_path / "results"),
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
    )
    assert res.exit_code == 0, res.output
    files = list((tmp_path / "results").rglob("*.json"))
    assert files, res.output
    doc = json.loads(files[0].read_text())
    assert doc["method"]["name"] == "attentioncut"
    assert doc["dataset"]["n_evaluated"] == 4


class _FakeSD:
    """Stands in for sd-v1-4 (no weights here): captures with the real model's shapes at 512 px
    (cross/self attention at 64², 32², 16², five layers each; six feature blocks 320-1280 wide)."""

    class spec:  # noqa: N801
        name = "sd-v1-4"
        repo_id = "fake"
        revision = None

    class unet:  # noqa: N801
        class config:  # noqa: N801
            block_out_channels = (320, 640, 1280, 1280)

    vae_scale = 8
    device = "cpu"

    def feature_blocks(self) -> tuple[str, ...]:
        return tuple(f"down_blocks.{i}.attentions.{j}" for i in range(3) for j in range(2))

    @property
    def tokenizer(self):  # noqa: ANN201
        from odbench.backbones.diffusion import clip_tokenizer

        return clip_tokenizer()

    def class_prompt(self, label: str, template: str) -> tuple[str, list[int]]:
        return template.format(label), [5]

    def invert(self, images, prompts, idx, num_steps, capture, decode):  # noqa: ANN001, ANN201
        import torch

        from odbench.backbones.diffusion import Captures

        rng = np.random.default_rng(0)
        caps = Captures(num_steps=num_steps)
        for side in (64, 32, 16):
            for j in range(5):
                name = f"block{side}.{j}.attn2"
                caps.cross[name] = torch.rand(len(images), side, side)
                caps.cross_side[name] = side
            a = rng.uniform(size=(len(images), side * side, side * side)).astype(np.float32)
            caps.self_attn[side] = torch.from_numpy(a / a.sum(-1, keepdims=True))
        if capture.features:
            for i, (side, width) in enumerate(((64, 320), (32, 640), (16, 1280)) * 2):
                caps.features[f"down.{i}"] = torch.rand(len(images), width, side, side)

        class Out:
            captures = caps

        return Out()


@pytest.mark.parametrize(
    "name", ["attentioncut", "kmeans-diffusion", "ncut-diffusion", "densecrf-diffusion"]
)
def test_methods_take_the_real_sd_capture_shapes(
    name: str, monkeypatch: pytest.MonkeyPatch, toy_images: list[np.ndarray]
) -> None:
    from odbench.features import sd
    from odbench.methods.base import create_method

    monkeypatch.setattr(sd, "shared_backbone", lambda *a: _FakeSD())
    method = create_method(name, use_prior=False)
    ev = method.evidence(toy_images[:1])[0]  # type: ignore[attr-defined]
    assert ev.a_c.shape == (64, 64) and ev.affinity.grid == 64
    if ev.features is not None:
        assert ev.features.shape == (64, 64, 2 * (320 + 640 + 1280))
    (m,) = method.predict(toy_images[:1])
    assert m.shape == toy_images[0].shape[:2] and 0 <= m.min() and m.max() <= 1


def test_resize_channels_handles_wide_features() -> None:
    import cv2

    from odbench.methods.diffusion import resize_channels

    x = np.random.default_rng(0).uniform(size=(8, 8, 300)).astype(np.float32)
    y = resize_channels(x, 16, cv2.INTER_LINEAR)
    ref = cv2.resize(
        np.ascontiguousarray(x[..., 299:300]), (16, 16), interpolation=cv2.INTER_LINEAR
    )
    assert y.shape == (16, 16, 300)
    np.testing.assert_allclose(y[..., 299], ref, atol=1e-6)


def test_bad_cut_settings_are_one_line_card_errors() -> None:
    from odbench.cards import CardError
    from odbench.methods.base import create_method

    with pytest.raises(CardError, match="attentioncut.toml: terms must"):
        create_method("attentioncut", terms=["A_s"])
    with pytest.raises(CardError, match="cut_resolution"):
        create_method("attentioncut", cut_resolution="full")
