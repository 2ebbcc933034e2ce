"""The method interface: RGB images in, soft foreground maps in [0, 1] at each image's size out.

A method is a class registered under a name (its card in ``methods/`` names the class with
``entry = "module:Class"``; third-party packages use the ``odbench.methods`` entry-point group or
:meth:`odbench.registry.Registry.register`).  Localization uses :meth:`Method.predict_boxes`,
which by default takes the tight box of the largest connected component of ``map > 0.5``; a
method that finds boxes itself (e.g. LOST) overrides it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from odbench.cards import MethodCard, method_card


class Method(ABC):
    """Base class of every method plugin.

    ``hparams`` starts from the card's ``[hyperparameters]`` table, overridden by keyword
    arguments to :func:`create_method`; unknown overrides are an error.
    """

    name: str = ""

    def __init__(
        self, card: MethodCard | None = None, device: str = "cpu", **overrides: Any
    ) -> None:
        self.card = card
        self.device = device
        self.hparams: dict[str, Any] = dict(card.hyperparameters) if card else {}
        unknown = sorted(set(overrides) - set(self.hparams))
        if card is not None and unknown:
            raise ValueError(
                f"{card.path}: unknown hyperparameter(s) {', '.join(unknown)}; "
                f"valid: {', '.join(sorted(self.hparams)) or 'none'}"
            )
        self.hparams.update(overrides)

    @abstractmethod
    def predict(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Soft foreground maps, float32 in [0, 1], one per (H, W, 3) uint8 RGB image, each at
        its image's size.  Images in a batch may differ in size."""

    def predict_boxes(self, images: list[np.ndarray], maps: list[np.ndarray]) -> list[np.ndarray]:
        """One box per image, ``[x1, y1, x2, y2]`` in continuous pixels (paper Table 1b: tight box
        of the largest connected component of the binarised map)."""
        from odbench.metrics.boxes import mask_to_box

        return [mask_to_box(m > 0.5) for m in maps]

    def describe(self) -> dict[str, Any]:
        """What goes into a results JSON to identify the method."""
        return {
            "name": self.name,
            "card_sha256": self.card.sha256 if self.card else None,
            "hyperparameters": self.hparams,
        }


def create_method(name: str, device: str = "cpu", **overrides: Any) -> Method:
    """Build a registered method by name, its hyperparameters from its card."""
    from odbench.registry import METHODS

    cls = METHODS.get(name)
    method = cls(method_card(name), device=device, **overrides)
    method.name = name
    return method  # type: ignore[no-any-return]
