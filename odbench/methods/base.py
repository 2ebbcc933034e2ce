"""The method interface: RGB images in, soft foreground maps in [0, 1] at each image's size out.

A method is a class registered under a name (its card in ``methods/`` names the class with
``entry = "module:Class"``; third-party packages use the ``odbench.methods`` entry-point group or
:meth:`odbench.registry.Registry.register`).  Localization uses :meth:`Method.predict_boxes`,
which by default takes the tight box of the largest connected component of ``map > 0.5``; a
method that finds boxes itself (e.g. LOST) overrides it.  Multi-object discovery (the
``discovery`` task, class-agnostic COCO AP / AR) uses :meth:`Method.predict_instances`: by
default one instance per image from the method's own single-object outputs (see there), so every
method has a discovery row; a multi-object method (MaskCut) overrides it.

A method whose maps need CPU-bound per-image post-processing (min-cut, CRF, bilateral solver) may
split :meth:`Method.predict` into :meth:`Method.forward` (the device part, one intermediate per
image) and the static :meth:`Method.postprocess` (intermediate -> map); the runner then runs
``postprocess`` in a pool of worker processes so the device never waits on it.  ``predict`` must
stay equivalent to ``postprocess`` applied to ``forward``'s output (for callers outside the
runner).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from odbench.cards import MethodCard, method_card
from odbench.errors import OdbenchError
from odbench.metrics.instances import Instances


class HyperparameterError(OdbenchError, ValueError):
    """An override the method's card does not allow; one line naming the card."""


def _same_kind(default: Any, value: Any) -> bool:
    """Whether an override has the type of the card's default: bool, int, float (an int is
    fine too), str or list; other defaults accept anything."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) == isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, int | float)
    for kind in (int, str, list):
        if isinstance(default, kind):
            return isinstance(value, kind)
    return True


def check_overrides(card: MethodCard, overrides: dict[str, Any]) -> None:
    """Overrides must name hyperparameters of the card, have their defaults' types and lie in
    the card's ``[ranges]``."""
    valid = card.hyperparameters
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise HyperparameterError(
            f"unknown hyperparameter(s) {', '.join(unknown)} for method {card.name} "
            f"({card.path}); valid: {', '.join(sorted(valid)) or 'none'}"
        )
    for key, value in overrides.items():
        if not _same_kind(valid[key], value):
            raise HyperparameterError(
                f"hyperparameter {key} of method {card.name} takes a value like "
                f"{valid[key]!r} ({type(valid[key]).__name__}), got {value!r}"
            )
        problem = card.range_problem(key, value)
        if problem:
            raise HyperparameterError(
                f"hyperparameter {key} of method {card.name} must be {problem} "
                f"({card.path} [ranges]), got {value!r}"
            )


class Method(ABC):
    """Base class of every method plugin.

    ``hparams`` starts from the card's ``[hyperparameters]`` table, overridden by keyword
    arguments to :func:`create_method`, checked by :func:`check_overrides`.
    """

    name: str = ""
    #: Whether :meth:`predict` is plain CPU work (numpy / OpenCV: no model on a device, no
    #: threads of its own), so the runner calls it in its worker processes, next to decoding,
    #: one image at a time: the images never travel to the main process, and every worker
    #: predicts (center-prior, wctr).  False: :meth:`predict` (or :meth:`forward`) runs in the
    #: main process, on batches, the workers decoding ahead of it.
    in_workers: bool = False

    def __init__(
        self, card: MethodCard | None = None, device: str = "cpu", **overrides: Any
    ) -> None:
        self.card = card
        self.device = device
        self.hparams: dict[str, Any] = dict(card.hyperparameters) if card else {}
        if card is not None:
            check_overrides(card, overrides)
        self.hparams.update(overrides)

    @abstractmethod
    def predict(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Soft foreground maps, float32 in [0, 1], one per (H, W, 3) uint8 RGB image, each at
        its image's size.  Images in a batch may differ in size."""

    def forward(self, images: list[np.ndarray]) -> list[Any]:
        """The device part of :meth:`predict` when :meth:`postprocess` is overridden: one
        picklable intermediate per image.  Default: :meth:`predict` itself."""
        return self.predict(images)

    @staticmethod
    def postprocess(image: np.ndarray, raw: Any, hparams: dict[str, Any]) -> np.ndarray:
        """The CPU-bound part: ``forward``'s intermediate for one image -> its map.  A static
        function of picklable arguments, so the runner can run it in worker processes.
        Default: the intermediate is the map."""
        return np.asarray(raw)

    @classmethod
    def has_postprocess(cls) -> bool:
        """Whether this method splits its work into :meth:`forward` + :meth:`postprocess`."""
        return cls.postprocess is not Method.postprocess

    def weights_identity(self) -> Any:
        """What identifies the weights this instance uses (hub id + revision, or a file's
        sha256), for the prediction cache's key; ``None`` for a method without weights."""
        return None

    def predict_boxes(self, images: list[np.ndarray], maps: list[np.ndarray]) -> list[np.ndarray]:
        """One box per image, ``[x1, y1, x2, y2]`` in continuous pixels (paper Table 1b: tight box
        of the largest connected component of the binarised map)."""
        from odbench.metrics.boxes import mask_to_box

        return [mask_to_box(m > 0.5) for m in maps]

    def predict_instances(
        self, images: list[np.ndarray], maps: list[np.ndarray]
    ) -> list[Instances]:
        """Scored instances per image for multi-object discovery (class-agnostic AP / AR).

        Default, for single-object methods: at most ONE instance per image, made of the
        method's own single-object outputs: its mask is ``map > 0.5`` (the mask saliency scores),
        its box is :meth:`predict_boxes`' box (the box CorLoc scores), its score the mean of the
        soft map inside the mask (so images rank by the method's confidence).  A map with no
        pixel above 0.5 gives no instance.  Masks are COCO RLEs (pycocotools)."""
        from pycocotools import mask as mask_utils

        boxes = self.predict_boxes(images, maps)
        out = []
        for soft, box in zip(maps, boxes):
            binary = np.asarray(soft) > 0.5
            if not binary.any():
                out.append(Instances(np.zeros(0), np.zeros((0, 4)), []))
                continue
            score = float(np.asarray(soft, dtype=np.float64)[binary].mean())
            rle = mask_utils.encode(np.asfortranarray(binary.astype(np.uint8)))
            out.append(
                Instances(np.array([score]), np.asarray(box, np.float64).reshape(1, 4), [rle])
            )
        return out

    def describe(self) -> dict[str, Any]:
        """What goes into a results JSON to identify the method."""
        return {
            "name": self.name,
            "card_sha256": self.card.sha256 if self.card else None,
            "hyperparameters": self.hparams,
        }


def create_method(name: str, device: str = "cpu", **overrides: Any) -> Method:
    """The one factory: a registered method by name (looked up once), its hyperparameters from
    its card, ``overrides`` checked against it."""
    from odbench.registry import METHODS

    cls = METHODS.get(name)
    method = cls(method_card(name), device=device, **overrides)
    method.name = name
    return method  # type: ignore[no-any-return]
