"""odbench: benchmark and evaluation toolkit for unsupervised object discovery.

Start here: :func:`evaluate` and :func:`score` (the Python API), :mod:`odbench.metrics` (the metric core and
protocols), :mod:`odbench.registry` (methods, datasets, protocols by name),
:mod:`odbench.methods.center_prior` (the smallest method plugin) and :mod:`odbench.data.toy`
(the smallest dataset).  This module imports nothing heavy: ``odbench score`` must start without
torch, and ``import odbench`` stays cheap (the runner is imported when :func:`evaluate` is
called, the scoring library when :func:`score` is).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from odbench.data.base import Dataset
    from odbench.methods.base import Method
    from odbench.results import RunResult

__version__ = "0.1.0"
__all__ = ["__version__", "evaluate", "score"]


def evaluate(
    method: str | Method | Callable[[list[np.ndarray]], Sequence[np.ndarray]],
    dataset: str | Dataset,
    *,
    protocol: str | None = None,
    data_root: str | Path | None = None,
    limit: int | None = None,
    device: str = "auto",
    **options: Any,
) -> RunResult:
    """Run a method over a dataset and score it, as ``odbench eval`` does, without writing a
    results file (pass ``results_dir=...`` to write one).

    ``method``: a registered name (``"wctr"``), a :class:`~odbench.methods.base.Method`, or any
    callable taking a list of (H, W, 3) uint8 RGB images and returning one float map in [0, 1]
    per image at its size (a callable's maps are not cached).  ``dataset``: a registered name
    or a :class:`~odbench.data.base.Dataset`.  ``protocol``: a registered name; None, the default
    (:data:`odbench.metrics.protocols.DEFAULT_PROTOCOL`).  Returns a
    :class:`~odbench.results.RunResult`: ``.metrics["saliency"]`` holds ``acc``, ``iou``,
    ``max_fbeta``, ``mae``; ``.metrics["localization"]["corloc"]`` is there for box datasets;
    ``.records`` holds the per-image scores.  ``options``: ``overrides`` (dict), ``batch_size``,
    ``workers``, ``cache_dir``, ``results_dir``, ``save_preds``, ``show_progress``,
    ``metrics_set`` (as ``--metrics``: ``"all"`` or names such as ``"s_measure,mae"`` add the
    salient-object family to ``.metrics["saliency"]``; an unknown name is a ``ValueError``
    listing the valid ones), ``on_error`` (``"error"``: an image the method fails on stops the
    run with an ``odbench.phases.ImageError`` naming it; ``"skip"``: it is left out, listed
    with the error in ``.dataset["failed_ids"]``)."""
    from odbench.metrics.protocols import DEFAULT_PROTOCOL
    from odbench.runner import run_eval

    options.setdefault("results_dir", None)
    root = Path(data_root) if data_root is not None else None
    return run_eval(
        method,
        dataset,
        protocol or DEFAULT_PROTOCOL,
        device=device,
        data_root=root,
        limit=limit,
        **options,
    )


def score(
    pred_dir: str | Path,
    gt_dir: str | Path,
    *,
    metrics: str = "basic",
    protocol: str | None = None,
    **options: Any,
) -> RunResult:
    """Score saved prediction maps against GT masks matched by file stem, as ``odbench score``
    does (the same numbers), without writing anything; torch is not imported.

    ``metrics``: ``"basic"`` (Acc, IoU, maxFβ, MAE), ``"all"`` (the salient-object family
    too) or names such as ``"s_measure,mae"``; ``protocol``: a registered name, None the
    default (:data:`odbench.metrics.protocols.DEFAULT_PROTOCOL`).  Returns a :class:`~odbench.results.RunResult`:
    ``.metrics["saliency"]`` holds the values ``score --json`` prints, ``.records`` the
    per-image scores, ``.dataset["skipped_ids"]`` the pairs left out.  ``options``:
    ``method`` and ``dataset`` (the run's names; default: the folders'), ``subset_of_gt``,
    ``on_mismatch`` (``"error"`` or ``"skip"``), ``workers``, ``show_progress``.  Unusable
    inputs raise :class:`~odbench.scoring.ScoringError` (an :class:`~odbench.errors.OdbenchError`)."""
    from odbench.metrics.protocols import DEFAULT_PROTOCOL
    from odbench.scoring.folders import score_run

    protocol = protocol or DEFAULT_PROTOCOL
    return score_run(pred_dir, gt_dir, metrics=metrics, protocol=protocol, **options)
