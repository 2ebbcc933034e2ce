"""Scoring saved predictions: the library behind ``odbench score`` and :func:`odbench.score`.

* :mod:`odbench.scoring.meters`: the meters' one interface (``score`` / ``add`` / ``merge`` /
  ``compute`` over declared states) and :func:`make_meter`.
* :mod:`odbench.scoring.folders`: prediction and GT folders matched by file stem, decoded and
  scored by worker processes (:func:`score_methods`), and :func:`score_run` (``odbench.score``).
* :mod:`odbench.scoring.config`: ``score --config runs.toml``: loading and validating a config
  (every problem in one report), then scoring what changed into the results store.
* :mod:`odbench.scoring.boxes`: CorLoc of saved boxes (``score-boxes``).

Nothing here imports click or torch; errors are :class:`ScoringError` (an
:class:`~odbench.errors.OdbenchError`): one line naming the file and the fix.
"""

from __future__ import annotations

from odbench.errors import OdbenchError


class ScoringError(OdbenchError):
    """Inputs that cannot be scored (missing or unreadable files, sizes, a bad config); one
    line naming the file(s) and the fix."""
