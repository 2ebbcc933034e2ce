"""The registered feature extractors, as data (no torch here: ``odbench list features`` reads it).

This is the one table of extractor names: ``--features``, ``--backbone`` and
:func:`odbench.backbones.diffusion.load_backbone` all resolve names here.  Each entry has a
``family`` (:data:`FAMILIES`: the decoder cards' ``[model] family``, e.g. ``dino-vits8`` ->
``dino``).  Every family has one tiny random variant (``random="tiny"``: tests and smoke runs,
seconds on CPU, no download; it carries its own small ``resolution`` and ``options``, e.g. two
DDIM steps for ``sd-tiny``) and each published extractor a full-size random variant
(``-random``: speed and memory benchmarks only).  Variants are registry names of their own,
not suffixes parsed anywhere: the family and the tiny variant are fields, see
:func:`odbench.features.tiny_extractor`.  The builders live in :mod:`odbench.features.sd`,
:mod:`odbench.features.vit` and :mod:`odbench.features.clip`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DINO_S8_FIELD_URL = (
    "https://dl.fbaipublicfiles.com/dino/dino_deitsmall8_300ep_pretrain/"
    "dino_deitsmall8_300ep_pretrain.pth"
)
MOCO_V3_B16_URL = "https://dl.fbaipublicfiles.com/moco-v3/vit-b-300ep/vit-b-300ep.pth.tar"


#: Extractor families: the ``[model] family`` of the decoder cards (``odbench train --features``).
FAMILIES: dict[str, str] = {
    "sd": "Stable Diffusion (DDIM-inversion features)",
    "dino": "DINO ViTs (timm)",
    "moco": "MoCo v3 ViTs (timm)",
    "dinov2": "DINOv2 ViTs/14, with and without registers (timm)",
    "clip": "OpenAI CLIP ViTs (open_clip)",
}
#: The families built on timm ViTs (:class:`odbench.features.vit.ViTExtractor`: patch keys).
VIT_FAMILIES = ("dino", "moco", "dinov2")


@dataclass(frozen=True)
class ExtractorSpec:
    """One registry entry.  ``config`` is family-specific (timm architecture, weights source;
    for sd the hub repo, revision and download size); ``random`` is None for published weights,
    "tiny" or "full" otherwise.

    ``resolution``: the image side runs on this extractor default to (``odbench train``; None:
    the decoder card's); for sd also the side the backbone resizes images to for attention.
    ``options``: builder options that replace the family's defaults.  A tiny extractor sets both
    small, so smoke runs take seconds (see the module docstring)."""

    name: str
    family: str  # a key of FAMILIES
    description: str
    builder: str  # "module:function" taking (spec, device=..., **options)
    config: dict[str, Any] = field(default_factory=dict)
    random: str | None = None
    resolution: int | None = None
    options: dict[str, Any] = field(default_factory=dict)


_SD = "odbench.features.sd:build"
_VIT = "odbench.features.vit:build"
_CLIP = "odbench.features.clip:build"


def _vit(
    name: str, arch: str, hub: str, description: str, family: str = "dino", **extra: Any
) -> list[ExtractorSpec]:
    real = ExtractorSpec(name, family, description, _VIT, {"arch": arch, "hub": hub, **extra})
    rnd = ExtractorSpec(
        f"{name}-random",
        family,
        f"{arch} with seeded random weights (benchmarks only)",
        _VIT,
        {"arch": arch, **extra},
        random="full",
    )
    return [real, rnd]


#: ViT-S/16-like tiny model for tests: 2 blocks, 48 wide, 3 heads, patch 16.
TINY_VIT: dict[str, Any] = {"patch_size": 16, "embed_dim": 48, "depth": 2, "num_heads": 3}

#: DINOv2-like tiny model for tests: patch 14, 4 registers (dropped like the CLS token), layer
#: scale, position embeddings of a 518² input (37² patches) interpolated as DINOv2 does.
TINY_DINOV2: dict[str, Any] = {
    **TINY_VIT,
    "patch_size": 14,
    "img_size": 518,
    "init_values": 1e-5,
    "reg_tokens": 4,
    "no_embed_class": True,
}


def _dinov2(size: str, width: str, registers: bool) -> list[ExtractorSpec]:
    """DINOv2 ViT-{size}/14 (Oquab et al. 2024), or with 4 registers (Darcet et al. 2024): timm's
    ``vit_{width}_patch14[_reg4]_dinov2.lvd142m`` tag; ``url`` is Meta's original checkpoint
    (``checkpoint=`` takes it too: converted to timm's layout on load)."""
    reg = "_reg4" if registers else ""
    arch = f"vit_{width}_patch14{reg}_dinov2"
    official = f"dinov2_vit{size}14{reg}_pretrain.pth"
    return _vit(
        f"dinov2-vit{size}14{'-reg' if registers else ''}",
        arch,
        f"timm/{arch}.lvd142m",
        f"DINOv2 ViT-{size.upper()}/14{' with 4 registers' if registers else ''} (timm "
        f"{arch}.lvd142m), last-layer patch tokens",
        family="dinov2",
        url=f"https://dl.fbaipublicfiles.com/dinov2/dinov2_vit{size}14/{official}",
        pos_interpolation="dinov2",
    )


SPECS: tuple[ExtractorSpec, ...] = (
    ExtractorSpec(
        "sd-v1-4",
        "sd",
        "Stable Diffusion v1.4: DDIM inversion under the CLIP-classified prompt, the six "
        "SpatialTransformer outputs averaged over the reverse steps (DiffusionSeg Eq. 8)",
        _SD,
        {
            "repo_id": "CompVis/stable-diffusion-v1-4",
            "revision": "133a221b8aa7292a167afc5127cb63fb5005638b",
            "size": "~4.3 GB (fp32 safetensors: unet 3.4 GB, vae 0.33 GB, text encoder 0.49 GB)",
        },
        resolution=512,
    ),
    ExtractorSpec(
        "sd-v1-4-random",
        "sd",
        "SD-1.4 architecture (real configs) with random weights and a random CLIP prior "
        "(benchmarks only)",
        _SD,
        {"size": "0 (built in code)"},
        random="full",
        resolution=512,
    ),
    ExtractorSpec(
        "sd-tiny",
        "sd",
        "tiny random SD (UNet (32, 64), 2-layer CLIP text model, 2-block VAE, real CLIP "
        "tokenizer) + tiny random CLIP prior; 64 px, T = 2 (tests, smoke runs)",
        _SD,
        {"size": "0 (built in code)"},
        random="tiny",
        resolution=64,
        options={"num_steps": 2},
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
        "dino",
        "tiny random ViT/16 (2 blocks, 48 wide) with DINO preprocessing; 64 px (tests, smoke runs)",
        _VIT,
        {"tiny": TINY_VIT},
        random="tiny",
        resolution=64,
    ),
    *_dinov2("s", "small", registers=False),
    *_dinov2("b", "base", registers=False),
    *_dinov2("s", "small", registers=True),
    *_dinov2("b", "base", registers=True),
    ExtractorSpec(
        "dinov2-tiny",
        "dinov2",
        "tiny random DINOv2-like ViT/14 (2 blocks, 48 wide, 4 registers, layer scale); 56 px "
        "(tests, smoke runs)",
        _VIT,
        {"tiny": TINY_DINOV2, "pos_interpolation": "dinov2"},
        random="tiny",
        resolution=56,
    ),
    ExtractorSpec(
        "moco-v3-vitb16",
        "moco",
        "MoCo v3 ViT-B/16 (official vit-b-300ep.pth.tar in timm vit_base_patch16_224)",
        _VIT,
        {"arch": "vit_base_patch16_224", "url": MOCO_V3_B16_URL, "moco_heads": 12},
    ),
    ExtractorSpec(
        "moco-v3-vitb16-random",
        "moco",
        "vit_base_patch16_224 with seeded random weights (benchmarks only)",
        _VIT,
        {"arch": "vit_base_patch16_224", "moco_heads": 12},
        random="full",
    ),
    ExtractorSpec(
        "moco-tiny",
        "moco",
        "tiny random ViT/16 loaded through the MoCo v3 checkpoint conversion; 64 px (tests, "
        "smoke runs)",
        _VIT,
        {"tiny": TINY_VIT, "moco_heads": 3},
        random="tiny",
        resolution=64,
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
        "tiny random open_clip CLIP (2 layers, 64 wide, patch 8); 64 px (tests, smoke runs)",
        _CLIP,
        {"model": "tiny"},
        random="tiny",
        resolution=64,
    ),
)
