"""Which images a report shows: the worst, the best and the most disagreeing, per method.

Pure functions over a (methods × images) score matrix (per-image IoU by default).  Images whose
score is not finite (NaN: an empty-vs-empty IoU under the ``tokencut`` / ``voynov`` protocols)
are never selected.  Ties keep the dataset order (stable sorts), so a report is deterministic.

Disagreement of method m on image i: ``d[m, i] = s[m, i] - mean over the other methods of
s[o, i]`` (signed: negative where m fails and the others succeed); the most disagreeing images of
m are those with the largest ``|d[m, i]|``.  With a single method there is nothing to disagree
with and the selection is empty.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KINDS = ("worst", "best", "disagree")


def worst(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` lowest finite scores, lowest first (ties: dataset order)."""
    finite = np.flatnonzero(np.isfinite(scores))
    order = np.argsort(scores[finite], kind="stable")
    return finite[order[:n]]


def best(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` highest finite scores, highest first (ties: dataset order)."""
    finite = np.flatnonzero(np.isfinite(scores))
    order = np.argsort(-scores[finite], kind="stable")
    return finite[order[:n]]


def disagreement(scores: np.ndarray) -> np.ndarray:
    """(M, N) signed disagreement ``s[m] - mean of s[o], o != m`` (NaN where any is NaN, and
    everywhere when M = 1)."""
    m = scores.shape[0]
    if m < 2:
        return np.full(scores.shape, np.nan)
    others = (scores.sum(axis=0, keepdims=True) - scores) / (m - 1)
    return scores - others


def most_disagreeing(scores: np.ndarray, method: int, n: int) -> np.ndarray:
    """Indices of the ``n`` images where ``method`` departs most from the other methods."""
    d = np.abs(disagreement(scores)[method])
    return best(d, n)


@dataclass(frozen=True)
class Selection:
    """One grid of the report: ``kind`` images of ``method`` (row indices into the ids)."""

    method: int
    kind: str
    indices: tuple[int, ...]


def select_all(scores: np.ndarray, n: int) -> list[Selection]:
    """The worst, best and most disagreeing ``n`` images of every method (in that order)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    out: list[Selection] = []
    for m in range(scores.shape[0]):
        picks = {
            "worst": worst(scores[m], n),
            "best": best(scores[m], n),
            "disagree": most_disagreeing(scores, m, n),
        }
        out.extend(Selection(m, k, tuple(int(i) for i in picks[k])) for k in KINDS)
    return out


def rank_images(scores: np.ndarray, kind: str, n: int) -> np.ndarray:
    """``n`` images for one figure over all methods: ``worst`` / ``best`` by the mean score
    across methods, ``disagree`` by the spread (max - min) across methods."""
    if kind == "worst":
        return worst(scores.mean(axis=0), n)
    if kind == "best":
        return best(scores.mean(axis=0), n)
    if kind == "disagree":
        if scores.shape[0] < 2:
            raise ValueError("disagreement needs at least two methods")
        return best(scores.max(axis=0) - scores.min(axis=0), n)
    raise ValueError(f"unknown selection {kind!r}; expected one of {', '.join(KINDS)}")
