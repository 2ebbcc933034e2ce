"""AttentionCut's pure part (odbench.methods.attentioncut): the energy terms of Eqs. (2)-(6) on
plain arrays, checked against brute force and on planted signals."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.ndimage import binary_erosion, gaussian_filter

from odbench.methods import attentioncut as ac
from odbench.methods import diffusion as dm

# ---------------------------------------------------------------------------- Eq. (6) exactness


@pytest.mark.parametrize("shape", [(2, 2), (2, 3), (3, 3), (3, 4), (4, 4)])
@pytest.mark.parametrize("neighbourhood", [4, 8])
def test_min_cut_is_the_brute_force_minimum(shape: tuple[int, int], neighbourhood: int) -> None:
    h, w = shape
    edges = ac.grid_edges(h, w, neighbourhood)
    for trial in range(4):
        rng = np.random.default_rng([h, w, neighbourhood, trial])
        a = rng.uniform(0, 1, size=h * w)
        cost_fg, cost_bg = ac.objectness(a, None, 0.16)
        psi = rng.uniform(0, 3, size=len(edges))
        lam = float(rng.choice([0.05, 0.3, 1.0, 3.0]))
        got = ac.min_cut(cost_fg, cost_bg, edges, psi, lam)
        e_got = ac.energy(got, cost_fg, cost_bg, edges, psi, lam)
        labels = np.array(list(itertools.product([False, True], repeat=h * w)))
        unary = np.where(labels, cost_fg, cost_bg).sum(1)
        pair = (labels[:, edges[:, 0]] != labels[:, edges[:, 1]]) @ psi
        best = (unary + lam * pair).min()  # every labelling, vectorised
        assert e_got == pytest.approx(best, abs=1e-9)
        assert ac.energy(labels[7], cost_fg, cost_bg, edges, psi, lam) == pytest.approx(
            unary[7] + lam * pair[7]
        )


def test_grid_edges_counts_and_uniqueness() -> None:
    e4, e8 = ac.grid_edges(3, 5, 4), ac.grid_edges(3, 5, 8)
    assert len(e4) == 3 * 4 + 2 * 5
    assert len(e8) == len(e4) + 2 * 2 * 4
    pairs = {tuple(sorted(p)) for p in e8.tolist()}
    assert len(pairs) == len(e8)


def test_lambda_zero_is_unary_only_and_large_lambda_is_constant() -> None:
    rng = np.random.default_rng(0)
    a = gaussian_filter(rng.uniform(size=(16, 16)), 2)
    a = dm.minmax(a)
    cost_fg, cost_bg = ac.objectness(a, None, 0.16)
    edges = ac.grid_edges(16, 16)
    psi = ac.inner_coherence(None, rng.uniform(0, 2, len(edges)), 2.5)
    m0 = ac.min_cut(cost_fg, cost_bg, edges, psi, 0.0)
    np.testing.assert_array_equal(m0, cost_fg < cost_bg)
    assert 0 < m0.sum() < m0.size  # the unary solution is not constant here
    big = ac.min_cut(cost_fg, cost_bg, edges, psi, 1e4)
    assert big.all() or not big.any()


# ---------------------------------------------------------------------------- individual terms


def test_objectness_reading_of_eq4() -> None:
    a_c = np.array([0.0, 0.3, 0.9, 1.0])
    r = np.array([1.0, 0.5, 0.0, 1.0])
    fg, bg = ac.objectness(a_c, r, 0.16, eps=1e-4)
    a = np.clip(a_c + 0.16 * r, 1e-4, 1 - 1e-4)
    np.testing.assert_allclose(fg, -np.log(a))
    np.testing.assert_allclose(bg, -np.log(1 - a))  # minus sign: a cost, never a reward
    assert np.all(np.isfinite(fg)) and np.all(np.isfinite(bg)) and np.all(bg >= 0)
    assert (fg < bg).tolist() == [False, False, True, True]
    fg2, _ = ac.objectness(None, r, 0.16)
    np.testing.assert_allclose(fg2, -np.log(np.clip(r, 1e-4, 1 - 1e-4)))


def test_cross_attention_top_k_by_std() -> None:
    rng = np.random.default_rng(1)
    flat = np.full((4, 4), 0.25)  # std 0: never chosen when k < 3
    peaked = np.zeros((8, 8))
    peaked[2:4, 2:4] = 0.5
    mid = rng.uniform(0, 0.1, size=(8, 8))
    got = dm.aggregate_cross_attention([flat, peaked, mid], top_k=2, grid=8)
    np.testing.assert_allclose(got, dm.minmax((peaked + mid) / 2), atol=1e-6)
    assert got.min() == 0 and got.max() == pytest.approx(1)
    up = dm.aggregate_cross_attention([flat, peaked], top_k=1, grid=16)
    assert up.shape == (16, 16) and up[5, 5] == pytest.approx(1)
    # the 4x4 flat layer is resized to 8x8 and enters the mean when k covers it
    got3 = dm.aggregate_cross_attention([flat, peaked, mid], top_k=3, grid=8)
    np.testing.assert_allclose(got3, dm.minmax((peaked + mid + 0.25) / 3), atol=1e-6)


def _dense(aff: dm.SelfAffinity) -> np.ndarray:
    n = aff.grid**2
    return aff.raw(np.arange(n)[:, None], np.arange(n)[None, :])


def test_self_attention_upsampling_keeps_rows_stochastic() -> None:
    rng = np.random.default_rng(2)
    coarse = rng.uniform(size=(4, 4))
    coarse /= coarse.sum(1, keepdims=True)
    fine = rng.uniform(size=(16, 16))
    fine /= fine.sum(1, keepdims=True)
    aff = dm.aggregate_self_attention([(fine, 3), (coarse, 1)], grid=4)
    a = _dense(aff)
    np.testing.assert_allclose(a.sum(1), 1, atol=1e-5)
    # pixel (0, 0) and (1, 1) of the fine grid share coarse cell 0; keys (0,0) and (0,1) too
    assert a[0, 1] == pytest.approx(0.75 * fine[0, 1] + 0.25 * coarse[0, 0] / 4, rel=1e-5)
    assert a[5, 0] == pytest.approx(0.75 * fine[5, 0] + 0.25 * coarse[0, 0] / 4, rel=1e-5)
    assert np.all(aff.row_max >= a.max(1) * (1 - 1e-6))


def test_self_affinity_is_row_peak_normalised_and_symmetric() -> None:
    rng = np.random.default_rng(3)
    a = rng.uniform(size=(16, 16))
    a /= a.sum(1, keepdims=True)
    aff = dm.aggregate_self_attention([(a, 1)], grid=4)
    dense = 0.5 * (a / a.max(1, keepdims=True) + (a / a.max(1, keepdims=True)).T)
    p, q = np.meshgrid(np.arange(16), np.arange(16), indexing="ij")
    np.testing.assert_allclose(aff.entries(p, q), dense, rtol=1e-6)
    np.testing.assert_allclose(
        aff.mean_column(np.array([2, 7])), dense[:, [2, 7]].mean(1), rtol=1e-6
    )
    coarse = rng.uniform(size=(4, 4))
    coarse /= coarse.sum(1, keepdims=True)
    two = dm.aggregate_self_attention([(a, 2), (coarse, 1)], grid=4)
    full = _dense(two)
    # m(p): the 2:1 weighted sum of each level's row maximum (coarse keys split over 4 children)
    m = (2 * a.max(1) + coarse.max(1)[[0, 0, 1, 1, 0, 0, 1, 1, 2, 2, 3, 3, 2, 2, 3, 3]] / 4) / 3
    s2 = 0.5 * (full / m[:, None] + (full / m[:, None]).T)
    np.testing.assert_allclose(
        two.mean_column(np.array([0, 5, 9])), s2[:, [0, 5, 9]].mean(1), rtol=1e-5
    )
    edges = ac.grid_edges(4, 4, 8)
    got = ac.semantic_coherence(aff, np.arange(16), edges)
    np.testing.assert_allclose(got, dense[edges[:, 0], edges[:, 1]], rtol=1e-6)
    # cutting at 8x8: pixels map to their 4x4 cell; pairs inside one cell get S(c, c)
    cells = dm.cell_index_hw(8, 8, 4)
    e8 = ac.grid_edges(8, 8, 8)
    got8 = ac.semantic_coherence(aff, cells, e8)
    np.testing.assert_allclose(got8, dense[cells[e8[:, 0]], cells[e8[:, 1]]], rtol=1e-6)


def test_boundary_seeds_lie_on_the_mask_boundary_and_are_seeded() -> None:
    a_c = np.zeros((12, 12))
    a_c[3:9, 2:10] = 1.0
    seeds = ac.boundary_seeds(a_c, 0.5, 10, seed=0)
    mask = a_c > 0.5
    ring = mask & ~binary_erosion(mask)
    assert len(seeds) == 10 and ring.ravel()[seeds].all()
    np.testing.assert_array_equal(seeds, ac.boundary_seeds(a_c, 0.5, 10, seed=0))
    assert not np.array_equal(seeds, ac.boundary_seeds(a_c, 0.5, 10, seed=1))
    assert ac.boundary_seeds(np.zeros((5, 5)), 0.5, 4, 0).size == 0


def test_geodesic_distance_between_neighbours() -> None:
    img = np.zeros((2, 2, 3), np.uint8)
    img[0, 1] = (255, 0, 0)
    d = ac.geodesic_edge_distance(img, 4)
    raw = np.array([1.0, 0.0, 0.0, 1.0])  # pairs (0,1), (2,3), (0,2), (1,3)
    np.testing.assert_allclose(d, raw / raw.mean())
    rng = np.random.default_rng(4)
    img = rng.uniform(size=(5, 7, 3))
    for nb in (4, 8):
        e = ac.grid_edges(5, 7, nb)
        flat = img.reshape(-1, 3)
        ref = np.linalg.norm(flat[e[:, 0]] - flat[e[:, 1]], axis=1)
        np.testing.assert_allclose(ac.geodesic_edge_distance(img, nb), ref / ref.mean(), rtol=1e-5)


def test_postprocess_removes_specks_and_fills_holes() -> None:
    m = np.zeros((20, 20), bool)
    m[4:16, 4:16] = True
    m[9, 9] = False  # hole
    m[0, 19] = True  # speck
    out = ac.postprocess(m, min_area=0.01)
    assert out[9, 9] and not out[0, 19] and out.sum() == 144
    np.testing.assert_array_equal(ac.postprocess(m, 0.0), m)


# ---------------------------------------------------------------------------- planted signals

ROWS = {  # Table 6
    1: ("A_c",),
    2: ("r",),
    3: ("A_c", "r"),
    4: ("A_c", "r", "D"),
    5: ("A_c", "r", "A_s"),
    6: ("A_c", "r", "A_s", "D"),
}


def _shape(kind: str, grid: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:grid, 0:grid] / grid
    cy, cx = rng.uniform(0.35, 0.65, 2)
    ry, rx = rng.uniform(0.15, 0.3, 2)
    if kind == "ellipse":
        return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
    if kind == "rectangle":
        return (abs(yy - cy) < ry) & (abs(xx - cx) < rx)
    if kind == "ell":
        box = (abs(yy - cy) < ry) & (abs(xx - cx) < rx)
        return box & ~((yy < cy) & (xx > cx))
    return (abs(yy - cy) < ry) & (abs(xx - cx) < ry * 0.35) | (abs(yy - cy) < ry * 0.35) & (
        abs(xx - cx) < rx
    )  # cross


def planted(kind: str, seed: int, grid: int = 32):
    """A known mask and the evidence an attention source would give about it: A_c blurred,
    noisy, partly shrunken (sparse and inattentive near the boundary); A_s local + same-region
    block structure with multiplicative noise, rows summing to 1; an image with different
    object and background colours plus noise.  A first design eroded the core by 2 pixels, which
    made thresholding A_c score 0.31 mean IoU, far below the paper's Table 6 row 1 (0.48-0.64);
    the erosion was cut to 1 pixel to land in that range.  Nothing else was changed, and no
    hyperparameter of the method was touched (the paper's λφ, λψ, λ)."""
    rng = np.random.default_rng(seed)
    mask = _shape(kind, grid, rng)
    core = binary_erosion(mask, iterations=1)
    keep = gaussian_filter(rng.normal(size=mask.shape), 3) > -0.3  # drop blobs of the core
    a_c = gaussian_filter((core & keep).astype(float), 1.5) + rng.normal(0, 0.08, mask.shape)
    a_c = dm.minmax(np.clip(a_c, 0, None))

    yx = np.stack(np.mgrid[0:grid, 0:grid], -1).reshape(-1, 2).astype(float)
    d2 = ((yx[:, None, :] - yx[None, :, :]) ** 2).sum(-1)
    same = mask.ravel()[:, None] == mask.ravel()[None, :]
    a_s = np.exp(-d2 / (2 * 4.0**2)) * np.where(same, 1.0, 0.25)
    a_s *= rng.lognormal(0, 0.5, a_s.shape)
    a_s /= a_s.sum(1, keepdims=True)

    fg, bg = rng.uniform(0.2, 0.8, 3), rng.uniform(0.2, 0.8, 3)
    bg = bg + 0.25 * np.sign(bg - fg)
    img = np.where(mask[..., None], fg, bg) + rng.normal(0, 0.08, (grid, grid, 3))
    affinity = dm.aggregate_self_attention([(a_s.astype(np.float32), 1.0)], grid)
    return mask, a_c, affinity, np.clip(img, 0, 1).astype(np.float32)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def test_planted_signal_recovery_per_table6_row(capsys: pytest.CaptureFixture[str]) -> None:
    cases = [(k, s) for k in ("ellipse", "rectangle", "ell", "cross") for s in range(4)]
    scores: dict[str, list[float]] = {"A_c > 0.5": []} | {f"row {r}": [] for r in ROWS}
    for kind, seed in cases:
        mask, a_c, a_s, img = planted(kind, seed)
        scores["A_c > 0.5"].append(_iou(a_c > 0.5, mask))
        for row, terms in ROWS.items():
            pred = ac.attention_cut(a_c, a_s, img, ac.CutParams.from_card(terms=terms))
            scores[f"row {row}"].append(_iou(pred, mask))
    means = {k: float(np.mean(v)) for k, v in scores.items()}
    with capsys.disabled():
        print(f"\nAttentionCut on planted signals: mean IoU over {len(cases)} cases (32x32 grid)")
        for k, v in means.items():
            terms = "+".join(ROWS[int(k[4:])]) if k.startswith("row") else "no cut"
            print(f"  {k:10s} {terms:16s} {v:.3f}")
    assert means["row 6"] >= means["A_c > 0.5"] + 0.05
    tol = 0.01  # "not worse" up to the noise of 16 cases: at λ = 0.1 the pairwise terms move
    # the mean by about ±0.01 here, r(p) by +0.1
    assert means["row 3"] >= means["row 1"] - tol  # + r(p)
    assert means["row 4"] >= means["row 3"] - tol  # + D
    assert means["row 5"] >= means["row 3"] - tol  # + A_s
    assert means["row 6"] >= max(means["row 4"], means["row 5"]) - tol  # both coherences


def test_cut_at_a_finer_resolution_agrees_with_the_grid_cut() -> None:
    mask, a_c, affinity, img = planted("ellipse", 0)
    coarse = ac.attention_cut(a_c, affinity, img, ac.CutParams.from_card())
    fine_img = np.repeat(np.repeat(img, 3, axis=0), 3, axis=1)
    fine = ac.attention_cut(a_c, affinity, fine_img, ac.CutParams.from_card(), out_size=(96, 96))
    assert fine.shape == (96, 96)
    up = np.repeat(np.repeat(coarse, 3, axis=0), 3, axis=1)
    assert _iou(fine, up) > 0.8
    big = np.repeat(np.repeat(mask, 3, axis=0), 3, axis=1)
    assert _iou(fine, big) > _iou(a_c > 0.5, mask)


def test_attention_cut_weights_lambda_zero_and_large() -> None:
    _, a_c, affinity, img = planted("cross", 1)
    unary = ac.attention_cut(a_c, affinity, img, ac.CutParams.from_card(terms=("A_c", "r")))
    zero = ac.attention_cut(a_c, affinity, img, ac.CutParams.from_card(lam=0.0))
    np.testing.assert_array_equal(zero, unary)
    nopost = ac.CutParams.from_card(lam=1e4, min_area=0.0)
    big = ac.attention_cut(a_c, affinity, img, nopost)
    assert big.all() or not big.any()


def test_row_peak_bounds_the_row_max_and_is_exact_when_levels_peak_together() -> None:
    """m(p) = Σ_l c_l max A_l(cell_l(p), ·), checked against each level upsampled densely."""
    rng = np.random.default_rng(5)
    for diagonal in (False, True):
        levels = []
        for res, weight in ((8, 2.0), (4, 3.0), (2, 1.0), (4, 1.0)):
            a = rng.uniform(size=(res * res, res * res)) ** 4
            if diagonal:  # every level peaks at the query's own cell, as self-attention does
                a[np.arange(res * res), np.arange(res * res)] = 2.0
            levels.append((a / a.sum(1, keepdims=True), weight))
        aff = dm.aggregate_self_attention(levels, grid=8)
        dense = _dense(aff)
        np.testing.assert_allclose(dense.sum(1), 1, rtol=1e-5)
        total = sum(w for _, w in levels)
        per_level = []
        for a, w in levels:
            res = round(np.sqrt(a.shape[0]))
            cells = np.arange(8)[:, None] // (8 // res) * res + np.arange(8)[None, :] // (8 // res)
            up = a[np.ix_(cells.ravel(), cells.ravel())] * w / total / (8 // res) ** 2
            per_level.append(up.max(1))
        np.testing.assert_allclose(aff.row_max, np.sum(per_level, axis=0), rtol=1e-5)
        assert np.all(aff.row_max >= dense.max(1) * (1 - 1e-6))
        if diagonal:
            np.testing.assert_allclose(aff.row_max, dense.max(1), rtol=1e-5)
        else:
            assert np.any(aff.row_max > dense.max(1) * (1 + 1e-3))


def test_coherence_terms_clean_a_speckled_cross_attention(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The regime ψ is for (paper: "mis-segmented holes, jagged contours"): the planted A_c with
    per-pixel noise (σ = 0.25, first value tried) added after the blur, post-processing off, so
    only the pairwise terms can clean it.  Each coherence term must help and both most."""
    scores: dict[int, list[float]] = {r: [] for r in ROWS}
    for kind in ("ellipse", "rectangle", "ell", "cross"):
        for seed in range(4):
            mask, a_c, affinity, img = planted(kind, seed)
            rng = np.random.default_rng(100 + seed)
            noisy = np.clip(a_c + rng.normal(0, 0.25, a_c.shape), 0, 1)
            for row, terms in ROWS.items():
                params = ac.CutParams.from_card(terms=terms, min_area=0.0)
                scores[row].append(_iou(ac.attention_cut(noisy, affinity, img, params), mask))
    means = {r: float(np.mean(v)) for r, v in scores.items()}
    with capsys.disabled():
        print("\nAttentionCut on speckled planted A_c, no post-processing: mean IoU (16 cases)")
        for r, v in means.items():
            print(f"  row {r}  {'+'.join(ROWS[r]):16s} {v:.3f}")
    assert means[4] >= means[3] + 0.02  # + D
    assert means[5] >= means[3] + 0.02  # + A_s
    assert means[6] >= max(means[4], means[5])  # both
