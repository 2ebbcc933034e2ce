"""The natural reference loops of ``odbench bench runner``'s per-method part: what each method's
original repository does per image, written here as plain functions of one image file (no
odbench pipeline: no workers, cache, batching or scoring), so that eval can be timed against
them in the same process on the same weights.

Every loop starts from the file: a PIL read (``Image.open(path).convert("RGB")``), the
repository's transform (``ToTensor`` + ``Normalize`` with ImageNet's mean and std), a timm
forward (a hook on the last block's ``qkv`` captures the keys, as LOST's, TokenCut's, DSM's and
FOUND's code do; it ends after the last block's attention for LOST, TokenCut and FOUND, whose
code calls DINO's ``get_last_selfattention``, and runs to the end for DSM's
``get_intermediate_layers``), then the repository's own solver and post-processing.  Each returns the (H, W)
map that odbench's eval predicts for the same image (``tests/test_bench_references.py`` checks
that they agree), so the comparison times the same computation:

* ``tokencut``: TokenCut's ``ncut``: ``scipy.linalg.eigh(D - A, D, subset_by_index=[1, 2])`` on
  the dense affinity, mean split, the seed's connected component, upsampled.
* ``lost``: LOST's seed (lowest degree), expansion over the ``k`` lowest-degree patches, the
  seed's component of the summed correlations.
* ``dsm``: Deep Spectral Methods' ``extract_features`` + ``_extract_eig`` +
  ``extract_single_region_segmentations`` for one image: the image *cropped* to multiples of the
  patch, the keys, ``W = f fᵀ ⊙ (f fᵀ > 0) / max``, its shift-invert
  ``scipy.sparse.linalg.eigsh(D - W, k=2, sigma=0, which="LM", M=D)`` (the README's K = 2;
  on any failure, as a singular ``D - W`` gives, its fallback ``which="SM"``), the
  sign rule, eigenvector 1 > 0, upsampled (the strip beyond the crop: a nearest resize of the
  patch mask, as odbench).  In float64 where the original keeps torch's float32 affinity (the
  same problem; float32 would flip a few near-zero entries).
* ``found``: FOUND's ``evaluate_saliency`` (``method="pred"``, single mode): the padded image,
  ``get_last_selfattention`` with the ``qkv`` hook (the CLS attention from the hooked q and k),
  the 1×1-conv head on the keys, bilinear upsampling by the patch size, crop, sigmoid > 0.5, the
  largest connected component (the background component found by its overlap with the
  complement, as their code does).
* decoders (``dino-decoder``, ``clip-decoder``, ``moco-decoder``): no original repository (the
  decoders are DiffusionSeg's, trained by ``odbench train``): a plain per-image torch loop — the
  image resized to the training resolution (bilinear, antialiased), the extractor's forward, the
  decoder's forward, bilinear upsampling to the image, sigmoid.
* ``attentioncut`` (``sd-v1-4-random``, T = the card's 40 steps): DiffusionSeg's code is not
  public; the per-image loop is the CLIP prior's class, the prompt, the DDIM inversion and reverse
  pass of this image alone through the backbone (diffusers' UNet; its capture costs 1.002× the
  plain diffusers DDIM loop: ``odbench bench features``), Eq. 2 and the cut.  What eval adds to
  it is the pipeline and the card's batch of 4 images per inversion.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def read_rgb(path: Path) -> np.ndarray:
    """The repositories' read: PIL, converted to RGB."""
    from PIL import Image

    with Image.open(path) as im:
        return np.array(im.convert("RGB"))  # writable, as np.array(Image) in their code


def normalised(image: np.ndarray) -> Any:
    """``ToTensor`` + ``Normalize(ImageNet)``: (3, H, W) float32."""
    import torch

    x = torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255.0
    return (x - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(
        3, 1, 1
    )


def zero_padded(x: Any, patch: int) -> Any:
    """(3, H, W) -> (3, H', W'): zeros (after normalisation) at the bottom/right to multiples of
    the patch size (LOST's, TokenCut's and FOUND's ``make_input_divisible``)."""
    import torch

    h, w = -(-x.shape[1] // patch) * patch, -(-x.shape[2] // patch) * patch
    padded = torch.zeros((3, h, w))
    padded[:, : x.shape[1], : x.shape[2]] = x
    return padded


class _LastAttention(Exception):
    """Ends a forward after the last block's attention, as DINO's ``get_last_selfattention``."""


def last_qkv(model: Any, x: Any, whole: bool = False) -> Any:
    """The timm ViT's forward on (3, H, W) with a hook on the last block's ``qkv``: its output
    (N, 3 * D), prefix tokens included.  The forward ends after the last block's attention, as
    DINO's ``get_last_selfattention`` that LOST, TokenCut and FOUND call (that block's MLP and
    the final norm are not run); ``whole``: to the end, as DSM's ``get_intermediate_layers``."""
    import torch

    out: dict[str, Any] = {}
    attn = model.blocks[-1].attn
    hooks = [attn.qkv.register_forward_hook(lambda m, i, o: out.update(qkv=o))]
    if not whole:
        hooks.append(attn.register_forward_hook(lambda m, i, o: _stop()))
    try:
        with torch.no_grad():
            model.forward_features(x[None])
    except _LastAttention:
        pass
    finally:
        for hook in hooks:
            hook.remove()
    return out["qkv"][0]


def _stop() -> None:
    raise _LastAttention


def patch_keys(model: Any, x: Any, whole: bool = False) -> Any:
    """(N_patches, D) keys of the last block, heads concatenated, prefix tokens dropped
    (``whole``: :func:`last_qkv`)."""
    qkv = last_qkv(model, x, whole)
    k = qkv.reshape(qkv.shape[0], 3, qkv.shape[1] // 3)[:, 1]
    return k[int(model.num_prefix_tokens) :]


def upsampled(mask: np.ndarray, patch: int, size: tuple[int, int]) -> np.ndarray:
    up = np.repeat(np.repeat(mask, patch, axis=0), patch, axis=1)
    return np.asarray(up[: size[0], : size[1]], dtype=np.float32)


def tokencut_reference(model: Any, path: Path, patch: int, tau: float, eps: float) -> np.ndarray:
    import torch
    from scipy import ndimage
    from scipy.linalg import eigh

    image = read_rgb(path)
    x = zero_padded(normalised(image), patch)
    dims = (x.shape[1] // patch, x.shape[2] // patch)
    feats = patch_keys(model, x)
    f = torch.nn.functional.normalize(feats.double(), p=2, dim=1)
    a = (f @ f.T).numpy() > tau
    a = np.where(a.astype(float) == 0, eps, a)
    d = np.diag(np.sum(a, axis=1))
    _, vecs = eigh(d - a, d, subset_by_index=[1, 2])
    second = vecs[:, 0]
    part = second > np.sum(second) / len(second)
    seed = int(np.argmax(np.abs(second)))
    if not part[seed]:
        part = ~part
    objects, _ = ndimage.label(part.reshape(dims))
    mask = objects == objects[np.unravel_index(seed, dims)]
    return upsampled(mask, patch, image.shape[:2])


def lost_reference(model: Any, path: Path, patch: int, k_patches: int) -> np.ndarray:
    from scipy import ndimage

    image = read_rgb(path)
    x = zero_padded(normalised(image), patch)
    dims = (x.shape[1] // patch, x.shape[2] // patch)
    feats = patch_keys(model, x).numpy()
    a = feats @ feats.T
    sorted_patches = np.argsort((a >= 0).sum(axis=1), kind="stable")
    seed = int(sorted_patches[0])
    potentials = sorted_patches[:k_patches]
    similars = potentials[a[seed, potentials] > 0.0]
    m = a[similars, :].sum(axis=0) >= 0
    objects, _ = ndimage.label(m.reshape(dims))
    mask = objects == objects[np.unravel_index(seed, dims)]
    return upsampled(mask, patch, image.shape[:2])


def dsm_reference(model: Any, path: Path, patch: int) -> np.ndarray:
    import cv2
    import torch
    from scipy.sparse.linalg import eigsh

    image = read_rgb(path)
    x = normalised(image)
    hp, wp = x.shape[1] // patch, x.shape[2] // patch
    x = x[:, : hp * patch, : wp * patch]
    feats = torch.nn.functional.normalize(patch_keys(model, x, whole=True).double(), p=2, dim=-1)
    w = feats @ feats.T
    w = (w * (w > 0)).numpy()
    w = w / w.max()
    diag = w.sum(axis=1)
    diag[diag < 1e-12] = 1.0
    d = np.diag(diag)
    with warnings.catch_warnings():  # a singular D - W: the original's fallback below
        warnings.simplefilter("ignore")
        try:
            _, vecs = eigsh(d - w, k=2, sigma=0, which="LM", M=d)
        except Exception:  # as the original: any failure of shift-invert
            _, vecs = eigsh(d - w, k=2, which="SM", M=d)
    vector = vecs[:, 1]
    if 0.5 < np.mean(vector > 0) < 1.0:  # the sign rule
        vector = -vector
    grid = (vector > 0).reshape(hp, wp).astype(np.uint8)
    h, w_ = image.shape[:2]
    out = cv2.resize(grid, (w_, h), interpolation=cv2.INTER_NEAREST).astype(np.float32)
    up = upsampled(grid, patch, (h, w_))
    out[: up.shape[0], : up.shape[1]] = up
    return out


def found_reference(model: Any, head: Any, path: Path, patch: int) -> np.ndarray:
    import torch
    import torch.nn.functional as F
    from scipy import ndimage

    image = read_rgb(path)
    h, w = image.shape[:2]
    x = zero_padded(normalised(image), patch)
    gh, gw = x.shape[1] // patch, x.shape[2] // patch
    qkv = last_qkv(model, x)
    attn = model.blocks[-1].attn
    heads = int(attn.num_heads)
    q, k = qkv.reshape(qkv.shape[0], 3, heads, -1).permute(1, 2, 0, 3)[:2]
    _att = torch.softmax((q[:, :1] * attn.scale) @ k.transpose(-2, -1), dim=-1)
    keys = k.transpose(0, 1).reshape(qkv.shape[0], -1)[int(model.num_prefix_tokens) :]
    feats = keys.T.reshape(1, -1, gh, gw)
    with torch.no_grad():
        preds = head.conv(feats)
        up = F.interpolate(preds, scale_factor=patch, mode="bilinear", align_corners=False)
        binary = (torch.sigmoid(up[0, 0, :h, :w]) > 0.5).numpy()
    labeled, count = ndimage.label(binary)
    if count == 0:
        return binary.astype(np.float32)
    sizes = np.bincount(labeled.ravel(), minlength=count + 1)
    order = np.argsort(sizes)
    overlap = [int((~binary & (labeled == i)).sum()) for i in order]
    order = np.delete(order, int(np.argmax(overlap)))
    return (labeled == order[-1]).astype(np.float32)


def decoder_reference(extractor: Any, decoder: Any, resolution: int, path: Path) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    image = read_rgb(path)
    x = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255.0
    x = F.interpolate(
        x, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False
    ).clamp_(0.0, 1.0)
    with torch.no_grad():
        logits = decoder(extractor.extract(x), size=(resolution, resolution))
        full = F.interpolate(logits, size=image.shape[:2], mode="bilinear", align_corners=False)
    return torch.sigmoid(full)[0, 0].numpy().astype(np.float32)


def attentioncut_reference(method: Any, path: Path) -> np.ndarray:
    """AttentionCut one image at a time: the CLIP prior's class, the prompt, the backbone's DDIM
    inversion of this image alone (diffusers' UNet, T = the card's steps; cross- and
    self-attention captured in the reverse pass), Eq. 2, then the cut (``method.cut``)."""
    from odbench.backbones.capture import Capture
    from odbench.methods.diffusion import (
        aggregate_cross_attention,
        aggregate_self_attention,
        attention_maps,
    )

    image = read_rgb(path)
    fx = method.extractor
    prompt, idx = fx.prompt(fx.classify([image])[0])
    out = fx.backbone.invert(
        [image], [prompt], [idx], num_steps=fx.num_steps, capture=Capture(features=False),
        decode=False,
    )  # fmt: skip
    caps = out.captures
    grid = max(caps.self_attn)
    cross, selfs = attention_maps(caps, 0)
    a_c = aggregate_cross_attention(cross, int(method.hparams["top_k"]), grid)
    return np.asarray(method.cut(image, a_c, aggregate_self_attention(selfs, grid)))
