"""DINOv2 extractors (ViT-S/14, ViT-B/14, with and without registers): the registry entries match
timm's tags, the position embeddings are interpolated as DINOv2's own code does (re-implemented
here from facebookresearch/dinov2 ``interpolate_pos_encoding``), register tokens are dropped from
features and keys, Meta's original checkpoint layout loads, missing weights are one line, and
patch 14 flows through TokenCut, LOST and the frozen decoder on images that are no multiple of 14."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from odbench.features import extractor_spec, extractors_of, load_extractor

TINY = "dinov2-tiny"
FULL = ["dinov2-vits14", "dinov2-vitb14", "dinov2-vits14-reg", "dinov2-vitb14-reg"]


def test_registry_holds_the_dinov2_family_as_timm_tags() -> None:
    import timm

    assert extractors_of("dinov2") == sorted([*FULL, *(f"{n}-random" for n in FULL), TINY])
    for name in FULL:
        spec = extractor_spec(name)
        arch = spec.config["arch"]
        assert spec.config["hub"] == f"timm/{arch}.lvd142m" and spec.random is None
        assert extractor_spec(f"{name}-random").config["arch"] == arch
        cfg = timm.models.get_pretrained_cfg(f"{arch}.lvd142m")
        assert cfg is not None and cfg.input_size == (3, 518, 518) and cfg.url == spec.config["url"]
        assert tuple(cfg.mean) == (0.485, 0.456, 0.406) and tuple(cfg.std) == (0.229, 0.224, 0.225)
        assert ("-reg" in name) == ("reg4" in arch)
    assert "vit_small" in extractor_spec("dinov2-vits14").config["arch"]
    assert "vit_base" in extractor_spec("dinov2-vitb14-reg").config["arch"]


@pytest.mark.parametrize(
    ("name", "channels", "prefix"),
    [("dinov2-vits14-random", 384, 1), ("dinov2-vitb14-reg-random", 768, 5), (TINY, 48, 5)],
)
def test_patch_14_and_prefix_tokens(name: str, channels: int, prefix: int) -> None:
    fx: Any = load_extractor(name)
    assert fx.patch_size == 14 and fx.strides == (14,) and fx.channels == (channels,)
    assert int(fx.model.num_prefix_tokens) == prefix  # CLS (+ 4 registers)
    x = torch.rand(1, 3, 28, 42, generator=torch.Generator().manual_seed(0))
    assert fx.extract(x)[0].shape == (1, channels, 2, 3)
    assert fx.keys(x).shape == (1, channels, 2, 3)


def _dinov2_reference_tokens(model: Any, x: torch.Tensor) -> torch.Tensor:
    """DINOv2's ``prepare_tokens_with_masks`` (registers inserted after CLS), written from its
    code on timm's parameters: a CLS position folded into the CLS token for register models
    (timm's conversion), patch positions resized with ``scale_factor=(n + 0.1) / M``, bicubic,
    no antialiasing, unchanged at the native grid."""
    b, _, hh, ww = x.shape
    patches = model.patch_embed(x)  # (B, h, w, C): dynamic size keeps NHWC
    h0, w0 = hh // 14, ww // 14
    pos = model.pos_embed
    if model.no_embed_class:
        cls_pos, patch_pos = torch.zeros_like(pos[:, :1]), pos
    else:
        cls_pos, patch_pos = pos[:, :1], pos[:, 1:]
    n = patch_pos.shape[1]
    m = int(math.sqrt(n))
    if not (h0 * w0 == n and hh == ww):
        patch_pos = F.interpolate(
            patch_pos.reshape(1, m, m, -1).permute(0, 3, 1, 2),
            scale_factor=(float(h0 + 0.1) / m, float(w0 + 0.1) / m),
            mode="bicubic",
            antialias=False,
        )
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, h0 * w0, -1)
    tokens = torch.cat([model.cls_token.expand(b, -1, -1), patches.reshape(b, h0 * w0, -1)], 1)
    tokens = tokens + torch.cat([cls_pos, patch_pos], 1)
    if model.reg_token is not None:
        reg = model.reg_token.expand(b, -1, -1)
        tokens = torch.cat([tokens[:, :1], reg, tokens[:, 1:]], 1)
    return tokens


@pytest.mark.parametrize("name", [TINY, "dinov2-vits14-random"])
def test_position_embeddings_are_interpolated_as_dinov2_does(name: str) -> None:
    from timm.models.vision_transformer import VisionTransformer

    fx: Any = load_extractor(name)
    model = fx.model
    for hh, ww in [(518, 518), (14 * 23, 14 * 31), (14 * 40, 14 * 20), (28, 42)]:
        x = torch.rand(1, 3, hh, ww, generator=torch.Generator().manual_seed(hh + ww))
        with torch.inference_mode():
            got = model._pos_embed(model.patch_embed(x))
            want = _dinov2_reference_tokens(model, x)
            timm_own = VisionTransformer._pos_embed(model, model.patch_embed(x))
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
        if (hh, ww) == (518, 518):
            assert torch.equal(got, timm_own)  # native grid: nothing resized
        else:  # timm's own resampling (antialiased, by size) is another function
            assert (got - timm_own).abs().max() > 1e-4


def test_features_and_keys_drop_the_cls_and_register_tokens() -> None:
    fx: Any = load_extractor(TINY)
    model = fx.model
    x = torch.rand(2, 3, 42, 56, generator=torch.Generator().manual_seed(1))
    norm = fx.normalise(x)
    with torch.inference_mode():
        tokens = model._pos_embed(model.patch_embed(norm))
        for block in model.blocks[:-1]:
            tokens = block(tokens)
        last = model.blocks[-1]
        q, k, _ = last.attn.qkv(last.norm1(tokens)).chunk(3, dim=-1)
        out = model.norm(last(tokens))
    assert tokens.shape[1] == 5 + 3 * 4
    torch.testing.assert_close(fx.extract(x)[0], out[:, 5:].transpose(1, 2).reshape(2, 48, 3, 4))
    torch.testing.assert_close(fx.keys(x), k[:, 5:].transpose(1, 2).reshape(2, 48, 3, 4))
    assert not torch.allclose(fx.keys(x), q[:, 5:].transpose(1, 2).reshape(2, 48, 3, 4))


def test_meta_original_checkpoint_layout_loads(tmp_path: Path) -> None:
    """``checkpoint=`` with DINOv2's own layout (mask token, ``register_tokens``, the CLS
    position inside ``pos_embed``) gives the same features as the model it was made from."""
    ref: Any = load_extractor(TINY, seed=3)
    state = {k: v.clone() for k, v in ref.model.state_dict().items()}
    cls_pos = torch.randn(1, 1, 48, generator=torch.Generator().manual_seed(4))
    meta = {k: v for k, v in state.items() if k not in ("reg_token", "pos_embed", "cls_token")}
    meta |= {
        "mask_token": torch.zeros(1, 48),
        "register_tokens": state["reg_token"],
        "cls_token": state["cls_token"] - cls_pos,
        "pos_embed": torch.cat([cls_pos, state["pos_embed"]], 1),
    }
    path = tmp_path / "dinov2_tiny_reg4_pretrain.pth"
    torch.save(meta, path)
    fx: Any = load_extractor(TINY, checkpoint=str(path))
    assert fx.source.startswith(f"file:{path.name}:")
    x = torch.rand(1, 3, 56, 70, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(fx.extract(x)[0], ref.extract(x)[0], rtol=1e-5, atol=1e-5)
    other: Any = load_extractor(TINY, seed=4)
    assert not torch.allclose(other.extract(x)[0], ref.extract(x)[0])


def test_missing_weights_are_one_line_with_the_fetch_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from odbench.features.weights import WeightsNotFoundError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(WeightsNotFoundError) as err:
        load_extractor("dinov2-vitb14-reg")
    msg = str(err.value)
    assert "\n" not in msg and "HF_HUB_OFFLINE=1" in msg
    assert "hf download timm/vit_base_patch14_reg4_dinov2.lvd142m model.safetensors" in msg
    with pytest.raises(WeightsNotFoundError, match="no file at"):
        load_extractor("dinov2-vits14", checkpoint=str(tmp_path / "absent.pth"))


# ---------------------------------------------------------------- patch 14 through the methods


def _image(h: int, w: int, seed: int) -> np.ndarray:
    """A bright rectangle on a textured background."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 90, (h, w, 3), dtype=np.uint8)
    img[h // 4 : 3 * h // 4, w // 3 : 5 * w // 6] = rng.integers(170, 255, 3, dtype=np.uint8)
    return img


@pytest.mark.parametrize("method_name", ["tokencut", "lost", "tokencut.bs", "lost.bs"])
def test_key_methods_on_dinov2_tiny_at_sizes_not_multiple_of_14(method_name: str) -> None:
    from odbench.methods.base import create_method

    method: Any = create_method(method_name, backbone=TINY)
    images = [_image(61, 95, 0), _image(100, 45, 1)]  # 61 = 4*14 + 5, 95 = 6*14 + 11
    maps = method.predict(images)
    boxes = method.predict_boxes(images, maps)
    for im, m, box in zip(images, maps, boxes):
        h, w = im.shape[:2]
        assert m.shape == (h, w) and m.dtype == np.float32 and 0 <= m.min() <= m.max() <= 1
        x1, y1, x2, y2 = box
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
    if method_name == "lost":  # LOST's box is in patches of 14, clipped to the image
        k = method.keys(images[0])
        assert k.grid == (5, 7) and k.patch_size == 14 and k.padded == (70, 98)
        x1, y1, x2, y2 = boxes[0]
        assert x1 % 14 == 0 and y1 % 14 == 0
        assert (x2 == 95 or x2 % 14 == 0) and (y2 == 61 or y2 % 14 == 0)


def test_a_card_pinning_another_patch_size_is_one_line() -> None:
    from dataclasses import replace

    from odbench.cards import CardError, method_card
    from odbench.methods.base import HyperparameterError, create_method
    from odbench.methods.tokencut import TokenCut

    card = method_card("tokencut")
    assert card is not None and "patch_size" not in card.hyperparameters  # the extractor's fact
    with pytest.raises(HyperparameterError, match="unknown hyperparameter"):
        create_method("tokencut", patch_size=14)
    pinned = replace(card, hyperparameters={**card.hyperparameters, "patch_size": 16})
    with pytest.raises(CardError, match="has patch size 14, hyperparameter patch_size is 16"):
        TokenCut(pinned, backbone=TINY).predict([_image(30, 30, 0)])
    TokenCut(pinned, backbone="dino-tiny").predict([_image(30, 30, 0)])  # agrees: runs


def test_eval_backbone_dinov2_runs_tokencut_lost_and_the_decoder(tmp_path: Path) -> None:
    """``odbench eval --backbone dinov2-tiny`` for TokenCut and LOST on toy (96 x 128 images:
    no multiple of 14), and the dinov2 decoder trained with ``--features dinov2-tiny``."""
    from click.testing import CliRunner

    from odbench.cli import main

    def run(*args: str) -> dict[str, Any]:
        res = tmp_path / "res"
        base = ["eval", "--dataset", "toy", "--limit", "2", "--results-dir", str(res)]
        r = CliRunner().invoke(main, [*base, "--cache-dir", str(tmp_path / "cache"), *args])
        assert r.exit_code == 0, r.output
        name = args[1]
        (path,) = res.glob(f"{name}__toy__*.json")
        return json.loads(path.read_text())  # type: ignore[no-any-return]

    for name in ("tokencut", "lost"):
        out = run("--method", name, "--backbone", TINY)
        assert out["method"]["hyperparameters"]["backbone"] == TINY
        assert 0 <= out["metrics"]["saliency"]["iou"] <= 1
        assert 0 <= out["metrics"]["localization"]["corloc"] <= 100
    r = CliRunner().invoke(
        main,
        ["train", "--features", TINY, "--data", "toy", "--out", str(tmp_path / "run")]
        + ["--steps", "2", "--n", "4", "--cache-dir", str(tmp_path / "fcache")],
    )
    assert r.exit_code == 0, r.output
    out = run("--method", "dinov2-decoder", "--checkpoint", str(tmp_path / "run"))
    assert out["method"]["checkpoint"]["extractor"]["name"] == TINY
    assert 0 <= out["metrics"]["saliency"]["iou"] <= 1
