"""Feature extractors: one registry (``odbench list features``), one interface
(:class:`FeatureExtractor`), one weight resolver (:mod:`odbench.features.weights`).

    from odbench.features import load_extractor
    fx = load_extractor("dino-vits16", device="cuda")
    maps = fx.extract(images)        # images (B, 3, H, W) in [0, 1] -> [(B, C, H/s, W/s)]

Methods (TokenCut, LOST, AttentionCut, ...) depend on extractors; nothing here imports
``odbench.methods``.  Importing this package does not import torch.
"""

from __future__ import annotations

from typing import Any

from odbench.features.base import FeatureExtractor
from odbench.features.specs import ExtractorSpec

__all__ = ["ExtractorSpec", "FeatureExtractor", "extractor_spec", "load_extractor"]


def extractor_spec(name: str) -> ExtractorSpec:
    """The registry entry of ``name`` (unknown name: one line with "did you mean")."""
    from odbench.registry import FEATURES

    return FEATURES.get(name)  # type: ignore[no-any-return]


def load_extractor(name: str, *, device: Any = "cpu", **options: Any) -> FeatureExtractor:
    """Build the registered extractor ``name`` on ``device``.  ``options`` are the family's
    (e.g. ``prior=False`` for sd, ``weights="field"`` for dino-vits8, ``checkpoint=PATH``)."""
    from odbench.registry import import_target

    spec = extractor_spec(name)
    builder = import_target(spec.builder)
    return builder(spec, device=str(device), **options)  # type: ignore[no-any-return]
