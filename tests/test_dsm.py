"""Deep Spectral Methods against its released code's steps (lukemelas/deep-spectral-segmentation,
re-expressed below from ``extract/extract.py`` ``_extract_eig`` / ``extract_single_region_
segmentations``, ``extract/extract_utils.py`` ``knn_affinity`` / ``get_diagonal`` and
``object-localization`` ``get_bbox_from_patch_mask``) on planted features, random images and the
tiny random ViT: KNN affinity equal, eigenvectors equal up to sign, masks and boxes equal; and the
sparse solver equal to the dense one."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import scipy.sparse
import torch
import torch.nn.functional as F
from scipy.sparse.linalg import eigsh
from skimage.measure import label as measure_label

from odbench.methods.base import create_method
from odbench.methods.dsm import (
    DsmFeatures,
    _lanczos_pair,
    box_from_patch_mask,
    colour_pixels,
    dsm_patch_mask,
    feature_affinity,
    knn_affinity,
    orient,
    spectral_vectors,
)

# ----------------------------------------------------------------- the original's steps, re-expressed


def their_knn_affinity(image: np.ndarray) -> scipy.sparse.csr_matrix:
    """``knn_affinity(image, n_neighbors=[20, 10], distance_weights=[2.0, 0.1])``, with an exact
    brute-force neighbour search in place of pymatting's k-d tree (not installed here)."""
    h, w = image.shape[:2]
    r, g, b = image.reshape(-1, 3).T
    n = w * h
    x = np.tile(np.linspace(0, 1, w), h)
    y = np.repeat(np.linspace(0, 1, h), w)
    i, j = [], []
    for k, distance_weight in zip([20, 10], [2.0, 0.1]):
        f = np.stack(
            [r, g, b, distance_weight * x, distance_weight * y],
            axis=1,
            out=np.zeros((n, 5), dtype=np.float32),
        )
        f64 = f.astype(np.float64)
        dist = ((f64[:, None, :] - f64[None, :, :]) ** 2).sum(-1)
        neighbors = np.argsort(dist, axis=1, kind="stable")[:, :k]
        i.append(np.repeat(np.arange(n), k))
        j.append(neighbors.flatten())
    ij = np.concatenate(i + j)
    ji = np.concatenate(j + i)
    coo_data = np.ones(2 * sum([20, 10]) * n)
    return scipy.sparse.csr_matrix((coo_data, (ij, ji)), (n, n))


def their_eigs(
    feats: np.ndarray, image_lr: np.ndarray | None, lam: float, k: int = 5
) -> np.ndarray:
    """``_extract_eig`` with which_matrix='laplacian', normalize, threshold_at_zero, lapnorm
    (on the CPU); ``image_lr``: the resized image already divided by 255 once.  Returns the
    eigenvectors (K, n) after the sign rule."""
    t = F.normalize(torch.from_numpy(feats).float(), p=2, dim=-1)
    w_feat = t @ t.T
    w_feat = w_feat * (w_feat > 0)
    w_feat = (w_feat / w_feat.max()).numpy()
    if lam > 0:
        assert image_lr is not None
        w_color = np.array(their_knn_affinity(image_lr / 255).todense().astype(np.float32))
    else:
        w_color = 0
    w_comb = w_feat + w_color * lam
    d = w_comb.dot(np.ones(w_comb.shape[1], w_comb.dtype))  # pymatting row_sum
    d[d < 1e-12] = 1.0
    d_comb = np.array(scipy.sparse.diags(d).todense())
    try:
        _, vecs = eigsh(d_comb - w_comb, k=k, sigma=0, which="LM", M=d_comb)
    except Exception:
        _, vecs = eigsh(d_comb - w_comb, k=k, which="SM", M=d_comb)
    vecs = torch.from_numpy(vecs.T).float()
    for i in range(vecs.shape[0]):
        if 0.5 < torch.mean((vecs[i] > 0).float()).item() < 1.0:
            vecs[i] = 0 - vecs[i]
    return vecs.numpy()


def their_box(patch_mask: np.ndarray, p: int, size: tuple[int, int]) -> np.ndarray:
    """``get_bbox_from_patch_mask`` (+ ``get_largest_cc_box``) on an (h, w) mask."""
    h, w = size
    patch_mask = patch_mask.astype(np.uint8)
    if 0.5 < np.mean(patch_mask).item() < 1.0:
        patch_mask = (1 - patch_mask).astype(np.uint8)
    elif np.sum(patch_mask).item() == 0:
        patch_mask = (1 - patch_mask).astype(np.uint8)
    labels = measure_label(patch_mask)
    largest_cc_index = np.argmax(np.bincount(labels.flat)[1:]) + 1
    mask = np.where(labels == largest_cc_index)
    ymin, ymax = min(mask[0]), max(mask[0]) + 1
    xmin, xmax = min(mask[1]), max(mask[1]) + 1
    pred = [p * xmin, p * ymin, p * xmax, p * ymax]
    pred[2] = min(pred[2], w)
    pred[3] = min(pred[3], h)
    return np.asarray(pred, dtype=np.float64)


# ----------------------------------------------------------------------------------------- data

HP = {
    "color_lambda": 0.0,
    "knn_rgb_scale": 1 / 255,
    "normalize_features": True,
    "threshold_at_zero": True,
    "normalized_laplacian": True,
    "threshold": 0.0,
    "eigensolver": "lanczos",
}


def planted(grid: tuple[int, int], seed: int, dim: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(h * w, dim) float32 keys: an object rectangle on a background, plus noise; and the
    object mask."""
    rng = np.random.default_rng(seed)
    h, w = grid
    lab = np.zeros(grid, int)
    y, x = rng.integers(1, h // 3), rng.integers(1, w // 3)
    lab[y : y + h // 2, x : x + w // 2] = 1
    base = rng.standard_normal((2, dim))
    keys = base[lab.ravel()] + 0.7 * rng.standard_normal((h * w, dim))
    return keys.astype(np.float32), lab == 1


def blocky_image(grid: tuple[int, int], obj: np.ndarray, p: int, seed: int) -> np.ndarray:
    """A uint8 image of ``grid`` cells of ``p`` pixels, the object cells reddish, plus noise."""
    rng = np.random.default_rng(seed)
    cells = np.where(obj[..., None], [200, 40, 40], [40, 120, 200]).astype(float)
    img = np.repeat(np.repeat(cells, p, 0), p, 1) + rng.normal(0, 25, (grid[0] * p, grid[1] * p, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def cosine_d(a: np.ndarray, b: np.ndarray, d: np.ndarray) -> float:
    return float(abs(np.sum(d * a * b)) / np.sqrt(np.sum(d * a * a) * np.sum(d * b * b)))


# ---------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("rgb_scale", [1 / 255, 1.0])
def test_knn_affinity_equals_the_original(rgb_scale: float) -> None:
    rng = np.random.default_rng(0)
    image = rng.random((9, 13, 3))  # continuous colours: no tied neighbour distances
    ours = knn_affinity(image * rgb_scale)
    theirs = their_knn_affinity(image * rgb_scale)
    assert (ours != theirs).nnz == 0
    assert ours.sum() == 2 * 30 * 9 * 13  # every pair counted both ways


def test_knn_affinity_on_a_resized_uint8_image_equals_the_original() -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (75, 100, 3), dtype=np.uint8)
    ours = knn_affinity(colour_pixels(image, (6, 8), 1 / 255))
    from PIL import Image

    image_lr = np.array(Image.fromarray(image).resize((8, 6), Image.Resampling.BILINEAR)) / 255.0
    assert (ours != their_knn_affinity(image_lr / 255)).nnz == 0


@pytest.mark.parametrize("lam", [0.0, 10.0])
@pytest.mark.parametrize("solver", ["dense", "lanczos"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_eigenvectors_and_masks_equal_the_original(lam: float, solver: str, seed: int) -> None:
    grid, p = (12, 16), 16
    keys, obj = planted(grid, seed)
    image = blocky_image(grid, obj, p, seed)
    image_lr = colour_pixels(image, grid, 1.0)  # /255 once, as the original before knn_affinity
    theirs = their_eigs(keys, image_lr, lam)
    hp = {**HP, "color_lambda": lam, "eigensolver": solver}
    fiedler, mask = dsm_patch_mask(image, DsmFeatures(keys, grid, p), hp)
    w_feat = feature_affinity(keys)
    w_color = knn_affinity(colour_pixels(image, grid, 1 / 255)) if lam else None
    vecs = spectral_vectors(w_feat, w_color, lam, True, solver)  # type: ignore[arg-type]
    d = w_feat.sum(1) + (lam * np.asarray(w_color.sum(1)).ravel() if lam else 0)
    w = w_feat + (lam * w_color.toarray() if lam else 0)
    _, exact = scipy.linalg.eigh(np.diag(d) - w, np.diag(d))  # float64, dense: the truth
    for i in (0, 1):  # eigenvectors up to sign, and D-normalised like ARPACK's
        assert cosine_d(vecs[:, i], exact[:, i], d) > 1 - 1e-12  # angle < ~1.4e-6
        # the original's shift-invert at sigma = 0, an eigenvalue of D - W (a singular solve),
        # leaves its vectors ~1e-3 away in angle: 1 - cos 1e-7..1e-6 with ARPACK's random start
        assert cosine_d(vecs[:, i], theirs[i], d) > 1 - 1e-5
        assert np.sum(d * vecs[:, i] ** 2) == pytest.approx(1.0, rel=1e-9)
    np.testing.assert_allclose(fiedler, theirs[1], atol=2e-4)  # same sign after the rule
    their_mask = (theirs[1] > 0.0).reshape(grid)
    assert np.array_equal(mask, their_mask)
    if lam == 0:  # the planted object is found (at lambda = 10 the near-spatial KNN graph wins)
        assert np.array_equal(mask, obj)
    size = (grid[0] * p, grid[1] * p)
    assert np.array_equal(box_from_patch_mask(mask, p, size), their_box(their_mask, p, size))


def test_sparse_solver_equals_dense_solve_on_a_large_graph() -> None:
    grid = (40, 40)  # 1,600 nodes, with the sparse KNN block
    keys, obj = planted(grid, seed=5, dim=48)
    image = blocky_image(grid, obj, 4, seed=5)
    w_feat = feature_affinity(keys)
    w_color = knn_affinity(colour_pixels(image, grid, 1 / 255))
    d = w_feat.sum(1) + 10 * np.asarray(w_color.sum(1)).ravel()
    for normalized in (True, False):
        dense = spectral_vectors(w_feat, w_color, 10.0, normalized, "dense")
        sparse = spectral_vectors(w_feat, w_color, 10.0, normalized, "lanczos")
        weight = d if normalized else np.ones(len(d))
        for i in (0, 1):
            assert cosine_d(dense[:, i], sparse[:, i], weight) > 1 - 1e-9
        np.testing.assert_allclose(np.abs(sparse[:, 1]), np.abs(dense[:, 1]), atol=1e-6)
        # and it was Lanczos that solved it, not the dense fallback
        scale = 1 / np.sqrt(d) if normalized else np.ones(len(d))
        assert _lanczos_pair(w_feat, 10 * w_color, d, scale, normalized) is not None


def test_sign_rule_makes_the_mask_independent_of_the_eigenvector_sign() -> None:
    rng = np.random.default_rng(0)
    v = rng.standard_normal(101) + 0.3  # mostly positive: the rule negates it
    assert np.array_equal(orient(v) > 0, orient(-v) > 0)
    assert np.mean(orient(v) > 0) < 0.5
    ones = np.abs(v) + 0.1  # all positive: kept (the original's "< 1.0")
    assert np.array_equal(orient(ones), ones)


@pytest.mark.parametrize(
    "mask",
    [
        np.zeros((5, 7), bool),  # empty: the whole image
        np.pad(np.ones((3, 5), bool), 1),  # more than half: inverted (the border ring)
        np.eye(5, 7, dtype=bool) | np.eye(5, 7, 3, dtype=bool),  # diagonal: 8-connected
        np.ones((5, 7), bool),
    ],
)
def test_box_rule_equals_the_original(mask: np.ndarray) -> None:
    for size in [(80, 112), (75, 100)]:  # the second clips at the image
        assert np.array_equal(box_from_patch_mask(mask, 16, size), their_box(mask, 16, size))


@pytest.mark.parametrize(
    ("backbone", "size", "factor", "lam"),
    [
        ("dino-tiny", (115, 150), 0, 0.0),  # 7 x 9 patches of 16
        ("dino-tiny", (115, 150), 8, 0.0),
        ("dino-tiny", (115, 150), 0, 0.5),
        ("dino-tiny", (115, 150), 8, 0.5),
        ("dinov2-tiny", (100, 130), 0, 0.5),  # 7 x 9 patches of 14
        ("dinov2-tiny", (100, 130), 7, 0.0),
    ],
)
def test_method_on_tiny_vit_equals_the_original_pipeline(
    backbone: str, size: tuple[int, int], factor: int, lam: float
) -> None:
    """The method end to end (crop, keys, downsampled grid, KNN colour, map, boxes) against the
    original's steps on the same keys.  (At lambda = 10 the near-spatial KNN graph of a random
    image splits the grid exactly in half, where the original's sign, hence mask, is arbitrary.)"""
    method = create_method(
        "dsm", backbone=backbone, image_downsample_factor=factor, color_lambda=lam
    )
    fx = method.extractor()  # type: ignore[attr-defined]
    p = fx.patch_size
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    hc, wc = size[0] // p * p, size[1] // p * p
    # the original: crop to multiples of P, keys, bilinear resize to the downsampled grid
    from odbench.features.vit import IMAGENET_MEAN
    from odbench.methods.keyfeatures import padded_batch

    with torch.inference_mode():
        k = fx.keys(padded_batch(image[:hc, :wc], p, IMAGENET_MEAN))  # (1, D, h, w)
    s = factor or p
    grid = (hc // s, wc // s)
    feats = k[0].flatten(1).T.float()
    if grid != tuple(k.shape[2:]):
        feats = (
            F.interpolate(
                feats.T.reshape(1, -1, *k.shape[2:]),
                size=grid,
                mode="bilinear",
                align_corners=False,
            )
            .reshape(-1, grid[0] * grid[1])
            .T
        )
    from PIL import Image

    image_lr = (
        np.array(Image.fromarray(image).resize(grid[::-1], Image.Resampling.BILINEAR)) / 255.0
    )
    theirs = their_eigs(feats.numpy(), image_lr, lam)
    assert np.mean(theirs[1] > 0) != 0.5  # not the tie where the original's sign is arbitrary
    their_mask = (theirs[1] > 0.0).reshape(grid)
    got = method.features(image)  # type: ignore[attr-defined]
    assert got.grid == grid and got.scale == s
    np.testing.assert_allclose(got.keys, feats.numpy(), rtol=1e-5, atol=1e-6)
    (pixel_map,) = method.predict([image])
    assert pixel_map.shape == image.shape[:2] and pixel_map.dtype == np.float32
    up = np.repeat(np.repeat(their_mask, s, 0), s, 1)
    assert np.array_equal(pixel_map[: up.shape[0], : up.shape[1]] > 0.5, up)
    (box,) = method.predict_boxes([image], [pixel_map])
    assert np.array_equal(box, their_box(their_mask, s, image.shape[:2]))


def test_unknown_solver_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown eigensolver"):
        spectral_vectors(np.eye(3), solver="magic")  # type: ignore[arg-type]


def test_bench_dsm_runs_and_every_solver_agrees_with_the_original(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``odbench bench dsm`` on small planted graphs and the tiny ViT (so the command never
    rots): the three solvers give the original's masks."""
    from click.testing import CliRunner

    import odbench.bench.dsm as bench
    from odbench.cli import main

    monkeypatch.setattr(bench, "SIZES", (("small", (12, 15)),))
    r = CliRunner().invoke(
        main, ["bench", "dsm", "--n", "2", "--planted-only", "--backbone", "dino-tiny"]
    )
    assert r.exit_code == 0, r.output
    for solver in ("original", "dense", "lanczos"):
        assert r.output.count(f"{solver}") >= 2
    assert r.output.count("mask agreement with the original 1.0000") == 6  # 3 solvers x 2 lambdas
    assert "dsm on dino-tiny, 2 planted 320×400 images" in r.output


def their_crf(image: np.ndarray, segmap: np.ndarray, p: int, it: int = 5) -> np.ndarray:
    """``_extract_crf_segmentations`` on a saved (0/255) patch segmentation, with SimpleCRF's
    ``densecrf`` (computeUnary's clipping, bilateral then Gaussian Potts terms, ``map(it)``)
    re-expressed with pydensecrf, the same Krähenbühl code; defaults (10, 80, 13, 3, 3, 5)."""
    import cv2
    import pydensecrf.densecrf as dcrf

    h, w = image.shape[:2]
    h_pad, w_pad = h // p * p, w // p * p
    up = cv2.resize(segmap, dsize=(w_pad, h_pad), interpolation=cv2.INTER_NEAREST)
    full = cv2.resize(segmap, dsize=(w, h), interpolation=cv2.INTER_NEAREST)
    full[:h_pad, :w_pad] = up
    if set(np.unique(full).tolist()) == {0, 255}:
        full[full == 255] = 1
    prob = np.eye(2, dtype=np.float32)[full].reshape(-1, 2).T
    unary = -np.log(np.clip(prob, 0.01, 0.99))
    crf = dcrf.DenseCRF2D(w, h, 2)
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    crf.addPairwiseBilateral(sxy=80, srgb=13, rgbim=np.ascontiguousarray(image), compat=10)
    crf.addPairwiseGaussian(sxy=3, compat=3)
    return np.argmax(np.asarray(crf.inference(it)), axis=0).reshape(h, w)


def test_crf_variant_equals_the_original_crf_step() -> None:
    method = create_method("dsm.crf", backbone="dino-tiny")
    p = 16
    image = np.random.default_rng(3).integers(0, 256, (115, 150, 3), dtype=np.uint8)
    image[:60, :70] //= 3  # a dark block for the bilateral kernel; a strip beyond the crop
    raw = method.forward([image])[0]  # type: ignore[attr-defined]
    _, mask = dsm_patch_mask(image, raw, method.hparams)
    assert 0 < mask.mean() < 0.5
    saved = np.where(mask, 255, 0).astype(np.uint8)  # Image.fromarray(bool).convert('L')
    (got,) = method.predict([image])
    expected = their_crf(image, saved, p)
    assert np.array_equal(got > 0.5, expected == 1)
    plain = create_method("dsm", backbone="dino-tiny").predict([image])[0]
    assert not np.array_equal(got, plain)  # the CRF changed the map
    (box,) = method.predict_boxes([image], [got])
    assert box.tolist() != [0.0, 0.0, 0.0, 0.0]


def test_bench_dsm_help_says_it_takes_minutes() -> None:
    """A command over a minute says so up front (the README's and --help's promise)."""
    from click.testing import CliRunner

    from odbench.cli import main

    r = CliRunner().invoke(main, ["bench", "dsm", "--help"])
    assert r.exit_code == 0 and "Takes minutes" in r.output
