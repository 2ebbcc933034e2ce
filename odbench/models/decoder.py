"""The segment decoder of DiffusionSeg (Ma et al. 2023, §3.3.2): "a three-layer FCN as segment
decoder" (§4.1) over multi-scale frozen features, also the "same segment decoder" of Table 4.

:class:`SegmentDecoder` (widths and all unstated choices in ``methods/diffusionseg.toml``):

1. every level ``F^l`` (``[B, C_l, H/s_l, W/s_l]``) is standardised (BatchNorm) and projected by a
   1×1 conv to ``proj_channels``;
2. all projections are bilinearly upsampled to the finest level and concatenated;
3. three conv layers: 3×3 (BN, ReLU), 3×3 (BN, ReLU), 1×1 -> one logit;
4. the logits are bilinearly resized to the image size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
