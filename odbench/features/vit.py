"""ViT extractors through timm: DINO (Caron et al. 2021) ViT-S/16, ViT-S/8, ViT-B/8, MoCo v3
(Chen et al. 2021) ViT-B/16 and DINOv2 (Oquab et al. 2024) ViT-S/14, ViT-B/14, with and without
registers (Darcet et al. 2024).

``extract`` returns the last block's patch tokens after the final norm (prefix tokens dropped:
the CLS token and, for DINOv2 with registers, the 4 register tokens), as the frozen-backbone
baselines of DiffusionSeg Table 4 use them; :meth:`ViTExtractor.keys` returns the keys of the last
attention layer, heads concatenated, which TokenCut (Wang et al. 2022, Sec. 3.2) and LOST
(Siméoni et al. 2021, Sec. 3) build their patch graphs from.  Models are created with
``dynamic_img_size=True``: any H, W that are multiples of the patch size go through.  ImageNet
mean/std normalisation (DINOv2's too).

Position embeddings at another grid than the pretraining one: timm resamples them (bicubic,
antialiased, to the target size).  DINOv2's own code (``interpolate_pos_encoding``, released
hub models) does it differently — bicubic without antialiasing, with ``scale_factor = (n + 0.1)
/ 37`` — and the two differ at every size but 518² (37² patches): the ``dinov2`` family uses
DINOv2's (:func:`dinov2_pos_embed`, config ``pos_interpolation = "dinov2"``).

Weights:

- DINO: timm's hub tags (``model.safetensors``).  ``weights="field"`` on ``dino-vits8`` loads
  ``dino_deitsmall8_300ep_pretrain.pth`` (the checkpoint of TokenCut, LOST and FOUND; timm's tag
  holds the 800-epoch one) by URL, ``checkpoint=PATH`` any local file; ``identity`` says which.
- DINOv2: timm's ``*.lvd142m`` hub tags; ``checkpoint=PATH`` (or the URL in the spec's config)
  also takes Meta's original ``dinov2_vit*14*_pretrain.pth``, converted to timm's layout by
  timm's own ``checkpoint_filter_fn`` (mask token dropped, register tokens renamed, the CLS
  position folded into the CLS token).
- MoCo v3: the official ``vit-b-300ep.pth.tar`` (``torch.load(weights_only=True)``), keys
  ``module.base_encoder.*`` stripped, the projection head dropped.  MoCo v3 ViTs have 12 heads
  at every width, timm's ``vit_small`` 6: the weights would load and compute other attention,
  so the head count is checked against the checkpoint's architecture.
"""

from __future__ import annotations

import math
import types
from typing import Any

import torch
import torch.nn.functional as F

from odbench.features.base import FeatureExtractor, to_device
from odbench.features.specs import ExtractorSpec
from odbench.features.weights import (
    WeightsNotFoundError,
    hub_file,
    load_state_dict,
    local_file,
    url_file,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class _KeysCaptured(Exception):
    """Raised by the hook on the last block's ``qkv`` once it has the keys: ends the forward."""


MOCO_PREFIX = "module.base_encoder."


def _timm_vit(spec: ExtractorSpec, seed: int = 0) -> Any:
    """The spec's timm ViT (no head, dynamic size), seeded random weights, caller's RNG kept;
    DINOv2's position-embedding interpolation where the spec asks for it."""
    import timm
    from timm.models.vision_transformer import VisionTransformer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tiny = spec.config.get("tiny")
        if tiny is not None:
            kw = {"img_size": 224, **tiny}
            model = VisionTransformer(num_classes=0, dynamic_img_size=True, **kw)
        else:
            model = timm.create_model(
                spec.config["arch"], pretrained=False, num_classes=0, dynamic_img_size=True
            )
    interpolation = spec.config.get("pos_interpolation", "timm")
    if interpolation == "dinov2":
        model._pos_embed = types.MethodType(dinov2_pos_embed, model)
    elif interpolation != "timm":
        raise ValueError(f"{spec.name}: pos_interpolation must be 'timm' or 'dinov2'")
    return model


#: DINOv2's ``interpolate_offset``: the target grid side + 0.1 makes the scale factor.
DINOV2_OFFSET = 0.1


def dinov2_pos_embed(model: Any, x: torch.Tensor) -> torch.Tensor:
    """timm ``VisionTransformer._pos_embed`` with DINOv2's interpolation (bound to a model by
    :func:`_timm_vit`): ``x`` (B, h, w, C) patch embeddings -> (B, prefix + h * w, C) tokens,
    CLS and register tokens first.  The patch grid of the position embeddings (M × M) is resized
    to h × w bicubically, without antialiasing, with ``scale_factor = ((h + 0.1) / M, (w + 0.1)
    / M)`` (DINOv2's ``interpolate_pos_encoding``), and used as is at h = w = M."""
    b, h, w, c = x.shape
    pos = model.pos_embed
    n_prefix = 0 if model.no_embed_class else int(model.num_prefix_tokens)
    prefix, grid = pos[:, :n_prefix], pos[:, n_prefix:]
    m = math.isqrt(grid.shape[1])
    if (h, w) != (m, m):
        square = grid.float().reshape(1, m, m, -1).permute(0, 3, 1, 2)
        scale = ((h + DINOV2_OFFSET) / m, (w + DINOV2_OFFSET) / m)
        resized = F.interpolate(square, scale_factor=scale, mode="bicubic", antialias=False)
        if resized.shape[-2:] != (h, w):
            raise RuntimeError(f"position grid {tuple(resized.shape[-2:])} for {h} x {w} patches")
        grid = resized.permute(0, 2, 3, 1).reshape(1, h * w, -1).to(pos.dtype)
    pos = torch.cat([prefix, grid], dim=1)
    tokens = [t.expand(b, -1, -1) for t in (model.cls_token, model.reg_token) if t is not None]
    x = x.reshape(b, h * w, c)
    if model.no_embed_class:  # registers: the CLS / register tokens get no position
        x = torch.cat([*tokens, x + pos], dim=1)
    else:
        x = torch.cat([*tokens, x], dim=1) + pos
    return model.pos_drop(x)  # type: ignore[no-any-return]


def moco_v3_state_dict(checkpoint: dict[str, Any], model: Any, heads: int) -> dict[str, Any]:
    """The base encoder of an official MoCo v3 checkpoint, as timm keys, head dropped; refuses a
    model whose head count differs from the checkpoint architecture's ``heads``."""
    have = int(model.blocks[0].attn.num_heads)
    if have != heads:
        raise ValueError(
            f"MoCo v3 ViTs have {heads} attention heads, this timm model has {have}: the weights "
            "would load but compute different attention; build the model with num_heads="
            f"{heads}"
        )
    state = checkpoint.get("state_dict", checkpoint)
    out = {
        k[len(MOCO_PREFIX) :]: v
        for k, v in state.items()
        if k.startswith(MOCO_PREFIX) and not k[len(MOCO_PREFIX) :].startswith("head")
    }
    if not out:
        raise WeightsNotFoundError(
            f"no '{MOCO_PREFIX}*' keys in the checkpoint: not a MoCo v3 training checkpoint"
        )
    return out


def _load_weights(model: Any, state: dict[str, Any], where: str) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("head")]
    if missing or unexpected:
        raise WeightsNotFoundError(
            f"{where}: checkpoint does not fit the model (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}); download the checkpoint this extractor names"
        )


def build(spec: ExtractorSpec, *, device: str = "cpu", **options: Any) -> ViTExtractor:
    """Options: ``weights`` ("timm" default, "field" for dino-vits8), ``checkpoint`` (a local
    file or URL overriding the spec's source), ``seed`` (random variants)."""
    cfg = spec.config
    weights = options.pop("weights", "timm")
    checkpoint = options.pop("checkpoint", None)
    seed = int(options.pop("seed", 0))
    if options:
        raise TypeError(f"{spec.name}: unknown option(s) {', '.join(sorted(options))}")
    model = _timm_vit(spec, seed)
    heads = cfg.get("moco_heads")
    if spec.random is not None and checkpoint is None:
        source = f"random(seed={seed})"
    else:
        if checkpoint is not None:
            c = str(checkpoint)
            path = url_file(c) if "://" in c else local_file(c, spec.name)
            source = f"file:{path.name}"
        elif weights == "field":
            if "field_url" not in cfg:
                raise ValueError(f"{spec.name}: no field checkpoint; weights='timm' only")
            path = url_file(cfg["field_url"], size="~87 MB")
            source = f"url:{cfg['field_url']}"
        elif weights != "timm":
            raise ValueError(f"{spec.name}: weights must be 'timm' or 'field', not {weights!r}")
        elif "hub" in cfg:
            path = hub_file(cfg["hub"], "model.safetensors")
            source = f"hub:{cfg['hub']}"
        else:
            path = url_file(cfg["url"])
            source = f"url:{cfg['url']}"
        state = load_state_dict(path)
        if heads is not None:
            state = moco_v3_state_dict(state, model, int(heads))
        elif "model" in state and isinstance(state["model"], dict):
            state = state["model"]
        if "mask_token" in state:  # Meta's original DINOv2 layout -> timm's
            from timm.models.vision_transformer import checkpoint_filter_fn

            state = checkpoint_filter_fn(state, model)
        _load_weights(model, state, str(path))
        if path.name and "file:" in source:
            import hashlib

            source += ":" + hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return ViTExtractor(spec, model, source, device)


class ViTExtractor(FeatureExtractor):
    """A frozen timm ViT (see the module docstring)."""

    def __init__(self, spec: ExtractorSpec, model: Any, source: str, device: str) -> None:
        self.spec = spec
        self.name = spec.name
        self.model = model.eval().requires_grad_(False)
        self.source = source
        self.identity = f"{spec.name}|{source}|timm-vit-last-layer"
        p = self.patch_size
        self.strides = (p,)
        self.channels = (int(model.embed_dim),)
        self.input_multiple = p
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.to(device)

    @property
    def patch_size(self) -> int:
        size = self.model.patch_embed.patch_size
        return int(size[0] if isinstance(size, tuple | list) else size)

    def to(self, device: Any, dtype: Any = None) -> ViTExtractor:
        self.device = torch.device(device)
        self.dtype = dtype or self.dtype
        self.model.to(device=self.device, dtype=self.dtype)
        return self

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] RGB -> ImageNet-normalised, on the model's device and dtype."""
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        x = (images.float().cpu() - mean) / std
        return to_device(x, self.device, self.dtype)

    def _grid(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2] // self.patch_size, x.shape[3] // self.patch_size
        tokens = tokens[:, int(self.model.num_prefix_tokens) :]
        if tokens.shape[1] != h * w:
            raise RuntimeError(f"expected {h * w} patch tokens, got {tokens.shape[1]}")
        return tokens.transpose(1, 2).reshape(x.shape[0], -1, h, w).float()

    @torch.inference_mode()
    def extract(self, images: torch.Tensor) -> list[torch.Tensor]:
        self.check_images(images)
        x = self.normalise(images)
        return [self._grid(x, self.model.forward_features(x))]

    @torch.inference_mode()
    def keys(self, images: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) keys of the last attention layer, heads concatenated."""
        return self.keys_and_attention(images)[0]

    @torch.inference_mode()
    def keys_and_attention(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The last attention layer's keys (B, D, h, w), heads concatenated, and the attention
        of the CLS token to the patches (B, heads, h, w): ``softmax(scale · q_cls k_j)`` over
        every token (prefix tokens included), as DINO's ``get_last_selfattention``, read at the
        patches (FOUND, Siméoni et al. 2023, Sec. 3.1).  The forward stops at the last block's
        ``qkv``: what follows it (that block's attention and MLP, the final norm: ~8 % of a
        ViT-S/16's forward) changes neither."""
        self.check_images(images)
        x = self.normalise(images)
        captured: list[torch.Tensor] = []
        attn = self.model.blocks[-1].attn

        def stop(_m: Any, _i: Any, out: torch.Tensor) -> None:
            captured.append(out)
            raise _KeysCaptured  # the last block's attention and MLP, the final norm: not needed

        handle = attn.qkv.register_forward_hook(stop)
        try:
            self.model.forward_features(x)
        except _KeysCaptured:
            pass
        finally:
            handle.remove()
        b, n, three_d = captured[0].shape  # (B, N, 3 * D), laid out (3, heads, head_dim)
        heads = int(attn.num_heads)
        qkv = captured[0].reshape(b, n, 3, heads, three_d // 3 // heads).permute(2, 0, 3, 1, 4)
        q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])  # (B, heads, N, head_dim)
        cls_attn = torch.softmax((q[:, :, :1] * attn.scale) @ k.transpose(-2, -1), dim=-1)
        keys = captured[0].reshape(b, n, 3, three_d // 3)[:, :, 1]
        return self._grid(x, keys), self._grid(x, cls_attn[:, :, 0].transpose(1, 2))
