"""Stable Diffusion as a feature extractor (DiffusionSeg, Ma et al. 2023, Sec. 3.3.1).

Per image: the CLIP-classifiable prior names a coarse ImageNet class (``prior=False``: the empty
label, Table 7 "w/o prior"); the image is DDIM-inverted under ``prompt_template`` filled with it
(Eq. 7, T = ``num_steps``, guidance 1), and the reverse pass from the inverted latent records
the outputs of the six SpatialTransformer blocks (``down_blocks.{0,1,2}.attentions.{0,1}``:
two each at 64², 32², 16² for 512² input, "L = 6 ... two of each", which only the down path has
— the up path has three per resolution), averaged over the reverse steps (Eq. 8).

``extract`` runs at the batch's own size (multiples of ``input_multiple`` = 64 for SD-1.4);
:meth:`SDExtractor.attention` is what AttentionCut and the Table 5 baselines read: the images
resized to the backbone's resolution (512² for SD-1.4) and the cross-/self-attention captures
of the same reverse pass (Eq. 2).

Without the prior the label is empty and the prompt is the template with it removed; the "class
token" position is then that of the end-of-text token where the label would start (the paper
does not say; this is the position "of the category token" once the category is empty).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from odbench.features.base import FeatureExtractor
from odbench.features.specs import ExtractorSpec

#: A tiny random SD pairs with a tiny random CLIP prior over the first classes only (the same
#: code path; a 1,000-class text classifier of a random CLIP would only cost time).
TINY_PRIOR_CLASSES = 8

#: The paper's settings (Sec. 4.1, 3.3.1); a method's card passes its own.
DEFAULTS: dict[str, Any] = {
    "prior": True,
    "num_steps": 40,
    "prompt_template": "a photo of a {}",
    "dtype": "fp32",
    "clip_model": "ViT-L-14",
    "clip_pretrained": "openai",
}


@lru_cache(maxsize=2)
def shared_backbone(name: str, device: str, dtype: str) -> Any:
    """One frozen SD per (name, device, dtype) and process: every extractor and method (and
    every ablation row evaluated in one run) reuses it; captures are per call, so this is safe."""
    from odbench.backbones.diffusion import load_backbone

    return load_backbone(name, device=device, dtype=dtype)


@lru_cache(maxsize=2)
def shared_prior(tiny: bool, model: str, pretrained: str, device: str) -> Any:
    """The CLIP-classifiable prior, once per process (its text classifier is built once)."""
    from odbench.backbones.clip_prior import ClipPrior, CoarseGroups, load_coarse_groups

    if tiny:
        full = load_coarse_groups()
        n = TINY_PRIOR_CLASSES
        groups = CoarseGroups(full.classnames[:n], full.group_of[:n])
        return ClipPrior.tiny(device=device, cache_dir=None, groups=groups)
    return ClipPrior.load(model, pretrained, device=device)


@dataclass
class AttentionEvidence:
    """Labels (CLIP class, "" without the prior) and the inversion's output (its
    ``captures``: cross / self attention and, if asked, Eq. 8 features) for a batch."""

    labels: list[str]
    inversion: Any  # odbench.backbones.diffusion.InversionOutput


def build(spec: ExtractorSpec, *, device: str = "cpu", **options: Any) -> SDExtractor:
    """Options (defaults :data:`DEFAULTS`; :func:`odbench.features.load_extractor` passes the
    spec's ``options`` under the caller's, so ``sd-tiny`` inverts with 2 steps): ``prior``,
    ``num_steps``, ``prompt_template``, ``dtype``, ``clip_model``, ``clip_pretrained``."""
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise TypeError(
            f"{spec.name}: unknown option(s) {', '.join(unknown)}; valid: {', '.join(DEFAULTS)}"
        )
    return SDExtractor(spec, device, **(DEFAULTS | options))


class SDExtractor(FeatureExtractor):
    """See the module docstring."""

    def __init__(
        self,
        spec: ExtractorSpec,
        device: str,
        *,
        prior: bool,
        num_steps: int,
        prompt_template: str,
        dtype: str,
        clip_model: str,
        clip_pretrained: str,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.use_prior = bool(prior)
        self.num_steps = int(num_steps)
        self.prompt_template = str(prompt_template)
        self.dtype_name = str(dtype)
        self.clip = (str(clip_model), str(clip_pretrained))
        self.device = torch.device(device)
        bb = self.backbone
        blocks = bb.feature_blocks()
        levels = [int(b.split(".")[1]) for b in blocks]
        self.blocks = blocks
        self.strides = tuple(bb.vae_scale * 2**lvl for lvl in levels)
        width = bb.unet.config.block_out_channels
        self.channels = tuple(int(width[lvl]) for lvl in levels)
        self.input_multiple = bb.vae_scale * 2 ** (len(width) - 1)
        weights = f"{bb.spec.repo_id}@{bb.spec.revision}" if spec.random is None else "random"
        clip = "/".join(self.clip) if spec.random is None else "tiny-random"
        prior_id = f"prior={clip}" if self.use_prior else "prior=none"
        self.identity = (
            f"{spec.name}|{weights}|{self.dtype_name}|T={self.num_steps}|{prior_id}"
            f"|template={self.prompt_template!r}|eq8-down-blocks"
        )

    # -- shared frozen models
    @property
    def backbone(self) -> Any:
        return shared_backbone(self.spec.name, str(self.device), self.dtype_name)

    @property
    def prior(self) -> Any:
        tiny = self.spec.random is not None
        return shared_prior(tiny, *self.clip, str(self.device))

    def to(self, device: Any, dtype: Any = None) -> SDExtractor:
        self.device = torch.device(device)
        if dtype is not None:
            names = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
            self.dtype_name = names.get(dtype, str(dtype))
        return self

    # -- prompts
    def classify(self, images: list[np.ndarray]) -> list[str]:
        """The CLIP-classified coarse class of each (H, W, 3) uint8 image ("" without prior)."""
        return self.prior.classify(images) if self.use_prior else [""] * len(images)

    def prompt(self, label: str) -> tuple[str, list[int]]:
        """Prompt y and the class token positions (BOS at 0), see the module docstring."""
        from odbench.backbones.diffusion import class_prompt

        tok = self.backbone.tokenizer
        if label:
            return class_prompt(tok, label, self.prompt_template)
        prompt = self.prompt_template.format("").strip()
        ids = tok(prompt, truncation=True, max_length=77).input_ids
        return prompt, [len(ids) - 1]  # the end-of-text token where the label would start

    def _invert(self, x: Any, labels: list[str], capture: Any) -> Any:
        prompts = [self.prompt(lab) for lab in labels]
        return self.backbone.invert(
            x,
            [p for p, _ in prompts],
            [ix for _, ix in prompts],
            num_steps=self.num_steps,
            capture=capture,
            decode=False,
        )

    # -- the interface
    def extract(self, images: torch.Tensor) -> list[torch.Tensor]:
        from odbench.backbones.diffusion import Capture

        self.check_images(images)
        u8 = (images.float().clamp(0, 1) * 255).round().to(torch.uint8)
        labels = self.classify(list(u8.permute(0, 2, 3, 1).cpu().numpy()))
        x = images.float().clamp(0, 1) * 2.0 - 1.0
        capture = Capture(cross=False, self_attn=False, features=True)
        out = self._invert(x.to(self.backbone.device), labels, capture)
        feats = out.captures.features
        return [feats[b].to(self.device) for b in self.blocks]

    def attention(self, images: list[np.ndarray], features: bool = False) -> AttentionEvidence:
        """Classify, resize to the backbone's resolution, invert and capture cross- and
        self-attention (and the Eq. 8 features when ``features``) during the reverse pass."""
        from odbench.backbones.diffusion import Capture

        labels = self.classify(images)
        out = self._invert(images, labels, Capture(features=features))
        return AttentionEvidence(labels, out)
