"""CLIP-classifiable prior (Sec. 3.3.1): coarse ImageNet groups, zero-shot choice, caching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from odbench.backbones.clip_prior import (
    ClipPrior,
    clean_classname,
    load_coarse_groups,
)

ONE_TEMPLATE = ("a photo of a {}.",)  # the tiny text tower encodes 1,000 prompts, not 7,000


@pytest.fixture(scope="module")
def prior() -> ClipPrior:
    return ClipPrior.tiny(templates=ONE_TEMPLATE)


def test_groups_cover_imagenet_in_order() -> None:
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    g = load_coarse_groups()
    assert g.classnames == tuple(IMAGENET_CLASSNAMES)
    assert len(g.group_of) == 1000
    assert all(name and "(" not in name and "/" not in name for name in g.group_of)


@pytest.mark.parametrize(
    ("cls", "group"),
    [
        ("Chihuahua", "dog"),
        ("Standard Poodle", "dog"),
        ("dingo", "dog"),
        ("tabby cat", "cat"),
        ("great white shark", "shark"),
        ("kite (bird of prey)", "bird"),
        ("king penguin", "bird"),
        ("monarch butterfly", "butterfly"),
        ("sports car", "car"),
        ("lion", "lion"),
        ("cardboard box / carton", "cardboard box"),
        ("abacus", "abacus"),
    ],
)
def test_merged_groups_map_correctly(cls: str, group: str) -> None:
    g = load_coarse_groups()
    assert g.group_of[g.classnames.index(cls)] == group


def test_group_membership() -> None:
    g = load_coarse_groups()
    assert g.members("dog") == [*range(151, 269), 273]  # every breed (ILSVRC order) + dingo
    assert g.members("cat") == list(range(281, 286))  # domestic cats, not lion / tiger
    assert len(g.members("missile")) == 2  # two ImageNet classes share the name
    assert len(g.groups) == len(set(g.group_of))
    assert clean_classname("impala (antelope)") == "impala"


def _align_image_tower(prior: ClipPrior, target: torch.Tensor) -> None:
    """Make every image embed to ``target``: constant ln_post output b, proj = b target^T / |b|²."""
    visual = prior.model.visual
    b = torch.randn(visual.ln_post.bias.shape[0], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        visual.ln_post.weight.zero_()
        visual.ln_post.bias.copy_(b)
        visual.proj.copy_(torch.outer(b, target) / b.dot(b))


@pytest.mark.parametrize(("cls", "group"), [("Golden Retriever", "dog"), ("banana", "banana")])
def test_aligned_class_is_chosen(cls: str, group: str, prior: ClipPrior) -> None:
    classifier = prior.text_classifier()  # built from the tiny text tower, once per module
    prior = ClipPrior.tiny(templates=ONE_TEMPLATE)  # a fresh model whose image tower we edit
    prior.set_text_classifier(classifier)
    k = prior.groups.classnames.index(cls)
    _align_image_tower(prior, classifier[:, k])
    images = [
        np.random.default_rng(i).integers(0, 256, (40, 50, 3), dtype=np.uint8) for i in (0, 1)
    ]
    emb = prior.image_embeddings(images)
    torch.testing.assert_close(emb, classifier[:, k].expand(2, -1), atol=1e-4, rtol=1e-4)
    assert prior.class_scores(images).argmax(1).tolist() == [k, k]
    assert prior.classify(images) == [group, group]


def test_text_classifier_cached_on_disk(tmp_path: Path, prior: ClipPrior) -> None:
    cached = ClipPrior.tiny(templates=ONE_TEMPLATE, cache_dir=tmp_path)
    cached.set_text_classifier(prior.text_classifier())  # skip re-encoding: write from a known one
    cached._classifier = None
    first = cached.text_classifier()
    files = list(tmp_path.glob("*.safetensors"))
    assert len(files) == 1 and cached.cache_key() in files[0].name
    torch.testing.assert_close(first, prior.text_classifier())
    again = ClipPrior.tiny(templates=ONE_TEMPLATE, cache_dir=tmp_path)
    again.model = None  # a cache hit must not need the text tower
    torch.testing.assert_close(again.text_classifier(), first)
    other = ClipPrior.tiny(templates=("art of the {}.",), cache_dir=tmp_path)
    assert other.cache_key() != cached.cache_key()


def test_class_prompt() -> None:
    from odbench.backbones.diffusion import class_prompt, clip_tokenizer

    tok = clip_tokenizer()
    assert class_prompt(tok, "great white shark") == ("a photo of a great white shark", [5, 6, 7])
    assert class_prompt(tok, "dog") == ("a photo of a dog", [5])
    assert class_prompt(tok, "") == ("", [])  # "w/o prior"
