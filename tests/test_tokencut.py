"""TokenCut: NCut on planted graphs against scipy's generalized eigensolver, the foreground-side
rule under both eigenvector signs, and the real path on a tiny random timm ViT."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import eigh

from odbench.features import load_extractor
from odbench.features.weights import WeightsNotFoundError
from odbench.methods.base import create_method
from odbench.methods.tokencut import (
    bipartition,
    cosine_affinity,
    ncut_vector,
    tokencut_patch_mask,
)


def _two_clusters(n_small: int, n_large: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A noisy two-block affinity (dense within, sparse across) with the blocks interleaved."""
    rng = np.random.default_rng(seed)
    n = n_small + n_large
    truth = np.zeros(n, bool)
    truth[rng.choice(n, n_small, replace=False)] = True
    same = truth[:, None] == truth[None, :]
    p = np.where(same, 0.8, 0.03)
    upper = np.triu(rng.random((n, n)) < p, 1)
    a = np.where(upper | upper.T, 1.0, 1e-5)
    np.fill_diagonal(a, 1.0)
    return a, truth


def _reference_vector(a: np.ndarray) -> np.ndarray:
    """TokenCut's own formulation: scipy's generalized symmetric eigensolver on (D - A, D)."""
    d = np.diag(a.sum(axis=1))
    _, vecs = eigh(d - a, d, subset_by_index=[1, 1])
    return np.asarray(vecs[:, 0])


@pytest.mark.parametrize("solver", ["dense", "lobpcg"])
def test_ncut_vector_matches_generalized_eigh(solver: str) -> None:
    a, _ = _two_clusters(60, 140, seed=0)
    got, ref = ncut_vector(a, solver), _reference_vector(a)  # type: ignore[arg-type]
    d = a.sum(axis=1)
    cos = abs(np.sum(d * got * ref)) / np.sqrt(np.sum(d * got**2) * np.sum(d * ref**2))
    assert cos > 1 - 1e-8
    # the generalized Rayleigh quotient is the second smallest eigenvalue
    lap = np.diag(d) - a
    lam2 = eigh(lap, np.diag(d), eigvals_only=True, subset_by_index=[1, 1])[0]
    assert got @ lap @ got / (got @ (d * got)) == pytest.approx(lam2, rel=1e-7)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ncut_bipartition_recovers_planted_clusters(seed: int) -> None:
    a, truth = _two_clusters(70, 130, seed)
    fg, _ = bipartition(ncut_vector(a, "lobpcg"))
    # Σ d_i x_i = 0 puts the larger magnitudes on the smaller-volume side: the smaller cluster
    assert np.array_equal(fg, truth)


def test_foreground_side_does_not_depend_on_the_eigenvector_sign() -> None:
    a, truth = _two_clusters(50, 150, seed=3)
    x = _reference_vector(a)
    fg_pos, seed_pos = bipartition(x)
    fg_neg, seed_neg = bipartition(-x)
    assert seed_pos == seed_neg
    assert truth[seed_pos]
    assert np.array_equal(fg_pos, truth) and np.array_equal(fg_neg, truth)
    # the side "x > mean" alone is the background for one of the two signs
    assert not (np.array_equal(x > x.mean(), truth) and np.array_equal(-x > (-x).mean(), truth))


def test_tokencut_mask_on_planted_keys_is_the_object_component() -> None:
    rng = np.random.default_rng(0)
    grid = (12, 16)
    obj = np.zeros(grid, bool)
    obj[3:8, 5:11] = True
    base = rng.standard_normal((2, 32))
    keys = base[obj.ravel().astype(int)] + 0.3 * rng.standard_normal((obj.size, 32))
    keys[0] = base[1] + 0.3 * rng.standard_normal(32)  # an object-like patch far away (corner)
    mask, seed = tokencut_patch_mask(keys, grid, tau=0.2, eps=1e-5)
    assert obj[seed]
    assert np.array_equal(mask, obj)  # the isolated corner patch is dropped with its component


def test_cosine_affinity_is_binary_with_eps() -> None:
    keys = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0]])
    a = cosine_affinity(keys, tau=0.2, eps=1e-5)
    assert a[0, 1] == 1.0 and a[0, 2] == 1e-5 and a[0, 3] == 1e-5
    assert np.array_equal(a, a.T) and np.all(np.diag(a) == 1.0)


TINY = "dino-tiny"


def test_hooked_keys_equal_a_manual_pass_through_the_vit() -> None:
    import torch

    from odbench.features.vit import IMAGENET_MEAN, IMAGENET_STD

    method = create_method("tokencut", backbone=TINY)
    model = method.extractor().model  # type: ignore[attr-defined]
    image = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    got = method.keys(image)  # type: ignore[attr-defined]
    assert got.grid == (4, 5) and got.padded == (64, 80) and got.keys.shape == (20, 48)
    # reference: normalise the image, zero-pad AFTER normalisation (LOST / TokenCut), manual pass
    x = torch.from_numpy(image).permute(2, 0, 1).float() / 255.0
    x = (x - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    padded = torch.zeros(1, 3, 64, 80)
    padded[0, :, :50, :70] = x
    with torch.inference_mode():
        t = model.norm_pre(model._pos_embed(model.patch_embed(padded)))
        for block in model.blocks[:-1]:
            t = block(t)
        qkv = model.blocks[-1].attn.qkv(model.blocks[-1].norm1(t))
        heads = model.blocks[-1].attn.num_heads
        k = qkv.reshape(1, t.shape[1], 3, heads, 48 // heads)[0, :, 1].reshape(t.shape[1], 48)
    np.testing.assert_array_equal(got.keys, k[1:].numpy())


def test_tokencut_real_path_on_tiny_vit() -> None:
    method = create_method("tokencut", backbone=TINY)
    rng = np.random.default_rng(1)
    shapes = [(70, 90, 3), (64, 48, 3), (12, 10, 3)]  # the last one is a single patch
    images = [rng.integers(0, 256, s, dtype=np.uint8) for s in shapes]
    maps = method.predict(images)
    for im, m in zip(images, maps):
        assert m.shape == im.shape[:2] and m.dtype == np.float32
        assert set(np.unique(m)) <= {0.0, 1.0} and m.max() == 1.0
    for im, box in zip(images, method.predict_boxes(images, maps)):
        x1, y1, x2, y2 = box
        assert 0 <= x1 < x2 <= im.shape[1] and 0 <= y1 < y2 <= im.shape[0]


def test_bilateral_solver_variant_refines() -> None:
    from odbench.methods.bilateral_solver import bilateral_refine

    image = np.random.default_rng(4).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    (plain,) = create_method("tokencut", backbone=TINY).predict([image])
    (refined,) = create_method("tokencut", backbone=TINY, bilateral_solver=True).predict([image])
    assert refined.shape == (48, 64) and 0.0 <= refined.min() and refined.max() <= 1.0
    assert np.abs(refined - plain).max() > 1e-3  # the flag does something ...
    np.testing.assert_allclose(refined, bilateral_refine(image, plain), atol=1e-6)  # ... +BS


def test_missing_pretrained_weights_give_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-odbench-test")
    with pytest.raises(WeightsNotFoundError) as err:
        create_method("tokencut").predict([np.zeros((32, 32, 3), np.uint8)])
    message = str(err.value)
    assert "\n" not in message and "timm/vit_small_patch16_224.dino" in message
    assert "hf download timm/vit_small_patch16_224.dino model.safetensors" in message
    assert isinstance(err.value, FileNotFoundError)  # shown as one line by the CLI


def test_tiny_vit_is_seeded_without_touching_the_callers_rng() -> None:
    import torch

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = load_extractor(TINY).model  # type: ignore[attr-defined]
    assert torch.equal(torch.rand(3), expected)
    b = load_extractor(TINY).model  # type: ignore[attr-defined]
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
