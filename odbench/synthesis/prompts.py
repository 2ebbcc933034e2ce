"""Prompts for the synthesis stage (DiffusionSeg Sec. 3.2.1): which class and sentence each sample
gets, and which words of the sentence name the class (their token positions drive the
cross-attention A_c of Eq. 2).

Two sources, both deterministic functions of (run seed, sample index), so a sample's prompt never
depends on the shard or batch that makes it:

* the **bank**: a class drawn uniformly from a class list (default: the 675 coarse ImageNet groups
  of the CLIP prior; ``--classes FILE``: one name per line, ``#`` comments), composed with one
  phrase of each template part (subject, setting, lighting, viewpoint, style) of the
  ``[synthesis.prompts]`` card table, e.g. "a close-up photo of an otter, near a lake, warm
  lighting, viewed from a low angle, realistic style";
* a **prompt file** (``--prompts FILE``), JSONL, one object per line, written anywhere (e.g. by a
  language model, as the paper did with ChatGPT)::

      {"class": "aeroplane", "prompt": "A aeroplane soaring through a vibrant sunset sky"}
      {"class": "dog", "prompt": "two puppies asleep on a sofa", "class_words": "puppies"}

  ``class`` (required) is the label (and what the CLIP filter must agree with), ``prompt``
  (required) the sentence, ``class_words`` (optional, default ``class``) the phrase in the prompt
  whose tokens are read for A_c (the last occurrence).  Sample ``i`` uses line ``i mod L``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from odbench.errors import OdbenchError

PARTS = ("subject", "setting", "lighting", "viewpoint", "style")


class PromptError(OdbenchError, ValueError):
    """A class or prompt file that cannot be used; the message names the file and the fix."""


@dataclass(frozen=True)
class PromptSpec:
    """One sample's class label, prompt and the phrase naming the class inside the prompt."""

    cls: str
    prompt: str
    class_words: str


def sample_rng(seed: int, index: int, stream: int) -> np.random.Generator:
    """The random stream ``stream`` of sample ``index`` in a run with ``seed`` (0: prompt,
    1: initial noise); independent of every other sample."""
    return np.random.default_rng(np.random.SeedSequence([seed, index, stream]))


def noise_seed(seed: int, index: int) -> int:
    """The torch seed of the initial noise x_T of sample ``index`` (63 bits)."""
    return int(sample_rng(seed, index, 1).integers(0, 2**63 - 1))


def article(word: str) -> str:
    """'an' before a vowel letter, else 'a' (a heuristic: 'an hour' and 'a unicorn' miss)."""
    return "an" if word[:1].lower() in "aeiou" else "a"


@dataclass(frozen=True)
class PromptBank:
    """Classes x composable templates (see module docstring)."""

    classes: tuple[str, ...]
    parts: dict[str, tuple[str, ...]]

    @classmethod
    def from_card(cls, table: dict[str, Any], classes: Sequence[str]) -> PromptBank:
        parts = {p: tuple(table.get(p, [""])) for p in PARTS}
        if not all("{cls}" in s for s in parts["subject"]):
            raise PromptError("[synthesis.prompts] subject phrases must all contain {cls}")
        return cls(tuple(classes), parts)

    def spec(self, seed: int, index: int) -> PromptSpec:
        rng = sample_rng(seed, index, 0)
        name = self.classes[int(rng.integers(len(self.classes)))]
        chosen = [self.parts[p][int(rng.integers(len(self.parts[p])))] for p in PARTS]
        subject = chosen[0].format(cls=name, a=article(name))
        prompt = ", ".join([subject, *(c for c in chosen[1:] if c)])
        return PromptSpec(name, prompt, name)

    def fingerprint(self) -> str:
        blob = json.dumps([self.classes, self.parts], sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        return {"source": "bank", "classes": len(self.classes), "sha256": self.fingerprint()}


@dataclass(frozen=True)
class PromptList:
    """Prompts from a ``--prompts`` file: sample i takes entry i mod len."""

    entries: tuple[PromptSpec, ...]

    def spec(self, seed: int, index: int) -> PromptSpec:
        return self.entries[index % len(self.entries)]

    def fingerprint(self) -> str:
        blob = json.dumps([[e.cls, e.prompt, e.class_words] for e in self.entries]).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        return {"source": "file", "prompts": len(self.entries), "sha256": self.fingerprint()}

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(e.cls for e in self.entries))


def default_classes() -> tuple[str, ...]:
    """The coarse ImageNet groups of the CLIP-classifiable prior, in their order."""
    from odbench.backbones.clip_prior import load_coarse_groups

    return load_coarse_groups().groups


def read_classes(path: str | Path) -> tuple[str, ...]:
    """One class name per line; blank lines and ``#`` comments skipped; duplicates refused."""
    path = Path(path)
    try:
        lines = path.read_text("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise PromptError(f"{path}: cannot read the class list ({e})") from e
    names = [ln.split("#")[0].strip() for ln in lines]
    names = [n for n in names if n]
    if not names:
        raise PromptError(f"{path}: no class names (write one per line)")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise PromptError(f"{path}: classes listed twice: {', '.join(dup)}")
    return tuple(names)


def read_prompts(path: str | Path) -> PromptList:
    """Parse a ``--prompts`` JSONL file (module docstring); errors name the file and line."""
    path = Path(path)
    try:
        lines = path.read_text("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise PromptError(f"{path}: cannot read the prompt file ({e})") from e
    entries = []
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise PromptError(f"{path}:{no}: not JSON ({e.msg}); one object per line") from e
        where = f'{path}:{no}: expected {{"class": str, "prompt": str, "class_words": str?}}'
        if not isinstance(obj, dict):
            raise PromptError(f"{where}, got {type(obj).__name__}")
        cls, prompt = obj.get("class"), obj.get("prompt")
        words = obj.get("class_words", cls)
        extra = set(obj) - {"class", "prompt", "class_words"}
        if extra:
            raise PromptError(f"{where}; unknown keys {sorted(extra)}")
        if not all(isinstance(v, str) and v.strip() for v in (cls, prompt, words)):
            raise PromptError(f"{where}, got {obj!r}")
        assert isinstance(cls, str) and isinstance(prompt, str) and isinstance(words, str)
        if words.lower() not in prompt.lower():
            raise PromptError(
                f"{path}:{no}: class words {words!r} do not occur in the prompt; set "
                '"class_words" to the phrase that names the class'
            )
        entries.append(PromptSpec(cls.strip(), prompt.strip(), words.strip()))
    if not entries:
        raise PromptError(f"{path}: no prompts (one JSON object per line)")
    return PromptList(tuple(entries))
