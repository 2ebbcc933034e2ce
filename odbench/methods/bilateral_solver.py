"""The fast bilateral solver (Barron & Poole, "The Fast Bilateral Solver", ECCV 2016) as the
unsupervised saliency literature runs it: the "+BS" post-processing of TokenCut, LOST, FOUND and
AttentionCut rows.  Equal (to float rounding) to TokenCut's released
``unsupervised_saliency_detection/bilateral_solver.py`` with the arguments its ``get_saliency.py``
passes (``tests/test_bilateral_solver.py`` re-implements it and compares on ECSSD images).

It finds the map x minimising ``λ/2 Σ_ij Ŵ_ij (x_i − x_j)² + Σ_i c_i (x_i − t_i)²`` for a
target t, a confidence c and a bilateral affinity Ŵ in (x, y, luma, chroma-u, chroma-v), by
solving the problem in a bilateral grid (sections 3-4 of the paper):

1. splat: every pixel goes to the grid vertex ``floor((x/σ_xy, y/σ_xy, Y/σ_l, (U+128)/σ_uv,
   (V+128)/σ_uv))`` (BT.601 YUV, chroma offset by 128, truncated as TokenCut's ``astype(int)``);
   S is the (vertices × pixels) 0/1 matrix;
2. blur: B = 2·5·I + Σ_d (N_d⁺ + N_d⁻), the [1 2 1] blur along each of the 5 grid dimensions
   between occupied vertices;
3. bistochastisation: n ← sqrt(n · m / (B n)) (10 iterations) with m = S·1, then m = n · (B n),
   so that Dn B Dn has row sums m;
4. solve ``(λ (Dm − Dn B Dn) + diag(S c)) y = S (c · t)`` by Jacobi-preconditioned conjugate
   gradients from ``y0 = S (c · t) / S c``, and slice: x = Sᵀ y.

What the "+BS" numbers depend on, pinned here (TokenCut issue #15: they move with library
versions): the parameters :data:`TOKENCUT_BS` (σ_xy = 16, σ_l = 16, σ_uv = 8, λ = 256,
confidence 0.999, 10 bistochastic iterations, at most 25 CG iterations, relative tolerance 1e-5,
diagonal clamp 1e-5) and the conjugate-gradient loop itself (:func:`_pcg`, ours: the same
iteration as ``scipy.sparse.linalg.cg``, whose keyword changed from ``tol`` to ``rtol`` in SciPy
1.12 and lost ``tol`` in 1.14, where TokenCut's code no longer runs).  With 25 iterations the
solve has not converged on most images, so the iteration count is part of the result.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: RGB → YUV (BT.601, as in the reference demonstration and TokenCut), and the YUV offset.
_RGB_TO_YUV = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]]
)
_YUV_OFFSET = np.array([0.0, 128.0, 128.0])

#: The solver's parameters in TokenCut's ``get_saliency.py`` / ``bilateral_solver.py`` (the
#: "+BS" rows of TokenCut, LOST and FOUND come from them).
TOKENCUT_BS: dict[str, Any] = {
    "sigma_spatial": 16.0,
    "sigma_luma": 16.0,
    "sigma_chroma": 8.0,
    "lam": 256.0,
    "confidence": 0.999,
    "bistochastic_iters": 10,
    "cg_tol": 1e-5,
    "cg_maxiter": 25,
    "diag_min": 1e-5,
}


def _grid(
    image: np.ndarray, sigma_spatial: float, sigma_luma: float, sigma_chroma: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vertex of each pixel (inverse index), the sorted unique vertex hashes, and the hash
    strides of the 5 dimensions (x fastest: the vertex order of TokenCut's hash)."""
    h, w = image.shape[:2]
    yuv = image.reshape(-1, 3).astype(np.float64) @ _RGB_TO_YUV.T + _YUV_OFFSET
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
    ints = np.trunc(coords).astype(np.int64)  # TokenCut's astype(int)
    ints -= ints.min(axis=0) - 1  # ≥ 1, so ±1 neighbours never wrap
    radix = ints.max(axis=0) + 2
    strides = np.cumprod(np.concatenate([[1], radix[:-1]]))
    hashes = ints @ strides
    unique, inverse = np.unique(hashes, return_inverse=True)
    return inverse.ravel(), unique, strides


def _pcg(
    a: Any, b: np.ndarray, x0: np.ndarray, inv_diag: np.ndarray, rtol: float, maxiter: int
) -> np.ndarray:
    """Jacobi-preconditioned conjugate gradients: the iteration of ``scipy.sparse.linalg.cg``
    (stops before an iteration once ``‖b − A x‖ < rtol ‖b‖``; at most ``maxiter`` iterations),
    kept here so that the result does not depend on SciPy's version."""
    atol = rtol * float(np.linalg.norm(b))
    if atol == 0.0:
        return np.zeros_like(b)
    x = x0.copy()
    r = b - a @ x
    p = np.zeros_like(b)
    rho_prev = 1.0
    for it in range(maxiter):
        if np.linalg.norm(r) < atol:
            break
        z = inv_diag * r
        rho = float(r @ z)
        p = z if it == 0 else z + (rho / rho_prev) * p
        q = a @ p
        alpha = rho / float(p @ q)
        x += alpha * p
        r -= alpha * q
        rho_prev = rho
    return x


def bilateral_solve(
    image: np.ndarray,
    target: np.ndarray,
    confidence: np.ndarray,
    sigma_spatial: float = TOKENCUT_BS["sigma_spatial"],
    sigma_luma: float = TOKENCUT_BS["sigma_luma"],
    sigma_chroma: float = TOKENCUT_BS["sigma_chroma"],
    lam: float = TOKENCUT_BS["lam"],
    bistochastic_iters: int = TOKENCUT_BS["bistochastic_iters"],
    cg_tol: float = TOKENCUT_BS["cg_tol"],
    cg_maxiter: int = TOKENCUT_BS["cg_maxiter"],
) -> np.ndarray:
    """Edge-aware smoothing of ``target`` (H, W) guided by ``image`` (H, W, 3) uint8 RGB, with
    per-pixel ``confidence`` (H, W) ≥ 0.  Returns float64 (H, W), unclipped."""
    from scipy.sparse import csr_matrix, diags

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
    a = (lam * (diags(m) - diags(n) @ blur @ diags(n)) + diags(sc)).tocsr()
    b = splat @ (conf * tgt)
    inv_diag = 1.0 / np.maximum(a.diagonal(), TOKENCUT_BS["diag_min"])
    y0 = b / np.maximum(sc, TOKENCUT_BS["diag_min"])
    y = _pcg(a, b, y0, inv_diag, cg_tol, cg_maxiter)
    return np.asarray(splat.T @ y).reshape(h, w)


def bilateral_refine(image: np.ndarray, soft: np.ndarray) -> np.ndarray:
    """The "+BS" post-processing of TokenCut, LOST, FOUND and AttentionCut: a (H, W) mask or map
    smoothed by :func:`bilateral_solve` with TokenCut's uniform confidence 0.999 and parameters,
    clipped to [0, 1] (float64; the clip changes no threshold in [0, 1), so no metric)."""
    target = soft.astype(np.float64)
    conf = np.full_like(target, TOKENCUT_BS["confidence"])
    return np.clip(bilateral_solve(image, target, conf), 0.0, 1.0)
