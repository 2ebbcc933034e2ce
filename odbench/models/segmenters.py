"""The end-to-end segmenters of the paper's Table 3 (§4.3.2): UNet and DeepLabV3.

The paper trains "two typical segmentation pipelines", UNet (Ronneberger et al., MICCAI 2015)
and DeepLabV3 (Chen et al., arXiv 2017), on synthetic vs real pairs, and gives no training
details; the choices (widths, loss, resolution, augmentation) are in the cards
``methods/unet-e2e.toml`` and ``methods/deeplabv3-e2e.toml`` with their reasons.  Both models
take RGB in [0, 1] (``[B, 3, H, W]``, H and W multiples of :attr:`input_multiple`) and return
one foreground logit per pixel at the input size.  Trained with ``odbench train --model …``;
evaluated by :class:`odbench.methods.segmenters.EndToEndMethod`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class _Normalize(nn.Module):
    """[0, 1] RGB -> ImageNet-standardised RGB (the statistics torchvision's trunks expect)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _double_conv(c_in: int, c_out: int) -> nn.Sequential:
    """(3×3 conv, BatchNorm, ReLU) twice: the UNet stage (Ronneberger et al. 2015, Fig. 1, with
    BatchNorm and padding so the output keeps the input size)."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """A plain UNet: ``depth`` levels of widths ``base · 2^i``, max-pool down, bilinear up,
    skip connections by concatenation, a 1×1 conv to one logit."""

    def __init__(self, base_width: int = 16, depth: int = 4) -> None:
        super().__init__()
        if depth < 2 or base_width < 1:
            raise ValueError(
                f"UNet needs depth >= 2 and base_width >= 1, got {depth}, {base_width}"
            )
        widths = [base_width * 2**i for i in range(depth)]
        self.input_multiple = 2 ** (depth - 1)
        self.normalize = _Normalize()
        self.down = nn.ModuleList(
            _double_conv(c_in, c_out) for c_in, c_out in zip([3, *widths[:-1]], widths)
        )
        self.up = nn.ModuleList(
            _double_conv(widths[i] + widths[i + 1], widths[i]) for i in range(depth - 1)
        )
        self.head = nn.Conv2d(widths[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)
        skips = []
        for i, stage in enumerate(self.down):
            x = stage(F.max_pool2d(x, 2) if i else x)
            skips.append(x)
        for i in reversed(range(len(self.up))):
            x = F.interpolate(x, size=skips[i].shape[-2:], mode="bilinear", align_corners=False)
            x = self.up[i](torch.cat([skips[i], x], dim=1))
        return self.head(x)  # type: ignore[no-any-return]


class DeepLabV3(nn.Module):
    """torchvision's DeepLabV3 with a ResNet-50 trunk (output stride 8, ASPP) and one output
    class; the logits are bilinearly resized to the input by torchvision itself."""

    input_multiple = 8

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models.segmentation import deeplabv3_resnet50

        self.normalize = _Normalize()
        self.net = deeplabv3_resnet50(
            weights=None, weights_backbone=None, num_classes=1, aux_loss=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))["out"]  # type: ignore[no-any-return]


#: ImageNet ResNet-50 weights as safetensors on the Hugging Face hub: timm's copy of torchvision's
#: ``IMAGENET1K_V1`` weights, with torchvision's parameter names (no pickle involved).
IMAGENET_RESNET50 = ("timm/resnet50.tv_in1k", "model.safetensors")


def load_resnet50_trunk(trunk: nn.Module, source: str) -> None:
    """Load ImageNet ResNet-50 weights into DeepLabV3's trunk (an ``IntermediateLayerGetter``,
    so the classifier ``fc.*`` is dropped).  ``source``: ``"imagenet"`` (the hub file above,
    honouring ``HF_HUB_OFFLINE``) or a local ``.safetensors`` file with torchvision names."""
    from safetensors.torch import load_file

    from odbench.checkpoint import CheckpointError

    if source == "imagenet":
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(*IMAGENET_RESNET50))
        except Exception as e:  # offline, not cached, no network: all the same to the user
            raise CheckpointError(
                f"ImageNet ResNet-50 weights ({'/'.join(IMAGENET_RESNET50)}) are not in the "
                f"Hugging Face cache and cannot be downloaded ({type(e).__name__}); fetch them "
                f"on a connected machine, give a local .safetensors file, or train from scratch"
            ) from e
    else:
        path = Path(source).expanduser()
        if path.suffix != ".safetensors" or not path.is_file():
            raise CheckpointError(
                f"{path}: trunk weights must be an existing .safetensors file (or 'imagenet')"
            )
    state = {k: v for k, v in load_file(str(path)).items() if not k.startswith("fc.")}
    own = trunk.state_dict()
    wrong = [k for k in own if k not in state or state[k].shape != own[k].shape]
    wrong += [k for k in state if k not in own]
    if wrong:
        raise CheckpointError(
            f"{path}: not ResNet-50 weights with torchvision names ({len(wrong)} tensors missing "
            f"or of another shape, e.g. {wrong[0]})"
        )
    trunk.load_state_dict(state)


def build_segmenter(spec: dict[str, Any], *, init_weights: bool = False) -> nn.Module:
    """The end-to-end model described by a ``model`` spec (a checkpoint's or a card's).
    ``init_weights``: load the spec's ``trunk_weights`` (training from scratch; a checkpoint
    brings its own weights)."""
    if spec["type"] == "unet":
        return UNet(base_width=int(spec["base_width"]), depth=int(spec["depth"]))
    if spec["type"] == "deeplabv3":
        model = DeepLabV3()
        if init_weights and spec.get("trunk_weights"):
            load_resnet50_trunk(model.net.backbone, str(spec["trunk_weights"]))
        return model
    raise ValueError(f"unknown segmenter type {spec['type']!r}")
