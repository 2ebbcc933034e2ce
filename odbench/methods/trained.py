"""Methods whose weights come from an ``odbench train`` run: the shared checkpoint handling.

A trained method's card has a ``checkpoint`` hyperparameter (``odbench eval --checkpoint RUN_DIR``
sets it) and a ``[model]`` table: the architecture ``odbench train`` builds for it.  At
construction the checkpoint's config is read and checked (it must come from this method's card
family), the model is rebuilt from the config's spec and its weights are loaded.  Prediction
resizes each image to the training resolution, runs :meth:`TrainedMethod.forward` and resizes
the logits bilinearly back to the image's size before the sigmoid.  :meth:`describe` adds the
checkpoint's sha256, step and training-data manifest, so the results JSON (and the prediction
cache key) says exactly which weights produced the maps.
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from odbench.cards import MethodCard
from odbench.checkpoint import CheckpointError, checkpoint_path, file_sha256, load_checkpoint
from odbench.features.base import to_device
from odbench.methods.base import Method
from odbench.models.build import build_model, to_batch


def train_hint(card: MethodCard) -> str:
    """The ``odbench train`` arguments that make a checkpoint for ``card``."""
    model = card.raw.get("model", {})
    if model.get("type") == "decoder":
        return f"--features {model.get('features', 'NAME')}"
    return f"--model {model.get('type', 'NAME')}"


def family_of(card: MethodCard) -> str:
    """The card whose checkpoints this card accepts: a variant's parent, else itself."""
    return card.parent or card.name


class TrainedMethod(Method):
    """Base class of the methods that load an ``odbench train`` checkpoint."""

    def __init__(
        self, card: MethodCard | None = None, device: str = "cpu", **overrides: Any
    ) -> None:
        super().__init__(card, device, **overrides)
        if card is None:
            raise CheckpointError("a trained method needs its card")
        source = str(self.hparams.get("checkpoint") or "")
        if not source:
            raise CheckpointError(
                f"method {card.name} needs a trained checkpoint: make one with "
                f"`odbench train {train_hint(card)} --data DATASET --out RUN_DIR`, then pass "
                f"--checkpoint RUN_DIR"
            )
        self.config, state, _ = load_checkpoint(source)
        trained_for = self.config.get("card", {}).get("name")
        if trained_for != family_of(card):
            raise CheckpointError(
                f"{checkpoint_path(source)}: trained for method {trained_for!r}, not "
                f"{family_of(card)!r}; evaluate it with --method {trained_for}"
            )
        self.resolution = int(self.config["resolution"])
        self.model = build_model(self.config["model"])
        self.model.load_state_dict(state)
        self.model.eval().to(device)
        path = checkpoint_path(source)
        self.checkpoint_info = {
            "path": str(Path(path).resolve()),
            "sha256": file_sha256(path),
            "step": self.config.get("step"),
            "extractor": self.config.get("extractor"),
            "data": self.config.get("data"),
        }

    @abstractmethod
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, R, R]`` images in [0, 1] -> ``[B, 1, R, R]`` foreground logits."""

    @torch.no_grad()
    def predict(self, images: list[np.ndarray]) -> list[np.ndarray]:
        batch = to_device(to_batch(images, self.resolution), self.device)
        logits = self.forward(batch).float().cpu()
        maps = []
        for im, logit in zip(images, logits):
            full = F.interpolate(
                logit[None], size=im.shape[:2], mode="bilinear", align_corners=False
            )
            maps.append(torch.sigmoid(full)[0, 0].numpy().astype(np.float32))
        return maps

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "checkpoint": self.checkpoint_info}
