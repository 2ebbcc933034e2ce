"""``dsm``: Deep Spectral Methods (Melas-Kyriazi, Rupprecht, Laina, Vedaldi, "Deep Spectral
Methods: A Surprisingly Strong Baseline for Unsupervised Semantic Segmentation and Localization",
CVPR 2022), its single-object segmentation and localisation, as its released code
(lukemelas/deep-spectral-segmentation: ``extract/extract.py`` ``extract_eigs``,
``extract_single_region_segmentations``; ``object-localization`` ``get_bbox_from_patch_mask``)
computes them.  On the h × w grid of one image:

- Features: last-layer keys of a DINO ViT (CLS dropped), L2-normalised per patch.  The image is
  *cropped* to multiples of the patch size P (not padded).  With a downsample factor s < P the
  key grid is resized bilinearly (``align_corners=False``) to ``(H_crop // s, W_crop // s)``.
- Feature affinity: ``W_feat = f fᵀ ⊙ (f fᵀ > 0)``, divided by its maximum.
- Colour affinity (weight λ, ``color_lambda``): the KNN-matting affinity (Chen et al. 2013) of the
  whole image resized (PIL bilinear) to the grid, each pixel described by ``[r, g, b, c·x, c·y]``
  with x, y in [0, 1]: 20 neighbours at c = 2 plus 10 at c = 0.1, each neighbour pair adding 1 in
  both directions (a self pair 2).  The released code divides the RGB values by 255 twice, so
  colour enters at ``rgb / 255²`` (``knn_rgb_scale``) and the graph is nearly a spatial one.
- Laplacian: ``W = W_feat + λ W_knn``, ``D = diag(W 1)`` (degrees below 1e-12 set to 1); the two
  smallest generalised eigenpairs of ``(D − W) x = μ D x`` (``normalized_laplacian = false``:
  ``(D − W) x = μ x``), eigenvectors D-normalised as ARPACK returns them.
- Sign: an eigenvector with more than half, but not all, of its entries positive is negated.
- Segmentation: patches of the second eigenvector (the Fiedler vector) above ``threshold``
  (0); the pixel map is that patch mask upsampled by s, the strip beyond the crop filled by a
  nearest-neighbour resize of the mask to the image size (as the original's CRF input).
- Localisation: on the same patch mask, inverted when it covers more than half (but not all) of
  the grid, the whole grid when empty; the box of its largest 8-connected component, times s,
  clipped to the image.
- ``crf = true`` (the README's segmentation recipe, ``extract_crf_segmentations``): the pixel
  map refined by a dense CRF as SimpleCRF's ``densecrf`` runs it (unary −log of the one-hot map
  clipped to [0.01, 0.99]; bilateral kernel weight w1, position std α, RGB std β; Gaussian kernel
  weight w2, std γ; ``it`` mean-field iterations), here with pydensecrf2 (the same Krähenbühl
  code).  The box then comes from the refined map (the largest 8-connected component's box, the
  default of every method): the original localises without the CRF.

The eigensolve (the original's dense shift-invert ``eigsh(D − W, sigma=0, M=D)``: a dense LU per
image; its issue #3 reports ~10 s per image on a CPU) is done on the equivalent symmetric problem,
the two largest eigenpairs of ``D^-1/2 W D^-1/2``, by Lanczos (``eigensolver = "lanczos"``,
ARPACK on an operator: the dense feature block times a vector, the KNN block kept sparse; an exact
dense fallback when a residual is not below 1e-6) or LAPACK (``"dense"``).  ``odbench bench dsm``
times them against the original's solver.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from odbench.methods.keyfeatures import KeyFeatureMethod, padded_batch

Solver = Literal["dense", "lanczos"]

#: The KNN-matting neighbourhoods of the released ``knn_affinity``: (neighbours, spatial weight).
KNN_LEVELS: tuple[tuple[int, float], ...] = ((20, 2.0), (10, 0.1))


def feature_affinity(feats: np.ndarray, normalize: bool = True, clip: bool = True) -> np.ndarray:
    """``W_feat`` (n, n) float64: the Gram matrix of the (L2-normalised) patch features, negative
    entries zeroed (``clip``), divided by its maximum."""
    f = np.asarray(feats, dtype=np.float64)
    if normalize:
        f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    w = f @ f.T
    if clip:
        w = np.where(w > 0, w, 0.0)
    top = float(w.max()) if w.size else 0.0
    return w / top if top > 0 else w


def knn_affinity(pixels: np.ndarray, levels: tuple[tuple[int, float], ...] = KNN_LEVELS) -> Any:
    """KNN-matting affinity (scipy CSR, n × n) of an (h, w, 3) float image: for each level
    (k, c), every pixel's k nearest neighbours (itself included) in ``[r, g, b, c·x, c·y]``
    (float32, x and y from 0 to 1 along the grid) add 1 to both ``W[i, j]`` and ``W[j, i]``.
    Exact neighbours (a k-d tree in float64); k is capped at the pixel count."""
    from scipy.sparse import csr_matrix
    from scipy.spatial import cKDTree

    h, w = pixels.shape[:2]
    n = h * w
    rgb = np.asarray(pixels, dtype=np.float64).reshape(n, 3)
    x = np.tile(np.linspace(0, 1, w), h)
    y = np.repeat(np.linspace(0, 1, h), w)
    rows, cols = [], []
    for k, weight in levels:
        f = np.column_stack([rgb, weight * x, weight * y]).astype(np.float32)
        k = min(k, n)
        _, nb = cKDTree(f.astype(np.float64)).query(f.astype(np.float64), k=k)
        rows.append(np.repeat(np.arange(n), k))
        cols.append(np.asarray(nb).reshape(-1))
    i, j = np.concatenate(rows + cols), np.concatenate(cols + rows)
    return csr_matrix((np.ones(len(i)), (i, j)), shape=(n, n))


def degrees(w_feat: np.ndarray, w_color: Any, lam: float) -> np.ndarray:
    """Row sums of ``W_feat + λ W_color`` with those below 1e-12 set to 1 (the original's
    ``get_diagonal``)."""
    d = w_feat.sum(axis=1)
    if lam and w_color is not None:
        d = d + lam * np.asarray(w_color.sum(axis=1)).ravel()
    return np.where(d < 1e-12, 1.0, d)


def spectral_vectors(
    w_feat: np.ndarray,
    w_color: Any = None,
    lam: float = 0.0,
    normalized: bool = True,
    solver: Solver = "lanczos",
) -> np.ndarray:
    """The two smallest eigenvectors (n, 2) of the Laplacian of ``W_feat + λ W_color``:
    generalised ``(D − W) x = μ D x`` with ``xᵀ D x = 1`` (``normalized``), else
    ``(D − W) x = μ x`` with unit norm.  Columns in ascending eigenvalue order; signs arbitrary."""
    n = len(w_feat)
    if n < 2:
        return np.ones((n, 2))
    d = degrees(w_feat, w_color, lam)
    scale = 1.0 / np.sqrt(d) if normalized else np.ones(n)
    color = lam * w_color if lam and w_color is not None else None
    if solver == "lanczos":
        y = _lanczos_pair(w_feat, color, d, scale, normalized)
        if y is not None:
            return scale[:, None] * y
    elif solver != "dense":
        raise ValueError(f"unknown eigensolver {solver!r}; use 'dense' or 'lanczos'")
    from scipy.linalg import eigh

    w = w_feat if color is None else w_feat + color.toarray()
    if normalized:
        lap = np.eye(n) - scale[:, None] * w * scale[None, :]
    else:
        lap = np.diag(d) - w
    _, y = eigh(lap, subset_by_index=[0, 1], driver="evr")
    return np.asarray(scale[:, None] * y)


def _lanczos_pair(
    w_feat: np.ndarray,
    color: Any,
    d: np.ndarray,
    scale: np.ndarray,
    normalized: bool,
    tol: float = 1e-6,
) -> np.ndarray | None:
    """Eigenvectors 0 and 1 (n, 2) of the symmetric Laplacian ``L`` by Lanczos (ARPACK) as the
    two largest of ``c I − L`` (``c`` = 1 for the normalised one, whose ``I − L`` is
    ``D^-1/2 W D^-1/2``; ``c`` = 2 max(d), past L's spectrum, otherwise), or None unless both
    residuals are below ``tol`` (or the graph is too small for ARPACK)."""
    from scipy.sparse.linalg import ArpackError, LinearOperator, eigsh

    n = len(d)
    if n < 30:
        return None
    shift = 1.0 if normalized else 2.0 * float(d.max())

    def shifted(v: np.ndarray) -> np.ndarray:  # (c I - L) v, without forming L
        v = v.reshape(n, -1)
        sv = scale[:, None] * v
        wv = w_feat @ sv
        if color is not None:
            wv = wv + color @ sv
        if normalized:
            return np.asarray(scale[:, None] * wv)
        return np.asarray((shift - d)[:, None] * v + wv)

    op = LinearOperator((n, n), matvec=shifted, matmat=shifted, dtype=np.float64)  # type: ignore[call-arg]
    start = np.random.default_rng(0).standard_normal(n)
    try:
        vals, y = eigsh(op, k=2, which="LA", tol=1e-10, v0=start)
    except ArpackError:  # no convergence (ArpackNoConvergence is one): the dense path
        return None
    order = np.argsort(vals)[::-1]  # c - mu descending = mu ascending
    vals, y = vals[order], y[:, order]
    residual = np.linalg.norm(shifted(y) - y * vals[None, :], axis=0)
    return np.asarray(y) if np.all(residual < tol) else None


def orient(vector: np.ndarray) -> np.ndarray:
    """The original's sign rule: negate a vector with more than half, but not all, of its
    entries positive."""
    share = float(np.mean(vector > 0))
    return -vector if 0.5 < share < 1.0 else vector


def box_from_patch_mask(mask: np.ndarray, scale: int, size: tuple[int, int]) -> np.ndarray:
    """The original's ``get_bbox_from_patch_mask``: invert a mask covering more than half (not
    all) of the grid, take the whole grid for an empty one, then the box ``[x1, y1, x2, y2]`` of
    the largest 8-connected component (first in raster order on ties) times ``scale``, clipped
    to the image ``size`` (H, W)."""
    from skimage.measure import label

    m = np.asarray(mask, dtype=bool)
    share = float(m.mean()) if m.size else 0.0
    if 0.5 < share < 1.0 or not m.any():
        m = ~m
    labels = label(m, connectivity=2)
    largest = int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
    rows, cols = np.nonzero(labels == largest)
    box = [cols.min() * scale, rows.min() * scale, (cols.max() + 1) * scale,
           (rows.max() + 1) * scale]  # fmt: skip
    box[2], box[3] = min(box[2], size[1]), min(box[3], size[0])
    return np.asarray(box, dtype=np.float64)


def pixel_mask(grid_mask: np.ndarray, scale: int, size: tuple[int, int]) -> np.ndarray:
    """(H, W) float32 map of a patch mask: each cell covers scale² pixels from the top left;
    pixels beyond the cropped region take a nearest-neighbour resize of the mask to (H, W)."""
    import cv2

    g = np.asarray(grid_mask, dtype=np.uint8)
    out = cv2.resize(g, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
    up = np.repeat(np.repeat(g, scale, axis=0), scale, axis=1)[: size[0], : size[1]]
    out[: up.shape[0], : up.shape[1]] = up
    return out.astype(np.float32)


def crf_refine(image: np.ndarray, pixels: np.ndarray, hparams: dict[str, Any]) -> np.ndarray:
    """The binary (H, W) map refined by SimpleCRF's dense CRF with the card's ``crf_*``
    parameters (see the module docstring); (H, W) float32 in {0, 1}."""
    from odbench.methods.diffusion_baselines import densecrf_foreground

    params = {
        "eps": 0.01,  # SimpleCRF's computeUnary clips probabilities to [0.01, 0.99]
        "iterations": int(hparams["crf_iterations"]),
        "gauss_sxy": float(hparams["crf_gamma"]),
        "gauss_compat": float(hparams["crf_w2"]),
        "bilateral_sxy": float(hparams["crf_alpha"]),
        "bilateral_srgb": float(hparams["crf_beta"]),
        "bilateral_compat": float(hparams["crf_w1"]),
    }
    return densecrf_foreground(pixels, image, params).astype(np.float32)


@dataclass(frozen=True)
class DsmFeatures:
    """What :meth:`DSM.forward` hands :meth:`DSM.postprocess`: ``keys`` (h * w, D) float32 on
    the low-resolution grid ``grid`` (h, w) whose cells are ``scale`` pixels wide."""

    keys: np.ndarray
    grid: tuple[int, int]
    scale: int


def colour_pixels(image: np.ndarray, grid: tuple[int, int], rgb_scale: float) -> np.ndarray:
    """The whole image resized (PIL bilinear) to ``grid`` (h, w), RGB in [0, 1] times
    ``rgb_scale``: the KNN affinity's colour input."""
    from PIL import Image

    small = Image.fromarray(np.ascontiguousarray(image)).resize(
        (grid[1], grid[0]), Image.Resampling.BILINEAR
    )
    return np.asarray(small, dtype=np.float64) / 255.0 * rgb_scale


def dsm_patch_mask(
    image: np.ndarray, feats: DsmFeatures, hparams: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """(the oriented Fiedler vector (h * w,), the (h, w) foreground patch mask)."""
    lam = float(hparams["color_lambda"])
    w_feat = feature_affinity(
        feats.keys, bool(hparams["normalize_features"]), bool(hparams["threshold_at_zero"])
    )
    w_color = None
    if lam > 0:
        w_color = knn_affinity(colour_pixels(image, feats.grid, float(hparams["knn_rgb_scale"])))
    vecs = spectral_vectors(
        w_feat, w_color, lam, bool(hparams["normalized_laplacian"]), hparams["eigensolver"]
    )
    fiedler = orient(vecs[:, 1])
    return fiedler, (fiedler > float(hparams["threshold"])).reshape(feats.grid)


class DSM(KeyFeatureMethod):
    """Deep Spectral Methods, single object (see the module docstring)."""

    def scale(self) -> int:
        """Pixels per cell of the eigenvector grid: the downsample factor, else the patch size."""
        s = int(self.hparams["image_downsample_factor"])
        return s if s > 0 else int(self.extractor().patch_size)

    def features(self, image: np.ndarray) -> DsmFeatures:
        """Keys of the image cropped to multiples of the patch size (one patch at least: a
        smaller side is padded), resized to the downsampled grid when s < P."""
        import torch

        from odbench.features.vit import IMAGENET_MEAN

        fx = self.extractor()
        p = int(fx.patch_size)
        h, w = image.shape[:2]
        crop = image[: max(h // p, 1) * p, : max(w // p, 1) * p]
        with torch.inference_mode():
            k = fx.keys(padded_batch(crop, p, IMAGENET_MEAN).to(self.device))  # (1, D, h, w)
            hc, wc = int(k.shape[2]) * p, int(k.shape[3]) * p
            s = self.scale()
            grid = (max(hc // s, 1), max(wc // s, 1))
            if grid != tuple(k.shape[2:]):
                k = torch.nn.functional.interpolate(
                    k.float(), size=grid, mode="bilinear", align_corners=False
                )
        keys = k[0].flatten(1).T.float().cpu().numpy()
        return DsmFeatures(keys=keys, grid=grid, scale=s)

    def forward(self, images: list[np.ndarray]) -> list[Any]:
        return [self.features(im) for im in images]

    @staticmethod
    def postprocess(image: np.ndarray, raw: Any, hparams: dict[str, Any]) -> np.ndarray:
        _, mask = dsm_patch_mask(image, raw, hparams)
        pixels = pixel_mask(mask, raw.scale, image.shape[:2])
        return crf_refine(image, pixels, hparams) if hparams["crf"] else pixels

    def predict(self, images: list[np.ndarray]) -> list[np.ndarray]:
        return [
            self.postprocess(im, f, self.hparams) for im, f in zip(images, self.forward(images))
        ]

    def predict_boxes(self, images: list[np.ndarray], maps: list[np.ndarray]) -> list[np.ndarray]:
        """The original's box from the patch mask, read back from the map (one value per cell);
        with the CRF, the default box of the refined map."""
        if self.hparams["crf"]:
            return super().predict_boxes(images, maps)
        s = self.scale()
        p = int(self.extractor().patch_size)
        out = []
        for image, m in zip(images, maps):
            h, w = image.shape[:2]
            hc, wc = max(h // p, 1) * p, max(w // p, 1) * p
            gh, gw = max(hc // s, 1), max(wc // s, 1)
            cells = np.asarray(m)[: gh * s : s, : gw * s : s] > 0.5
            out.append(box_from_patch_mask(cells, s, (h, w)))
        return out
