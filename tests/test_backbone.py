"""Diffusion backbone: DDIM math (Eq. 7), attention capture (Eq. 2), features (Eq. 8), tokens."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

import odbench.backbones.ddim as DDIM
from odbench.backbones import diffusion as D
from odbench.backbones.attention import AttentionStore, capture_attention


@pytest.fixture(scope="module")
def bb() -> D.DiffusionBackbone:
    return D.load_backbone("sd-tiny", resolution=32)  # latent 16², maps 16² and 8²


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 48, 56, 3), dtype=np.uint8)


# --------------------------------------------------------------------------- DDIM math


def test_timesteps_and_schedule_match_diffusers_ddim() -> None:
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(**D.SCHEDULER_CONFIG)
    sched.set_timesteps(40)
    assert D.ddim_timesteps(40) == sorted(sched.timesteps.tolist())
    assert D.ddim_timesteps(40)[:3] == [1, 26, 51]
    # scaled_linear: beta_t = (sqrt(b0) + t/(N-1) (sqrt(b1) - sqrt(b0)))^2, independent formula
    t = np.arange(1000)
    betas = (math.sqrt(0.00085) + t / 999 * (math.sqrt(0.012) - math.sqrt(0.00085))) ** 2
    np.testing.assert_allclose(D.alphas_cumprod().numpy(), np.cumprod(1 - betas), rtol=1e-6)


def _delta_eps(mu: torch.Tensor, ac: torch.Tensor) -> D.EpsFn:
    """Exact ε for data concentrated at mu: ε(x, t) = (x - sqrt(ā_t) mu) / sqrt(1 - ā_t).

    Along a DDIM trajectory of this model ε is constant, so Eq. 7 inverts exactly."""

    def eps(x: torch.Tensor, t: int) -> torch.Tensor:
        a = float(ac[t])
        return (x - math.sqrt(a) * mu) / math.sqrt(1 - a)

    return eps


def test_analytic_inversion_reconstructs() -> None:
    g = torch.Generator().manual_seed(0)
    mu, x0 = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)
    ac = D.alphas_cumprod()
    steps = D.ddim_timesteps(40)
    eps = _delta_eps(mu, ac)
    xT = D.ddim_invert(eps, x0, steps, ac)
    # closed form of the inverted latent: sqrt(ā_T) mu + sqrt(1 - ā_T) ε(x0, 0)
    a_T = float(ac[steps[-1]])
    expected = math.sqrt(a_T) * mu + math.sqrt(1 - a_T) * eps(x0, 0)
    torch.testing.assert_close(xT, expected, rtol=1e-9, atol=1e-9)
    rec = D.ddim_reverse(eps, xT, steps, ac)
    assert ((rec - x0).norm() / x0.norm()).item() <= 1e-4


@pytest.mark.parametrize("alteration", ["one_coefficient", "alpha_not_cumprod", "eps_next_t"])
def test_altered_equation_breaks_reconstruction(
    monkeypatch: pytest.MonkeyPatch, alteration: str
) -> None:
    """Each alteration applied to the inversion only (the reverse pass is the standard sampler)."""
    g = torch.Generator().manual_seed(1)
    mu, x0 = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)
    ac = D.alphas_cumprod()
    steps = D.ddim_timesteps(40)
    eps = _delta_eps(mu, ac)
    correct_step = D.ddim_step
    inv_eps, sched = eps, ac
    if alteration == "one_coefficient":  # sqrt(1 - ā_from) where Eq. 7 has sqrt(1 - ā_to)

        def step(x: torch.Tensor, e: torch.Tensor, a_from: float, a_to: float) -> torch.Tensor:
            f = (x - math.sqrt(1.0 - a_from) * e) / math.sqrt(a_from)
            return math.sqrt(a_to) * f + math.sqrt(1.0 - a_from) * e

        monkeypatch.setattr(DDIM, "ddim_step", step)
    elif alteration == "alpha_not_cumprod":  # per-step α_t instead of the cumulative ā_t
        sched = torch.cat([ac[:1], ac[1:] / ac[:-1]])
    else:  # inversion evaluates ε at the next level's timestep instead of the current one
        nxt = dict(zip([0, *steps], steps))
        inv_eps = lambda x, t: eps(x, nxt[t])  # noqa: E731
    xT = D.ddim_invert(inv_eps, x0, steps, sched)
    monkeypatch.setattr(DDIM, "ddim_step", correct_step)
    rec = D.ddim_reverse(eps, xT, steps, ac)
    assert ((rec - x0).norm() / x0.norm()).item() > 1e-2


# --------------------------------------------------------------------------- tokens


@pytest.mark.parametrize(
    "phrase", ["great white shark", "tabby cat", "sulphur-crested cockatoo", "T-shirt", "dog"]
)
def test_class_token_indices_select_all_subtokens(bb: D.DiffusionBackbone, phrase: str) -> None:
    from open_clip.tokenizer import SimpleTokenizer

    prompt, idx = bb.class_prompt(phrase)
    assert prompt == f"a photo of a {phrase}"
    ref = SimpleTokenizer()  # open_clip's own BPE implementation: an independent reference
    n_prefix, n_phrase = len(ref.encode("a photo of a")), len(ref.encode(phrase))
    assert idx == list(range(1 + n_prefix, 1 + n_prefix + n_phrase))  # +1: BOS at position 0
    ids = bb.tokenizer(prompt).input_ids
    assert ids == [49406, *ref.encode(prompt), 49407]
    assert [ids[i] for i in idx] == ref.encode(phrase)
    decoded = ref.decode([ids[i] for i in idx])  # CLIP decode spaces out punctuation
    assert decoded.replace(" ", "") == phrase.lower().replace(" ", "")
    if phrase != "dog":
        assert len(idx) > 1


def test_empty_class_is_empty_prompt(bb: D.DiffusionBackbone) -> None:
    assert bb.class_prompt("") == ("", [])
    with pytest.raises(ValueError, match="not found"):
        bb.token_indices("a photo of a dog", "cat")


# --------------------------------------------------------------------------- capture


def test_capture_leaves_unet_output_unchanged(bb: D.DiffusionBackbone) -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, bb.latent_side, bb.latent_side, generator=g)
    text = bb.encode_text(["a photo of a dog", "a photo of a tabby cat"])
    before = {k: type(v) for k, v in bb.unet.attn_processors.items()}
    ref = bb.eps(x, 501, text)
    store = AttentionStore()
    sides = bb.default_sides()
    with capture_attention(bb.unet, store, bb.latent_side, sides, sides) as layers:
        got = bb.eps(x, 501, text)
    assert len(layers) == len(before)  # tiny: every layer is at a captured side
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    assert {k: type(v) for k, v in bb.unet.attn_processors.items()} == before
    assert store.self_count and store.cross_count


def test_self_attention_running_sum_equals_mean_of_stored_maps(bb: D.DiffusionBackbone) -> None:
    """Reference: per-step maps recomputed from each attn1's inputs by pre-hooks and stored."""
    stored: dict[int, list[torch.Tensor]] = {}

    def pre_hook(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        h = args[0] if args else kwargs["hidden_states"]
        heads = module.heads  # type: ignore[attr-defined]
        q, k = module.to_q(h), module.to_k(h)  # type: ignore[operator]
        b, n, c = q.shape
        q = q.view(b, n, heads, c // heads).transpose(1, 2)
        k = k.view(b, n, heads, c // heads).transpose(1, 2)
        p = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(c // heads), dim=-1).mean(1)
        stored.setdefault(math.isqrt(n), []).append(p)

    handles = [
        m.register_forward_pre_hook(pre_hook, with_kwargs=True)
        for name, m in bb.unet.named_modules()
        if name.endswith("attn1")
    ]
    store = AttentionStore()
    x = torch.randn(
        1, 4, bb.latent_side, bb.latent_side, generator=torch.Generator().manual_seed(3)
    )
    text = bb.encode_text(["a photo of a dog"])
    try:
        with capture_attention(bb.unet, store, bb.latent_side, (), bb.default_sides()):
            for t in (901, 101):
                bb.eps(x, t, text)
    finally:
        for h in handles:
            h.remove()
    means = store.self_mean()
    assert set(means) == set(stored) == {16, 8}
    for side, maps in stored.items():
        assert store.self_count[side] == len(maps)
        torch.testing.assert_close(means[side], torch.stack(maps).mean(0), rtol=1e-4, atol=1e-6)


def test_store_drops_unconditional_half() -> None:
    store = AttentionStore(cfg=True)
    probs = torch.rand(4, 16, 16)
    store.add_self(4, probs)
    store.add_self(4, probs)
    store.add_cross("layer", 4, probs[:, :, :7])
    torch.testing.assert_close(store.self_mean()[4], probs[2:])
    assert store.cross_mean()["layer"].shape == (2, 4, 4, 7)


class _OnAccelerator:
    """Stands for a tensor on a GPU: only ``.cpu()`` gives a tensor numpy can read."""

    def __init__(self, t: torch.Tensor) -> None:
        self.t = t

    def cpu(self) -> torch.Tensor:
        return self.t


def test_captures_come_back_on_the_cpu(bb: D.DiffusionBackbone) -> None:
    """Self-attention sums live on the model's device (self_device=None); consumers call
    .numpy() on Captures, so they must come back on the CPU like cross maps and features."""
    store = AttentionStore()
    t = torch.rand(1, 4, 4)
    store.self_mean = lambda: {2: _OnAccelerator(t)}  # type: ignore[method-assign]
    session = D.CaptureSession(bb.unet, [], store)
    caps = bb._captures(session, D.Capture(cross=False, features=False), [[]])
    assert caps.self_attn[2] is t


def test_invert_outputs_shapes_and_normalisation(bb: D.DiffusionBackbone) -> None:
    prompt, idx = bb.class_prompt("great white shark")
    cap = D.Capture(keep_all_tokens=True)
    out = bb.invert(_images(2), prompt, idx, num_steps=2, capture=cap)
    c = out.captures
    assert c.num_steps == 2 and out.timesteps == [1, 501]
    assert out.latents_T.shape == out.latents_rec.shape == (2, 4, 16, 16)
    assert out.finite.all() and out.latent_error.shape == (2,)
    assert out.pixel_error is not None and (out.pixel_error >= 0).all()
    # documented sides: down_blocks.i at latent/2**i, up_blocks.j at latent/2**(1-j), mid deepest
    expect = {"down_blocks.0": 16, "down_blocks.1": 8, "mid_block": 8, "up_blocks.0": 8}
    expect["up_blocks.1"] = 16
    assert len(c.cross) == 11
    assert c.cross_all is not None
    for name, m in c.cross.items():
        side = next(v for k, v in expect.items() if name.startswith(k))
        assert c.cross_side[name] == side and m.shape == (2, side, side)
        full = c.cross_all[name]
        assert full.shape == (2, side, side, 77)
        torch.testing.assert_close(full.sum(-1), torch.ones(2, side, side), atol=1e-5, rtol=0)
        torch.testing.assert_close(m, full[..., idx].mean(-1))
    assert sorted(c.cross_layers_at(16)) == sorted(k for k, s in c.cross_side.items() if s == 16)
    for side, s in c.self_attn.items():
        assert s.shape == (2, side * side, side * side)
        torch.testing.assert_close(s.sum(-1), torch.ones(2, side * side), atol=1e-5, rtol=0)
    assert set(c.features) == set(bb.feature_blocks())
    assert c.features["down_blocks.0.attentions.1"].shape == (2, 32, 16, 16)
    assert c.features["down_blocks.1.attentions.0"].shape == (2, 64, 8, 8)
    assert c.feature_strides == {k: 2 if ".0.attentions" in k else 4 for k in c.features}


def test_features_are_step_means_of_block_outputs(bb: D.DiffusionBackbone) -> None:
    """Eq. 8 against a reference hook storing every step's output (return_dict=False path)."""
    block = "down_blocks.1.attentions.1"
    seen: list[torch.Tensor] = []
    handle = bb.unet.get_submodule(block).register_forward_hook(
        lambda m, a, o: seen.append(o[0].clone())
    )
    try:
        cap = D.Capture(cross=False, self_attn=False, feature_blocks=(block,))
        out = bb.invert(_images(1), "a photo of a dog", [5], num_steps=2, capture=cap, decode=False)
    finally:
        handle.remove()
    assert len(seen) == 4  # 2 inversion + 2 reverse passes; features come from the reverse ones
    torch.testing.assert_close(out.captures.features[block], torch.stack(seen[2:]).mean(0))


def test_feature_hook_accepts_dataclass_output(bb: D.DiffusionBackbone) -> None:
    block = bb.unet.get_submodule("down_blocks.0.attentions.0")
    hooks = D.CaptureSession(bb.unet, ["down_blocks.0.attentions.0"], AttentionStore())
    x = torch.randn(1, 32, 8, 8)
    ctx = torch.randn(1, 77, 32)
    try:
        a = block(x, encoder_hidden_states=ctx, return_dict=True).sample
        b = block(x, encoder_hidden_states=ctx, return_dict=False)[0]
    finally:
        hooks.remove()
    torch.testing.assert_close(hooks.sums["down_blocks.0.attentions.0"], a + b)


def test_bad_feature_block_leaves_no_hook_behind(bb: D.DiffusionBackbone) -> None:
    good = "down_blocks.0.attentions.0"
    cap = D.Capture(cross=False, self_attn=False, feature_blocks=(good, "down_blocks.9.nope"))
    with pytest.raises(AttributeError):
        bb.invert(_images(1), "a photo of a dog", [5], num_steps=1, capture=cap, decode=False)
    assert not bb.unet.get_submodule(good)._forward_hooks


def test_cross_capture_needs_token_indices(bb: D.DiffusionBackbone) -> None:
    with pytest.raises(ValueError, match="token indices"):
        bb.invert(_images(1), "", None, num_steps=1, decode=False)
    out = bb.invert(_images(1), "", None, num_steps=1, decode=False, capture=D.NO_CAPTURE)
    assert out.captures.cross == {} and out.captures.features == {}


def test_generate_batched_with_cfg_capture(bb: D.DiffusionBackbone) -> None:
    prompts = ["a photo of a dog", "a photo of a tabby cat"]
    idx = [[5], [5, 6]]
    out = bb.generate(prompts, idx, num_steps=1, guidance=7.5, seed=3)
    assert out.images.shape == (2, 32, 32, 3) and out.images.dtype == np.uint8
    assert out.finite.all()
    c = out.captures
    assert all(m.shape[0] == 2 for m in c.cross.values())  # unconditional half dropped
    assert all(s.shape[0] == 2 for s in c.self_attn.values())
    again = bb.generate(prompts, idx, num_steps=1, guidance=7.5, seed=3, capture=D.NO_CAPTURE)
    torch.testing.assert_close(
        out.latents, again.latents, rtol=1e-4, atol=1e-4
    )  # same seed, capture inert


# --------------------------------------------------------------------------- loading


def test_unknown_backbone_lists_names() -> None:
    from odbench.registry import UnknownNameError

    with pytest.raises(UnknownNameError, match="sd-tiny"):
        D.load_backbone("sd-v9")


def test_missing_weights_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(D.WeightsNotFoundError) as e:
        D.load_backbone("sd-v1-4")
    msg = str(e.value)
    assert "\n" not in msg
    assert "hf download CompVis/stable-diffusion-v1-4" in msg
    assert D.backbone_spec("sd-v1-4").revision in msg and "GB" in msg


def test_describe(bb: D.DiffusionBackbone) -> None:
    d = bb.describe()
    assert d["name"] == "sd-tiny" and d["dtype"] == "fp32" and d["resolution"] == 32
    assert D.backbone_spec("sd-v1-4").revision == "133a221b8aa7292a167afc5127cb63fb5005638b"


def test_bench_measure_smoke(bb: D.DiffusionBackbone) -> None:
    from odbench.bench.backbone import count_flops, measure, time_passes

    assert count_flops(bb, 1) > 0
    r = measure(bb, batch=1, steps=1, capture=True)
    assert r["finite"] and r["capture_state_bytes"] > 0
    assert r["seconds_per_inversion_pass"] > 0 and r["seconds_per_reverse_pass"] > 0
    plain, captured, peaks = time_passes(bb, batch=1, repeats=1)
    assert len(plain) == len(captured) == 1 and len(peaks) == 2


def test_missing_weights_is_a_one_line_cli_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """An OdbenchError: the CLI prints it as one line, exit 2 (tests/test_errors.py)."""
    from odbench.errors import OdbenchError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OdbenchError, match="hf download"):
        D.load_backbone("sd-v1-4")


def test_fp16_self_sums_on_cpu_and_bf16_model() -> None:
    bb = D.load_backbone("sd-tiny", dtype="bf16", resolution=32)
    prompt, idx = bb.class_prompt("tabby cat")
    ref = bb.invert(_images(1), prompt, idx, num_steps=1, decode=False)
    cap = D.Capture(self_device="cpu", self_dtype="fp16")
    half = bb.invert(_images(1), prompt, idx, num_steps=1, decode=False, capture=cap)
    assert ref.finite.all() and ref.latents_T.dtype == torch.float32
    for side, s in half.captures.self_attn.items():
        assert s.dtype == torch.float16 and s.device.type == "cpu"
        torch.testing.assert_close(s.float(), ref.captures.self_attn[side], atol=1e-3, rtol=0)


def test_capture_refuses_attention_with_qk_normalisation() -> None:
    """A layer that normalises q/k would be captured wrongly by the explicit softmax: refused."""
    from diffusers.models.attention_processor import Attention

    from odbench.backbones.attention import AttentionStore, CaptureProcessor

    x = torch.randn(1, 4, 8)
    proc = CaptureProcessor(AttentionStore(), "layer", side=2, kind="self")
    plain = Attention(query_dim=8, heads=2, dim_head=4)
    normed = Attention(query_dim=8, heads=2, dim_head=4, qk_norm="layer_norm")
    with torch.no_grad():  # as in inversion: the capture never runs under autograd
        assert proc(plain, x).shape == x.shape
        with pytest.raises(NotImplementedError, match="q/k normalisation"):
            proc(normed, x)


def test_preprocess_takes_read_only_images_silently() -> None:
    """Decoded images are read-only arrays (``read_rgb``): no torch warning about them (torch
    warns once per process, so in a process of its own), the same tensor as a writable copy's."""
    code = """
import warnings
from types import SimpleNamespace
import numpy as np, torch
from odbench.backbones.diffusion import DiffusionBackbone
image = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
frozen = image.copy()
frozen.flags.writeable = False
stub = SimpleNamespace(resolution=32, device="cpu")
with warnings.catch_warnings():
    warnings.simplefilter("error")
    out = DiffusionBackbone.preprocess(stub, [frozen])
assert torch.equal(out, DiffusionBackbone.preprocess(stub, [image]))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
