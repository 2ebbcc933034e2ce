"""``toy``: shapes on textured backgrounds, generated deterministically from a seed.

For demos and tests: any number of images, no download.  Each sample has one foreground object
(an ellipse, a rectangle or a triangle, placed off-centre at random) whose colour differs from a
smooth noise background, an 8-bit 0/255 GT mask, and the object's box.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from odbench.cards import DatasetCard
from odbench.data.base import Dataset, DatasetError, Sample


class ToyDataset(Dataset):
    name = "toy"
    task = ("saliency", "localization")

    def __init__(self, n: int = 16, size: tuple[int, int] = (96, 128), seed: int = 0) -> None:
        if n < 1:
            raise DatasetError(f"toy: n must be >= 1, got {n}")
        self.n, self.size, self.seed = n, (int(size[0]), int(size[1])), seed

    @classmethod
    def from_card(
        cls, card: DatasetCard | None, data_root: Any = None, **kwargs: Any
    ) -> ToyDataset:
        params = dict(card.raw.get("generator", {})) if card else {}
        params.update(kwargs)
        if "size" in params:
            params["size"] = tuple(params["size"])
        return cls(**params)

    def ids(self) -> list[str]:
        return [f"toy_{i:05d}" for i in range(self.n)]

    def load(self, sample_id: str) -> Sample:
        try:
            index = int(sample_id.removeprefix("toy_"))
        except ValueError as e:
            raise DatasetError(f"toy: no sample {sample_id!r}") from e
        if not 0 <= index < self.n:
            raise DatasetError(f"toy: no sample {sample_id!r} (n = {self.n})")
        return self._generate(index)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "seed": self.seed, "size": list(self.size)}

    def _generate(self, index: int) -> Sample:
        h, w = self.size
        rng = np.random.default_rng([self.seed, index])
        # Background: low-frequency noise texture in a random base colour.
        coarse = rng.normal(0.0, 1.0, size=(max(h // 16, 2), max(w // 16, 2), 3))
        texture = np.asarray(
            Image.fromarray(
                ((coarse - coarse.min()) / np.ptp(coarse) * 255).astype(np.uint8)
            ).resize((w, h), Image.Resampling.BICUBIC)
        ).astype(np.float64)
        base = rng.uniform(40, 215, size=3)
        background = np.clip(base + (texture - 127.5) * 0.35, 0, 255)
        # Object: a shape whose colour is far from the background's.
        fg_colour = np.clip(255 - base + rng.normal(0, 20, size=3), 0, 255)
        oh, ow = rng.uniform(0.25, 0.6) * h, rng.uniform(0.25, 0.6) * w
        cy, cx = rng.uniform(oh / 2, h - oh / 2), rng.uniform(ow / 2, w - ow / 2)
        x1, y1, x2, y2 = cx - ow / 2, cy - oh / 2, cx + ow / 2, cy + oh / 2
        mask_img = Image.new("L", (w, h), 0)
        draw = ImageDraw.Draw(mask_img)
        shape = int(rng.integers(3))
        if shape == 0:
            draw.ellipse((x1, y1, x2, y2), fill=255)
        elif shape == 1:
            draw.rectangle((x1, y1, x2, y2), fill=255)
        else:
            draw.polygon([(cx, y1), (x2, y2), (x1, y2)], fill=255)
        mask = np.asarray(mask_img)
        fg = mask[..., None] > 127
        shading = rng.normal(0, 8, size=(h, w, 1))
        image = np.where(fg, np.clip(fg_colour + shading, 0, 255), background).astype(np.uint8)
        ys, xs = np.nonzero(mask > 127)
        boxes = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=np.float64)
        return Sample(id=f"toy_{index:05d}", image=image, mask=mask, boxes=boxes)
