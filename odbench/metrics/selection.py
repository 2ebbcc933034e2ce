"""Which metrics a command computes and shows: ``--metrics basic | all | NAME,NAME,...``.

One parser for ``odbench score`` (and ``metrics = ...`` in a ``score --config`` file),
``odbench eval`` and ``odbench leaderboard --format`` (whose names also include ``corloc``):

* ``basic``: Acc, IoU, maxFβ, MAE (the catalog's metrics of the ``saliency`` meter,
  :class:`~odbench.metrics.saliency.SaliencyMeter`);
* ``all``: those and the salient-object family (the ``sod`` meter's,
  :class:`~odbench.metrics.sod.SodMeter`) with its curves;
* a comma-separated list of metric names (``s_measure,weighted_fbeta,mae``): those only
  (``basic`` and ``all`` may be listed too: ``basic,s_measure``).  The family is computed when
  one of its names is listed (one histogram pass serves them all); the results store keeps
  everything computed, the output shows the names listed.

An unknown name is one error line listing the valid ones.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass

from odbench.errors import OdbenchError
from odbench.metrics.catalog import METRICS, keys

BASIC_KEYS = keys(meter="saliency")
#: Every metric ``score`` and ``eval`` can compute (result keys), in output order.
SCORE_KEYS = keys(task="saliency")


class MetricsSpecError(OdbenchError, ValueError):
    """An unknown or empty ``--metrics`` value; the message is one line."""


@dataclass(frozen=True)
class MetricSelection:
    """``tier``: what is computed (``basic`` or ``all``); ``keys``: what is shown, in order."""

    tier: str
    keys: tuple[str, ...]
    spec: str  # as given, normalised: "basic", "all" or "a,b,c"

    def shown(self, result: dict[str, object]) -> dict[str, object]:
        """``result`` without the computed metrics that were not asked for, nor what only
        serves them (``best_threshold`` and ``fbeta_curve`` go with ``max_fbeta``; ``curves``
        with ``all``); counts, protocol and ids are kept."""
        dropped = {k for k in SCORE_KEYS if k not in self.keys}
        if "max_fbeta" not in self.keys:
            dropped |= {"best_threshold", "fbeta_curve"}
        if self.spec != "all":
            dropped.add("curves")
        return {k: v for k, v in result.items() if k not in dropped}


def _suggest(name: str, valid: Sequence[str]) -> str | None:
    """The valid name ``name`` was probably meant as: a close spelling, else the one name that
    it abbreviates (``wf`` -> ``weighted_fbeta``, ``s`` -> ``s_measure``)."""
    close = difflib.get_close_matches(name, valid, n=1)
    if close:
        return close[0]
    short = [v for v in valid if v.startswith(name) or "".join(w[0] for w in v.split("_")) == name]
    return short[0] if len(short) == 1 else None


def parse_metrics(
    spec: str | Sequence[str] | MetricSelection | None,
    option: str = "--metrics",
    valid: Sequence[str] = SCORE_KEYS,
    default: str = "basic",
) -> MetricSelection:
    """``basic`` / ``all`` / a comma-separated list (or a list of names) -> the selection;
    names are case-insensitive, blanks and repeats ignored.  ``valid``: the names allowed
    (``all`` selects those of them that ``score`` computes, plus the rest).  A selection
    parsed already is returned as it is: a command parses its option once and hands the
    selection on (``odbench eval`` to the runner)."""
    if isinstance(spec, MetricSelection):
        return spec
    if spec is None:
        spec = default
    items = spec.split(",") if isinstance(spec, str) else [str(s) for s in spec]
    typed = {s.strip().lower(): s.strip() for s in items if s.strip()}  # as typed, for errors
    shown_spec = spec if isinstance(spec, str) else ",".join(str(s) for s in spec)
    groups = {"basic": BASIC_KEYS, "all": tuple(valid)}
    canonical = {v.lower(): v for v in valid}  # box_AP: keys need not be lower case
    names = [canonical.get(n, n) for n in typed]
    typed.update({canonical[n]: t for n, t in typed.items() if n in canonical})
    if names in (["basic"], ["all"]):
        return MetricSelection(names[0], groups[names[0]], names[0])
    choices = f"valid: basic, all, or a comma-separated list of {', '.join(valid)}"
    if not names:
        raise MetricsSpecError(f"{option} {shown_spec!r}: no metric named; {choices}")
    unknown = [n for n in names if n not in valid and n not in groups]
    if unknown:
        hints = []
        for n in unknown:
            close = _suggest(n, [*valid, *groups])
            hints.append(f"{typed[n]} (did you mean {close}?)" if close else typed[n])
        what = "metric" if len(unknown) == 1 else "metrics"
        raise MetricsSpecError(
            f"{option} {shown_spec}: unknown {what} {', '.join(hints)}; {choices}"
        )
    names = list(dict.fromkeys(k for n in names for k in groups.get(n, (n,))))
    tier = "all" if any(METRICS[n].meter == "sod" for n in names) else "basic"
    return MetricSelection(tier, tuple(names), ",".join(names))
