"""Checks that need a CUDA device (``gpu`` marker: never run in CI; ``odbench bench gpu`` runs
them): the tiny extractors and AttentionCut give on the GPU what they give on the CPU, and bf16
inversion stays finite and close to fp32."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from odbench.features import load_extractor

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("name", ["dino-tiny", "moco-tiny", "clip-tiny", "sd-tiny"])
def test_tiny_extractor_on_cuda_matches_cpu(name: str) -> None:
    opts = {"num_steps": 2} if name.startswith("sd") else {}
    x = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    cpu = load_extractor(name, **opts).extract(x)
    gpu = load_extractor(name, device="cuda", **opts).extract(x)
    for c, g in zip(cpu, gpu):
        assert g.device.type == "cuda"
        torch.testing.assert_close(g.cpu(), c, rtol=1e-3, atol=1e-3)


def test_bf16_inversion_is_finite_and_close_to_fp32() -> None:
    from odbench.backbones.diffusion import load_backbone

    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    outs = []
    for dtype in ("fp32", "bf16"):
        bb = load_backbone("sd-tiny", device="cuda", dtype=dtype)
        prompt, idx = bb.class_prompt("dog")
        outs.append(bb.invert(images, prompt, idx, num_steps=4, decode=False))
    assert bool(outs[1].finite.all())
    for side, ref in outs[0].captures.self_attn.items():
        torch.testing.assert_close(outs[1].captures.self_attn[side], ref, rtol=0, atol=2e-2)


def test_attentioncut_on_cuda_agrees_with_cpu(toy_images: list[np.ndarray]) -> None:
    from odbench.methods.base import create_method

    kw = {"backbone": "sd-tiny", "num_steps": 2}
    cpu = create_method("attentioncut", **kw).predict(toy_images)
    gpu = create_method("attentioncut", device="cuda", **kw).predict(toy_images)
    for c, g in zip(cpu, gpu):
        assert g.shape == c.shape
        assert float(np.mean((c > 0.5) == (g > 0.5))) > 0.98
