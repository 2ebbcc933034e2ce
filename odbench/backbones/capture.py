"""What the reverse pass of :class:`odbench.backbones.diffusion.DiffusionBackbone` records:
the settings (:class:`Capture`), the result (:class:`Captures`) and the hooks that sum the
Eq. 8 block outputs over steps (:class:`CaptureSession`; attention goes to
:class:`odbench.backbones.attention.AttentionStore`).  DiffusionSeg (Ma et al. 2023), Eqs. 2, 8."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from odbench.backbones.attention import AttentionStore
from odbench.backbones.ddim import EpsFn


@dataclass(frozen=True)
class Capture:
    """What to record during the reverse pass (inversion itself records nothing).

    ``cross_sides`` / ``self_sides``: map sides to capture (None = the sides of the down-path
    transformer blocks). ``feature_blocks``: Transformer2DModel module names (None = all on the
    down path, the paper's L = 6 for SD-1.x: ``down_blocks.{0,1,2}.attentions.{0,1}``).
    ``self_device`` / ``self_dtype``: where the self-attention running sums live ("cpu", "fp16"
    halve GPU memory).  ``keep_all_tokens`` also returns the maps of all 77 tokens."""

    cross: bool = True
    self_attn: bool = True
    features: bool = True
    cross_sides: tuple[int, ...] | None = None
    self_sides: tuple[int, ...] | None = None
    feature_blocks: tuple[str, ...] | None = None
    keep_all_tokens: bool = False
    self_device: str | None = None
    self_dtype: str = "fp32"


NO_CAPTURE = Capture(cross=False, self_attn=False, features=False)


@dataclass
class Captures:
    """What the reverse pass recorded, every entry averaged over the T reverse steps.

    * ``cross[layer]``: (B, s, s) float32, cross-attention of the class tokens (mean over the
      sub-tokens of the class name), heads averaged; ``cross_side[layer] = s``.  Layer names are
      diffusers module paths, e.g. ``down_blocks.0.attentions.0.transformer_blocks.0.attn2``.
    * ``cross_all[layer]``: (B, s, s, 77) all-token maps (only with ``keep_all_tokens``); sums
      to 1 over the last axis.
    * ``self_attn[s]``: (B, s*s, s*s), mean over the captured layers of that side and the steps;
      rows are queries (row-major cells), each row sums to 1.
    * ``features[block]``: (B, C, s, s) float32 outputs of the Transformer2DModel blocks (Eq. 8),
      ``feature_strides[block]`` image pixels per cell.
    """

    cross: dict[str, torch.Tensor] = field(default_factory=dict)
    cross_side: dict[str, int] = field(default_factory=dict)
    cross_all: dict[str, torch.Tensor] | None = None
    self_attn: dict[int, torch.Tensor] = field(default_factory=dict)
    features: dict[str, torch.Tensor] = field(default_factory=dict)
    feature_strides: dict[str, int] = field(default_factory=dict)
    num_steps: int = 0

    def cross_layers_at(self, side: int) -> list[str]:
        """Names of the captured cross-attention layers with map side ``side``."""
        return [name for name, s in self.cross_side.items() if s == side]


class CaptureSession:
    """The state of one capture: the attention store and forward hooks summing the outputs of
    the Eq. 8 Transformer2DModel blocks over steps; ``count`` reverse steps seen.

    Blocks call the transformer with ``return_dict=False`` (a tuple) inside the UNet; a direct
    call may return ``Transformer2DModelOutput``; both are handled."""

    def __init__(
        self, unet: Any, blocks: Sequence[str], store: AttentionStore, cfg: bool = False
    ) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0
        self.cfg = cfg
        self.store = store
        modules = [unet.get_submodule(b) for b in blocks]  # a bad name fails before any hook
        self.handles = [m.register_forward_hook(self._hook(b)) for m, b in zip(modules, blocks)]

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(module: Any, args: Any, output: Any) -> None:
            y = output[0] if isinstance(output, tuple) else output.sample
            y = (y[y.shape[0] // 2 :] if self.cfg else y).float()
            if name in self.sums:
                self.sums[name] += y
            else:
                self.sums[name] = y.clone()

        return hook

    def counting(self, eps_fn: EpsFn) -> EpsFn:
        """Wrap an ε function so that each call counts one reverse step."""

        def wrapped(x: torch.Tensor, t: int) -> torch.Tensor:
            self.count += 1
            return eps_fn(x, t)

        return wrapped

    def mean(self) -> dict[str, torch.Tensor]:
        return {k: (v / max(self.count, 1)).cpu() for k, v in self.sums.items()}

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
