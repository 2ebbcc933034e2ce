"""``maskcut``: normalized cuts repeated on DINO key features, several objects per image (Wang,
Girdhar, Yu, Misra, "Cut and Learn for Unsupervised Object Detection and Instance
Segmentation", CVPR 2023, Sec. 3.1; the authors' ``maskcut/maskcut.py`` and ``maskcut/crf.py``).

On one image, resized to ``fixed_size``² (Lanczos) and then to the nearest multiple of the
backbone's patch size, with the h × w last-layer keys of the ViT:

- Cut ``t = 1 .. N`` (Sec. 3.1): TokenCut's graph (cosine of the keys ``> τ`` -> 1, else ε) and
  its normalized cut (:mod:`odbench.methods.tokencut`), on keys where every patch of the masks
  found so far is set to zero (so it is tied to every patch by ε only).
- Foreground side of the bipartition ``x > mean(x)``: the complement when three or four of the
  grid's corners lie in it (the "object-centric prior"), else the side holding the patch of
  largest ``|x|``; the mask is the 4-connected component of that side holding the side's
  extreme patch (``argmax x``, or ``argmin x`` for the complement).
- A cut after the first is dropped (an empty mask, which still paints nothing) when its mask
  covers ≤ 1 % of the grid or has IoU > 0.5 with the previous cut's mask.  Each mask loses the
  patches of the masks before it, so the N masks are disjoint.
- Each mask, upsampled (nearest) to ``fixed_size``², goes through the dense CRF of ``crf.py``
  (10 iterations; Gaussian sxy 3, compat 7; bilateral sxy 50, srgb 5, compat 10) with holes
  filled; a CRF mask with IoU < 0.5 against its input is dropped.  The mask is then resized to
  the image (bicubic on 0/255, threshold at half its maximum), as the original writes it.

The eigenvector's sign is arbitrary.  The original's foreground rule depends on it in one case:
when the patch of largest ``|x|`` lies on the side holding ≥ 3 corners, it follows LAPACK's sign
(corner rule if that patch is on ``x > mean``, seed rule otherwise).  odbench fixes the sign so
that this patch has ``x > 0`` (then the corner test, which the code runs first, decides) and is
otherwise equal to the original (``tests/test_maskcut.py`` runs both on the same features).
``eigensolver = "generalized"`` calls the original's solver and keeps LAPACK's sign: the
original's masks exactly (on the same LAPACK build), ~10× slower than LOBPCG.

Scores: MaskCut's masks carry none (CutLER writes pseudo-labels; issues #18, #41, #70 of
facebookresearch/CutLER).  ``score = "rank"`` gives the t-th cut the score 1 / t (the order in
which MaskCut finds objects, the most salient first); ``"equal"`` gives every mask 1.0 and leaves
the order to the scorer's tie policy.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import numpy as np

from odbench.methods.keyfeatures import KeyFeatureMethod, component_of
from odbench.methods.tokencut import Solver, cosine_affinity, ncut_vector
from odbench.metrics.instances import Instances

#: ``maskcut/crf.py``'s constants: iterations, Gaussian (sxy, compat), bilateral (sxy, srgb, compat).
CRF_ITERATIONS = 10
CRF_GAUSSIAN = (3, 7)
CRF_BILATERAL = (50, 5, 10)


def foreground_side(
    vector: np.ndarray, grid: tuple[int, int], fix_sign: bool = True
) -> tuple[np.ndarray, int]:
    """MaskCut's choice of side: (foreground bool mask, seed index), the seed being the side's
    extreme patch from which the connected component is taken.  ``fix_sign``: the entry of
    largest magnitude made positive first (see the module doc), else the sign as given."""
    x = vector
    if fix_sign and vector[int(np.argmax(np.abs(vector)))] < 0:
        x = -vector
    side = x > x.mean()
    g = side.reshape(grid)
    corners = int(g[0, 0]) + int(g[0, -1]) + int(g[-1, 0]) + int(g[-1, -1])
    seed = int(np.argmax(np.abs(x)))
    if corners >= 3 or not side[seed]:
        return ~side, int(np.argmax(-x))
    return side, int(np.argmax(x))


def generalized_vector(affinity: np.ndarray) -> np.ndarray:
    """The original's eigenvector: scipy's generalized ``eigh(D - A, D)``, eigenpairs 1..2, as
    LAPACK returns it (sign included)."""
    from scipy.linalg import eigh

    if len(affinity) < 3:  # eigenpairs 1..2 need three patches
        return ncut_vector(affinity, "dense")
    d = np.diag(affinity.sum(axis=1))
    _, vecs = eigh(d - affinity, d, subset_by_index=[1, 2])
    return np.asarray(vecs[:, 0])


def maskcut_patch_masks(
    keys: np.ndarray,
    grid: tuple[int, int],
    n: int,
    tau: float,
    eps: float = 1e-5,
    solver: Solver | Literal["generalized"] = "lobpcg",
) -> list[np.ndarray]:
    """The ``n`` cuts' (h, w) bool patch masks in cut order, disjoint; a dropped cut's mask is
    empty.  ``keys``: (h * w, D) in row-major patch order.  ``solver``: ``lobpcg`` / ``dense``
    (:func:`odbench.methods.tokencut.ncut_vector`, sign fixed) or ``generalized`` (the
    original's call and LAPACK's sign: bit for bit the original on the same LAPACK, slow)."""
    h, w = grid
    k = np.array(keys, dtype=np.float64)
    painted = np.zeros(h * w, dtype=bool)
    previous = np.zeros(h * w, dtype=bool)  # the last cut's mask after the drop test
    found = np.zeros(h * w, dtype=bool)
    out = []
    for t in range(n):
        if t:
            painted |= previous
            k[painted] = 0.0
        affinity = cosine_affinity(k, tau, eps)
        if solver == "generalized":
            fg, seed = foreground_side(generalized_vector(affinity), grid, fix_sign=False)
        else:
            fg, seed = foreground_side(ncut_vector(affinity, solver), grid)
        mask = component_of(fg.reshape(grid), (seed // w, seed % w)).ravel()
        if t:
            union = int(np.sum(previous | mask))
            overlap = 2 * int(np.sum(previous & mask)) > union  # IoU > 0.5
            if overlap or int(mask.sum()) / h / w <= 0.01:
                mask = np.zeros_like(mask)
        previous = mask
        out.append((mask & ~found).reshape(grid))
        found |= mask
    return out


def upsample_nearest(grid_mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) -> (H, W) bool by PyTorch's ``nearest`` interpolation (the original's, whose
    index rounding differs from a plain repeat when H is not a multiple of h)."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(grid_mask.astype(np.float64))[None, None]
    return np.asarray(F.interpolate(t, size=size, mode="nearest")[0, 0].numpy() > 0.5)


def crf_refine(image: np.ndarray, masks: list[np.ndarray]) -> list[np.ndarray]:
    """``crf.py``'s dense CRF on each bool mask at the image's size (uint8 RGB), holes filled;
    an empty mask where the result has IoU < 0.5 with its input.  The pairwise potentials
    depend on the image only: built once, each mask sets its own unary (``inference`` starts
    from the unary, so the results equal one CRF per mask)."""
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax
    from scipy import ndimage

    h, w = image.shape[:2]
    crf = dcrf.DenseCRF2D(w, h, 2)
    crf.addPairwiseGaussian(sxy=CRF_GAUSSIAN[0], compat=CRF_GAUSSIAN[1])
    sxy, srgb, compat = CRF_BILATERAL
    crf.addPairwiseBilateral(sxy=sxy, srgb=srgb, rgbim=np.ascontiguousarray(image), compat=compat)
    out = []
    for mask in masks:
        logits = np.stack([1.0 - mask, mask.astype(np.float64)])
        e = np.exp(logits - logits.max(axis=0))
        crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(e / e.sum(axis=0))))
        q = np.asarray(crf.inference(CRF_ITERATIONS)).reshape(2, h, w)
        refined = np.asarray(ndimage.binary_fill_holes(q[1] > q[0]))  # argmax: 0 on ties
        union = int(np.sum(refined | mask))
        if union and 2 * int(np.sum(refined & mask)) < union:  # IoU < 0.5 (none: NaN, kept)
            refined = np.zeros_like(refined)
        out.append(refined)
    return out


def resize_to_image(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A bool mask -> (H, W) bool: 0/255 resized bicubic (Pillow's default for the original's
    ``Image.resize``), then ``> max / 2``."""
    from PIL import Image

    im = Image.fromarray(mask.astype(np.uint8) * 255).resize(
        (size[1], size[0]), Image.Resampling.BICUBIC
    )
    a = np.asarray(im)
    return np.asarray(a > a.max() / 2.0)


def image_instances(
    masks: list[np.ndarray], scores: list[float], size: tuple[int, int]
) -> Instances:
    """Bool masks (at the network input's size) with their scores -> the image's instances:
    each mask :func:`resize_to_image`, boxes from the masks; a mask empty at the image's size
    is left out, as the original's annotation writer leaves it out (area < 1)."""
    import pycocotools.mask as mask_util

    kept, rles = [], []
    for mask, score in zip(masks, scores):
        full = resize_to_image(mask, size)
        if full.any():
            kept.append(score)
            rles.append(mask_util.encode(np.asfortranarray(full.astype(np.uint8))))
    boxes = np.zeros((len(rles), 4))
    if rles:
        boxes = np.array(mask_util.toBbox(rles), dtype=np.float64).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]  # COCO's x y w h -> x1 y1 x2 y2
    return Instances(np.array(kept, dtype=np.float64), boxes, rles)


def _image_key(image: np.ndarray) -> str:
    return f"{image.shape}:{hashlib.sha1(np.ascontiguousarray(image).data).hexdigest()}"


class MaskCut(KeyFeatureMethod):
    """MaskCut with a timm DINO backbone (hyperparameter ``backbone``); :meth:`predict` is the
    union of the instances of :meth:`predict_instances`."""

    _last: dict[str, Instances] | None = None

    def network_input(self, image: np.ndarray) -> tuple[np.ndarray, Any]:
        """(the image resized to ``fixed_size``², the ViT's [0, 1] input batch): the original's
        Lanczos resize, then to the nearest multiple of the patch size (``resize_pil``)."""
        import torch
        from PIL import Image

        side = int(self.hparams["fixed_size"])
        p = self.extractor().patch_size
        fixed = Image.fromarray(np.ascontiguousarray(image)).resize(
            (side, side), Image.Resampling.LANCZOS
        )
        multiple = int(round(side / p)) * p
        net = fixed.resize((multiple, multiple), Image.Resampling.LANCZOS)
        x = torch.from_numpy(np.array(net, dtype=np.uint8)).permute(2, 0, 1).float() / 255.0
        return np.array(fixed, dtype=np.uint8), x.unsqueeze(0)

    def instances(self, image: np.ndarray) -> Instances:
        """MaskCut's masks of one (H, W, 3) uint8 RGB image, with boxes and scores."""
        hp = self.hparams
        fixed, x = self.network_input(image)
        keys = self.extractor().keys(x)[0]  # (D, h, w)
        grid = (int(keys.shape[1]), int(keys.shape[2]))
        cuts = maskcut_patch_masks(
            keys.flatten(1).T.cpu().numpy(),
            grid,
            int(hp["n"]),
            float(hp["tau"]),
            float(hp["eps"]),
            hp["eigensolver"],
        )
        masks = [upsample_nearest(cut, fixed.shape[:2]) for cut in cuts]
        if hp["crf"]:
            masks = crf_refine(fixed, masks)
        scores = [1.0 / (t + 1) if hp["score"] == "rank" else 1.0 for t in range(len(masks))]
        return image_instances(masks, scores, image.shape[:2])

    def predict_instances(
        self, images: list[np.ndarray], maps: list[np.ndarray]
    ) -> list[Instances]:
        """MaskCut's instances per image (those :meth:`predict` just computed for the same
        images are reused, not computed again)."""
        last = self._last or {}
        out = []
        for im in images:
            known = last.get(_image_key(im))
            out.append(known if known is not None else self.instances(im))
        return out

    def predict(self, images: list[np.ndarray]) -> list[np.ndarray]:
        import pycocotools.mask as mask_util

        found = {_image_key(im): self.instances(im) for im in images}
        self._last = found
        maps = []
        for im in images:
            inst = found[_image_key(im)]
            union = np.zeros(im.shape[:2], dtype=bool)
            for rle in inst.masks or []:
                union |= mask_util.decode(rle).astype(bool)
            maps.append(union.astype(np.float32))
        return maps
