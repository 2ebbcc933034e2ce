"""Size agreement of prediction / GT (or image / GT) pairs, checked for a whole set up front.

One rule for every command (``score``, ``eval``, ``stats``):

* equal sizes: fine;
* a prediction of the same aspect ratio as its GT (up to one pixel of rounding) but another
  size is resized to the GT by protocols that resize (``odbench``'s bilinear rule), and is a
  mismatch under protocols that do not (``resize = "none"``);
* a different aspect ratio (e.g. a mask stored transposed, H×W where the image is W×H) is
  always a mismatch: resizing it would score a distorted map.

:func:`size_mismatches` returns every mismatch of a set so that a command can report them all at
once (:func:`describe_mismatches`: the count and every pair, a long list in a file named in the
line) and refuse, or leave them out and record their ids.  A mismatch is described by the files
as stored, also under protocols that score a centre crop of the GT.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from dataclasses import dataclass

from odbench.metrics.protocols import Protocol

Shape = tuple[int, int]
MAX_NAMED = 3  # pairs named in the line when there are more than MAX_INLINE
MAX_INLINE = 10  # up to this many, every pair is named in the line


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
    to the GT's centred square.  Each mismatch gives the GT's size as stored (not the centre
    square a cropping protocol scores) and the reason between the stored files."""
    resize = protocol.resize != "none"
    out = []
    for sample_id, first, gt in pairs:
        first, gt = (int(first[0]), int(first[1])), (int(gt[0]), int(gt[1]))
        scored = gt
        if protocol.center_crop and first != gt:
            side = min(gt)
            scored = (side, side)
        if pair_problem(first, scored, resize) is None:
            continue
        # e.g. a transposed mask under voynov: "transposed", not "aspect ratio" against the crop
        reason = pair_problem(first, gt, resize=False) or "size"
        out.append(SizeMismatch(sample_id, first, gt, reason))
    return out


def describe_mismatches(mismatches: list[SizeMismatch], total: int, what: str) -> str:
    """One line: ``3 of 300 prediction/GT pairs differ in size: a (..), b (..), c (..)``, every
    pair named up to :data:`MAX_INLINE`; a longer list is written to a file in the temporary
    folder (one pair a line) and the line names the first few and the file:
    ``63 of 300 ...: a (..), b (..), c (..) and 60 more, all listed in /tmp/...txt``."""
    head = f"{len(mismatches)} of {total} {what}/GT pairs differ in size: "
    if len(mismatches) <= MAX_INLINE:
        return head + ", ".join(m.describe() for m in mismatches)
    with tempfile.NamedTemporaryFile(
        "w", prefix="odbench-size-mismatches-", suffix=".txt", delete=False, encoding="utf-8"
    ) as listing:
        listing.write(f"# {what}/GT pairs that differ in size: id ({what} WxH vs GT WxH, why)\n")
        listing.writelines(m.describe() + "\n" for m in mismatches)
    shown = ", ".join(m.describe() for m in mismatches[:MAX_NAMED])
    more = len(mismatches) - MAX_NAMED
    return head + f"{shown} and {more} more, all listed in {listing.name}"
