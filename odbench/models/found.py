"""FOUND's head (Siméoni et al., CVPR 2023, Sec. 3.2): a single 1×1 convolution from the frozen
last-layer keys of a DINO ViT (heads concatenated, ``[B, D, h, w]``) to one foreground logit per
patch — ``nn.Conv2d(D, 1, 1)`` in valeoai/FOUND ``model.py`` (their state-dict keys
``decoder.weight`` / ``decoder.bias`` are ours ``conv.weight`` / ``conv.bias``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FoundHead(nn.Module):
    """One 1×1 conv over the keys (level 0 of the features; a further level, FOUND's training
    targets, is ignored)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, 1)

    def forward(
        self, features: list[torch.Tensor], size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """``[B, 1, h, w]`` patch logits, or bilinearly resized to ``size`` when given."""
        logits = self.conv(features[0].float())
        if size is None:
            return logits  # type: ignore[no-any-return]
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
