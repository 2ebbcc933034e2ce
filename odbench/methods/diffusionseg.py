"""DiffusionSeg (Ma et al. 2023, §3.3.2) and the frozen-feature baselines of Table 4.

DiffusionSeg feeds the Stable Diffusion features of §3.3.1 — the six SpatialTransformer outputs
at 1/8, 1/16 and 1/32 of the image (two each), averaged over the T reverse steps of the DDIM
inversion (Eq. 8), computed by the ``sd-v1-4`` feature extractor — into "a three-layer FCN as
segment decoder" (§4.1) trained on synthetic image/mask pairs.  Table 4 attaches "a same segment
decoder" to frozen DINO, MoCo and CLIP features: ``dino-decoder``, ``moco-decoder``,
``clip-decoder`` are the same class with another extractor.

:class:`SegmentDecoder` (widths and all unstated choices in ``methods/diffusionseg.toml``):

1. every level ``F^l`` (``[B, C_l, H/s_l, W/s_l]``) is standardised (BatchNorm) and projected by a
   1×1 conv to ``proj_channels``;
2. all projections are bilinearly upsampled to the finest level and concatenated;
3. three conv layers: 3×3 (BN, ReLU), 3×3 (BN, ReLU), 1×1 -> one logit;
4. the logits are bilinearly resized to the image size.

The decoder is trained by ``odbench train --features NAME`` (frozen features cached on disk) and
evaluated with ``odbench eval --method diffusionseg --checkpoint RUN_DIR``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from odbench.cards import MethodCard
from odbench.checkpoint import CheckpointError
from odbench.methods.trained import TrainedMethod


class SegmentDecoder(nn.Module):
    """The three-layer FCN over multi-scale frozen features (see the module docstring)."""

    def __init__(
        self,
        channels: list[int],
        strides: list[int],
        proj_channels: int = 64,
        hidden: list[int] | tuple[int, int] = (128, 64),
    ) -> None:
        super().__init__()
        if len(channels) != len(strides) or not channels:
            raise ValueError(f"one stride per feature level: {channels} vs {strides}")
        if len(hidden) != 2:
            raise ValueError(f"three layers need two hidden widths, got {list(hidden)}")
        self.strides = list(strides)
        self.proj = nn.ModuleList(
            nn.Sequential(nn.BatchNorm2d(c), nn.Conv2d(c, proj_channels, 1)) for c in channels
        )
        h1, h2 = hidden
        self.fcn = nn.Sequential(
            nn.Conv2d(proj_channels * len(channels), h1, 3, padding=1, bias=False),
            nn.BatchNorm2d(h1),
            nn.ReLU(inplace=True),
            nn.Conv2d(h1, h2, 3, padding=1, bias=False),
            nn.BatchNorm2d(h2),
            nn.ReLU(inplace=True),
            nn.Conv2d(h2, 1, 1),
        )

    def forward(self, features: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """Feature maps (one per level, in the extractor's order) -> ``[B, 1, *size]`` logits."""
        if len(features) != len(self.proj):
            raise ValueError(f"expected {len(self.proj)} feature levels, got {len(features)}")
        finest = features[self.strides.index(min(self.strides))].shape[-2:]
        x = torch.cat(
            [
                F.interpolate(p(f.float()), size=finest, mode="bilinear", align_corners=False)
                for p, f in zip(self.proj, features)
            ],
            dim=1,
        )
        return F.interpolate(self.fcn(x), size=size, mode="bilinear", align_corners=False)


class DecoderMethod(TrainedMethod):
    """``diffusionseg`` and the Table 4 baselines: frozen extractor -> trained decoder.

    The extractor is the one named in the checkpoint's config (with its options, then the card's
    ``extractor_options``, e.g. the empty prompt of the "w/o prior" variant); a ``backbone``
    hyperparameter (``--backbone``) naming another extractor is an error."""

    def __init__(
        self, card: MethodCard | None = None, device: str = "cpu", **overrides: Any
    ) -> None:
        super().__init__(card, device, **overrides)
        from odbench.features import load_extractor

        trained = self.config["extractor"]
        wanted = str(self.hparams.get("backbone") or "")
        if wanted and wanted != trained["name"]:
            raise CheckpointError(
                f"--backbone {wanted} disagrees with the checkpoint, whose decoder was trained on "
                f"{trained['name']} features; drop --backbone or use a checkpoint trained on {wanted}"
            )
        options = {**trained.get("options", {}), **dict(self.hparams.get("extractor_options", {}))}
        self.extractor = load_extractor(trained["name"], device=device, **options)
        self.checkpoint_info["eval_extractor"] = self.extractor.identity

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.extractor.extract(images)
        return self.model(features, size=tuple(images.shape[-2:]))  # type: ignore[no-any-return]
