"""Attention capture for the Stable Diffusion UNet through diffusers' attention-processor API.

Paper (DiffusionSeg, Ma et al. 2023), Sec. 3.1 / 3.2.2: for reverse step t and layer l the
cross-attention A_c^{t,l} (image queries x text keys) and self-attention A_s^{t,l} (image x image);
Eq. 2 averages them over steps (and, for A_s, over layers).

How it works (no monkey-patching of ``forward``):

* ``unet.attn_processors`` lists every attention layer (``...attn1.processor`` = self-attention,
  ``...attn2.processor`` = cross-attention of a ``BasicTransformerBlock``).
* :func:`capture_attention` replaces ONLY the layers whose map side is in the requested
  resolutions with a :class:`CaptureProcessor` (which computes the probabilities explicitly),
  keeps ``AttnProcessor2_0`` (SDPA) everywhere else, passes the full dict to
  ``unet.set_attn_processor`` and restores the previous processors on exit.
* Everything recorded goes into one :class:`AttentionStore`:
  - cross-attention: per layer, the running SUM over steps of the head-averaged probabilities
    for all text tokens, shape (B, h*w, n_tokens) (small: 77 tokens);
  - self-attention: per map side, the running SUM over steps AND layers of the head-averaged
    probabilities, shape (B, h*w, h*w), optionally kept on another device / in fp16.
    Nothing per-step is ever stored.
  Heads are averaged before accumulation. When the UNet batch holds an unconditional half first
  (classifier-free guidance, ``store.cfg = True``), only the conditional second half is recorded.

The per-call peak extra memory of the explicit probabilities is bounded by computing them one
head at a time: two (B, Q, K) fp32 matrices alive (a buffer reused by every head and the running
head sum), not (B*heads, Q, Q); 2 x 64 MiB per image for a 64² self-attention layer.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class AttentionStore:
    """Running sums of captured attention (see module docstring for shapes).

    ``cross_sum[layer]`` (B, Q, n_tokens) and ``cross_count[layer]`` (number of steps);
    ``self_sum[side]`` (B, Q, Q) and ``self_count[side]`` (number of layer-steps added);
    ``cross_side[layer]`` the map side of each cross layer.
    """

    self_device: torch.device | str | None = None  # None: the model's device
    self_dtype: torch.dtype = torch.float32
    cfg: bool = False  # batch = [unconditional; conditional]: record the second half only
    cross_sum: dict[str, torch.Tensor] = field(default_factory=dict)
    cross_count: dict[str, int] = field(default_factory=dict)
    cross_side: dict[str, int] = field(default_factory=dict)
    self_sum: dict[int, torch.Tensor] = field(default_factory=dict)
    self_count: dict[int, int] = field(default_factory=dict)

    def _cond(self, x: torch.Tensor) -> torch.Tensor:
        return x[x.shape[0] // 2 :] if self.cfg else x

    def add_cross(self, layer: str, side: int, probs: torch.Tensor) -> None:
        """probs: (B, Q, K) head-averaged cross-attention of one layer at one step."""
        p = self._cond(probs).float()
        if layer in self.cross_sum:
            self.cross_sum[layer] += p
        else:
            self.cross_sum[layer] = p.clone()
            self.cross_side[layer] = side
        self.cross_count[layer] = self.cross_count.get(layer, 0) + 1

    def add_self(self, side: int, probs: torch.Tensor) -> None:
        """probs: (B, Q, Q) head-averaged self-attention of one layer at one step."""
        dev = probs.device if self.self_device is None else self.self_device
        p = self._cond(probs).to(device=dev, dtype=self.self_dtype)
        if side in self.self_sum:
            self.self_sum[side] += p
        else:
            self.self_sum[side] = p.clone()
        self.self_count[side] = self.self_count.get(side, 0) + 1

    def cross_mean(self) -> dict[str, torch.Tensor]:
        """Per layer: (B, side, side, n_tokens) cross-attention averaged over steps."""
        out = {}
        for name, s in self.cross_sum.items():
            side = self.cross_side[name]
            m = s / self.cross_count[name]
            out[name] = m.reshape(m.shape[0], side, side, m.shape[-1])
        return out

    def self_mean(self) -> dict[int, torch.Tensor]:
        """Per map side: (B, side², side²) self-attention averaged over layers and steps (Eq. 2)."""
        return {side: s / self.self_count[side] for side, s in self.self_sum.items()}


class CaptureProcessor:
    """Attention processor that computes the probabilities explicitly and records them.

    The same attention as diffusers' ``AttnProcessor`` (softmax(q k^T * scale) v), computed in
    fp32 whatever the model dtype, for the plain ``BasicTransformerBlock`` layers of SD-1.x.
    Recorded probabilities are fp32.
    """

    def __init__(self, store: AttentionStore, layer: str, side: int, kind: str) -> None:
        if kind not in ("self", "cross"):
            raise ValueError(f"kind must be 'self' or 'cross', got {kind!r}")
        self.store, self.layer, self.side, self.kind = store, layer, side, kind

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        if (
            attn.spatial_norm is not None
            or attn.group_norm is not None
            or getattr(attn, "norm_q", None) is not None
            or getattr(attn, "norm_k", None) is not None
            or hidden_states.ndim != 3
        ):
            raise NotImplementedError(
                f"{self.layer}: capture supports plain transformer-block attention only "
                "(no spatial/group norm, no q/k normalisation: SD-1.x and SD-2.x)"
            )
        residual = hidden_states
        b, q_len, _ = hidden_states.shape
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        heads = attn.heads
        q = attn.to_q(hidden_states)
        k = attn.to_k(context)
        v = attn.to_v(context)
        d = q.shape[-1] // heads
        # (B, heads, L, d)
        q, k, v = (t.view(b, -1, heads, d).transpose(1, 2) for t in (q, k, v))
        mask = None
        if attention_mask is not None:
            mask = attn.prepare_attention_mask(attention_mask, k.shape[2], b)
            mask = mask.view(b, heads, -1, mask.shape[-1])

        out = torch.empty_like(q)
        qs, kf, vf = q.float() * attn.scale, k.float(), v.float()
        # one (B, Q, K) fp32 buffer reused by every head, plus the running head sum: allocation
        # and extra passes over these matrices dominate the cost (64 MiB each at 64² per image)
        buf = q.new_empty((b, q.shape[2], k.shape[2]), dtype=torch.float32)
        prob_sum = torch.empty_like(buf)
        for h in range(heads):
            torch.matmul(qs[:, h], kf[:, h].transpose(-1, -2), out=buf)
            if mask is not None:
                buf += mask[:, h]
            softmax_(buf)
            out[:, h] = torch.matmul(buf, vf[:, h]).to(out.dtype)
            if h == 0:
                prob_sum.copy_(buf)
            else:
                prob_sum += buf
        del buf
        mean = prob_sum.div_(heads)
        if self.kind == "cross":
            self.store.add_cross(self.layer, self.side, mean)
        else:
            self.store.add_self(self.side, mean)
        del prob_sum, mean

        hidden_states = out.transpose(1, 2).reshape(b, q_len, heads * d)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor  # type: ignore[no-any-return]


def softmax_(x: torch.Tensor) -> torch.Tensor:
    """In-place softmax over the last axis (max-subtracted, so it never overflows)."""
    x.sub_(x.amax(dim=-1, keepdim=True)).exp_()
    return x.div_(x.sum(dim=-1, keepdim=True))


def layer_level(processor_name: str, n_levels: int) -> int:
    """Resolution level (0 = full latent resolution) of an SD UNet attention layer, from its name.

    ``down_blocks.i`` work at level i, ``up_blocks.j`` at level n_levels-1-j, the mid block at the
    deepest level n_levels-1.
    """
    parts = processor_name.split(".")
    if parts[0] == "down_blocks":
        return int(parts[1])
    if parts[0] == "up_blocks":
        return n_levels - 1 - int(parts[1])
    if parts[0] == "mid_block":
        return n_levels - 1
    raise ValueError(f"unexpected attention layer name {processor_name!r}")


def attention_layers(unet: Any, latent_side: int) -> dict[str, tuple[str, int]]:
    """Map each attention processor name to (kind, map side) for a square latent of this side."""
    n_levels = len(unet.config.block_out_channels)
    out = {}
    for name in unet.attn_processors:
        kind = "self" if ".attn1." in name else "cross" if ".attn2." in name else "other"
        side = latent_side // 2 ** layer_level(name, n_levels)
        out[name] = (kind, side)
    return out


@contextmanager
def capture_attention(
    unet: Any,
    store: AttentionStore,
    latent_side: int,
    cross_sides: tuple[int, ...] = (),
    self_sides: tuple[int, ...] = (),
) -> Iterator[list[str]]:
    """Install capture processors on the layers at the requested map sides; restore on exit.

    Yields the names of the captured layers (without the ``.processor`` suffix).
    """
    from diffusers.models.attention_processor import AttnProcessor2_0

    previous = dict(unet.attn_processors)
    procs: dict[str, Any] = {}
    captured = []
    for name, (kind, side) in attention_layers(unet, latent_side).items():
        wanted = (kind == "cross" and side in cross_sides) or (
            kind == "self" and side in self_sides
        )
        if wanted:
            layer = name.removesuffix(".processor")
            procs[name] = CaptureProcessor(store, layer, side, kind)
            captured.append(layer)
        else:
            procs[name] = AttnProcessor2_0()
    unet.set_attn_processor(procs)
    try:
        yield captured
    finally:
        unet.set_attn_processor(previous)
