"""Size agreement of prediction / GT (or image / GT) pairs, checked for a whole set up front.

One rule for every command (``score``, ``eval``, ``stats``):

* equal sizes: fine;
* a prediction of the same aspect ratio as its GT (up to one pixel of rounding) but another
  size is resized to the GT by protocols that resize (``odbench``'s bilinear rule), and is a
  mismatch under protocols that do not (``resize = "none"``);
* a different aspect ratio (e.g. a mask stored transposed, H×W where the image is W×H) is
  always a mismatch: resizing it would score a distorted map.

:func:`size_mismatches` returns every mismatch of a set so that a command can report them all at
once (:func:`describe_mismatches`: the count and the first few names) and refuse, or leave them
out and record their ids.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from odbench.metrics.protocols import Protocol

Shape = tuple[int, int]
MAX_NAMED = 3


@dataclass(frozen=True)
class SizeMismatch:
    """``id``'s ``first`` map (prediction or image) and ``gt`` mask differ, ``(H, W)`` each."""

    id: str
    first: Shape
    gt: Shape
    reason: str  # "transposed", "aspect ratio" or "size"

    def describe(self) -> str:
        (h, w), (gh, gw) = self.first, self.gt
        return f"{self.id} ({w}x{h} vs {gw}x{gh}, {self.reason})"


def same_aspect(a: Shape, b: Shape) -> bool:
    """Whether ``a`` scaled to ``b``'s width has ``b``'s height within one pixel of rounding
    (of either map): ``|h_a w_b - h_b w_a| <= max(w_a, w_b)``."""
    (ha, wa), (hb, wb) = a, b
    return abs(ha * wb - hb * wa) <= max(wa, wb)


def pair_problem(first: Shape, gt: Shape, resize: bool) -> str | None:
    """Why ``first`` cannot be scored against ``gt`` (None: it can, resized if needed)."""
    first, gt = (int(first[0]), int(first[1])), (int(gt[0]), int(gt[1]))
    if first == gt:
        return None
    if first == gt[::-1]:
        return "transposed"
    if not same_aspect(first, gt):
        return "aspect ratio"
    return None if resize else "size"


def size_mismatches(pairs: Iterable[tuple[str, Shape, Shape]], resize: bool) -> list[SizeMismatch]:
    """Every ``(id, first shape, GT shape)`` pair that :func:`pair_problem` refuses."""
    out = []
    for sample_id, first, gt in pairs:
        reason = pair_problem(first, gt, resize)
        if reason is not None:
            out.append(SizeMismatch(sample_id, tuple(first), tuple(gt), reason))  # type: ignore[arg-type]
    return out


def protocol_mismatches(
    pairs: Iterable[tuple[str, Shape, Shape]], protocol: Protocol
) -> list[SizeMismatch]:
    """:func:`size_mismatches` of prediction/GT pairs under ``protocol``: resizing protocols
    resize same-aspect predictions; centre-cropping ones also take a prediction already cropped
    to the GT's centred square."""
    resize = protocol.resize != "none"

    def effective(first: Shape, gt: Shape) -> Shape:
        if protocol.center_crop and tuple(first) != tuple(gt):
            side = min(gt)
            return (side, side)
        return gt

    return size_mismatches(((i, f, effective(f, g)) for i, f, g in pairs), resize)


def describe_mismatches(mismatches: list[SizeMismatch], total: int, what: str) -> str:
    """One line: ``63 of 300 prediction/GT pairs differ in size: a (..), b (..), c (..) and 60
    more``."""
    shown = ", ".join(m.describe() for m in mismatches[:MAX_NAMED])
    more = len(mismatches) - MAX_NAMED
    return f"{len(mismatches)} of {total} {what}/GT pairs differ in size: {shown}" + (
        f" and {more} more" if more > 0 else ""
    )
