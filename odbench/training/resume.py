"""``--resume``: a resumed run must be the same run.  Its card, model, training options and
extractor are compared with the checkpoint's before any data is read
(:func:`check_resumable`), its data once they are prepared (:func:`check_same_data`), every
difference named by the option to give; :func:`restore` loads its weights and optimizer state."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from odbench.cards import MethodCard
from odbench.checkpoint import CHECKPOINT_FILE, CheckpointError, load_checkpoint
from odbench.distributed import World

#: The options of ``odbench train`` that set a ``[training]`` entry of the card.
_TRAINING_FLAGS = {
    k: "--" + k.replace("_", "-")
    for k in ("batch_size", "lr", "seed", "resolution", "val_split", "trunk_weights")
}


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _refuse(out: Path, diffs: list[str]) -> None:
    if diffs:
        raise CheckpointError(
            f"{out / CHECKPOINT_FILE}: cannot resume: {'; '.join(diffs)}; a resumed run keeps "
            f"its options: give the run's, or train into another --out"
        )


def check_resumable(
    out: Path,
    old: dict[str, Any],
    card: MethodCard,
    spec: dict[str, Any],
    run_opts: dict[str, Any],
    extractor: dict[str, Any] | None,
) -> None:
    """Card, model, training options (all but the run's length) and extractor as in the
    checkpoint's config ``old``: one line listing every difference."""
    diffs = []
    if old["card"]["name"] != card.name:
        diffs.append(f"the card was {old['card']['name']} (now {card.name})")
    else:
        for key in sorted(set(old["training"]) | set(run_opts)):
            then, now = old["training"].get(key), run_opts.get(key)
            if not _same(then, now):
                what = _TRAINING_FLAGS.get(key, f"the card's [training] {key}")
                diffs.append(f"{what} was {then!r} (now {now!r})")
    then_x = old["extractor"] and old["extractor"]["identity"]
    now_x = extractor and extractor["identity"]
    if then_x != now_x:
        diffs.append(
            f"the features were {then_x!r} (now {now_x!r}: --features, --extractor-option)"
        )
    if not diffs and not _same(old["model"], spec):
        diffs.append(f"the model was {old['model']!r} (now {spec!r})")
    _refuse(out, diffs)


def check_same_data(out: Path, old: dict[str, Any], data: dict[str, Any]) -> None:
    """The prepared training data are the checkpoint's (the same manifest of hashes)."""
    if old["data"]["manifest_sha256"] != data["manifest_sha256"]:
        _refuse(
            out,
            [
                f"the training data differ ({old['data']['n_samples']} samples of "
                f"{old['data']['dataset']} then, {data['n_samples']} of {data['dataset']} now: "
                f"--data, --data-root, --n, --seed, or the files changed)"
            ],
        )


def restore(world: World, out: Path, net: Any, optimizer: Any) -> tuple[int, list[Any]]:
    """Load the checkpoint in ``out`` into ``net`` and ``optimizer`` on every rank (rank 0 reads
    it: the others may not see the run folder, on another node); its (step, history)."""
    loaded: tuple[dict[str, Any], dict[str, Any] | None, int, list[Any]] | None = None
    if world.is_main:
        old, weights, optim_state = load_checkpoint(out, with_optimizer=True)
        loaded = (weights, optim_state, int(old["step"]), list(old.get("history", [])))
    got = world.broadcast(loaded)
    assert got is not None
    weights, optim_state, step, history = got
    net.load_state_dict(weights)
    assert optim_state is not None
    optimizer.load_state_dict(optim_state)
    return step, history
