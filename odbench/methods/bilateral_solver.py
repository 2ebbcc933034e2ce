"""The fast bilateral solver (Barron & Poole, "The Fast Bilateral Solver", ECCV 2016), compact:
the "+BS" post-processing of the unsupervised saliency literature (TokenCut, LOST, SelfMask,
FOUND, AttentionCut rows marked "+ BS").

It finds the map x minimising ``λ/2 Σ_ij Ŵ_ij (x_i − x_j)² + Σ_i c_i (x_i − t_i)²`` for a
target t, a confidence c and a bilateral affinity Ŵ in (x, y, luma, chroma-u, chroma-v), by
solving the problem in a bilateral grid (section 3-4 of the paper):

1. splat: every pixel goes to the grid vertex ``round((x/σ_xy, y/σ_xy, Y/σ_l, U/σ_uv,
   V/σ_uv))``; S is the (vertices × pixels) 0/1 matrix;
2. blur: B = 2·5·I + Σ_d (N_d⁺ + N_d⁻), the [1 2 1] blur along each of the 5 grid dimensions
   between occupied vertices;
3. bistochastisation: n ← sqrt(n · m / (B n)) (10 iterations) with m = S·1, then m = n · (B n),
   so that Dn B Dn has row sums m;
4. solve ``(λ (Dm − Dn B Dn) + diag(S c)) y = S (c · t)`` by Jacobi-preconditioned conjugate
   gradients, and slice: x = Sᵀ y.

Defaults σ_xy = 16, σ_l = 16, σ_uv = 8 (the values TokenCut's released code passes for its
"+BS" rows) and λ = 128 (the value of the solver's reference demonstration).
"""

from __future__ import annotations

import numpy as np

#: RGB → YUV (BT.601, as in the reference demonstration).
_RGB_TO_YUV = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]]
)


def _grid(
    image: np.ndarray, sigma_spatial: float, sigma_luma: float, sigma_chroma: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vertex of each pixel (inverse index), the sorted unique vertex hashes, and the hash
    strides of the 5 dimensions."""
    h, w = image.shape[:2]
    yuv = image.reshape(-1, 3).astype(np.float64) @ _RGB_TO_YUV.T
    yy, xx = np.mgrid[0:h, 0:w]
    coords = np.stack(
        [
            xx.ravel() / sigma_spatial,
            yy.ravel() / sigma_spatial,
            yuv[:, 0] / sigma_luma,
            yuv[:, 1] / sigma_chroma,
            yuv[:, 2] / sigma_chroma,
        ],
        axis=1,
    )
    ints = np.rint(coords).astype(np.int64)
    ints -= ints.min(axis=0) - 1  # ≥ 1, so ±1 neighbours never wrap
    radix = ints.max(axis=0) + 2
    strides = np.cumprod(np.concatenate([[1], radix[:-1]]))
    hashes = ints @ strides
    unique, inverse = np.unique(hashes, return_inverse=True)
    return inverse.ravel(), unique, strides


def bilateral_solve(
    image: np.ndarray,
    target: np.ndarray,
    confidence: np.ndarray,
    sigma_spatial: float = 16.0,
    sigma_luma: float = 16.0,
    sigma_chroma: float = 8.0,
    lam: float = 128.0,
    bistochastic_iters: int = 10,
    cg_tol: float = 1e-5,
    cg_maxiter: int = 25,
) -> np.ndarray:
    """Edge-aware smoothing of ``target`` (H, W) guided by ``image`` (H, W, 3) uint8 RGB, with
    per-pixel ``confidence`` (H, W) ≥ 0.  Returns float64 (H, W)."""
    from scipy.sparse import csr_matrix, diags
    from scipy.sparse.linalg import cg

    h, w = target.shape
    if image.shape[:2] != (h, w) or confidence.shape != (h, w):
        raise ValueError(
            f"bilateral_solve: image {image.shape}, target {target.shape} and confidence "
            f"{confidence.shape} must have the same height and width"
        )
    vertex, unique, strides = _grid(image, sigma_spatial, sigma_luma, sigma_chroma)
    nv, npix = len(unique), h * w
    splat = csr_matrix((np.ones(npix), (vertex, np.arange(npix))), shape=(nv, npix))
    rows, cols = [], []
    for stride in strides:
        for sign in (1, -1):
            nb = unique + sign * stride
            pos = np.minimum(np.searchsorted(unique, nb), nv - 1)
            found = unique[pos] == nb
            rows.append(np.flatnonzero(found))
            cols.append(pos[found])
    r, c = np.concatenate(rows), np.concatenate(cols)
    blur = csr_matrix((np.ones(len(r)), (r, c)), shape=(nv, nv)) + 2 * len(strides) * diags(
        np.ones(nv)
    )
    m = np.asarray(splat.sum(axis=1)).ravel()
    n = np.ones(nv)
    for _ in range(bistochastic_iters):
        n = np.sqrt(n * m / (blur @ n))
    m = n * (blur @ n)
    conf = confidence.ravel().astype(np.float64)
    tgt = target.ravel().astype(np.float64)
    sc = splat @ conf
    a = lam * (diags(m) - diags(n) @ blur @ diags(n)) + diags(sc)
    b = splat @ (conf * tgt)
    precond = diags(1.0 / np.maximum(a.diagonal(), 1e-5))
    y0 = b / np.maximum(sc, 1e-5)
    y, _ = cg(a, b, x0=y0, M=precond, rtol=cg_tol, maxiter=cg_maxiter)
    return (splat.T @ y).reshape(h, w)


def bilateral_refine(image: np.ndarray, soft: np.ndarray) -> np.ndarray:
    """The "+BS" post-processing of AttentionCut, TokenCut and LOST: a (H, W) mask or map
    smoothed by :func:`bilateral_solve` with uniform confidence, clipped to [0, 1] (float64)."""
    target = soft.astype(np.float64)
    return np.clip(bilateral_solve(image, target, np.ones_like(target)), 0.0, 1.0)
