"""The "+BS" bilateral solver equals TokenCut's released one (YangtaoWANG95/TokenCut,
``unsupervised_saliency_detection/bilateral_solver.py``, called by ``get_saliency.py`` with
σ_xy = 16, σ_l = 16, σ_uv = 8).  Its steps are re-implemented below from that code, in its own
structure (a base-255 float hash of truncated XYLUV coordinates, one [1 0 1] blur matrix per
dimension, ``scipy.sparse.linalg.cg`` with ``rtol`` for its ``tol``), and compared with
:func:`odbench.methods.bilateral_solver.bilateral_solve` on ECSSD images (skipped without
``../shared/data/ECSSD``) and on random ones, with TokenCut-like blocky targets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from odbench.methods.bilateral_solver import bilateral_refine, bilateral_solve

ECSSD = Path(__file__).resolve().parents[2] / "shared" / "data" / "ECSSD"

# --------------------------------------------------------------- TokenCut's solver, re-implemented
_RGB2YUV = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]]
)


class _TokenCutGrid:
    """TokenCut's ``BilateralGrid``: splat matrix S and the 5 per-dimension neighbour matrices."""

    def __init__(
        self, im: np.ndarray, sigma_spatial: float, sigma_luma: float, sigma_chroma: float
    ):
        from scipy.sparse import csr_matrix

        yuv = np.tensordot(im, _RGB2YUV, ([2], [1])) + np.array([0, 128.0, 128.0])
        iy, ix = np.mgrid[: im.shape[0], : im.shape[1]]
        coords = np.dstack(
            (
                (ix / sigma_spatial).astype(int),
                (iy / sigma_spatial).astype(int),
                (yuv[..., 0] / sigma_luma).astype(int),
                (yuv[..., 1:] / sigma_chroma).astype(int),
            )
        ).reshape(-1, 5)
        self.npixels = len(coords)
        hash_vec = 255.0 ** np.arange(5)
        hashes, first, idx = np.unique(coords @ hash_vec, return_index=True, return_inverse=True)
        vertices = coords[first]
        self.nvertices = len(vertices)
        self.S = csr_matrix((np.ones(self.npixels), (idx.ravel(), np.arange(self.npixels))))
        self.blurs = []
        for d in range(5):
            blur = csr_matrix((self.nvertices, self.nvertices))
            for offset in (-1, 1):
                step = np.zeros(5)
                step[d] = offset
                neighbour = (vertices + step) @ hash_vec
                locs = np.clip(np.searchsorted(hashes, neighbour), 0, len(hashes) - 1)
                valid = np.flatnonzero(hashes[locs] == neighbour)
                blur = blur + csr_matrix(
                    (np.ones(len(valid)), (valid, locs[valid])),
                    shape=(self.nvertices, self.nvertices),
                )
            self.blurs.append(blur)

    def blur(self, x: object) -> object:
        out = 2 * 5 * x  # type: ignore[operator]
        for b in self.blurs:
            out = out + b.dot(x)
        return out


def tokencut_solver_output(image: np.ndarray, target: np.ndarray) -> np.ndarray:
    """TokenCut's ``bilateral_solver_output(...)[0]`` (the soft map its "+BS" rows score) with
    ``get_saliency.py``'s σ (16, 16, 8) and the solver's λ = 256, A_diag_min = 1e-5,
    cg_tol = 1e-5, cg_maxiter = 25, confidence 0.999."""
    from scipy.sparse import diags
    from scipy.sparse.linalg import cg

    grid = _TokenCutGrid(image, 16, 16, 8)
    m = grid.S.dot(np.ones(grid.npixels))
    n = np.ones(grid.nvertices)
    for _ in range(10):
        n = np.sqrt(n * m / grid.blur(n))
    m = n * grid.blur(n)
    dm, dn = diags(m, 0), diags(n, 0)
    t = target.reshape(-1, 1).astype(np.double)
    c = (np.ones(target.shape) * 0.999).reshape(-1, 1)
    a_smooth = dm - dn.dot(grid.blur(dn))
    w_splat = grid.S.dot(c)
    a = 256 * a_smooth + diags(w_splat[:, 0], 0)
    b = grid.S.dot(t * c)
    precond = diags(1 / np.maximum(a.diagonal(), 1e-5), 0)
    y0 = b / w_splat
    y, _ = cg(a, b[:, 0], x0=y0[:, 0], M=precond, maxiter=25, rtol=1e-5)
    return np.asarray(grid.S.T.dot(y)).reshape(target.shape)


# --------------------------------------------------------------------------------- the inputs


def _blocky_target(shape: tuple[int, int], seed: int, patch: int = 16) -> np.ndarray:
    """A TokenCut-like target: a random blob on the patch grid, nearest-upsampled and cropped."""
    rng = np.random.default_rng(seed)
    gh, gw = -(-shape[0] // patch), -(-shape[1] // patch)
    grid = np.zeros((gh, gw))
    y, x = rng.integers(0, max(gh // 2, 1)), rng.integers(0, max(gw // 2, 1))
    grid[y : y + max(gh // 2, 1), x : x + max(gw // 2, 1)] = 1.0
    grid[rng.random((gh, gw)) < 0.1] = 1.0
    up = np.repeat(np.repeat(grid, patch, 0), patch, 1)
    return up[: shape[0], : shape[1]]


def _ecssd(n: int) -> list[np.ndarray]:
    from PIL import Image

    folder = ECSSD / "images"
    if not folder.is_dir():
        pytest.skip(f"ECSSD not at {ECSSD} (see /work/shared/data/README.md)")
    out = []
    for f in sorted(folder.glob("*.jpg"))[:n]:
        with Image.open(f) as im:
            out.append(np.asarray(im.convert("RGB")))
    return out


def _compare(image: np.ndarray, target: np.ndarray) -> None:
    want = tokencut_solver_output(image, target)
    got = bilateral_solve(image, target, np.full(target.shape, 0.999))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(bilateral_refine(image, target) > 0.5, want > 0.5)
    assert np.abs(want - target).max() > 0.1  # the solver did move the target


@pytest.mark.parametrize("index", range(3))
def test_equals_tokencut_solver_on_ecssd(index: int) -> None:
    image = _ecssd(3)[index]
    _compare(image, _blocky_target(image.shape[:2], index))


@pytest.mark.parametrize("seed", range(2))
def test_equals_tokencut_solver_on_random_images(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    h, w = int(rng.integers(60, 140)), int(rng.integers(60, 140))
    coarse = rng.integers(0, 256, (h // 10 + 1, w // 10 + 1, 3))
    image = np.repeat(np.repeat(coarse, 10, 0), 10, 1)[:h, :w]
    image = np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)
    _compare(image, _blocky_target((h, w), seed))
    soft = rng.random((h, w))  # a soft target too
    np.testing.assert_allclose(
        bilateral_solve(image, soft, np.full((h, w), 0.999)),
        tokencut_solver_output(image, soft),
        rtol=0,
        atol=1e-7,
    )
