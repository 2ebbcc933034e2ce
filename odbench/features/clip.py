"""CLIP (Radford et al. 2021) ViT-B/16 image tower as a feature extractor: open_clip
``ViT-B-16-quickgelu`` with the ``openai`` weights; ``extract`` returns the patch tokens of the
last block after ``ln_post`` (the class token dropped), stride 16, 768 channels.

Any H, W that are multiples of 16 go through: the 14 × 14 position embeddings of the patches are
resized bicubically to the batch's grid (the class position kept), as timm does for CLIP ViTs.
Normalised with CLIP's mean and std.
"""

from __future__ import annotations

from typing import Any

import torch

from odbench.features.base import FeatureExtractor
from odbench.features.specs import ExtractorSpec
from odbench.features.weights import hub_file, local_file

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: A tiny open_clip CLIP (random weights) for tests: patch 8, 2 layers, 64 wide.
TINY_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 32,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 2},
}


def build(spec: ExtractorSpec, *, device: str = "cpu", **options: Any) -> ClipExtractor:
    """Options: ``checkpoint`` (a local open_clip checkpoint file), ``seed`` (random variants)."""
    import open_clip

    checkpoint = options.pop("checkpoint", None)
    seed = int(options.pop("seed", 0))
    if options:
        raise TypeError(f"{spec.name}: unknown option(s) {', '.join(sorted(options))}")
    cfg = spec.config
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if cfg["model"] == "tiny":
            model = open_clip.CLIP(**TINY_CLIP_CONFIG)
        else:
            model = open_clip.create_model(cfg["model"], pretrained=None)
    if spec.random is not None and checkpoint is None:
        source = f"random(seed={seed})"
    else:
        if checkpoint is not None:
            path = local_file(checkpoint, spec.name)
            source = f"file:{path.name}"
        else:
            path = hub_file(cfg["hub"], cfg["file"], size="~600 MB")
            source = f"hub:{cfg['hub']}"
        open_clip.load_checkpoint(model, str(path), weights_only=True)
    return ClipExtractor(spec, model.visual, source, device)


class ClipExtractor(FeatureExtractor):
    """A frozen open_clip vision tower (see the module docstring)."""

    def __init__(self, spec: ExtractorSpec, visual: Any, source: str, device: str) -> None:
        self.spec = spec
        self.name = spec.name
        self.visual = visual.eval().requires_grad_(False)
        self.identity = f"{spec.name}|{source}|open_clip-patch-tokens-ln_post"
        p = visual.conv1.kernel_size[0]
        self.strides = (int(p),)
        self.channels = (int(visual.conv1.out_channels),)
        self.input_multiple = int(p)
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.to(device)

    def to(self, device: Any, dtype: Any = None) -> ClipExtractor:
        self.device = torch.device(device)
        self.dtype = dtype or self.dtype
        self.visual.to(device=self.device, dtype=self.dtype)
        return self

    def _pos_embed(self, h: int, w: int) -> torch.Tensor:
        pos = self.visual.positional_embedding  # (1 + g*g, D)
        cls, grid = pos[:1], pos[1:]
        g = round(grid.shape[0] ** 0.5)
        if (h, w) == (g, g):
            return pos
        grid = grid.reshape(1, g, g, -1).permute(0, 3, 1, 2).float()
        grid = torch.nn.functional.interpolate(grid, size=(h, w), mode="bicubic", antialias=True)
        return torch.cat([cls, grid[0].flatten(1).T.to(pos.dtype)])

    @torch.inference_mode()
    def extract(self, images: torch.Tensor) -> list[torch.Tensor]:
        self.check_images(images)
        v = self.visual
        mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
        x = ((images.float().cpu() - mean) / std).to(self.device, self.dtype)
        x = v.conv1(x)  # (B, D, h, w)
        b, d, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(x.dtype).view(1, 1, -1).expand(b, 1, d)
        x = torch.cat([cls, x], dim=1) + self._pos_embed(h, w).to(x.dtype)
        x = v.transformer(v.ln_pre(x))
        x = v.ln_post(x)[:, 1:]
        return [x.transpose(1, 2).reshape(b, d, h, w).float()]
