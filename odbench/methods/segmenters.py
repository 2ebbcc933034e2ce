"""``unet-e2e`` and ``deeplabv3-e2e``: the end-to-end segmenters of the paper's Table 3 (§4.3.2).

The networks are in :mod:`odbench.models.segmenters`; trained with ``odbench train --model …``;
evaluated from a run folder with ``odbench eval --method unet-e2e --checkpoint RUN_DIR``.
"""

from __future__ import annotations

import torch

from odbench.methods.trained import TrainedMethod


class EndToEndMethod(TrainedMethod):
    """``unet-e2e`` / ``deeplabv3-e2e``: the checkpoint's model applied to the resized image."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)  # type: ignore[no-any-return]
