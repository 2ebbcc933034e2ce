"""The CLIP-classifiable prior (DiffusionSeg, Ma et al. 2023, Sec. 3.3.1).

An image is classified zero-shot by CLIP (Radford et al. 2021) over the 1,000 ImageNet classes,
and the predicted class is mapped to its coarse group (``odbench/resources/imagenet_coarse.json``,
e.g. every dog breed -> "dog"); the group name becomes the prompt y = "a photo of a {group}" for
the diffusion inversion, with the group's token positions for attention capture.  "w/o prior"
(the paper's ablation) is the empty class, i.e. the empty prompt.

Decision rule: the zero-shot classifier scores the 1,000 fine classes (cosine similarity with
the mean of the L2-normalised template embeddings, as in CLIP's ImageNet evaluation); the image
gets the group of its top-scoring class (equivalently: a group's score is its best member's).
The text classifier is built once per (model, pretrained tag, templates, class names) and cached
in memory and, when ``cache_dir`` is set, as a safetensors file keyed by a hash of those inputs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: CLIP's seven-template ImageNet ensemble (Radford et al. 2021, the prompt-engineering notebook).
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)
DEFAULT_MODEL = "ViT-L-14"  # SD-1.x's text tower is OpenAI CLIP ViT-L/14
DEFAULT_PRETRAINED = "openai"
WEIGHTS_SIZE = {"ViT-L-14": "~890 MB", "ViT-B-32": "~350 MB", "ViT-B-16": "~350 MB"}

#: A tiny open_clip CLIP (random weights) for tests: same code paths, 32-d embeddings.
TINY_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 2},
}


@dataclass(frozen=True)
class CoarseGroups:
    """The 1,000 ImageNet class names and the coarse group of each (index-aligned)."""

    classnames: tuple[str, ...]
    group_of: tuple[str, ...]

    @property
    def groups(self) -> tuple[str, ...]:
        """Group names in order of first appearance."""
        return tuple(dict.fromkeys(self.group_of))

    def members(self, group: str) -> list[int]:
        return [i for i, g in enumerate(self.group_of) if g == group]


def clean_classname(name: str) -> str:
    """Drop a parenthesised qualifier or a ' / alternative': 'kite (bird of prey)' -> 'kite'."""
    return name.split(" (")[0].split(" / ")[0].strip()


@lru_cache(maxsize=1)
def load_coarse_groups() -> CoarseGroups:
    """Read ``imagenet_coarse.json`` (package data) and expand its index ranges."""
    text = resources.files("odbench.resources").joinpath("imagenet_coarse.json").read_text("utf-8")
    doc = json.loads(text)
    names = tuple(doc["classnames"])
    group_of = [clean_classname(n) for n in names]
    seen: dict[int, str] = {}
    for group, items in doc["groups"].items():
        for item in items:
            first, last = (item, item) if isinstance(item, int) else item
            for i in range(first, last + 1):
                if i in seen:
                    raise ValueError(
                        f"imagenet_coarse.json: class {i} in {seen[i]!r} and {group!r}"
                    )
                seen[i] = group
                group_of[i] = group
    return CoarseGroups(names, tuple(group_of))


class ClipPrior:
    """Zero-shot CLIP classifier over coarse ImageNet groups (see module docstring)."""

    def __init__(
        self,
        model: Any,
        preprocess: Any,
        tokenizer: Any,
        key: str,
        templates: tuple[str, ...] = DEFAULT_TEMPLATES,
        device: str = "cpu",
        cache_dir: str | Path | None = None,
        groups: CoarseGroups | None = None,
    ) -> None:
        self.model = model.to(device).eval().requires_grad_(False)
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.key = key
        self.templates = templates
        self.device = torch.device(device)
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.groups = groups or load_coarse_groups()
        self._classifier: torch.Tensor | None = None

    @classmethod
    def load(
        cls,
        model: str = DEFAULT_MODEL,
        pretrained: str = DEFAULT_PRETRAINED,
        device: str = "cpu",
        templates: tuple[str, ...] = DEFAULT_TEMPLATES,
        cache_dir: str | Path | None = "default",
    ) -> ClipPrior:
        """Pretrained open_clip model (a tag, e.g. "openai", or a local checkpoint file), found
        by the weight resolver; missing weights -> :class:`WeightsNotFoundError` (one line)."""
        import open_clip

        from odbench.features.weights import WeightsNotFoundError, hub_file

        path = Path(pretrained).expanduser()
        if not path.is_file():
            cfg = open_clip.get_pretrained_cfg(model, pretrained)
            hub = (cfg or {}).get("hf_hub", "")
            if not hub:
                raise WeightsNotFoundError(
                    f"open_clip has no hub weights {model}/{pretrained}; give a checkpoint file"
                )
            repo, filename = hub.rstrip("/"), "open_clip_model.safetensors"
            if hub.count("/") > 1 and not hub.endswith("/"):
                repo, filename = hub.rsplit("/", 1)
            path = hub_file(repo, filename, size=WEIGHTS_SIZE.get(model))
        net, _, preprocess = open_clip.create_model_and_transforms(
            model, pretrained=str(path), device=device, weights_only=True
        )
        if cache_dir == "default":
            import platformdirs

            cache_dir = Path(platformdirs.user_cache_dir("odbench")) / "clip_prior"
        tok = open_clip.get_tokenizer(model)
        return cls(net, preprocess, tok, f"{model}/{pretrained}", templates, device, cache_dir)

    @classmethod
    def tiny(cls, seed: int = 0, device: str = "cpu", **kw: Any) -> ClipPrior:
        """A tiny random open_clip CLIP (tests): real tokenizer, real preprocessing."""
        import open_clip

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = open_clip.CLIP(**TINY_CLIP_CONFIG)
        size = TINY_CLIP_CONFIG["vision_cfg"]["image_size"]
        pre = open_clip.image_transform(size, is_train=False)
        tok = open_clip.get_tokenizer("ViT-B-32")
        return cls(net, pre, tok, f"tiny/seed{seed}", device=device, **kw)

    # -- text classifier
    def cache_key(self) -> str:
        blob = json.dumps([self.key, self.templates, self.groups.classnames]).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @torch.no_grad()
    def text_classifier(self) -> torch.Tensor:
        """(D, 1000) L2-normalised class embeddings (mean over templates), built once."""
        if self._classifier is not None:
            return self._classifier
        path = None
        if self.cache_dir is not None:
            path = self.cache_dir / f"{self.key.replace('/', '_')}-{self.cache_key()}.safetensors"
            if path.is_file():
                from safetensors.torch import load_file

                self._classifier = load_file(str(path))["classifier"].to(self.device)
                return self._classifier
        texts = [t.format(name) for name in self.groups.classnames for t in self.templates]
        embs = []
        for start in range(0, len(texts), 512):  # batched: per-class calls are 10x slower
            tokens = self.tokenizer(texts[start : start + 512]).to(self.device)
            emb = self.model.encode_text(tokens).float()
            embs.append(emb / emb.norm(dim=-1, keepdim=True))
        mean = torch.cat(embs).view(len(self.groups.classnames), len(self.templates), -1).mean(1)
        self._classifier = (mean / mean.norm(dim=-1, keepdim=True)).T.contiguous()
        if path is not None:
            from safetensors.torch import save

            from odbench.imageio import atomic_write_bytes

            atomic_write_bytes(path, save({"classifier": self._classifier.cpu().contiguous()}))
        return self._classifier

    def set_text_classifier(self, classifier: torch.Tensor) -> None:
        """Use a given (D, 1000) classifier (tests, or one computed elsewhere)."""
        self._classifier = classifier.to(self.device)

    # -- images
    @torch.no_grad()
    def image_embeddings(self, images: list[np.ndarray]) -> torch.Tensor:
        """(B, D) L2-normalised image embeddings of (H, W, 3) uint8 RGB images."""
        from PIL import Image

        batch = torch.stack([self.preprocess(Image.fromarray(np.asarray(im))) for im in images])
        emb = self.model.encode_image(batch.to(self.device)).float()
        return emb / emb.norm(dim=-1, keepdim=True)  # type: ignore[no-any-return]

    @torch.no_grad()
    def class_scores(self, images: list[np.ndarray]) -> torch.Tensor:
        """(B, 1000) cosine similarities with the fine ImageNet classes."""
        return self.image_embeddings(images) @ self.text_classifier()

    def classify(self, images: list[np.ndarray]) -> list[str]:
        """Coarse group of each image: the group of its best-scoring ImageNet class."""
        best = self.class_scores(images).argmax(dim=1).tolist()
        return [self.groups.group_of[i] for i in best]
