"""Feature extractors: every tiny variant returns its declared strides and channels at two batch
sizes, the values are the model's own (checked against a manual pass), MoCo v3 checkpoints are
converted and a wrong head count refused, and names are checked against the registry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from odbench.features import FeatureExtractor, load_extractor
from odbench.registry import FEATURES, UnknownNameError

TINY = [n for n in FEATURES.names() if FEATURES.get(n).random == "tiny"]
PUBLISHED = ["sd-v1-4", "dino-vits16", "dino-vits8", "dino-vitb8", "moco-v3-vitb16", "clip-vitb16"]
PUBLISHED += ["dinov2-vits14", "dinov2-vitb14", "dinov2-vits14-reg", "dinov2-vitb14-reg"]


def test_registry_lists_the_published_extractors_and_a_tiny_variant_per_family() -> None:
    names = FEATURES.names()
    assert set(PUBLISHED) <= set(names)
    assert {f"{n}-random" for n in PUBLISHED} <= set(names)
    assert {FEATURES.get(n).family for n in TINY} == {FEATURES.get(n).family for n in PUBLISHED}


def test_every_family_records_its_one_tiny_extractor() -> None:
    """The registry is the one place that says an extractor's family and the family's tiny
    stand-in (tests, smoke runs); every decoder card trains on a registered family."""
    from odbench.cards import method_cards
    from odbench.features import extractor_spec, extractors_of, tiny_extractor
    from odbench.features.specs import FAMILIES

    assert {FEATURES.get(n).family for n in FEATURES.names()} == set(FAMILIES)
    for family in FAMILIES:
        tiny = tiny_extractor(family)
        spec = extractor_spec(tiny)
        assert spec.family == family and spec.random == "tiny" and tiny in extractors_of(family)
        assert spec.resolution is not None and spec.resolution <= 64  # smoke runs are small
    assert tiny_extractor(extractor_spec("moco-v3-vitb16").family) == "moco-tiny"
    assert tiny_extractor(extractor_spec("dino-vits8").family) == "dino-tiny"
    assert tiny_extractor(extractor_spec("dinov2-vitb14-reg").family) == "dinov2-tiny"
    decoders = [
        c for c in method_cards().values() if c.raw.get("model", {}).get("type") == "decoder"
    ]
    assert decoders and {c.raw["model"]["family"] for c in decoders} <= set(FAMILIES)
    for card in decoders:  # the card's paper extractor belongs to the card's family
        assert extractor_spec(card.raw["model"]["features"]).family == card.raw["model"]["family"]


def test_tiny_sd_inverts_with_its_own_few_steps_unless_told_otherwise() -> None:
    """sd-tiny carries T = 2 (smoke runs in seconds); a caller's num_steps still wins, and the
    published SD keeps the paper's T = 40."""
    assert FEATURES.get("sd-tiny").options == {"num_steps": 2}
    assert load_extractor("sd-tiny").num_steps == 2
    assert load_extractor("sd-tiny", num_steps=3).num_steps == 3
    assert "T=2|" in load_extractor("sd-tiny").identity
    assert FEATURES.get("sd-v1-4").options == {}


def test_load_backbone_takes_the_sd_family_of_the_registry() -> None:
    from odbench.backbones.diffusion import backbone_spec
    from odbench.features import extractors_of

    assert extractors_of("sd") == ["sd-tiny", "sd-v1-4", "sd-v1-4-random"]
    for name in extractors_of("sd"):
        spec = backbone_spec(name)
        assert spec.name == name and spec.resolution == FEATURES.get(name).resolution
    with pytest.raises(UnknownNameError, match="known: sd-tiny, sd-v1-4, sd-v1-4-random"):
        backbone_spec("dino-tiny")  # registered, but not a diffusion model


@pytest.mark.parametrize("name", TINY)
def test_tiny_extractor_returns_declared_strides_and_channels(name: str) -> None:
    opts = {"num_steps": 2} if name.startswith("sd") else {}
    fx = load_extractor(name, **opts)
    assert isinstance(fx, FeatureExtractor) and fx.name == name
    assert len(fx.strides) == len(fx.channels) >= 1
    m = fx.input_multiple
    h, w = 2 * m * max(1, 8 // m), 3 * m * max(1, 8 // m)  # not square, small
    images = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(0))
    maps = fx.extract(images)
    assert len(maps) == len(fx.strides)
    for f, s, c in zip(maps, fx.strides, fx.channels):
        assert tuple(f.shape) == (2, c, h // s, w // s) and f.dtype == torch.float32
        assert torch.isfinite(f).all() and f.std() > 0
        assert not torch.equal(f[0], f[1])  # each image its own features
    # one image alone gives the same features as inside the batch (no batch mixing)
    alone = fx.extract(images[1:])
    for f, g in zip(maps, alone):
        torch.testing.assert_close(f[1:], g, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="multiples"):
        fx.extract(torch.rand(1, 3, h + 1, w))
    assert fx.to("cpu") is fx
    assert load_extractor(name, **opts).identity == fx.identity  # stable


def test_vit_tokens_are_the_last_layer_output_of_the_normalised_image() -> None:
    from odbench.features.vit import IMAGENET_MEAN, IMAGENET_STD

    fx = load_extractor("dino-tiny")
    x = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(1))
    (got,) = fx.extract(x)
    norm = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(
        1, 3, 1, 1
    )
    with torch.inference_mode():
        ref = fx.model.norm(fx.model.blocks(fx.model._pos_embed(fx.model.patch_embed(norm))))  # type: ignore[attr-defined]
    torch.testing.assert_close(got, ref[:, 1:].transpose(1, 2).reshape(1, 48, 2, 3))


def test_vit_keys_stop_the_forward_at_the_last_qkv() -> None:
    """keys() and keys_and_attention() run the ViT only up to the last block's qkv (its attention
    and MLP, the final norm: never called); the keys are those a full forward's hook captures,
    bit for bit, and the model works as before afterwards (no hook left)."""
    fx: Any = load_extractor("dino-tiny")
    x = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(2))
    last = fx.model.blocks[-1]
    full: list[torch.Tensor] = []
    handle = last.attn.qkv.register_forward_hook(lambda _m, _i, out: full.append(out))
    try:
        with torch.inference_mode():
            fx.model.forward_features(fx.normalise(x))
    finally:
        handle.remove()
    ran: list[str] = []
    hooks = [
        m.register_forward_hook(lambda *_a, name=name: ran.append(name))
        for name, m in (("mlp", last.mlp), ("proj", last.attn.proj), ("norm", fx.model.norm))
    ]
    try:
        keys, _ = fx.keys_and_attention(x)
        assert torch.equal(fx.keys(x), keys)
    finally:
        for h in hooks:
            h.remove()
    assert ran == []
    d = full[0].shape[-1] // 3
    want = full[0][:, 1:, d : 2 * d].transpose(1, 2).reshape(2, d, 2, 3)
    assert torch.equal(keys, want)
    assert not last.attn.qkv._forward_hooks  # no hook left behind


def test_clip_tokens_equal_open_clip_at_the_native_size() -> None:
    from odbench.features.clip import CLIP_MEAN, CLIP_STD

    fx = load_extractor("clip-tiny")
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    v = fx.visual  # type: ignore[attr-defined]
    v.output_tokens = True
    mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    with torch.inference_mode():
        _, tokens = v((x - mean) / std)
    (got,) = fx.extract(x)
    torch.testing.assert_close(got, tokens.transpose(1, 2).reshape(1, 64, 4, 4))


def test_sd_features_are_the_eq8_block_means_of_the_backbone() -> None:
    from odbench.backbones.diffusion import Capture

    fx = load_extractor("sd-tiny", num_steps=2, prior=False)
    x = torch.rand(1, 3, 8, 12, generator=torch.Generator().manual_seed(3))
    got = fx.extract(x)
    bb = fx.backbone  # type: ignore[attr-defined]
    prompt, idx = fx.prompt("")  # type: ignore[attr-defined]
    out = bb.invert(
        x * 2 - 1, prompt, idx, num_steps=2, decode=False, capture=Capture(False, False)
    )
    ref = [out.captures.features[b] for b in bb.feature_blocks()]
    assert len(got) == 4
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r)
    assert fx.identity != load_extractor("sd-tiny", num_steps=2).identity  # prior on/off


def _moco_checkpoint(fx: FeatureExtractor, path: Path) -> None:
    state = {f"module.base_encoder.{k}": v for k, v in fx.model.state_dict().items()}  # type: ignore[attr-defined]
    state["module.base_encoder.head.weight"] = torch.zeros(8, 48)
    state["module.momentum_encoder.cls_token"] = torch.zeros(1, 1, 48)
    torch.save({"epoch": 300, "arch": "vit_tiny", "state_dict": state}, path)


def test_moco_v3_checkpoint_is_converted(tmp_path: Path) -> None:
    src = load_extractor("moco-tiny", seed=7)
    path = tmp_path / "vit-t-300ep.pth.tar"
    _moco_checkpoint(src, path)
    fx = load_extractor("moco-tiny", checkpoint=str(path))
    for k, v in src.model.state_dict().items():  # type: ignore[attr-defined]
        assert torch.equal(fx.model.state_dict()[k], v), k  # type: ignore[attr-defined]
    assert "file:vit-t-300ep.pth.tar" in fx.identity
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(fx.extract(x)[0], src.extract(x)[0])


def test_moco_v3_refuses_a_timm_model_with_another_head_count(tmp_path: Path) -> None:
    from odbench.features.vit import moco_v3_state_dict

    fx = load_extractor("moco-tiny")  # 3 heads
    path = tmp_path / "ckpt.pth.tar"
    _moco_checkpoint(fx, path)
    ckpt = torch.load(path, weights_only=True)
    assert moco_v3_state_dict(ckpt, fx.model, heads=3)  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="12 attention heads, this timm model has 3"):
        moco_v3_state_dict(ckpt, fx.model, heads=12)  # type: ignore[attr-defined]
    # the registered ViT-B/16 entry declares MoCo v3's 12 heads, which timm's ViT-B has
    assert FEATURES.get("moco-v3-vitb16").config["moco_heads"] == 12


def test_list_features_shows_each_family_and_its_tiny_stand_in() -> None:
    from click.testing import CliRunner

    from odbench.cli import main

    r = CliRunner().invoke(main, ["list", "features"])
    rows = {line.split()[0]: line.split()[1:3] for line in r.output.splitlines()}
    assert r.exit_code == 0 and rows["dino-vits8"] == ["dino", "weights"]
    assert rows["moco-tiny"] == ["moco", "tiny"] and rows["sd-v1-4-random"] == ["sd", "full"]


def test_unknown_name_suggests_the_closest() -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'dino-vits16'") as e:
        load_extractor("dino-vit16")
    assert "\n" not in str(e.value)


def test_eval_backbone_is_validated_against_the_registry() -> None:
    from click.testing import CliRunner

    from odbench.cli import main

    r = CliRunner().invoke(
        main, ["eval", "--method", "tokencut", "--dataset", "toy", "--backbone", "dino-tiyn"]
    )
    assert r.exit_code == 2 and "Did you mean 'dino-tiny'" in r.output
    r = CliRunner().invoke(
        main, ["eval", "--method", "tokencut", "--dataset", "toy", "--backbone", "sd-tiny"]
    )
    assert r.exit_code == 2 and "not a ViT extractor" in r.output


def test_tokencut_runs_end_to_end_on_dino_tiny(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from odbench.cli import main

    args = ["eval", "--method", "tokencut", "--dataset", "toy", "--backbone", "dino-tiny"]
    args += ["--limit", "4", "--results-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path)]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    (res,) = (tmp_path / "r").glob("tokencut__toy*.json")
    import json

    doc = json.loads(res.read_text())
    assert doc["method"]["hyperparameters"]["backbone"] == "dino-tiny"
    assert 0 < doc["metrics"]["saliency"]["iou"] <= 1
    assert np.isfinite(doc["metrics"]["saliency"]["acc"])


def test_features_and_backbones_never_import_methods() -> None:
    """Imports run one way: methods use extractors, never the reverse (AST scan, lazy imports
    inside functions included)."""
    import ast

    import odbench

    root = Path(odbench.__file__).parent
    for folder in ("features", "backbones"):
        for path in (root / folder).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                for name in names:
                    assert not name.startswith(("odbench.methods", "odbench.runner")), (
                        f"{path.name} imports {name}"
                    )
