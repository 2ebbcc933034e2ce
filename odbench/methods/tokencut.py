"""``tokencut``: normalized cut on DINO key features (Wang et al., "Self-Supervised Transformers for
Unsupervised Object Discovery using Normalized Cut", CVPR 2022).

Sec. 3 of the paper, on the h × w patch tokens of one image:

- Graph (Eq. 2): ``E_ij = 1`` if ``cos(k_i, k_j) > τ`` else ``ε``, with ``k`` the last layer's keys,
  τ = 0.2, ε = 1e-5 (a complete graph, so ``D`` is positive definite).
- Normalized cut (Eq. 3-4, Shi & Malik 2000): the second smallest generalized eigenvector of
  ``(D - E) x = λ D x``.
- Bipartition (Sec. 3.2): ``x_i > mean(x)``; the foreground is the side holding the patch with the
  largest ``|x_i|`` (an eigenvector's sign is arbitrary, so the side is chosen from ``|x|``).
- Post-processing: the connected component of the foreground that holds that seed patch
  (TokenCut's ``detect_box``), upsampled to pixels; the box for CorLoc is that component's box.

``+BS`` (``bilateral_solver = true``, the variant ``tokencut.bs``): the pixel mask refined by
TokenCut's bilateral solver (Barron & Poole 2016; :mod:`odbench.methods.bilateral_solver`, shared
with LOST, FOUND and AttentionCut); boxes then come from the refined map (TokenCut's published
CorLoc is without BS).
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np

from odbench.methods.bilateral_solver import bilateral_refine
from odbench.methods.keyfeatures import KeyFeatureMethod, component_of, upsample_patch_mask

Solver = Literal["dense", "lobpcg"]


def cosine_affinity(keys: np.ndarray, tau: float, eps: float) -> np.ndarray:
    """Eq. 2: ``1`` where the cosine similarity of two patches' keys exceeds ``τ``, ``ε`` elsewhere
    (float64, symmetric, ones on the diagonal)."""
    k = keys.astype(np.float64)
    k = k / np.maximum(np.linalg.norm(k, axis=1, keepdims=True), 1e-12)
    return np.where(k @ k.T > tau, 1.0, eps)


def ncut_vector(affinity: np.ndarray, solver: Solver = "dense") -> np.ndarray:
    """Second smallest generalized eigenvector of ``(D - A) x = λ D x`` (Eq. 3-4).

    ``dense``: LAPACK on the equivalent symmetric problem ``D^-1/2 (D - A) D^-1/2 y = λ y``,
    ``x = D^-1/2 y``, only eigenpairs 0..1 computed.  ``lobpcg``: block LOBPCG on the same matrix,
    started from ``D^1/2 1`` (the known first eigenvector) and a fixed random block; falls back to
    ``dense`` when the residual of the result is not below 1e-6 (or the graph is tiny).  The sign of
    the result is arbitrary; :func:`bipartition` does not depend on it."""
    from scipy.linalg import eigh

    d = affinity.sum(axis=1)
    if len(d) < 2:  # one patch: nothing to cut, it is the foreground
        return np.ones(len(d))
    inv_sqrt = 1.0 / np.sqrt(d)
    lap = np.eye(len(d)) - inv_sqrt[:, None] * affinity * inv_sqrt[None, :]
    if solver == "dense":
        _, vecs = eigh(lap, subset_by_index=[1, 1], driver="evr")
        y = vecs[:, 0]
    elif solver == "lobpcg":
        y = _lobpcg_second(lap, np.sqrt(d))
        if y is None:  # not converged or too small for LOBPCG: the exact dense path
            return ncut_vector(affinity, "dense")
    else:
        raise ValueError(f"unknown eigensolver {solver!r}; use 'dense' or 'lobpcg'")
    return np.asarray(inv_sqrt * y)


def _lobpcg_second(lap: np.ndarray, first: np.ndarray, tol: float = 1e-6) -> np.ndarray | None:
    """Second eigenvector of ``lap`` by LOBPCG, or None unless its residual is below ``tol``."""
    from scipy.sparse.linalg import lobpcg

    n = len(first)
    if n < 30:
        return None
    rng = np.random.default_rng(0)
    start = np.column_stack([first / np.linalg.norm(first), rng.standard_normal((n, 2))])
    with warnings.catch_warnings():  # non-convergence is detected below from the residual
        warnings.simplefilter("ignore")
        try:
            vals, vecs = lobpcg(lap, start, largest=False, tol=1e-8, maxiter=500)
        except (ValueError, np.linalg.LinAlgError):  # "eigh has failed in lobpcg postprocessing"
            return None
    order = np.argsort(vals)
    lam, y = vals[order[1]], vecs[:, order[1]]
    residual = float(np.linalg.norm(lap @ y - lam * y)) / max(float(np.linalg.norm(y)), 1e-300)
    return np.asarray(y) if residual < tol else None


def bipartition(vector: np.ndarray) -> tuple[np.ndarray, int]:
    """Split at the mean; returns (foreground bool mask, seed index) with the foreground the side
    holding the seed, the entry of largest magnitude."""
    seed = int(np.argmax(np.abs(vector)))
    side = vector > vector.mean()
    return (side if side[seed] else ~side), seed


def tokencut_patch_mask(
    keys: np.ndarray, grid: tuple[int, int], tau: float, eps: float, solver: Solver = "dense"
) -> tuple[np.ndarray, tuple[int, int]]:
    """(h, w) foreground patch mask (the seed's connected component) and the seed's (row, col)."""
    vector = ncut_vector(cosine_affinity(keys, tau, eps), solver)
    fg, seed = bipartition(vector)
    seed_rc = (seed // grid[1], seed % grid[1])
    return component_of(fg.reshape(grid), seed_rc), seed_rc


class TokenCut(KeyFeatureMethod):
    """TokenCut with a timm DINO backbone (hyperparameter ``backbone``)."""

    def predict(self, images: list[np.ndarray]) -> list[np.ndarray]:
        hp = self.hparams
        out = []
        for image in images:
            k = self.keys(image)
            mask, _ = tokencut_patch_mask(
                k.keys, k.grid, float(hp["tau"]), float(hp["eps"]), hp["eigensolver"]
            )
            pixels = upsample_patch_mask(mask, k.patch_size, image.shape[:2])
            if hp["bilateral_solver"]:
                pixels = bilateral_refine(image, pixels)
            out.append(pixels.astype(np.float32))
        return out
