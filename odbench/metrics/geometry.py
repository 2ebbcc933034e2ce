"""Shape geometry of masks: SC, PL and SD (DiffusionSeg Table 2, appendix 6.1.3, Eq. 12).

Following the paper (which follows [37]):

1. ``cv2.findContours(mask, RETR_EXTERNAL, CHAIN_APPROX_SIMPLE)``; the paper does not say which
   contour to keep when a mask has several, we keep the largest by ``cv2.contourArea`` (ties: the
   first returned);
2. normalise the polygon to the unit square in both directions by ITS OWN bounding box,
   ``p = (p - p_min) / (p_max - p_min)`` per axis ("p_min and p_max are the minimum and maximum
   coordinates among the set of points"); an axis of zero extent maps to 0;
3. Douglas-Peucker (``cv2.approxPolyDP``) with epsilon 0.01 on the closed polygon.

SC = number of vertices, PL = perimeter of the closed polygon, SD = mean over all unordered
pairs of shapes of the Chamfer distance (Eq. 12) between their vertex sets:
``d(S1, S2) = Σ_p min_q |p - q|² + Σ_q min_p |p - q|²``.

SD costs O(n² · K²) for n shapes of K vertices (each pair compares all vertex pairs).  Above
``max_shapes`` shapes a subset of ``max_shapes`` is drawn without replacement with
``numpy.random.default_rng(seed)``, so the number is reproducible.
"""

from __future__ import annotations

import numpy as np


def contour_polygon(mask: np.ndarray) -> np.ndarray:
    """Normalised, simplified outer polygon ``(K, 2) float64`` (x, y) in the unit square.

    An empty mask gives a ``(0, 2)`` array."""
    import cv2

    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    binary = (mask != 0).astype(np.uint8)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return np.zeros((0, 2), dtype=np.float64)
    areas = [cv2.contourArea(c) for c in contours]
    points = contours[int(np.argmax(areas))].reshape(-1, 2).astype(np.float64)
    lo, hi = points.min(axis=0), points.max(axis=0)
    extent = hi - lo
    points = (points - lo) / np.where(extent > 0, extent, 1.0)
    simplified = cv2.approxPolyDP(points.astype(np.float32).reshape(-1, 1, 2), 0.01, True)
    return simplified.reshape(-1, 2).astype(np.float64)


def polygon_length(polygon: np.ndarray) -> float:
    """Perimeter of a closed polygon ``(K, 2)`` (0 for fewer than 2 vertices)."""
    if len(polygon) < 2:
        return 0.0
    edges = np.roll(polygon, -1, axis=0) - polygon
    return float(np.sqrt((edges**2).sum(axis=1)).sum())


def shape_complexity(mask: np.ndarray) -> tuple[int, float]:
    """(SC, PL) of one mask: vertex count and perimeter of its normalised simplified polygon."""
    polygon = contour_polygon(mask)
    return len(polygon), polygon_length(polygon)


def chamfer_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Eq. 12: sum of squared nearest-neighbour distances from a to b plus from b to a."""
    d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2)
    return float(d2.min(axis=1).sum() + d2.min(axis=0).sum())


def shape_diversity(polygons: list[np.ndarray], max_shapes: int = 1000, seed: int = 0) -> float:
    """SD: mean Chamfer distance (Eq. 12) over all unordered pairs of the given polygons.

    Empty polygons are skipped.  With more than ``max_shapes`` polygons a seeded random subset
    of ``max_shapes`` is used.  Vectorised per shape: the distances from shape i's vertices to
    all vertices of all shapes are reduced per shape with ``np.minimum.reduceat``."""
    shapes = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in polygons]
    shapes = [p for p in shapes if len(p) > 0]
    if len(shapes) > max_shapes:
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(len(shapes), size=max_shapes, replace=False))
        shapes = [shapes[i] for i in keep]
    n = len(shapes)
    if n < 2:
        raise ValueError(f"shape diversity needs at least 2 non-empty shapes, got {n}")
    all_points = np.concatenate(shapes)
    starts = np.cumsum([0] + [len(p) for p in shapes[:-1]])
    # directed[i, j] = sum over p in S_i of min over q in S_j of |p - q|^2
    directed = np.empty((n, n), dtype=np.float64)
    xs, ys = np.ascontiguousarray(all_points[:, 0]), np.ascontiguousarray(all_points[:, 1])
    for i, shape in enumerate(shapes):
        d2 = shape[:, 0, None] - xs[None, :]  # (K_i, T) squared distances, in place
        d2 *= d2
        dy = shape[:, 1, None] - ys[None, :]
        dy *= dy
        d2 += dy
        directed[i] = np.minimum.reduceat(d2, starts, axis=1).sum(axis=0)
    chamfer = directed + directed.T
    upper = np.triu_indices(n, k=1)
    return float(chamfer[upper].mean())
