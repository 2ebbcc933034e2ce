"""FOUND's head training (valeoai/FOUND ``main_found_train.py``) inside ``odbench train``:
``odbench train --method found --data duts_tr --features dino-vits8 --out RUN``.

What is cached per image (:class:`SeedTargets`, the run's "extractor"): the last-layer keys
(the head's input) and FOUND's pseudo-label, the training-free object mask of
:func:`odbench.methods.found.background_mask` smoothed by :func:`smooth_patch_mask` (their
``get_bkg_pseudo_labels_batch`` with the bilateral solver on).  What each step computes
(:func:`found_loss`, the card's ``[training]`` weights): BCE to the smoothed own mask, plus BCE to
the pseudo-label before ``stop_seed_loss`` steps or ``w_self_loss`` · BCE to the own mask after.
The ground truth of the training set is never read by the loss.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from odbench.features.base import FeatureExtractor
from odbench.methods.found import background_mask, found_bilateral


def smooth_patch_mask(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """FOUND's ``batch_apply_bilateral_solver`` on one (h, w) patch mask of an (R, R, 3) uint8
    image: the mask resized bilinearly to the image, :func:`found_bilateral` with every
    component but the largest; if kept, resized back to the patch grid (bilinear, any overlap
    counts), else the mask itself.  Returns float32 (h, w) in {0, 1}."""
    import torch
    import torch.nn.functional as F

    m = torch.from_numpy(np.asarray(mask, dtype=np.float32))[None, None]
    up = F.interpolate(m, size=image.shape[:2], mode="bilinear", align_corners=False)[0, 0]
    solved, used = found_bilateral(image, up.numpy(), all_components=True)
    if not used:
        return np.asarray(mask, dtype=np.float32)
    s = torch.from_numpy(np.asarray(solved, dtype=np.float32))[None, None]
    down = F.interpolate(s, size=m.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    return (down != 0).float().numpy()


def _hwc(images: Any) -> list[np.ndarray]:
    """``[B, 3, R, R]`` (uint8, or float in [0, 1]) -> (R, R, 3) uint8 images."""
    arr = np.asarray(images)
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)
    return [np.ascontiguousarray(a.transpose(1, 2, 0)) for a in arr]


class SeedTargets(FeatureExtractor):
    """A ViT extractor's keys plus FOUND's pseudo-label as a second level (``[B, 1, h, w]``), so
    the feature cache holds both; ``identity`` adds the seed settings."""

    def __init__(self, inner: Any, threshold: float, weighted: bool) -> None:
        if not hasattr(inner, "keys_and_attention"):
            from odbench.errors import OdbenchError

            raise OdbenchError(
                f"--features {inner.name}: FOUND needs a ViT's attention and keys; use a dino-* "
                "extractor"
            )
        self.inner, self.threshold, self.weighted = inner, float(threshold), bool(weighted)
        self.spec, self.name = inner.spec, inner.name
        p = int(inner.patch_size)
        self.patch_size = p
        self.strides, self.channels = (p, p), (int(inner.channels[0]), 1)
        self.input_multiple = inner.input_multiple
        self.identity = (
            f"{inner.identity}|found-seed(keys, bkg_th={self.threshold}, "
            f"weighted={self.weighted}, bs=found)"
        )

    def to(self, device: Any, dtype: Any = None) -> SeedTargets:
        self.inner.to(device, dtype)
        return self

    def extract(self, images: Any) -> list[Any]:
        import torch

        keys, attn = self.inner.keys_and_attention(images)
        grid = tuple(keys.shape[2:])
        seeds = []
        for b, image in enumerate(_hwc(images.float().cpu().numpy())):
            bkg, _ = background_mask(
                attn[b].flatten(1).cpu().numpy(),
                keys[b].flatten(1).T.cpu().numpy(),
                self.threshold,
                self.weighted,
            )
            seeds.append(smooth_patch_mask(image, (~bkg).reshape(grid)))
        seed = torch.from_numpy(np.stack(seeds))[:, None].to(keys.device)
        return [keys.float(), seed]


def found_loss(logits: Any, seeds: Any, images: np.ndarray, step: int, opts: dict[str, Any]) -> Any:
    """FOUND's loss for one batch (see the module docstring): ``logits`` ``[B, 1, h, w]`` from the
    head, ``seeds`` the cached pseudo-labels, ``images`` the batch's ``[B, 3, R, R]`` uint8."""
    import torch
    import torch.nn.functional as F

    own = (torch.sigmoid(logits.detach()) > 0.5).float()
    smoothed = [smooth_patch_mask(im, m[0].cpu().numpy()) for im, m in zip(_hwc(images), own)]
    own_bs = torch.from_numpy(np.stack(smoothed))[:, None].to(logits.device)
    loss = float(opts["w_bs_loss"]) * F.binary_cross_entropy_with_logits(logits, own_bs)
    if step < int(opts["stop_seed_loss"]):
        return loss + F.binary_cross_entropy_with_logits(logits, seeds.float())
    return loss + float(opts["w_self_loss"]) * F.binary_cross_entropy_with_logits(logits, own)
