"""The shared pipeline of the methods that read Stable Diffusion's attention and features of a
real image (:class:`DiffusionMethod`: AttentionCut and the Table 5 baselines), with Eq. (2) of
DiffusionSeg (Ma et al. 2023): the aggregation of the captured cross- and self-attention maps
over layers, timesteps, resolutions and sub-tokens.

Scales (see :mod:`odbench.methods.attentioncut` for what the cut makes of them): A_c is min-max
normalised to [0, 1] after aggregation; A_s rows sum to 1 over the N keys, and
:class:`SelfAffinity` divides each row by its peak m(p) = Σ_l c_l max A_l(p, ·) and symmetrises
it, ``S(p, q) = ½ (A_s(p, q)/m(p) + A_s(q, p)/m(q))``, so S ∈ [0, 1] with S(p, p) ≈ 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from odbench.methods.base import Method

# --------------------------------------------------------------------------------------------
# Eq. (2): aggregation over layers, timesteps, resolutions and sub-tokens
# --------------------------------------------------------------------------------------------


def minmax(x: np.ndarray) -> np.ndarray:
    """(x − min) / (max − min) in float32; a constant array becomes zeros."""
    x = x.astype(np.float32, copy=False)
    lo, hi = float(x.min()), float(x.max())
    if hi - lo <= 1e-12:
        return np.zeros_like(x)
    return (x - lo) / (hi - lo)


def aggregate_cross_attention(layers: Sequence[np.ndarray], top_k: int, grid: int) -> np.ndarray:
    """A_c of Eq. (2): the mean over the top-k layers ranked by the standard deviation of their
    map, min-max normalised to [0, 1].

    ``layers``: one (h, w) map per captured cross-attention layer: the attention probability of
    each query pixel for the class name, already averaged over the T reverse steps (the backbone
    keeps running sums; the mean over t of Eq. 2 commutes with everything here).  16², 32² and
    64² layers may be mixed.  The sub-tokens of a multi-token class name are combined by their
    mean (the backbone's convention); the sum would give the same A_c, since the factor K is
    shared by all layers and removed by the normalisation.  Every map is resized **bilinearly**
    to ``grid`` × ``grid`` (the finest attention resolution, 64² for SD at 512²) before the
    ranking and the mean.  ``top_k`` is clipped to the number of layers.  Returns float32.
    """
    if not layers:
        raise ValueError("aggregate_cross_attention: no cross-attention layers given")
    maps = [resize_hw(np.asarray(a, np.float32), grid, grid) for a in layers]
    stds = np.array([m.std() for m in maps])
    k = max(1, min(int(top_k), len(maps)))
    chosen = np.argsort(-stds, kind="stable")[:k]
    return minmax(np.mean([maps[i] for i in chosen], axis=0))


@dataclass(frozen=True)
class SelfAffinity:
    """A_s of Eq. (2) and its normalised, symmetrised form S (see the module docstring of :mod:`odbench.methods.attentioncut`), kept
    lazily per resolution level: A_s(p, q) = Σ_l c_l A_l(cell_l(p), cell_l(q)).  Only what the
    cut needs is ever formed (the mean over the seed columns for Eq. 3, one entry per neighbour
    pair for Eq. 5, the row peaks m(p)), never the dense G² × G² matrix."""

    grid: int
    levels: tuple[tuple[np.ndarray, float, np.ndarray], ...]  # (A_l, c_l, cell_l)
    row_max: np.ndarray  # (G²,) m(p) = Σ_l c_l max A_l(cell_l(p), ·) ≥ max_q A_s(p, q)

    def raw(self, p: np.ndarray, q: np.ndarray) -> np.ndarray:
        """A_s(p, q) for broadcastable flat index arrays p, q."""
        return sum(c * a[cell[p], cell[q]] for a, c, cell in self.levels)  # type: ignore[return-value]

    def entries(self, p: np.ndarray, q: np.ndarray) -> np.ndarray:
        """S(p, q) = ½ (A_s(p, q)/m(p) + A_s(q, p)/m(q))."""
        return 0.5 * (self.raw(p, q) / self.row_max[p] + self.raw(q, p) / self.row_max[q])

    def mean_column(self, b: np.ndarray) -> np.ndarray:
        """1/|b| Σ_{j ∈ b} S(·, j): (G²,).  Per level, the |b| key columns (and query rows) are
        averaged at the level's own resolution, then expanded to the grid."""
        b = np.asarray(b)
        inv_b = 1.0 / self.row_max[b]
        fwd = sum(c * a[:, cell[b]].mean(axis=1)[cell] for a, c, cell in self.levels)
        bwd = sum(c * (inv_b @ a[cell[b]] / len(b))[cell] for a, c, cell in self.levels)
        return 0.5 * (fwd / self.row_max + bwd)  # type: ignore[no-any-return]


def aggregate_self_attention(layers: Sequence[tuple[np.ndarray, float]], grid: int) -> SelfAffinity:
    """A_s of Eq. (2): the mean over all layers and steps, on the ``grid`` × ``grid`` grid.

    ``layers``: (mean self-attention (N_l, N_l) with N_l = res², weight) pairs, e.g. one per
    resolution holding the mean over its layers and steps, weighted by how many layer-steps it
    averages (the backbone's running sums divided by their counts).  A coarser map is brought to
    the grid by nearest-neighbour upsampling of both the query and the key index, the key mass
    split evenly over the (grid/res)² children, so every row still sums to 1.  ``grid`` must be a
    multiple of every res.  The row peaks m(p) (module docstring of :mod:`odbench.methods.attentioncut`) take one pass per level.
    """
    if not layers:
        raise ValueError("aggregate_self_attention: no self-attention layers given")
    total = sum(float(w) for _, w in layers)
    levels = []
    for a, w in layers:
        res = round(np.sqrt(a.shape[0]))
        if res * res != a.shape[0] or a.shape != (res * res, res * res) or grid % res:
            raise ValueError(f"self-attention of shape {a.shape} does not fit a {grid}² grid")
        coef = float(w) / total / (grid // res) ** 2
        levels.append((np.asarray(a, np.float32), coef, cell_index_hw(grid, grid, res)))
    peak = sum(c * a.max(axis=1)[cell] for a, c, cell in levels)
    return SelfAffinity(grid, tuple(levels), np.maximum(peak, 1e-30))


def resize_hw(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize of a (h', w') float map to (h, w) (half-pixel centres), float32."""
    import cv2

    if x.shape == (h, w):
        return x.astype(np.float32, copy=False)
    return cv2.resize(x.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)


def cell_index_hw(h: int, w: int, grid: int) -> np.ndarray:
    """Flat index on the grid × grid attention grid of the cell holding each pixel of h × w."""
    rows = np.minimum(np.arange(h) * grid // h, grid - 1)
    cols = np.minimum(np.arange(w) * grid // w, grid - 1)
    return (rows[:, None] * grid + cols[None, :]).ravel()


# --------------------------------------------------------------------------------------------
# The shared pipeline: image → CLIP class → DDIM inversion with capture → Eq. (2)
# --------------------------------------------------------------------------------------------


@dataclass
class Evidence:
    """What the diffusion backbone tells about one image, on the G × G attention grid."""

    label: str  # the CLIP-classified class ("" without the prior)
    a_c: np.ndarray  # (G, G) A_c of Eq. (2) in [0, 1]
    affinity: SelfAffinity  # A_s of Eq. (2)
    features: np.ndarray | None  # (G, G, C) Eq. (8) features, or None when not asked for


#: Card hyperparameters that configure the SD feature extractor (its option names).
EXTRACTOR_OPTIONS = {
    "use_prior": "prior",
    "num_steps": "num_steps",
    "prompt_template": "prompt_template",
    "dtype": "dtype",
    "clip_model": "clip_model",
    "clip_pretrained": "clip_pretrained",
}


class DiffusionMethod(Method):
    """Shared pipeline of the methods that read SD's attention / features of a real image.

    The SD feature extractor named by ``backbone`` (:mod:`odbench.features.sd`) classifies each
    image with the CLIP-classifiable prior (``use_prior = false``: Table 7 "w/o prior"),
    DDIM-inverts it under ``prompt_template`` (T = ``num_steps``, guidance 1) and captures
    cross-attention for the class tokens, self-attention and (if asked) features in the reverse
    pass; Eq. (2) aggregates them here.
    """

    needs_features = False

    def __init__(self, card: Any = None, device: str = "cpu", **overrides: Any) -> None:
        from odbench.cards import CardError
        from odbench.features import extractor_spec, extractors_of

        super().__init__(card, device, **overrides)
        name = str(self.hparams["backbone"])
        if extractor_spec(name).family != "sd":
            where = card.path if card is not None else type(self).__name__
            raise CardError(
                f"{where}: backbone {name!r} is not a diffusion extractor; use one of "
                + ", ".join(extractors_of("sd"))
            )
        self._extractor: Any = None

    @property
    def extractor(self) -> Any:
        if self._extractor is None:
            from odbench.features import load_extractor

            options = {opt: self.hparams[key] for key, opt in EXTRACTOR_OPTIONS.items()}
            self._extractor = load_extractor(
                str(self.hparams["backbone"]), device=self.device, **options
            )
        return self._extractor

    def evidence(self, images: list[np.ndarray]) -> list[Evidence]:
        """Classify, invert with capture, and aggregate (Eq. 2) every image."""
        ev = self.extractor.attention(images, features=self.needs_features)
        caps = ev.inversion.captures
        grid = max(caps.self_attn)
        top_k = int(self.hparams["top_k"])
        result = []
        for b, label in enumerate(ev.labels):
            cross, selfs = attention_maps(caps, b)
            a_c = aggregate_cross_attention(cross, top_k, grid)
            feats = _stack_features(caps.features, b, grid) if self.needs_features else None
            result.append(Evidence(label, a_c, aggregate_self_attention(selfs, grid), feats))
        return result


def attention_maps(
    captures: Any, b: int
) -> tuple[list[np.ndarray], list[tuple[np.ndarray, float]]]:
    """What Eq. (2) aggregates for image ``b`` of a backbone's ``Captures``: the class
    cross-attention map of every captured layer (each already the mean over the steps), and per
    map side the self-attention mean with its weight, the number of layers of that side (cross
    and self share the blocks).  Plain float32 arrays: the cut needs nothing else."""
    cross = [m[b].float().numpy() for m in captures.cross.values()]
    selfs = [
        (m[b].float().numpy(), float(len(captures.cross_layers_at(s)) or 1))
        for s, m in captures.self_attn.items()
    ]
    return cross, selfs


def resize_channels(x: np.ndarray, size: int, interpolation: int) -> np.ndarray:
    """Resize an (h, w, C) float map to (size, size, C) with OpenCV, any C (OpenCV refuses wide
    arrays, 256 channels already with OpenCV 5; SD blocks have up to 1,280): 128 at a time."""
    import cv2

    if x.shape[:2] == (size, size):
        return x.astype(np.float32, copy=False)
    parts = [
        cv2.resize(
            np.ascontiguousarray(x[..., i : i + 128], np.float32),
            (size, size),
            None,
            0,
            0,
            interpolation,
        )
        for i in range(0, x.shape[-1], 128)
    ]
    return np.concatenate([p.reshape(size, size, -1) for p in parts], axis=-1)


def _stack_features(features: dict[str, Any], b: int, grid: int) -> np.ndarray:
    """Eq. (8) features of image b: every block's (C, s, s) map resized bilinearly to the grid and
    L2-normalised per pixel (so each block weighs the same whatever its width), concatenated:
    (G, G, ΣC) float32."""
    import cv2

    parts = []
    for f in features.values():
        x = resize_channels(f[b].float().numpy().transpose(1, 2, 0), grid, cv2.INTER_LINEAR)
        parts.append(x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12))
    return np.concatenate(parts, axis=-1).astype(np.float32)


def upsample_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """A binary mask as a float32 map at (height, width): bilinear, so the 0.5 level set is a
    smooth boundary rather than the staircase of the coarse grid."""
    return np.clip(resize_hw(mask.astype(np.float32), height, width), 0.0, 1.0)
