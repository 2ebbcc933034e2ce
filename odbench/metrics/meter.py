"""The meters' one interface: per-image records summed into declared states.

A meter (:class:`~odbench.metrics.saliency.SaliencyMeter`, :class:`~odbench.metrics.sod.SodMeter`,
:class:`~odbench.metrics.sod.FamilyMeter`, :class:`~odbench.metrics.boxes.CorLocMeter`):

* ``score(...)`` computes one image's record and touches no state (pure: safe in worker
  processes and threads);
* ``add(record)`` adds a record to the states, in the caller's order (so the sums do not
  depend on how many workers scored);
* ``merge(other)`` adds another meter's states (shards, workers), here once for all meters;
* ``compute()`` reduces the states to the dataset's metrics (a dict).

A meter declares its states in :attr:`Meter.states`, as torchmetrics' ``add_state`` does: the
attributes that hold sums (numbers, numpy arrays, dicts of them, or other meters), everything
that ``merge`` adds and a fresh meter starts at zero.  What is not declared is configuration
(the protocol) and must be equal to merge.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np


class Meter:
    """Base of the meters: the declared :attr:`states` and the one :meth:`merge`."""

    #: The attributes that hold sums, added by :meth:`merge`.
    states: ClassVar[tuple[str, ...]] = ()

    def add(self, record: Any) -> None:
        """Add one image's record (from the meter's ``score``) to the states."""
        raise NotImplementedError(f"{type(self).__name__}.add")

    def compute(self) -> dict[str, Any]:
        """The dataset's metrics from the states."""
        raise NotImplementedError(f"{type(self).__name__}.compute")

    def merge(self, other: Any) -> Any:
        """Add ``other``'s states into this meter's (same class, same protocol); returns self."""
        if type(other) is not type(self):
            raise TypeError(f"cannot merge a {type(other).__name__} into a {type(self).__name__}")
        mine, theirs = getattr(self, "protocol", None), getattr(other, "protocol", None)
        if mine != theirs:
            raise ValueError(
                f"cannot merge meters of protocols {mine.name!r} and {theirs.name!r}"  # type: ignore[union-attr]
            )
        for name in self.states:
            setattr(self, name, _added(getattr(self, name), getattr(other, name)))
        return self


def _added(mine: Any, theirs: Any) -> Any:
    """``mine + theirs`` for one state: arrays in place, dicts key by key, meters merged."""
    if isinstance(mine, Meter):
        return mine.merge(theirs)
    if isinstance(mine, dict):
        for key, value in theirs.items():
            mine[key] = _added(mine[key], value)
        return mine
    if isinstance(mine, np.ndarray):
        mine += theirs
        return mine
    return mine + theirs
