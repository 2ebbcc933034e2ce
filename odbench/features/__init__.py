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

__all__ = [
    "ExtractorSpec",
    "FeatureExtractor",
    "extractor_spec",
    "extractors_of",
    "load_extractor",
    "tiny_extractor",
]


def extractor_spec(name: str) -> ExtractorSpec:
    """The registry entry of ``name`` (unknown name: one line with "did you mean")."""
    from odbench.registry import FEATURES

    return FEATURES.get(name)  # type: ignore[no-any-return]


def extractors_of(*families: str) -> list[str]:
    """The registered extractor names of ``families`` (sorted; imports no extractor code)."""
    from odbench.registry import FEATURES

    return [n for n in FEATURES.names() if FEATURES.get(n).family in families]


def tiny_extractor(family: str) -> str:
    """The tiny random extractor of ``family`` (``"dino"`` -> ``dino-tiny``): what tests and
    smoke runs use in place of the family's published extractors."""
    from odbench.errors import OdbenchError
    from odbench.registry import FEATURES

    tiny = [n for n in extractors_of(family) if FEATURES.get(n).random == "tiny"]
    if len(tiny) != 1:
        raise OdbenchError(
            f"extractor family {family!r} has {len(tiny)} tiny extractors ({', '.join(tiny)}); "
            "register exactly one with random='tiny'"
        )
    return tiny[0]


def load_extractor(name: str, *, device: Any = "cpu", **options: Any) -> FeatureExtractor:
    """Build the registered extractor ``name`` on ``device``.  ``options`` are the family's
    (e.g. ``prior=False`` for sd, ``weights="field"`` for dino-vits8, ``checkpoint=PATH``);
    they override the spec's own ``options`` (``sd-tiny``: ``num_steps=2``)."""
    from odbench.registry import import_target

    spec = extractor_spec(name)
    builder = import_target(spec.builder)
    return builder(spec, device=str(device), **(spec.options | options))  # type: ignore[no-any-return]
