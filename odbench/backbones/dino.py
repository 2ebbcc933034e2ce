"""DINO ViT key features for TokenCut and LOST.

Both methods build their patch graph from the KEYS of the last self-attention layer of a
self-supervised ViT (LOST, Siméoni et al. BMVC 2021, Sec. 3; TokenCut, Wang et al. CVPR 2022,
Sec. 3.2): for every patch token the last block's ``qkv`` projection is captured with a forward
hook and its key part kept, heads concatenated, prefix (CLS / register) tokens dropped.

Backbones are timm models created with ``dynamic_img_size=True`` so any image whose sides are
multiples of the patch size goes through (timm interpolates the position embeddings):

- ``vit_small_patch16_224.dino`` (and other timm names): pretrained weights from the Hugging Face
  hub, loaded from ``model.safetensors`` only (never a pickle), honouring ``HF_HUB_OFFLINE``;
- ``vit-tiny-random``: a 2-block, 48-wide ViT/16 with seeded random weights, for tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from odbench.methods.base import Method

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

TINY = "vit-tiny-random"


class WeightsUnavailableError(FileNotFoundError):
    """Pretrained weights that are neither cached nor downloadable (one-line message)."""


@dataclass(frozen=True)
class PatchKeys:
    """Key features of one image: ``keys`` (h * w, D) float32 in row-major patch order, ``grid``
    (h, w) patches, ``patch_size`` pixels, ``padded`` (H', W') input size after padding."""

    keys: np.ndarray
    grid: tuple[int, int]
    patch_size: int
    padded: tuple[int, int]


def _tiny_vit() -> Any:
    import torch
    from timm.models.vision_transformer import VisionTransformer

    with torch.random.fork_rng(devices=[]):  # seeded weights, the caller's RNG untouched
        torch.manual_seed(0)
        return VisionTransformer(
            img_size=224,
            patch_size=16,
            embed_dim=48,
            depth=2,
            num_heads=3,
            num_classes=0,
            dynamic_img_size=True,
        )


def load_dino(name: str = "vit_small_patch16_224.dino", device: str = "cpu") -> Any:
    """A timm ViT in eval mode.  Raises :class:`WeightsUnavailableError` when pretrained weights
    are missing from the cache and cannot be fetched."""
    import timm

    if name == TINY:
        return _tiny_vit().eval().to(device)
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except RuntimeError as e:  # timm: unknown model name
        raise WeightsUnavailableError(f"unknown DINO backbone {name!r}: {e}") from e
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hub_id:
        raise WeightsUnavailableError(f"backbone {name!r} has no Hugging Face hub weights in timm")
    try:
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(hub_id, "model.safetensors")
    except Exception as e:  # offline, not cached, no network: all the same to the user
        raise WeightsUnavailableError(
            f"weights of {name!r} ({hub_id}/model.safetensors) are not in the Hugging Face cache "
            f"and cannot be downloaded ({type(e).__name__}); fetch them on a connected machine "
            f"or point HF_HOME at a cache holding them"
        ) from e
    model = timm.create_model(
        name,
        pretrained=True,
        pretrained_cfg_overlay={"file": path},
        num_classes=0,
        dynamic_img_size=True,
    )
    return model.eval().to(device)


def patch_size_of(model: Any) -> int:
    """Square patch side in pixels."""
    size = model.patch_embed.patch_size
    return int(size[0] if isinstance(size, tuple | list) else size)


def preprocess(image: np.ndarray, patch_size: int) -> Any:
    """(H, W, 3) uint8 RGB -> (1, 3, H', W') ImageNet-normalised tensor, zero-padded at the
    bottom/right to multiples of the patch size (as LOST and TokenCut do)."""
    import torch

    h, w = image.shape[:2]
    ph, pw = -(-h // patch_size) * patch_size, -(-w // patch_size) * patch_size
    x = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float() / 255.0
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    x = (x - mean) / std
    padded = torch.zeros(3, ph, pw)
    padded[:, :h, :w] = x
    return padded.unsqueeze(0)


def last_layer_keys(model: Any, image: np.ndarray, device: str = "cpu") -> PatchKeys:
    """Keys of the last attention block for every patch token of ``image``."""
    import torch

    p = patch_size_of(model)
    x = preprocess(image, p).to(device)
    captured: list[torch.Tensor] = []
    attn = model.blocks[-1].attn
    handle = attn.qkv.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        with torch.inference_mode():
            model.forward_features(x)
    finally:
        handle.remove()
    qkv = captured[0]  # (1, N, 3 * D), laid out (3, heads, head_dim) per token
    b, n, three_d = qkv.shape
    keys = qkv.reshape(b, n, 3, three_d // 3)[0, :, 1]
    keys = keys[int(model.num_prefix_tokens) :]
    grid = (x.shape[2] // p, x.shape[3] // p)
    if keys.shape[0] != grid[0] * grid[1]:
        raise RuntimeError(f"expected {grid[0] * grid[1]} patch tokens, got {keys.shape[0]}")
    return PatchKeys(
        keys=keys.float().cpu().numpy(), grid=grid, patch_size=p, padded=(x.shape[2], x.shape[3])
    )


def upsample_patch_mask(
    grid_mask: np.ndarray, patch_size: int, size: tuple[int, int]
) -> np.ndarray:
    """(h, w) patch mask -> (H, W) pixel mask: each patch covers patch_size² pixels, the padding
    beyond the image (bottom/right, see :func:`preprocess`) is cropped away."""
    up = np.repeat(np.repeat(grid_mask, patch_size, axis=0), patch_size, axis=1)
    return up[: size[0], : size[1]]


def component_of(mask: np.ndarray, seed: tuple[int, int]) -> np.ndarray:
    """The 4-connected component of the bool ``mask`` holding ``seed`` (empty if the seed is
    off the mask), as LOST's and TokenCut's ``detect_box`` take it (``scipy.ndimage.label``)."""
    from scipy import ndimage

    labels, _ = ndimage.label(mask)
    lab = labels[seed]
    return np.asarray(labels == lab) if lab else np.zeros_like(mask, dtype=bool)


class KeyFeatureMethod(Method):
    """A method on last-layer DINO keys; loads its backbone (hyperparameter ``backbone``) on
    first use and checks the card's ``patch_size`` against it."""

    _model: Any = None

    def backbone(self) -> Any:
        if self._model is None:
            model = load_dino(str(self.hparams["backbone"]), self.device)
            expected = int(self.hparams.get("patch_size", patch_size_of(model)))
            if patch_size_of(model) != expected:
                raise ValueError(
                    f"backbone {self.hparams['backbone']!r} has patch size {patch_size_of(model)}, "
                    f"hyperparameter patch_size is {expected}"
                )
            self._model = model
        return self._model

    def keys(self, image: np.ndarray) -> PatchKeys:
        return last_layer_keys(self.backbone(), image, self.device)
