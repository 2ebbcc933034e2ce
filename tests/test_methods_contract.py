"""The method contract, over the registry: every registered method and card variant, built on
the tiny variant of its feature extractor (and a one-step checkpoint when it is trained),
predicts two toy images of different sizes and returns float32 maps in [0, 1] at each image's
size, not constant.  A new method is tested by being registered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from odbench.cards import method_card
from odbench.features import extractor_spec, tiny_extractor
from odbench.registry import METHODS


def tiny_of(name: str) -> str:
    """The tiny extractor of ``name``'s family, as the registry records it (``dino-vits8`` ->
    ``dino-tiny``)."""
    return tiny_extractor(extractor_spec(name).family)


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One-step ``odbench train`` runs on toy, made on first use, one per training target."""
    from odbench.training import train

    made: dict[tuple[str, str], Path] = {}

    def get(kind: str, target: str) -> Path:
        if (kind, target) not in made:
            out = tmp_path_factory.mktemp(f"ckpt-{target}")
            kw: dict[str, Any] = {kind: target}
            if kind == "method":  # a method with its own training, on its tiny extractor
                kw["features"] = tiny_of(str(method_card(target).raw["model"]["features"]))
            # 32 px, or the tiny extractor's own side where 32 does not fit (dinov2-tiny: 56)
            own = (extractor_spec(target).resolution if kind == "features" else None) or 32
            res = 32 if own % 32 == 0 else own
            train(data="toy", out=out, steps=1, n=4, resolution=res, val_split=0.25, **kw)
            made[kind, target] = out
        return made[kind, target]

    return get


def contract_overrides(name: str, checkpoints: Any) -> dict[str, Any]:
    """Hyperparameters that put method ``name`` on tiny models."""
    card = method_card(name)
    hp = card.hyperparameters if card is not None else {}
    out: dict[str, Any] = {}
    if hp.get("backbone"):
        out["backbone"] = tiny_of(str(hp["backbone"]))
    if "num_steps" in hp:
        out["num_steps"] = 1
    if "checkpoint" in hp:
        assert card is not None
        model = card.raw.get("model", {})  # a variant shares its card's [model]
        if model.get("type") == "decoder":
            out["checkpoint"] = str(checkpoints("features", tiny_of(str(model["features"]))))
        elif model.get("family"):  # trained by odbench train --method (found)
            out["checkpoint"] = str(checkpoints("method", card.parent or card.name))
        else:
            out["checkpoint"] = str(checkpoints("model", str(model["type"])))
    return out


@pytest.mark.parametrize("name", METHODS.names())
def test_method_predicts_soft_maps_at_each_image_size(
    name: str, toy_images: list[np.ndarray], checkpoints: Any
) -> None:
    from odbench.methods.base import create_method

    method = create_method(name, **contract_overrides(name, checkpoints))
    maps = method.predict(toy_images)
    assert len(maps) == len(toy_images)
    for image, m in zip(toy_images, maps):
        assert isinstance(m, np.ndarray) and m.dtype == np.float32
        assert m.shape == image.shape[:2]
        assert np.isfinite(m).all() and 0.0 <= m.min() and m.max() <= 1.0
    assert any(float(m.max()) > float(m.min()) for m in maps), f"{name}: constant maps"
    boxes = method.predict_boxes(toy_images, maps)
    assert len(boxes) == len(toy_images)


def test_every_variant_is_registered_and_inherits_its_card() -> None:
    variants = [n for n in METHODS.names() if "." in n]
    assert {f"attentioncut.row{r}" for r in range(1, 7)} | {"attentioncut.noprior"} <= set(variants)
    base = method_card("attentioncut")
    assert base is not None
    for name in variants:
        card = method_card(name)
        assert card is not None and card.parent == name.split(".")[0]
        parent = method_card(card.parent)
        assert parent is not None and card.entry == parent.entry
        assert set(card.hyperparameters) == set(parent.hyperparameters)
    row1 = method_card("attentioncut.row1")
    assert row1 is not None and row1.hyperparameters["terms"] == ["A_c"]
    assert {k: v for k, v in row1.hyperparameters.items() if k != "terms"} == {
        k: v for k, v in base.hyperparameters.items() if k != "terms"
    }
    noprior = method_card("attentioncut.noprior")
    assert noprior is not None and noprior.hyperparameters["use_prior"] is False
    assert all(r["variant"] == "w/o prior" for r in noprior.reported)


def test_at_most_two_attentioncut_cards() -> None:
    from odbench.cards import card_dir

    assert len(list(card_dir("methods").glob("attentioncut*.toml"))) <= 2


def test_a_variant_cannot_invent_hyperparameters(tmp_path: Path) -> None:
    from odbench.cards import CardError, MethodCard

    p = tmp_path / "m.toml"
    p.write_text(
        'name = "m"\ndescription = "d"\nentry = "x:y"\n[hyperparameters]\na = 1\n'
        '[variants.v]\ndescription = "v"\n[variants.v.hyperparameters]\nb = 2\n'
    )
    with pytest.raises(CardError, match=r"\[variants.v\] sets hyperparameter\(s\) b"):
        MethodCard.from_file(p).variants()
