"""AttentionCut (DiffusionSeg, Ma et al. 2023, section 3.2.2): a training-free mask from the
cross- and self-attention maps of Stable Diffusion, by an exact graph cut.

The energy (Eq. 6) ``E(M) = Σ_p φ(p) + λ Σ_{M(p) ≠ M(q)} ψ(p, q)`` is built term by term from
plain arrays, so the cut does not depend on diffusers and runs on any attention source:

* :func:`~odbench.methods.diffusion.aggregate_cross_attention` /
  :func:`~odbench.methods.diffusion.aggregate_self_attention` — Eq. (2), in
  :mod:`odbench.methods.diffusion` with :class:`~odbench.methods.diffusion.DiffusionMethod`;
* :func:`boundary_seeds` and :func:`boundary_refinement` — Eq. (3), r(p);
* :func:`objectness` — Eq. (4), φ, with the sign of the background case corrected (see there);
* :func:`geodesic_edge_distance` and :func:`inner_coherence` — Eq. (5), ψ;
* :func:`min_cut` — Eq. (6), minimised exactly with PyMaxflow (Boykov-Kolmogorov max-flow);
* :func:`postprocess` — small components removed, holes filled; the bilateral solver of Barron
  & Poole (2016) for the "+BS" variant lives in :mod:`odbench.methods.bilateral_solver`.

Scales (the paper's λφ = 0.16, λψ = 2.5, λ = 0.1 only mean something relative to them):

* A_c is min-max normalised to [0, 1] after aggregation.
* A_s rows sum to 1 over the N keys (raw values ~1/N).  Each row is divided by its peak
  m(p) = Σ_l c_l max A_l(p, ·) — the sum of the per-level row maxima (an upper bound of the row's
  maximum, equal to it when the levels peak at the same key, as self-attention does at and
  around the query itself; one contiguous pass per level instead of an exact max over the
  summed levels, which costs 3-4× more) — and the result is symmetrised,
  ``S(p, q) = ½ (A_s(p, q)/m(p) + A_s(q, p)/m(q))`` (the paper assumes A_s symmetric), so
  S ∈ [0, 1] with S(p, p) ≈ 1: the semantic part of ψ lives on the same [0, 1] scale as
  exp(−D), and λψ weighs the two.
* r(p) (Eq. 3, the mean of S over the seeds) is min-max normalised to [0, 1], so
  A_c + λφ r ∈ [0, 1.16] before clipping.

Ablations (paper Table 6) select which of the four terms enter: ``terms`` ⊆ {A_c, r, A_s, D}.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from odbench.methods.diffusion import (
    DiffusionMethod,
    SelfAffinity,
    aggregate_cross_attention,
    aggregate_self_attention,
    cell_index_hw,
    minmax,
    resize_hw,
    upsample_mask,
)

#: All four terms of Table 6 (row 6, the full method).
ALL_TERMS = ("A_c", "r", "A_s", "D")
#: 4-connectivity structuring element.
_CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool)


# --------------------------------------------------------------------------------------------
# Eq. (3): boundary refinement r(p)
# --------------------------------------------------------------------------------------------


def boundary_seeds(a_c: np.ndarray, tau: float, n_seeds: int, seed: int) -> np.ndarray:
    """The seed set B of Eq. (3): up to ``n_seeds`` flat indices drawn uniformly without
    replacement (``numpy.random.default_rng(seed)``) from the inner boundary of [A_c > τ]: mask
    pixels with a 4-neighbour outside the mask (the image border does not count as boundary).
    Empty when the mask is empty or has no boundary."""
    from scipy.ndimage import binary_erosion

    mask = a_c > tau
    inner = binary_erosion(mask, structure=_CROSS, border_value=1)
    boundary = np.flatnonzero(mask & ~inner)
    if boundary.size <= n_seeds:
        return boundary
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(boundary, size=n_seeds, replace=False))


def boundary_refinement(affinity: SelfAffinity, seeds: np.ndarray) -> np.ndarray:
    """r(p) of Eq. (3): ``1/|B| Σ_b S(p, b)`` over the seeds, min-max normalised to [0, 1].
    Flat (N,) float32; all zeros when B is empty."""
    if seeds.size == 0:
        return np.zeros(affinity.grid**2, np.float32)
    return minmax(affinity.mean_column(seeds))


# --------------------------------------------------------------------------------------------
# Eq. (4): objectness φ
# --------------------------------------------------------------------------------------------


def objectness(
    a_c: np.ndarray | None, r: np.ndarray | None, lambda_phi: float, eps: float = 1e-4
) -> tuple[np.ndarray, np.ndarray]:
    """φ of Eq. (4) as (foreground cost, background cost), each the shape of the inputs.

    With ``a = A_c + λφ r`` clipped to [eps, 1 − eps]: foreground costs −log(a), background
    costs **−log(1 − a)**.  The paper prints the background case as +log(1 − A_c − λφ r),
    which is ≤ 0 (a reward that grows with the objectness); with that sign the minimiser would
    label confident pixels background, so we read the missing minus sign as a typo: φ is the
    negative log-likelihood of the label under the probability ``a`` of being foreground.  The
    clip keeps the costs finite (at most −log eps ≈ 9.2).

    Ablations (Table 6): ``r=None`` uses A_c alone (row 1); ``a_c=None`` uses r alone with
    weight 1 (row 2: λφ r ≤ 0.16 alone could never exceed ½ and would label everything
    background).
    """
    if a_c is None and r is None:
        raise ValueError("objectness needs A_c, r or both")
    if a_c is None:
        assert r is not None
        a = r
    elif r is None:
        a = a_c
    else:
        a = a_c + lambda_phi * r
    a = np.clip(a.astype(np.float64), eps, 1.0 - eps)
    return -np.log(a), -np.log1p(-a)


# --------------------------------------------------------------------------------------------
# Eq. (5): inner coherence ψ on neighbour pairs
# --------------------------------------------------------------------------------------------


def grid_edges(height: int, width: int, neighbourhood: int = 4) -> np.ndarray:
    """Unordered neighbour pairs of an H × W grid as flat indices, (E, 2) int64: right and down
    neighbours (4), plus the two diagonals (8; weighted like axis pairs).  Each pair appears
    once."""
    if neighbourhood not in (4, 8):
        raise ValueError(f"neighbourhood must be 4 or 8, got {neighbourhood}")
    idx = np.arange(height * width).reshape(height, width)
    pairs = [(idx[:, :-1], idx[:, 1:]), (idx[:-1, :], idx[1:, :])]
    if neighbourhood == 8:
        pairs += [(idx[:-1, :-1], idx[1:, 1:]), (idx[:-1, 1:], idx[1:, :-1])]
    return np.concatenate([np.stack([a.ravel(), b.ravel()], axis=1) for a, b in pairs])


def geodesic_edge_distance(image: np.ndarray, neighbourhood: int = 4) -> np.ndarray:
    """D(p, q) of Eq. (5) for the neighbour pairs of :func:`grid_edges` (same order), on the
    image's RGB intensity surface.

    Discretisation: paths run along the pixel grid and the integral ∫‖∇I · v‖ds becomes the sum
    of ‖I(p_i) − I(p_{i+1})‖₂ over consecutive pixels (I in [0, 1]).  For two neighbours the
    direct step is then the geodesic (by the triangle inequality no detour is shorter), so
    D(p, q) = ‖I(p) − I(q)‖₂.  The paper gives D no scale; we divide by its mean over the
    image's neighbour pairs (contrast normalisation as in GrabCut, Rother et al. 2004), so
    exp(−D) ≈ e⁻¹ on a typical edge whatever the image's contrast.  Returns (E,) float32.
    """
    planes = np.moveaxis(image, -1, 0).astype(np.float32)  # channel planes: contiguous rows
    if image.dtype == np.uint8:
        planes /= 255.0
    views = [
        (np.s_[:, 1:], np.s_[:, :-1]),
        (np.s_[1:, :], np.s_[:-1, :]),
        (np.s_[1:, 1:], np.s_[:-1, :-1]),
        (np.s_[1:, :-1], np.s_[:-1, 1:]),
    ][: 2 if neighbourhood == 4 else 4]
    parts = []
    for a, b in views:
        sq = sum(np.square(p[a] - p[b]) for p in planes)
        parts.append(np.sqrt(sq).ravel())
    d = np.concatenate(parts)
    mean = float(d.mean(dtype=np.float64)) if d.size else 0.0
    return d / np.float32(mean) if mean > 1e-12 else d


def inner_coherence(
    semantic: np.ndarray | None, distance: np.ndarray | None, lambda_psi: float
) -> np.ndarray:
    """ψ(p, q) = S(p, q) + λψ exp(−D(p, q)) of Eq. (5) per neighbour pair.  Either part may be
    None (Table 6 rows 4 and 5 drop one), not both."""
    if semantic is None and distance is None:
        raise ValueError("inner_coherence needs A_s, D or both")
    psi = np.zeros_like(semantic if semantic is not None else distance, dtype=np.float32)
    if semantic is not None:
        psi += semantic
    if distance is not None:
        psi += lambda_psi * np.exp(-distance)
    return psi


def semantic_coherence(affinity: SelfAffinity, cells: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The A_s part of Eq. (5) per neighbour pair: S(cell(p), cell(q)), where ``cells`` maps each
    pixel of the cut grid to its attention-grid cell (identity when cutting on the attention
    grid; nearest cell when cutting at a finer resolution).  Neighbours lie in the same or in
    adjacent cells, so S is formed once per cell and cell offset and then gathered."""
    cp = cells[edges[:, 0]]
    off = cells[edges[:, 1]] - cp
    g, n = affinity.grid, affinity.grid**2
    offsets = (0, 1, -1, g, g - 1, g + 1)
    code = np.full(g + 3, -1)  # offset + 1 -> row of the table
    code[np.array(offsets) + 1] = np.arange(len(offsets))
    if len(off) and (off.min() < -1 or off.max() > g + 1 or (code[off + 1] < 0).any()):
        raise ValueError("semantic_coherence: some neighbour pairs are not in adjacent cells")
    table = np.zeros((len(offsets), n), np.float32)
    for i, o in enumerate(offsets):
        base = np.arange(max(0, -o), min(n, n - o))
        table[i, base] = affinity.entries(base, base + o)
    return table.ravel()[code[off + 1] * n + cp]


# --------------------------------------------------------------------------------------------
# Eq. (6): exact minimisation
# --------------------------------------------------------------------------------------------


def energy(
    labels: np.ndarray,
    cost_fg: np.ndarray,
    cost_bg: np.ndarray,
    edges: np.ndarray,
    psi: np.ndarray,
    lam: float,
) -> float:
    """E(M) of Eq. (6) for a flat boolean labelling (True = foreground)."""
    lab = labels.ravel().astype(bool)
    unary = np.where(lab, cost_fg.ravel(), cost_bg.ravel()).sum()
    cut = lab[edges[:, 0]] != lab[edges[:, 1]] if edges.size else np.zeros(0, bool)
    return float(unary + lam * psi[cut].sum())


def min_cut(
    cost_fg: np.ndarray, cost_bg: np.ndarray, edges: np.ndarray, psi: np.ndarray, lam: float
) -> np.ndarray:
    """The labelling minimising Eq. (6) exactly: an s-t min cut (PyMaxflow, Boykov-Kolmogorov;
    the paper names Ford-Fulkerson, which finds the same minimum).  A node in the sink segment
    pays its source capacity, so source capacity = foreground cost and the sink segment is the
    foreground; each neighbour pair gets capacity λψ in both directions (ψ ≥ 0, so the energy
    is submodular).  Returns a boolean array of ``cost_fg``'s shape."""
    import maxflow

    shape = cost_fg.shape
    n = cost_fg.size
    g = maxflow.Graph[float](n, 2 * len(edges))
    nodes = g.add_nodes(n)
    g.add_grid_tedges(nodes, cost_fg.ravel().astype(np.float64), cost_bg.ravel().astype(np.float64))
    if len(edges) and lam > 0:
        w = (lam * psi).astype(np.float64)
        g.add_edges(edges[:, 0].astype(np.int64), edges[:, 1].astype(np.int64), w, w)
    g.maxflow()
    return np.asarray(g.get_grid_segments(nodes), bool).reshape(shape)


# --------------------------------------------------------------------------------------------
# Post-processing
# --------------------------------------------------------------------------------------------


def postprocess(mask: np.ndarray, min_area: float) -> np.ndarray:
    """Foreground components (8-connected) smaller than ``min_area`` × image area are removed,
    then background components (4-connected) not touching the image border and smaller than
    ``min_area`` × area — holes — are filled.  ``min_area = 0`` returns the mask unchanged."""
    from scipy.ndimage import label

    if min_area <= 0:
        return mask.copy()
    limit = min_area * mask.size
    out = mask.copy()
    lab, n = label(out, structure=np.ones((3, 3), bool))
    if n:
        sizes = np.bincount(lab.ravel())
        small = sizes < limit
        small[0] = False
        out[small[lab]] = False
    lab, n = label(~out, structure=_CROSS)
    if n:
        sizes = np.bincount(lab.ravel())
        border = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
        hole = sizes < limit
        hole[0] = False
        hole[border] = False
        out[hole[lab]] = True
    return out


# --------------------------------------------------------------------------------------------
# The whole cut on given maps
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CutParams:
    """Hyperparameters of the cut; the values live in the ``attentioncut`` card only."""

    terms: tuple[str, ...]
    lambda_phi: float
    lambda_psi: float
    lam: float
    tau: float
    n_seeds: int
    seed: int
    neighbourhood: int
    eps: float
    min_area: float

    def __post_init__(self) -> None:
        bad = set(self.terms) - set(ALL_TERMS)
        if bad or not ({"A_c", "r"} & set(self.terms)):
            raise ValueError(
                f"terms must be a subset of {ALL_TERMS} holding A_c or r, got {self.terms}"
            )

    @classmethod
    def from_hparams(cls, hp: dict[str, Any]) -> CutParams:
        names = cls.__dataclass_fields__
        kw = {k: v for k, v in hp.items() if k in names}
        if "terms" in kw:
            kw["terms"] = tuple(kw["terms"])
        return cls(**kw)

    @classmethod
    def from_card(cls, **changes: Any) -> CutParams:
        """The ``attentioncut`` card's values (the full method), with ``changes``."""
        from odbench.cards import method_card

        card = method_card("attentioncut")
        assert card is not None, "the attentioncut card is missing"
        return cls.from_hparams(card.hyperparameters | changes)


def attention_cut(
    a_c: np.ndarray,
    affinity: SelfAffinity,
    image: np.ndarray,
    params: CutParams,
    out_size: tuple[int, int] | None = None,
    timings: dict[str, float] | None = None,
) -> np.ndarray:
    """AttentionCut on aggregated maps: Eqs. (3)-(6) and post-processing.

    ``a_c``: (G, G) aggregated cross-attention in [0, 1]; ``affinity``: the aggregated
    self-attention (:func:`aggregate_self_attention`); ``image``: (H, W, 3) RGB (uint8 or float in [0, 1]).
    ``out_size=None`` cuts on the G × G attention grid (the image is area-resampled to G × G for
    D); ``out_size=(H', W')`` cuts at that resolution with A_c and r upsampled bilinearly, S taken
    between the grid cells holding p and q (nearest), and D from the image at (H', W').
    Returns a boolean mask of the cut resolution.  ``timings`` (if given) receives seconds per
    stage: seeds, r, phi, psi, cut, post.
    """
    import time

    import cv2

    clock = time.perf_counter
    t = clock()
    stamps: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal t
        now = clock()
        stamps[name] = now - t
        t = now

    grid = a_c.shape[0]
    terms = set(params.terms)
    seeds = boundary_seeds(a_c, params.tau, params.n_seeds, params.seed)
    lap("seeds")
    r = boundary_refinement(affinity, seeds).reshape(grid, grid) if "r" in terms else None
    lap("r")
    h, w = out_size if out_size is not None else (grid, grid)
    a_c_up = resize_hw(a_c, h, w) if "A_c" in terms else None
    r_up = resize_hw(r, h, w) if r is not None else None
    cost_fg, cost_bg = objectness(a_c_up, r_up, params.lambda_phi, params.eps)
    lap("phi")
    pairwise = {"A_s", "D"} & terms
    edges = grid_edges(h, w, params.neighbourhood) if pairwise else np.zeros((0, 2), np.int64)
    psi = np.zeros(len(edges))
    if pairwise:
        semantic = None
        if "A_s" in terms:
            semantic = semantic_coherence(affinity, cell_index_hw(h, w, grid), edges)
        distance = None
        if "D" in terms:
            img = image if image.dtype != np.uint8 else image.astype(np.float32) / 255.0
            img = cv2.resize(img.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
            distance = geodesic_edge_distance(img, params.neighbourhood)
        psi = inner_coherence(semantic, distance, params.lambda_psi)
    lap("psi")
    mask = min_cut(cost_fg, cost_bg, edges, psi, params.lam)
    lap("cut")
    mask = postprocess(mask, params.min_area)
    lap("post")
    if timings is not None:
        timings.update(stamps)
    return mask


# --------------------------------------------------------------------------------------------
# The registered method: image → CLIP class → DDIM inversion with capture → AttentionCut
# --------------------------------------------------------------------------------------------


class AttentionCut(DiffusionMethod):
    """AttentionCut (paper section 3.2.2); the card's ``terms`` select the Table 6 row.

    ``cut_resolution = "grid"`` (default) cuts on the G × G attention grid (64² for SD at 512²):
    it is where A_c and A_s carry information, and the paper's λ balances one unary per pixel
    against boundary pairs on that grid (at a finer grid the boundary count grows like the side,
    the area like its square, so the same λ would smooth ~8× less at 512²).  ``"image"`` cuts at
    the image's own size with upsampled terms (D then follows the image's edges pixel by pixel).
    ``bilateral_solver = true`` refines the mask with the bilateral solver ("+BS" rows)."""

    def __init__(self, card: Any = None, device: str = "cpu", **overrides: Any) -> None:
        from odbench.cards import CardError

        super().__init__(card, device, **overrides)
        where = card.path if card is not None else "attentioncut"
        try:
            self.params = CutParams.from_hparams(self.hparams)
        except (TypeError, ValueError) as e:
            raise CardError(f"{where}: {e}") from e
        self.mode = str(self.hparams["cut_resolution"])
        if self.mode not in ("grid", "image"):
            raise CardError(f"{where}: cut_resolution must be 'grid' or 'image', not {self.mode!r}")

    def predict(self, images: list[np.ndarray]) -> list[np.ndarray]:
        return [
            self.cut(img, ev.a_c, ev.affinity) for img, ev in zip(images, self.evidence(images))
        ]

    def cut(self, image: np.ndarray, a_c: np.ndarray, affinity: SelfAffinity) -> np.ndarray:
        """Eqs. (3)-(6) and post-processing (+BS if the card says so) on aggregated maps: the
        float32 map in [0, 1] at the image's size."""
        h, w = image.shape[:2]
        size = (h, w) if self.mode == "image" else None
        soft = upsample_mask(attention_cut(a_c, affinity, image, self.params, out_size=size), h, w)
        if self.hparams["bilateral_solver"]:
            from odbench.methods.bilateral_solver import bilateral_refine

            soft = bilateral_refine(image, soft)
        return soft.astype(np.float32)

    def cut_maps(
        self,
        image: np.ndarray,
        cross: Sequence[np.ndarray],
        selfs: Sequence[tuple[np.ndarray, float]],
    ) -> np.ndarray:
        """The whole method given the captured maps of one image (:func:`~odbench.methods.diffusion.attention_maps`), e.g.
        of a generated image (the synthesis stage): Eq. (2) aggregation, then :meth:`cut`.
        Thread-safe (no state changes)."""
        grid = max(round(np.sqrt(a.shape[0])) for a, _ in selfs)
        a_c = aggregate_cross_attention(cross, int(self.hparams["top_k"]), grid)
        return self.cut(image, a_c, aggregate_self_attention(selfs, grid))
