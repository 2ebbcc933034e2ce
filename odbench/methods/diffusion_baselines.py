"""The other training-free mask generators of DiffusionSeg Table 5, on the same diffusion
evidence as AttentionCut (features of Eq. 8, cross-attention A_c of Eq. 2), so that the table
compares the grouping rule and nothing else.

* ``kmeans-diffusion``: K-means (Lloyd 1982 / MacQueen 1967) with 2 clusters on the per-pixel
  diffusion features; the paper notes that clustering cannot tell foreground from background,
  so we take as foreground **the cluster with the higher mean A_c** (the same category evidence
  AttentionCut's objectness uses).
* ``ncut-diffusion``: normalized cut (Shi & Malik 2000) on the feature graph built as TokenCut
  builds it (weight 1 where the cosine similarity exceeds τ, ε elsewhere); the bipartition is
  the second smallest generalized eigenvector of (D − W) y = λ D y split at its mean, and the
  foreground is the side holding the entry of largest |y| (TokenCut's rule).
* ``densecrf-diffusion``: a fully-connected CRF (Krähenbühl & Koltun 2011, ``pydensecrf2``)
  with unary −log of [1 − A_c, A_c], Gaussian (position) and bilateral (position, RGB) kernels,
  mean-field inference; foreground where Q(fg) > Q(bg).

All three work on the G × G attention grid and return the mask upsampled bilinearly to each
image's size, with no post-processing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from odbench.methods.diffusion import DiffusionMethod, Evidence, resize_channels, upsample_mask


class _GridMethod(DiffusionMethod):
    """Predict by a per-image rule on the evidence, then upsample."""

    def segment(self, ev: Evidence, image: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict(self, images: list[np.ndarray]) -> list[np.ndarray]:
        return [
            upsample_mask(self.segment(ev, img), img.shape[0], img.shape[1])
            for img, ev in zip(images, self.evidence(images))
        ]


# ------------------------------------------------------------------------------------ K-means


def kmeans_foreground(features: np.ndarray, a_c: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-means on (H, W, C) features (k-means++ initialisation, seeded); foreground = the cluster
    whose mean A_c is higher.  Returns (H, W) bool."""
    from scipy.cluster.vq import kmeans2

    h, w, c = features.shape
    x = features.reshape(-1, c).astype(np.float64)
    _, labels = kmeans2(x, 2, minit="++", seed=np.random.default_rng(seed))
    labels = labels.reshape(h, w)
    means = [a_c[labels == k].mean() if (labels == k).any() else -np.inf for k in (0, 1)]
    return labels == int(np.argmax(means))


class KMeansDiffusion(_GridMethod):
    needs_features = True

    def segment(self, ev: Evidence, image: np.ndarray) -> np.ndarray:
        assert ev.features is not None
        return kmeans_foreground(ev.features, ev.a_c, int(self.hparams["seed"]))


# ------------------------------------------------------------------------------------ NCut


def ncut_foreground(features: np.ndarray, tau: float = 0.2, eps: float = 1e-5) -> np.ndarray:
    """Normalized cut of the pixels of (H, W, C) features (Shi & Malik 2000) with TokenCut's
    graph and bipartition (:mod:`odbench.methods.tokencut`, Wang et al. 2022): W_ij = 1 if
    cos(f_i, f_j) > τ else ε; the second smallest eigenvector y of (D − W) y = λ D y (dense
    LAPACK, exact) is split at its mean; the foreground is the side containing argmax |y|.
    Returns (H, W) bool."""
    from odbench.methods.tokencut import bipartition, cosine_affinity, ncut_vector

    h, w, c = features.shape
    fg, _ = bipartition(ncut_vector(cosine_affinity(features.reshape(-1, c), tau, eps)))
    return fg.reshape(h, w)


class NCutDiffusion(_GridMethod):
    needs_features = True

    def segment(self, ev: Evidence, image: np.ndarray) -> np.ndarray:
        import cv2

        assert ev.features is not None
        g = int(self.hparams["grid"])
        feats = resize_channels(ev.features, g, cv2.INTER_AREA)
        tau = float(self.hparams["ncut_tau"])
        eps = float(self.hparams["ncut_eps"])
        return ncut_foreground(feats, tau, eps)


# ------------------------------------------------------------------------------------ DenseCRF


def densecrf_foreground(a_c: np.ndarray, image: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """Fully-connected CRF (pydensecrf2) on the grid of ``a_c`` with unary −log[1 − A_c, A_c]
    (clipped to [eps, 1 − eps]) and the image (uint8 RGB) resampled to that grid for the
    bilateral kernel; ``params``: the card's CRF hyperparameters (``_CRF_KEYS``).  Returns (H, W)
    bool."""
    import cv2
    import pydensecrf.densecrf as dcrf

    p = params
    h, w = a_c.shape
    prob = np.clip(a_c.astype(np.float64), p["eps"], 1 - p["eps"])
    unary = -np.log(np.stack([1 - prob, prob]).reshape(2, -1)).astype(np.float32)
    rgb = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    crf = dcrf.DenseCRF2D(w, h, 2)
    crf.setUnaryEnergy(np.ascontiguousarray(unary))
    crf.addPairwiseGaussian(sxy=p["gauss_sxy"], compat=p["gauss_compat"])
    crf.addPairwiseBilateral(
        sxy=p["bilateral_sxy"],
        srgb=p["bilateral_srgb"],
        rgbim=np.ascontiguousarray(rgb, dtype=np.uint8),
        compat=p["bilateral_compat"],
    )
    q = np.asarray(crf.inference(int(p["iterations"]))).reshape(2, h, w)
    return q[1] > q[0]


_CRF_KEYS: tuple[str, ...] = (
    "iterations",
    "eps",
    "gauss_sxy",
    "gauss_compat",
    "bilateral_sxy",
    "bilateral_srgb",
    "bilateral_compat",
)


class DenseCRFDiffusion(_GridMethod):
    def segment(self, ev: Evidence, image: np.ndarray) -> np.ndarray:
        return densecrf_foreground(ev.a_c, image, {k: self.hparams[k] for k in _CRF_KEYS})
