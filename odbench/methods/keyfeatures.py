"""Shared by TokenCut and LOST: the last-layer keys of a self-supervised ViT per image.

Both methods build their patch graph from the KEYS of the last self-attention layer (LOST,
Siméoni et al. BMVC 2021, Sec. 3; TokenCut, Wang et al. CVPR 2022, Sec. 3.2), heads
concatenated, prefix (CLS / register) tokens dropped.  The keys come from a ViT feature
extractor (:meth:`odbench.features.vit.ViTExtractor.keys`) named by the hyperparameter
``backbone`` (``dino-vits16``, ``dino-vits8``, ``dinov2-vitb14``, ``moco-v3-vitb16``,
``dino-tiny``, ...: ``odbench list features``, families ``dino``, ``dinov2``, ``moco``).
The patch size is the extractor's (8, 14 or 16); a card does not restate it.
An image is zero-padded at the bottom/right to multiples of the patch size after normalisation
(as LOST and TokenCut do): the padding is the normalisation's mean colour.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from odbench.methods.base import Method


@dataclass(frozen=True)
class PatchKeys:
    """Key features of one image: ``keys`` (h * w, D) float32 in row-major patch order, ``grid``
    (h, w) patches, ``patch_size`` pixels, ``padded`` (H', W') input size after padding."""

    keys: np.ndarray
    grid: tuple[int, int]
    patch_size: int
    padded: tuple[int, int]


def padded_batch(image: np.ndarray, patch_size: int, fill: tuple[float, ...]) -> Any:
    """(H, W, 3) uint8 RGB -> (1, 3, H', W') float32 in [0, 1], padded at the bottom/right to
    multiples of the patch size with the colour ``fill`` (the normaliser's mean, which
    normalises to exactly zero)."""
    import torch

    h, w = image.shape[:2]
    ph, pw = -(-h // patch_size) * patch_size, -(-w // patch_size) * patch_size
    x = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float() / 255.0
    padded = torch.tensor(fill, dtype=torch.float32).view(3, 1, 1).repeat(1, ph, pw)
    padded[:, :h, :w] = x
    return padded.unsqueeze(0)


def upsample_patch_mask(
    grid_mask: np.ndarray, patch_size: int, size: tuple[int, int]
) -> np.ndarray:
    """(h, w) patch mask -> (H, W) pixel mask: each patch covers patch_size² pixels, the padding
    beyond the image (bottom/right, see :func:`padded_batch`) is cropped away."""
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
    """A method on last-layer ViT keys; builds its extractor (hyperparameter ``backbone``) on
    first use.  Its patch size is the extractor's; a card that still pins ``patch_size`` must
    agree with it (one line otherwise)."""

    _fx: Any = None

    def __init__(self, card: Any = None, device: str = "cpu", **overrides: Any) -> None:
        from odbench.cards import CardError
        from odbench.features import extractor_spec, extractors_of
        from odbench.features.specs import VIT_FAMILIES

        super().__init__(card, device, **overrides)
        name = str(self.hparams["backbone"])
        if extractor_spec(name).family not in VIT_FAMILIES:
            where = card.path if card is not None else type(self).__name__
            raise CardError(
                f"{where}: backbone {name!r} is not a ViT extractor; use one of "
                + ", ".join(extractors_of(*VIT_FAMILIES))
            )

    def extractor(self) -> Any:
        if self._fx is None:
            from odbench.cards import CardError
            from odbench.features import load_extractor

            fx: Any = load_extractor(str(self.hparams["backbone"]), device=self.device)
            pinned = self.hparams.get("patch_size")
            if pinned is not None and int(pinned) != fx.patch_size:
                raise CardError(
                    f"method {self.name or type(self).__name__}: backbone "
                    f"{self.hparams['backbone']!r} has patch size {fx.patch_size}, hyperparameter "
                    f"patch_size is {pinned}; drop patch_size (the extractor's is used)"
                )
            self._fx = fx
        return self._fx

    def keys(self, image: np.ndarray) -> PatchKeys:
        from odbench.features.vit import IMAGENET_MEAN

        fx = self.extractor()
        p = fx.patch_size
        x = padded_batch(image, p, IMAGENET_MEAN)
        k = fx.keys(x)[0]  # (D, h, w)
        grid = (int(k.shape[1]), int(k.shape[2]))
        return PatchKeys(
            keys=k.flatten(1).T.cpu().numpy(), grid=grid, patch_size=p, padded=tuple(x.shape[2:])
        )
