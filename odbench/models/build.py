"""A trained network from its ``model`` spec (a card's ``[model]`` table or a checkpoint's), and
the input resize shared by training and evaluation."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from odbench.models.decoder import SegmentDecoder
from odbench.models.found import FoundHead
from odbench.models.segmenters import build_segmenter


def build_model(spec: dict[str, Any], *, init_weights: bool = False) -> nn.Module:
    """The network a ``model`` spec describes (``type``: ``unet``, ``deeplabv3``, ``decoder`` or
    ``found``: FOUND's 1×1-conv head on the keys, level 0 of its features)."""
    if spec["type"] == "found":
        return FoundHead(int(spec["channels"][0]))
    if spec["type"] == "decoder":
        return SegmentDecoder(
            channels=[int(c) for c in spec["channels"]],
            strides=[int(s) for s in spec["strides"]],
            proj_channels=int(spec["proj_channels"]),
            hidden=[int(h) for h in spec["hidden"]],
        )
    return build_segmenter(spec, init_weights=init_weights)


def to_batch(images: list[np.ndarray], resolution: int) -> torch.Tensor:
    """uint8 (H, W, 3) RGB images -> ``[B, 3, R, R]`` float32 in [0, 1], bilinear with
    antialiasing (the same resize ``odbench train`` applies to its training images)."""
    out = []
    for im in images:
        t = torch.from_numpy(np.array(im, dtype=np.uint8)).permute(2, 0, 1)[None].float() / 255.0
        out.append(
            F.interpolate(
                t,
                size=(resolution, resolution),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            ).clamp_(0.0, 1.0)
        )
    return torch.cat(out)
