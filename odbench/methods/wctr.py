"""``wctr``: saliency optimisation from robust background detection (Zhu, Liang, Wei, Sun, CVPR 2014).

The paper's pipeline, one function per step, all on the superpixel graph:

1. SLIC superpixels; mean CIE-Lab colour and mean normalised position of each (Sec. 2.2).
2. Undirected graph linking adjacent superpixels, plus every pair of image-boundary superpixels
   (Sec. 2.2), edge weight ``d_app`` = Euclidean distance of mean Lab colours.
3. Geodesic distance ``d_geo(p, q)`` = shortest-path length on that graph (Eq. 2); spanning area
   ``Area(p) = Σ_i exp(-d_geo²(p, p_i) / 2σ_clr²)`` (Eq. 3); length along the boundary
   ``Len_bnd(p) = Σ_i exp(-d_geo²(p, p_i) / 2σ_clr²) δ(p_i ∈ Bnd)`` (Eq. 4); boundary connectivity
   ``BndCon(p) = Len_bnd(p) / sqrt(Area(p))`` (Eq. 1 / 5).
4. Background probability ``w_bg(p) = 1 - exp(-BndCon²(p) / 2σ_bndCon²)`` (Eq. 6).
5. Background-weighted contrast ``wCtr(p) = Σ_i d_app(p, p_i) w_spa(p, p_i) w_bg(p_i)`` with
   ``w_spa = exp(-d_spa² / 2σ_spa²)`` (Eq. 7 / 8).
6. Optimisation (Eq. 9): minimise ``Σ_i w_bg_i s_i² + Σ_i w_fg_i (s_i - 1)² + Σ_ij w_ij (s_i - s_j)²``
   with ``w_fg = wCtr`` (rescaled to [0, 1]) and ``w_ij = exp(-d_app²(p_i, p_j) / 2σ_clr²) + μ`` on
   adjacent superpixels.  Setting the gradient to zero gives the linear system
   ``(diag(w_bg) + diag(w_fg) + L) s = w_fg`` with ``L`` the graph Laplacian of ``w_ij`` (each
   unordered pair counted once), solved exactly.

Paper values: σ_clr = 10, σ_bndCon = 1, σ_spa = 0.25, μ = 0.1.  The paper's text does not give the
number of superpixels or SLIC's compactness; we take them from the authors' released code (600
pixels per superpixel, i.e. ~200 on ECSSD's 400 × 300 images, compactness 20).

The published numbers were made with the authors' released MATLAB code (W. Zhu, 2014: ``GetRBD``,
``EstimateDynamicParas``, ``BoundaryConnectivity``, ``EstimateBgProb``, ``CalWeightedContrast``,
``SaliencyOptimization``), which departs from the paper's equations; read, not copied, and
reimplemented here as options (the ``wctr`` card uses them, ``wctr.paper`` keeps the equations):

* ``bg_weight`` (5): weight of the background term of Eq. 9;
* ``fg_otsu``: wCtr (rescaled to [0, 1]) set to 0 below its Otsu threshold;
* ``sigma_spa`` 0.4 instead of 0.25;
* ``released_graph`` (:func:`released_parameters`, :func:`released_smoothness`): geodesic edge
  weights ``max(0, d_app - clip)`` with ``clip`` the mean over superpixels of the smallest
  colour distance to a one- or two-ring neighbour; σ for Eq. 3-4 = clamp(min(10, 3·m1,
  top/10), 5, ·) and σ for the smoothness weights = min(3·m1, top/5, 20), with m1 the mean
  smallest distance to an adjacent superpixel and top the mean of the largest 1% of adjacent
  distances; smoothness weights on two-ring neighbours and between boundary superpixels
  (μ still on adjacent pairs only); every Gaussian weight cut to 0 beyond 3σ; and ``w_bg`` set
  to 1000 where ``BndCon > 3`` (very confident background).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

from odbench.methods.base import Method

# A zero edge weight means "no edge" to scipy.sparse.csgraph; identical neighbouring colours must
# stay connected, so every edge gets this much on top of its colour distance.
_EDGE_FLOOR = 1e-9


@dataclass(frozen=True)
class SuperpixelGraph:
    """The image abstracted as superpixels (Sec. 2.2).

    ``labels``: (H, W) int superpixel index per pixel, 0..n-1; ``lab``: (n, 3) mean CIE-Lab colour;
    ``pos``: (n, 2) mean (y, x) position divided by (H, W); ``adjacent``: (n, n) bool, 4-connected
    neighbours; ``boundary``: (n,) bool, touches the image border."""

    labels: np.ndarray
    lab: np.ndarray
    pos: np.ndarray
    adjacent: np.ndarray
    boundary: np.ndarray

    @property
    def n(self) -> int:
        return int(self.lab.shape[0])


# sRGB (D65) -> CIE-Lab, the constants of IEC 61966-2-1 and CIE 15 (as skimage.color.rgb2lab).
_SRGB_TO_XYZ = np.array(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]]
)
_D65_WHITE = np.array([0.95047, 1.0, 1.08883])


def rgb_to_lab(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 sRGB -> float32 CIE-Lab (D65): the sRGB gamma via a 256-entry table,
    then XYZ and the CIE cube-root law."""
    v = np.arange(256) / 255.0
    linear = np.where(v > 0.04045, ((v + 0.055) / 1.055) ** 2.4, v / 12.92).astype(np.float32)
    xyz = linear[image] @ (_SRGB_TO_XYZ / _D65_WHITE[:, None]).T.astype(np.float32)
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    return np.stack(
        [
            116.0 * f[..., 1] - 16.0,
            500.0 * (f[..., 0] - f[..., 1]),
            200.0 * (f[..., 1] - f[..., 2]),
        ],
        axis=-1,
    ).astype(np.float32)


def _neighbour_pairs(labels: np.ndarray) -> np.ndarray:
    """(M, 2) label pairs of 4-adjacent pixels with different labels (each pair once per edge)."""
    out = []
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])):
        differ = a != b
        out.append(np.stack([a[differ], b[differ]], 1))
    return np.concatenate(out)


def grid_step(pixels: int, n_segments: int) -> int:
    """SLIC's grid interval ``S`` for ``n_segments`` superpixels, as the reference code computes
    it: superpixel size ``int(0.5 + pixels / n_segments)``, ``S = int(sqrt(size) + 0.5)``."""
    return max(1, int(np.sqrt(int(0.5 + pixels / n_segments)) + 0.5))


def _small_piece(pixels: int, step: int) -> int:
    """The largest piece :func:`enforce_connectivity` merges: a quarter of the expected
    superpixel size, as the reference code computes it (``K = pixels // S²`` seeds,
    ``SUPSZ = pixels // K``, ``SUPSZ >> 2``)."""
    return (pixels // max(1, pixels // (step * step))) >> 2


def superpixel_bound(pixels: int, step: int) -> int:
    """The most superpixels :func:`enforce_connectivity` returns for an image of ``pixels``
    pixels and grid interval ``step``: one per piece of more than :func:`_small_piece` pixels,
    so at most ``pixels / (S² / 4)``, about 4 × the requested number."""
    return max(1, pixels // (_small_piece(pixels, step) + 1))


def enforce_connectivity(labels: np.ndarray, step: int) -> np.ndarray:
    """Relabel an over-segmentation so that every segment is 4-connected, as the post-processing
    of the authors' SLIC does (Achanta et al. 2012, Sec. 3; ``EnforceLabelConnectivity`` of
    their code, which wCtr's released code calls), for grid interval ``step``: the 4-connected
    pieces are visited once, in raster order of their first pixel; a piece of at most
    :func:`_small_piece` pixels (a quarter of the expected superpixel size) joins the segment of
    a visited pixel next to its first pixel (the last visited of left, up, right, down; the
    very first piece has none and keeps label 0, shared with the next segment); every larger
    piece is a new segment.

    Every segment holds a piece larger than a quarter of the expected size, so the count is
    bounded by :func:`superpixel_bound` however textured the image (the old clean-up, rounds of
    small-into-large merges, left 47,137 superpixels on a textured COCO photo).  Returns
    labels 0..n-1."""
    from skimage.measure import label as connected

    h, w = labels.shape
    piece = connected(labels, connectivity=1, background=-1) - 1
    flat = piece.ravel()
    n = int(flat.max()) + 1
    first = np.unique(flat, return_index=True)[1]  # first pixel (raster order) of each piece
    y, x = np.divmod(first, w)
    neighbour = np.full(n, -1)
    for dy, dx in ((0, -1), (-1, 0), (0, 1), (1, 0)):  # the reference's order; the last wins
        yy, xx = y + dy, x + dx
        inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        other = np.full(n, -1)
        other[inside] = piece[yy[inside], xx[inside]]
        visited = inside & (first[np.maximum(other, 0)] < first)
        neighbour = np.where(visited, other, neighbour)
    small = np.bincount(flat, minlength=n) <= _small_piece(labels.size, step)
    target = np.zeros(n, dtype=np.int64)
    count = 0
    for p in np.argsort(first).tolist():
        if not small[p]:
            target[p] = count
            count += 1
        elif neighbour[p] >= 0:
            target[p] = target[neighbour[p]]
    return np.asarray(target[piece])


def build_graph(
    image: np.ndarray, pixels_per_superpixel: int, compactness: float
) -> SuperpixelGraph:
    """SLIC superpixels (in CIE-Lab) of an (H, W, 3) uint8 RGB image and their mean colour,
    position and adjacency."""
    from skimage.segmentation import slic

    h, w = image.shape[:2]
    lab_image = rgb_to_lab(image)
    n_segments = max(2, round(h * w / pixels_per_superpixel))
    # skimage stretches any input to [0, 1] before clustering; dividing the compactness by the
    # same range keeps SLIC's distance (Lab units vs spatial units) what it is on raw Lab.
    span = float(lab_image.max() - lab_image.min()) or 1.0
    raw = slic(
        lab_image,
        n_segments=n_segments,
        compactness=compactness / span,
        convert2lab=False,
        enforce_connectivity=False,
        start_label=0,
        channel_axis=-1,
    )
    labels = enforce_connectivity(raw, grid_step(h * w, n_segments))
    n = int(labels.max()) + 1
    flat = labels.ravel()
    count = np.bincount(flat, minlength=n).astype(np.float64)
    lab = np.stack(
        [np.bincount(flat, lab_image[..., c].ravel(), minlength=n) / count for c in range(3)], 1
    )
    ys, xs = np.mgrid[0:h, 0:w]
    pos = np.stack(
        [
            np.bincount(flat, (ys.ravel() + 0.5) / h, minlength=n) / count,
            np.bincount(flat, (xs.ravel() + 0.5) / w, minlength=n) / count,
        ],
        1,
    )
    pairs = _neighbour_pairs(labels)
    adjacent = np.zeros((n, n), dtype=bool)
    adjacent[pairs[:, 0], pairs[:, 1]] = True
    adjacent |= adjacent.T
    boundary = np.zeros(n, dtype=bool)
    boundary[np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])] = True
    return SuperpixelGraph(labels, lab, pos, adjacent, boundary)


def pairwise_distance(x: np.ndarray) -> np.ndarray:
    """(n, n) Euclidean distances between the rows of ``x``."""
    diff = x[:, None, :] - x[None, :, :]
    return np.sqrt(np.sum(diff * diff, axis=-1))


def geodesic_distance(
    d_app: np.ndarray, adjacent: np.ndarray, boundary: np.ndarray, clip: float = 0.0
) -> np.ndarray:
    """Eq. 2: shortest-path lengths over adjacent superpixels, with all boundary superpixels
    linked to each other, edge length ``d_app`` (released code: ``max(0, d_app - clip)``);
    Dijkstra from every node at once."""
    links = adjacent | (boundary[:, None] & boundary[None, :])
    np.fill_diagonal(links, False)
    rows, cols = np.nonzero(np.triu(links))
    lengths = np.maximum(d_app[rows, cols] - clip, 0.0) + _EDGE_FLOOR
    graph = csr_matrix((lengths, (rows, cols)), shape=d_app.shape, dtype=np.float64)
    return np.asarray(dijkstra(graph, directed=False))


def gaussian_weight(d: np.ndarray, sigma: float, cutoff: bool = False) -> np.ndarray:
    """``exp(-d² / 2σ²)``; with ``cutoff`` (released code) 0 where ``d > 3σ``."""
    w = np.exp(-(d**2) / (2.0 * sigma**2))
    return np.where(d > 3.0 * sigma, 0.0, w) if cutoff else w


def two_ring(adjacent: np.ndarray) -> np.ndarray:
    """Superpixels adjacent or sharing an adjacent superpixel (diagonal excluded)."""
    a = adjacent.astype(np.int64)
    out = (a @ a + a) > 0
    np.fill_diagonal(out, False)
    return np.asarray(out)


def _mean_min(d_app: np.ndarray, links: np.ndarray) -> float:
    masked = np.where(links, d_app, np.inf)
    mins = masked.min(axis=1)
    return float(mins[np.isfinite(mins)].mean())


def released_parameters(d_app: np.ndarray, adjacent: np.ndarray) -> tuple[float, float, float]:
    """(clip, σ for Eq. 3-4, σ for the smoothness weights) from the colour distances between
    neighbours, as the authors' released code estimates them per image (see the module
    docstring)."""
    m1 = _mean_min(d_app, adjacent)
    clip = _mean_min(d_app, two_ring(adjacent))
    pairs = np.sort(d_app[np.triu(adjacent, 1)])[::-1]
    top = float(pairs[: max(1, round(0.01 * len(pairs)))].mean())
    sigma_geo = max(min(10.0, 3.0 * m1, top / 10.0), 5.0)
    sigma_nei = min(3.0 * m1, 0.2 * top, 20.0)
    return clip, sigma_geo, sigma_nei


def boundary_connectivity(
    d_geo: np.ndarray, boundary: np.ndarray, sigma_clr: float, cutoff: bool = False
) -> np.ndarray:
    """Eq. 1, 3, 4: ``BndCon = Len_bnd / sqrt(Area)`` with soft area and soft boundary length."""
    similarity = gaussian_weight(d_geo, sigma_clr, cutoff)
    area = similarity.sum(axis=1)
    length = similarity[:, boundary].sum(axis=1)
    return np.asarray(length / np.sqrt(area))


def background_probability(bnd_con: np.ndarray, sigma_bndcon: float) -> np.ndarray:
    """Eq. 6: ``w_bg = 1 - exp(-BndCon² / 2σ_bndCon²)``."""
    return np.asarray(1.0 - np.exp(-(bnd_con**2) / (2.0 * sigma_bndcon**2)))


def weighted_contrast(
    d_app: np.ndarray, pos: np.ndarray, w_bg: np.ndarray, sigma_spa: float, cutoff: bool = False
) -> np.ndarray:
    """Eq. 7-8: ``wCtr(p) = Σ_i d_app(p, p_i) w_spa(p, p_i) w_bg(p_i)``."""
    w_spa = gaussian_weight(pairwise_distance(pos), sigma_spa, cutoff)
    return np.asarray((d_app * w_spa) @ w_bg)


def optimise_saliency(
    w_bg: np.ndarray,
    w_fg: np.ndarray,
    d_app: np.ndarray,
    adjacent: np.ndarray,
    sigma_clr: float,
    mu: float,
    smooth_links: np.ndarray | None = None,
    cutoff: bool = False,
) -> np.ndarray:
    """Eq. 9 solved exactly: the minimiser of
    ``Σ w_bg_i s_i² + Σ w_fg_i (s_i - 1)² + Σ_{i<j} w_ij (s_i - s_j)²`` solves
    ``(diag(w_bg) + diag(w_fg) + L) s = w_fg``, ``L = diag(W 1) - W``,
    ``w_ij = exp(-d_app² / 2σ_clr²) [i, j linked] + μ [i, j adjacent]``; the paper links
    adjacent superpixels (``smooth_links`` None), the released code two-ring neighbours and
    boundary pairs, with the 3σ ``cutoff``.  ``L`` is positive semi-definite, so the system is
    non-singular whenever some ``w_bg_i + w_fg_i > 0`` in every connected component."""
    links = adjacent if smooth_links is None else smooth_links
    smooth = np.where(links, gaussian_weight(d_app, sigma_clr, cutoff), 0.0)
    weights = smooth + np.where(adjacent, mu, 0.0)
    np.fill_diagonal(weights, 0.0)
    laplacian = np.diag(weights.sum(axis=1)) - weights
    system = laplacian + np.diag(w_bg + w_fg)
    return np.asarray(np.linalg.solve(system, w_fg))


def rescale(x: np.ndarray) -> np.ndarray:
    """Min-max rescaling to [0, 1]; a constant vector maps to zeros."""
    span = float(x.max() - x.min()) if x.size else 0.0
    return np.zeros_like(x) if span <= 0.0 else (x - x.min()) / span


def wctr_saliency(
    image: np.ndarray,
    pixels_per_superpixel: int = 600,
    compactness: float = 20.0,
    sigma_clr: float = 10.0,
    sigma_bndcon: float = 1.0,
    sigma_spa: float = 0.25,
    mu: float = 0.1,
    bg_weight: float = 1.0,
    fg_otsu: bool = False,
    released_graph: bool = False,
) -> np.ndarray:
    """Optimised wCtr saliency of one (H, W, 3) uint8 RGB image: float32 (H, W) in [0, 1]
    (min-max rescaled, as the authors' released maps are).

    Defaults = the paper's equations.  ``bg_weight`` multiplies the background term of Eq. 9,
    ``fg_otsu`` zeroes the foreground weights below their Otsu threshold and ``released_graph``
    switches on the released code's graph details (module docstring; ``sigma_clr`` is then
    estimated per image and unused): none is in the paper; the released code uses 5, on, on."""
    g = build_graph(image, pixels_per_superpixel, compactness)
    if g.n < 2:
        return np.zeros(image.shape[:2], dtype=np.float32)
    d_app = pairwise_distance(g.lab)
    clip, sigma_geo, sigma_nei, links = 0.0, sigma_clr, sigma_clr, None
    if released_graph:
        clip, sigma_geo, sigma_nei = released_parameters(d_app, g.adjacent)
        links = two_ring(g.adjacent) | (g.boundary[:, None] & g.boundary[None, :])
        np.fill_diagonal(links, False)
    d_geo = geodesic_distance(d_app, g.adjacent, g.boundary, clip)
    bnd_con = boundary_connectivity(d_geo, g.boundary, sigma_geo, cutoff=released_graph)
    w_bg = background_probability(bnd_con, sigma_bndcon)
    w_fg = rescale(weighted_contrast(d_app, g.pos, w_bg, sigma_spa, cutoff=released_graph))
    if fg_otsu and np.ptp(w_fg) > 0:
        from skimage.filters import threshold_otsu

        w_fg = np.where(w_fg < threshold_otsu(w_fg), 0.0, w_fg)
    bg_term = bg_weight * (np.where(bnd_con > 3.0, 1000.0, w_bg) if released_graph else w_bg)
    s = optimise_saliency(bg_term, w_fg, d_app, g.adjacent, sigma_nei, mu, links, released_graph)
    return rescale(s)[g.labels].astype(np.float32)


class WCtr(Method):
    """Zhu et al. 2014 (the optimised "wCtr*" map); weight-free, CPU."""

    in_workers = True

    def predict(self, images: list[np.ndarray]) -> list[np.ndarray]:
        hp = self.hparams
        return [
            wctr_saliency(
                im,
                pixels_per_superpixel=int(hp.get("pixels_per_superpixel", 600)),
                compactness=float(hp.get("compactness", 20.0)),
                sigma_clr=float(hp.get("sigma_clr", 10.0)),
                sigma_bndcon=float(hp.get("sigma_bndcon", 1.0)),
                sigma_spa=float(hp.get("sigma_spa", 0.25)),
                mu=float(hp.get("mu", 0.1)),
                bg_weight=float(hp.get("bg_weight", 1.0)),
                fg_otsu=bool(hp.get("fg_otsu", False)),
                released_graph=bool(hp.get("released_graph", False)),
            )
            for im in images
        ]
