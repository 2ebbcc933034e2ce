"""FOUND: the training-free background seed, the head, the single / multi / +BS post-processing
against re-implementations of valeoai/FOUND's code (``bkg_seg.py``, ``model.py``,
``evaluation/saliency.py``, ``misc.py``, ``bilateral_solver.py``) on the same features; the
released head file's format; and a learning test on planted features."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from scipy import ndimage

from odbench.checkpoint import CheckpointError
from odbench.cli import main
from odbench.features import extractor_spec, load_extractor
from odbench.features.base import FeatureExtractor
from odbench.methods import found as found_module
from odbench.methods.base import create_method
from odbench.methods.found import background_mask, found_bilateral, load_head, single_component

# ----------------------------------------------------------------- their code, re-implemented


def their_bkg_seg(att: torch.Tensor, feats: torch.Tensor, dims: tuple[int, int], th: float,
                  dim: int, apply_weights: bool = True) -> torch.Tensor:  # fmt: skip
    """``compute_img_bkg_seg`` of FOUND's bkg_seg.py: ``att`` [B, heads, T, T] (CLS first),
    ``feats`` [B, T, heads * dim]; 1 on the background."""
    w_f, h_f = dims
    nb, nh = att.shape[:2]
    a = att[:, :, 0, 1:].reshape(nb, nh, w_f, h_f)
    threshold = torch.mean(a.reshape(nb, -1), dim=1)
    q = torch.sum(a.reshape(nb, nh, w_f * h_f) > threshold[:, None, None], dim=2) / (w_f * h_f)
    beta = torch.log(torch.sum(q + 1e-10, dim=1)[:, None] / (q + 1e-10))
    descs = feats[:, 1:]
    if apply_weights:
        descs = (descs.reshape(nb, -1, nh, dim) * beta[:, None, :, None]).reshape(nb, -1, nh * dim)
    descs = F.normalize(descs, dim=-1, p=2)
    cos = torch.bmm(descs, descs.permute(0, 2, 1))
    if apply_weights:
        a = a * beta[:, :, None, None]
    ref = torch.argmin(torch.sum(a, dim=1).reshape(nb, -1), dim=-1)
    return (cos[torch.arange(nb), ref, :].reshape(nb, w_f, h_f) > th).float()


def their_single(preds_up: np.ndarray) -> np.ndarray:
    """The ``evaluation_mode == 'single'`` branch of FOUND's evaluate_saliency."""
    labeled, nr = ndimage.label(preds_up)
    if nr == 0:
        return preds_up.astype(bool)
    nb_pixel = [np.sum(labeled == i) for i in range(nr + 1)]
    order = np.argsort(nb_pixel)
    cc = np.stack([labeled == i for i in order])
    background = ((~preds_up.astype(bool))[None] & cc).sum((-1, -2)).argmax()
    order = np.delete(order, int(background))
    return np.asarray(labeled == order[-1])


def their_bs_selection(soft: np.ndarray, mask: np.ndarray, get_all_cc: bool) -> np.ndarray:
    """FOUND's ``bilateral_solver_output`` after the solve, then ``apply_bilateral_solver``'s
    IoU > 0.5 gate (misc.py ``IoU``)."""
    h, w = soft.shape
    binary = ndimage.binary_fill_holes(soft > 0.5)
    labeled, nr = ndimage.label(binary)
    order = np.argsort([np.sum(labeled == i) for i in range(nr + 1)])
    if get_all_cc:
        binary = (labeled[None] == order[::-1][1:, None, None]).astype(int).sum(0)
    else:
        try:
            binary = labeled == order[-2]
        except IndexError:
            binary = np.ones((h, w), dtype=bool)
    m1, m2 = torch.from_numpy(mask) > 0.5, torch.from_numpy(binary).float() > 0.5
    iou = (torch.sum(m1 * (m1 == m2)).float() / torch.sum(m1 + m2)).item()
    return binary.astype(float) if iou > 0.5 else mask


# ----------------------------------------------------------------- the training-free part


def _attention(rng: np.random.Generator, heads: int, n: int) -> np.ndarray:
    """A softmax attention [heads, 1 + n, 1 + n] with peaky rows (CLS first)."""
    logits = rng.normal(0, 2.0, (heads, n + 1, n + 1))
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("weighted", [True, False])
def test_background_mask_equals_founds_bkg_seg(seed: int, weighted: bool) -> None:
    rng = np.random.default_rng(seed)
    heads, dim, grid = 6, 8, (7, 9)
    n = grid[0] * grid[1]
    att = _attention(rng, heads, n)
    # planted: half the patches share a direction (the "background"), the rest are random
    keys = rng.normal(size=(n + 1, heads * dim))
    keys[1 : 1 + n // 2] += 3.0 * rng.normal(size=heads * dim)
    theirs = their_bkg_seg(
        torch.from_numpy(att)[None].float(),
        torch.from_numpy(keys)[None].float(),
        grid,
        0.3,
        dim,
        weighted,
    )[0]
    ours, seed_patch = background_mask(att[:, 0, 1:], keys[1:], 0.3, weighted)
    assert np.array_equal(ours.reshape(grid), theirs.numpy().astype(bool))
    assert ours[seed_patch]  # the seed is background by construction
    assert 0 < ours.sum() < n  # a real split, not a trivial mask


def test_keys_and_attention_are_the_vits_own() -> None:
    """The CLS attention we compute from the captured qkv equals the attention matrix timm
    computes in the last block (unfused path), the keys those of ``keys()``."""
    fx: Any = load_extractor("dino-tiny")
    x = torch.rand(2, 3, 48, 64, generator=torch.Generator().manual_seed(0))
    keys, attn = fx.keys_and_attention(x)
    block = fx.model.blocks[-1].attn
    block.fused_attn = False
    seen: list[torch.Tensor] = []
    handle = block.attn_drop.register_forward_hook(lambda _m, _i, out: seen.append(out))
    try:
        with torch.no_grad():
            fx.model.forward_features(fx.normalise(x))
    finally:
        handle.remove()
        block.fused_attn = True
    ref = seen[0][:, :, 0, 1:].reshape(2, block.num_heads, 3, 4)
    assert torch.allclose(attn, ref, atol=1e-6)
    assert torch.equal(keys, fx.keys(x))


@pytest.mark.parametrize("seed", range(8))
def test_single_component_equals_founds_evaluation(seed: int) -> None:
    rng = np.random.default_rng(seed)
    mask = ndimage.binary_opening(rng.random((40, 50)) < 0.45)
    if seed == 0:
        mask = np.ones_like(mask)  # everything foreground
    if seed == 1:
        mask = np.zeros_like(mask)  # nothing
    assert np.array_equal(single_component(mask), their_single(mask.astype(np.float32)))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("all_cc", [True, False])
def test_bilateral_selection_equals_founds(
    seed: int, all_cc: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given the same solver output, the components kept and the IoU > 0.5 gate are FOUND's;
    the solver gets FOUND's λ and confidence."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((40, 50), np.float32)
    mask[5 + seed : 25, 10 : 30 + seed] = 1.0
    soft = ndimage.gaussian_filter(mask + 0.6 * rng.random(mask.shape), 2.0 + seed % 3)
    if seed == 5:
        soft = rng.random(mask.shape)  # noise: the gate refuses it
    calls: list[dict[str, Any]] = []

    def fake_solve(image: np.ndarray, target: np.ndarray, conf: np.ndarray, **kw: Any) -> Any:
        calls.append({"conf": float(conf.mean()), **kw})
        return soft

    monkeypatch.setattr(found_module, "bilateral_solve", fake_solve)
    image = np.zeros((40, 50, 3), np.uint8)
    ours, _ = found_bilateral(image, mask, all_cc)
    assert np.array_equal(ours, their_bs_selection(soft, mask, all_cc).astype(np.float32))
    assert calls[0]["lam"] == 256.0 and calls[0]["conf"] == pytest.approx(0.999)
    assert (calls[0]["sigma_spatial"], calls[0]["sigma_luma"], calls[0]["sigma_chroma"]) == (
        16.0,
        16.0,
        8.0,
    )


# ----------------------------------------------------------------- the head


def _their_head_logits(fx: Any, image: np.ndarray, conv: torch.nn.Conv2d) -> torch.Tensor:
    """FOUND's ``forward_step(for_eval=True)`` + ``evaluate_saliency``'s upsampling on the same
    timm ViT: normalise, pad with zeros to the patch size, hook qkv, keys -> conv."""
    p = fx.patch_size
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    x = fx.normalise(x)
    h, w = x.shape[-2:]
    x = F.pad(x, (0, (p - w % p) % p, 0, (p - h % p) % p), value=0)
    hooked: dict[str, torch.Tensor] = {}
    qkv_layer = fx.model.blocks[-1].attn.qkv
    handle = qkv_layer.register_forward_hook(lambda _m, _i, out: hooked.update(qkv=out))
    try:
        with torch.no_grad():
            fx.model.forward_features(x)
    finally:
        handle.remove()
    nh = fx.model.blocks[-1].attn.num_heads
    nb, tokens = hooked["qkv"].shape[:2]
    qkv = hooked["qkv"].reshape(nb, tokens, 3, nh, -1 // nh).permute(2, 0, 3, 1, 4)
    feats = qkv[1].transpose(1, 2).float()
    prefix = int(fx.model.num_prefix_tokens)  # 1 (CLS) in FOUND; DINOv2's registers too
    feats = (
        feats[:, prefix:].reshape(nb, x.shape[-2] // p, x.shape[-1] // p, -1).permute(0, 3, 1, 2)
    )
    with torch.no_grad():
        preds = conv(feats)
        up = F.interpolate(preds, scale_factor=p, mode="bilinear", align_corners=False)
    return up[..., :h, :w]


def _their_head_file(tmp_path: Path, channels: int, seed: int = 0) -> tuple[Path, Any]:
    """A head in FOUND's format: ``torch.save({"decoder": conv.state_dict()})``."""
    torch.manual_seed(seed)
    conv = torch.nn.Conv2d(channels, 1, (1, 1))
    path = tmp_path / "decoder_weights.pt"
    torch.save({"decoder": conv.state_dict()}, path)
    return path, conv


@pytest.mark.parametrize("backbone", ["dino-tiny", "dinov2-tiny"])  # patch 16 and 14
def test_head_logits_equal_founds_on_their_released_format(
    tmp_path: Path, toy_images: list[np.ndarray], backbone: str
) -> None:
    path, conv = _their_head_file(tmp_path, 48)
    method: Any = create_method("found.multi", backbone=backbone, checkpoint=str(path))
    fx = method.extractor()
    for image in toy_images:  # 96 x 128 and 72 x 100 (padded to the patch size)
        theirs = _their_head_logits(fx, image, conv)
        soft = method.predict([image])[0]
        assert soft.shape == image.shape[:2]
        ours = torch.logit(torch.from_numpy(soft).double(), eps=1e-12)
        assert torch.allclose(ours, theirs[0, 0].double(), atol=1e-5)
        single = create_method("found", backbone=backbone, checkpoint=str(path))
        expected = their_single((torch.sigmoid(theirs[0, 0]) > 0.5).float().numpy())
        assert np.array_equal(single.predict([image])[0], expected.astype(np.float32))


def test_head_file_round_trips_and_converts(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path, conv = _their_head_file(tmp_path, 48, seed=3)
    state, info = load_head(str(path))
    assert info["format"] == "found-pt" and len(info["sha256"]) == 64
    assert torch.equal(state["conv.weight"], conv.weight.detach())
    assert torch.equal(state["conv.bias"], conv.bias.detach())
    converted = tmp_path / "decoder_weights.safetensors"
    save_file({f"decoder.{k}": v for k, v in conv.state_dict().items()}, str(converted))
    state2, info2 = load_head(str(converted))
    assert info2["format"] == "found-safetensors"
    assert all(torch.equal(state[k], state2[k]) for k in state)


class _Payload:
    def __reduce__(self) -> Any:
        return (print, ("unpickled: arbitrary code ran",))


def test_a_pickled_payload_is_refused_in_one_line(tmp_path: Path) -> None:
    evil = tmp_path / "decoder_weights.pt"
    evil.write_bytes(pickle.dumps({"decoder": _Payload()}, protocol=2))
    with pytest.raises(CheckpointError) as e:
        load_head(str(evil))
    assert str(e.value).startswith(f"{evil}: refused by torch.load(weights_only=True)")
    assert "\n" not in str(e.value)
    # torch's reason (the global it refused), not its advice to load with weights_only=False
    assert "GLOBAL print" in str(e.value) and "`False`" not in str(e.value)
    # through the CLI: one error line, exit != 0, nothing unpickled
    r = CliRunner().invoke(
        main,
        ["eval", "--method", "found", "--dataset", "toy", "--backbone", "dino-tiny",
         "--checkpoint", str(evil), "--limit", "1", "--results-dir", str(tmp_path / "res")],
    )  # fmt: skip
    assert r.exit_code != 0
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "weights_only" in lines[0]
    assert "arbitrary code ran" not in r.output


@pytest.mark.parametrize(
    "blob, why",
    [
        ({"model": {}}, "holds no 'decoder' state dict"),
        ({"decoder": {"weight": torch.zeros(1, 8, 3, 3), "bias": torch.zeros(1)}}, "1x1 conv"),
        ({"decoder": {"weight": torch.zeros(1, 8, 1, 1)}}, "expected the tensors weight and bias"),
        (
            {"decoder": {"weight": torch.full((1, 8, 1, 1), torch.nan), "bias": torch.zeros(1)}},
            "NaN or inf",
        ),
    ],
)
def test_other_head_files_are_refused(tmp_path: Path, blob: Any, why: str) -> None:
    path = tmp_path / "head.pt"
    torch.save(blob, path)
    with pytest.raises(CheckpointError, match=why):
        load_head(str(path))


def test_the_head_needs_weights_and_the_backbone_it_fits(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="needs the head's weights"):
        create_method("found", backbone="dino-tiny")
    path, _ = _their_head_file(tmp_path, 384)  # a ViT-S head on a 48-wide tiny ViT
    method: Any = create_method("found", backbone="dino-tiny", checkpoint=str(path))
    with pytest.raises(CheckpointError, match="takes 384 channels"):
        method.predict([np.zeros((32, 32, 3), np.uint8)])


# ----------------------------------------------------------------- training


class PlantedViT(FeatureExtractor):
    """A "backbone" whose keys carry the object: the patch's centred mean colour through a fixed
    projection plus noise (objects are red, backgrounds are not), and random CLS attention, so
    that FOUND's seed lands on the object in about one image in five (its mask then inverted)."""

    patch_size = 8

    def __init__(self) -> None:
        self.spec = extractor_spec("dino-tiny")
        self.name = "dino-tiny"
        self.strides, self.channels, self.input_multiple = (8,), (12,), 8
        self.identity = "planted-vit"
        self.proj = torch.from_numpy(np.random.default_rng(0).normal(size=(12, 3))).float()

    def to(self, device: Any, dtype: Any = None) -> PlantedViT:
        return self

    def extract(self, images: torch.Tensor) -> list[torch.Tensor]:
        return [self.keys_and_attention(images)[0]]

    def keys_and_attention(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        colour = F.avg_pool2d(images.float() * 2.0 - 1.0, 8)  # [B, 3, h, w] in [-1, 1]
        keys = torch.einsum("dc,bchw->bdhw", self.proj, colour)
        out_k, out_a = [], []
        for b in range(images.shape[0]):
            digest = hashlib.sha256(images[b].numpy().tobytes()).digest()
            g = torch.Generator().manual_seed(int.from_bytes(digest[:4], "little"))
            out_k.append(keys[b] + 0.3 * torch.randn(keys[b].shape, generator=g))
            out_a.append(torch.rand((3, *keys.shape[2:]), generator=g))
        return torch.stack(out_k), torch.stack(out_a)


def _red_objects(folder: Path, n: int, seed: int) -> None:
    """``images/`` + ``masks/`` of 64² images: a red rectangle on a non-red background."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir(parents=True)
    for i in range(n):
        image = np.empty((64, 64, 3), np.uint8)
        image[..., 0] = rng.integers(0, 70)
        image[..., 1:] = rng.integers(60, 256, size=2)
        mask = np.zeros((64, 64), np.uint8)
        y, x = rng.integers(4, 30, size=2)
        hh, ww = rng.integers(14, 28, size=2)
        mask[y : y + hh, x : x + ww] = 255
        image[mask > 0] = [rng.integers(170, 256), rng.integers(0, 60), rng.integers(0, 60)]
        noise = rng.normal(0, 12, image.shape)
        image = np.clip(image + noise, 0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / "images" / f"{i:03d}.png")
        Image.fromarray(mask).save(folder / "masks" / f"{i:03d}.png")


def test_trained_head_beats_its_training_free_seed_masks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FOUND's point: a 1x1 conv trained on every image's seed mask (and its own smoothed mask)
    fixes the images whose seed fell on the object.  IoU against the GT on held-out images."""
    import odbench.features
    from odbench.data.base import create_dataset
    from odbench.training import train

    planted = PlantedViT()
    monkeypatch.setattr(odbench.features, "load_extractor", lambda *a, **k: planted)
    _red_objects(tmp_path / "train", 40, seed=0)
    _red_objects(tmp_path / "test", 30, seed=1)
    result = train(
        data="folder", data_root=tmp_path / "train", out=tmp_path / "run", method="found",
        features="dino-tiny", steps=40, batch_size=10, resolution=64, val_split=0.1,
        cache_dir=tmp_path / "cache", device="cpu",
    )  # fmt: skip
    assert result.config["training"]["loss"] == "found" and result.step == 40

    def ious(name: str, **kw: Any) -> np.ndarray:
        method = create_method(name, backbone="dino-tiny", **kw)
        ds = create_dataset("folder", data_root=tmp_path / "test")
        out = []
        for i in ds.ids():
            sample = ds.load(i)
            pred, gt = method.predict([sample.image])[0] > 0.5, sample.mask > 127
            out.append((pred & gt).sum() / max((pred | gt).sum(), 1))
        return np.array(out)

    seed, head = ious("found.seed"), ious("found", checkpoint=str(tmp_path / "run"))
    # measured: seed .58, head .69, the head better on 25 of the 30 images
    assert head.mean() > seed.mean() + 0.05, (head.mean(), seed.mean())
    assert (head > seed).mean() >= 0.7, (head > seed).mean()


def test_train_refuses_a_method_it_cannot_train_and_a_foreign_family() -> None:
    from odbench.training import TrainError, train

    with pytest.raises(TrainError, match="not a method odbench train trains"):
        train(data="toy", out=Path("unused"), method="tokencut")
    with pytest.raises(TrainError, match="trains on dino or dinov2 features"):
        train(data="toy", out=Path("unused"), method="found", features="clip-tiny")


PAPER_TABLES = Path("/work/shared/reference/paper-tables.md")


@pytest.mark.skipif(not PAPER_TABLES.is_file(), reason="shared/reference/paper-tables.md absent")
def test_reported_rows_are_diffusionseg_table_1a() -> None:
    """The card's rows (found, found.multi, found.bs, found.multi-bs) as the reference tables
    retype DiffusionSeg Table 1a's FOUND rows."""
    from odbench.reported import reported_rows

    names = {
        "FOUND-single": "found",
        "FOUND-multi": "found.multi",
        "FOUND-single + BS": "found.bs",
        "FOUND-multi + BS": "found.multi-bs",
    }
    expected = {}
    for line in PAPER_TABLES.read_text().split("## Table 1a", 1)[1].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] in names:
            values = [float(c.split()[0]) for c in cells[1:10]]
            for j, d in enumerate(("dut_omron", "duts_te", "ecssd")):
                expected[names[cells[0]], d] = dict(
                    zip(("acc", "iou", "max_fbeta"), values[3 * j : 3 * j + 3])
                )
    got = {
        (r.method, r.dataset): r.metrics
        for r in reported_rows()
        if r.method in names.values() and r.table == "1a"
    }
    assert len(expected) == 12 and got == expected
    assert all(r.protocol == "found" for r in reported_rows() if r.method in names.values())
