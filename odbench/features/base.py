"""The feature-extractor interface: an RGB batch in, one feature map per declared stride out.

``images``: (B, 3, H, W) float32 RGB in [0, 1], H and W multiples of ``input_multiple`` (the
extractor normalises itself).  ``extract`` returns one (B, C_i, H // s_i, W // s_i) float tensor
per entry of ``strides`` / ``channels`` (entries may repeat: SD has two blocks per stride), on
the extractor's device.  ``identity`` is stable across processes: name + weights source (or the
random seed) + the options that change the output; caches key on it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from odbench.features.specs import ExtractorSpec


class FeatureExtractor(ABC):
    """Base class of every registered extractor (see the module docstring)."""

    name: str
    strides: tuple[int, ...]
    channels: tuple[int, ...]
    identity: str
    input_multiple: int
    spec: ExtractorSpec

    @abstractmethod
    def extract(self, images: torch.Tensor) -> list[torch.Tensor]:
        """One (B, C_i, H // s_i, W // s_i) map per declared stride."""

    @abstractmethod
    def to(self, device: Any, dtype: Any = None) -> FeatureExtractor:
        """Move to ``device`` (and ``dtype``); returns self."""

    def __call__(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.extract(images)

    def check_images(self, images: torch.Tensor) -> None:
        """Refuse a batch that is not (B, 3, H, W) floating point with H, W multiples of
        ``input_multiple`` (one line naming the fix)."""
        shape = tuple(images.shape)
        if images.ndim != 4 or shape[1] != 3 or not images.is_floating_point():
            raise ValueError(
                f"{self.name}: expected a (B, 3, H, W) float RGB batch in [0, 1], "
                f"got {shape} {images.dtype}"
            )
        m = self.input_multiple
        if shape[2] % m or shape[3] % m:
            raise ValueError(
                f"{self.name}: H and W must be multiples of {m}, got {shape[2]} x {shape[3]}; "
                "resize or pad the batch"
            )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.identity}>"


def to_device(x: Any, device: Any, dtype: Any = None) -> Any:
    """A CPU tensor on ``device`` (and ``dtype``): on CUDA through pinned (page-locked) memory
    with ``non_blocking``, so the copy is queued on the GPU's stream and the host goes on (to
    the next batch, which the runner's workers decode meanwhile) instead of waiting for it.
    Not exercised without a GPU (the project's CPU machines): elsewhere a plain ``.to``."""
    import torch

    if torch.device(device).type == "cuda":
        return x.pin_memory().to(device=device, dtype=dtype, non_blocking=True)
    return x.to(device=device, dtype=dtype)
