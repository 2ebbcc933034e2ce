"""DiffusionSeg (Ma et al. 2023, §3.3.2) and the frozen-feature baselines of Table 4.

DiffusionSeg feeds the Stable Diffusion features of §3.3.1 — the six SpatialTransformer outputs
at 1/8, 1/16 and 1/32 of the image (two each), averaged over the T reverse steps of the DDIM
inversion (Eq. 8), computed by the ``sd-v1-4`` feature extractor — into "a three-layer FCN as
segment decoder" (§4.1) trained on synthetic image/mask pairs.  Table 4 attaches "a same segment
decoder" to frozen DINO, MoCo and CLIP features: ``dino-decoder``, ``moco-decoder``,
``clip-decoder`` are the same class with another extractor.

The decoder (:class:`odbench.models.decoder.SegmentDecoder`) is trained by
``odbench train --features NAME`` (frozen features cached on disk) and evaluated with ``odbench eval --method diffusionseg --checkpoint RUN_DIR``.
"""

from __future__ import annotations

from typing import Any

import torch

from odbench.cards import MethodCard
from odbench.checkpoint import CheckpointError
from odbench.methods.trained import TrainedMethod


class DecoderMethod(TrainedMethod):
    """``diffusionseg`` and the Table 4 baselines: frozen extractor -> trained decoder.

    The extractor is the one named in the checkpoint's config (with its options, then the card's
    ``extractor_options``, e.g. the empty prompt of the "w/o prior" variant); a ``backbone``
    hyperparameter (``--backbone``) naming another extractor is an error."""

    def __init__(
        self, card: MethodCard | None = None, device: str = "cpu", **overrides: Any
    ) -> None:
        super().__init__(card, device, **overrides)
        from odbench.features import load_extractor

        trained = self.config["extractor"]
        wanted = str(self.hparams.get("backbone") or "")
        if wanted and wanted != trained["name"]:
            raise CheckpointError(
                f"--backbone {wanted} disagrees with the checkpoint, whose decoder was trained on "
                f"{trained['name']} features; drop --backbone or use a checkpoint trained on {wanted}"
            )
        options = {**trained.get("options", {}), **dict(self.hparams.get("extractor_options", {}))}
        self.extractor = load_extractor(trained["name"], device=device, **options)
        self.checkpoint_info["eval_extractor"] = self.extractor.identity

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.extractor.extract(images)
        return self.model(features, size=tuple(images.shape[-2:]))  # type: ignore[no-any-return]
