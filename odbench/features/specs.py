"""The registered feature extractors, as data (no torch here: ``odbench list features`` reads it).

Every published extractor has a tiny random variant (tests: seconds on CPU, no download) and a
full-size random variant (``-random``: speed and memory benchmarks only).  The builders live in
:mod:`odbench.features.sd`, :mod:`odbench.features.vit` and :mod:`odbench.features.clip`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DINO_S8_FIELD_URL = (
    "https://dl.fbaipublicfiles.com/dino/dino_deitsmall8_300ep_pretrain/"
    "dino_deitsmall8_300ep_pretrain.pth"
)
MOCO_V3_B16_URL = "https://dl.fbaipublicfiles.com/moco-v3/vit-b-300ep/vit-b-300ep.pth.tar"


@dataclass(frozen=True)
class ExtractorSpec:
    """One registry entry.  ``config`` is family-specific (timm architecture, weights source,
    random seed ...); ``random`` is None for published weights, "tiny" or "full" otherwise."""

    name: str
    family: str  # "sd", "vit" (DINO / MoCo v3 through timm) or "clip"
    description: str
    builder: str  # "module:function" taking (spec, device=..., **options)
    config: dict[str, Any] = field(default_factory=dict)
    random: str | None = None


_SD = "odbench.features.sd:build"
_VIT = "odbench.features.vit:build"
_CLIP = "odbench.features.clip:build"


def _vit(name: str, arch: str, hub: str, description: str, **extra: Any) -> list[ExtractorSpec]:
    real = ExtractorSpec(name, "vit", description, _VIT, {"arch": arch, "hub": hub, **extra})
    rnd = ExtractorSpec(
        f"{name}-random",
        "vit",
        f"{arch} with seeded random weights (benchmarks only)",
        _VIT,
        {"arch": arch, **extra},
        random="full",
    )
    return [real, rnd]


#: ViT-S/16-like tiny model for tests: 2 blocks, 48 wide, 3 heads, patch 16.
TINY_VIT: dict[str, Any] = {"patch_size": 16, "embed_dim": 48, "depth": 2, "num_heads": 3}

SPECS: tuple[ExtractorSpec, ...] = (
    ExtractorSpec(
        "sd-v1-4",
        "sd",
        "Stable Diffusion v1.4: DDIM inversion under the CLIP-classified prompt, the six "
        "SpatialTransformer outputs averaged over the reverse steps (DiffusionSeg Eq. 8)",
        _SD,
        {"backbone": "sd-v1-4"},
    ),
    ExtractorSpec(
        "sd-v1-4-random",
        "sd",
        "SD-1.4 architecture with random weights and a random CLIP prior (benchmarks only)",
        _SD,
        {"backbone": "sd-v1-4-random"},
        random="full",
    ),
    ExtractorSpec(
        "sd-tiny",
        "sd",
        "tiny random SD + tiny random CLIP prior (tests)",
        _SD,
        {"backbone": "sd-tiny"},
        random="tiny",
    ),
    *_vit(
        "dino-vits16",
        "vit_small_patch16_224",
        "timm/vit_small_patch16_224.dino",
        "DINO ViT-S/16 (timm vit_small_patch16_224.dino), last-layer patch tokens",
    ),
    *_vit(
        "dino-vits8",
        "vit_small_patch8_224",
        "timm/vit_small_patch8_224.dino",
        "DINO ViT-S/8 (timm vit_small_patch8_224.dino; weights='field' for the "
        "dino_deitsmall8_300ep checkpoint of TokenCut/LOST/FOUND)",
        field_url=DINO_S8_FIELD_URL,
    ),
    *_vit(
        "dino-vitb8",
        "vit_base_patch8_224",
        "timm/vit_base_patch8_224.dino",
        "DINO ViT-B/8 (timm vit_base_patch8_224.dino), last-layer patch tokens",
    ),
    ExtractorSpec(
        "dino-tiny",
        "vit",
        "tiny random ViT/16 (2 blocks, 48 wide) with DINO preprocessing (tests)",
        _VIT,
        {"tiny": TINY_VIT},
        random="tiny",
    ),
    ExtractorSpec(
        "moco-v3-vitb16",
        "vit",
        "MoCo v3 ViT-B/16 (official vit-b-300ep.pth.tar in timm vit_base_patch16_224)",
        _VIT,
        {"arch": "vit_base_patch16_224", "url": MOCO_V3_B16_URL, "moco_heads": 12},
    ),
    ExtractorSpec(
        "moco-v3-vitb16-random",
        "vit",
        "vit_base_patch16_224 with seeded random weights (benchmarks only)",
        _VIT,
        {"arch": "vit_base_patch16_224", "moco_heads": 12},
        random="full",
    ),
    ExtractorSpec(
        "moco-tiny",
        "vit",
        "tiny random ViT/16 loaded through the MoCo v3 checkpoint conversion (tests)",
        _VIT,
        {"tiny": TINY_VIT, "moco_heads": 3},
        random="tiny",
    ),
    ExtractorSpec(
        "clip-vitb16",
        "clip",
        "OpenAI CLIP ViT-B/16 (open_clip ViT-B-16-quickgelu, 'openai'), image-tower patch tokens",
        _CLIP,
        {
            "model": "ViT-B-16-quickgelu",
            "hub": "timm/vit_base_patch16_clip_224.openai",
            "file": "open_clip_model.safetensors",
        },
    ),
    ExtractorSpec(
        "clip-vitb16-random",
        "clip",
        "open_clip ViT-B-16-quickgelu with seeded random weights (benchmarks only)",
        _CLIP,
        {"model": "ViT-B-16-quickgelu"},
        random="full",
    ),
    ExtractorSpec(
        "clip-tiny",
        "clip",
        "tiny random open_clip CLIP (2 layers, 64 wide, patch 8) (tests)",
        _CLIP,
        {"model": "tiny"},
        random="tiny",
    ),
)
