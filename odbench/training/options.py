"""What a training run is: the card behind ``--model`` / ``--features``, its ``[training]``
options with the command line's overrides, and every check of them, made once, before any data
is read (:func:`setup`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from odbench.cards import MethodCard, method_cards
from odbench.checkpoint import CHECKPOINT_FILE, read_config
from odbench.distributed import World, resolve_device
from odbench.errors import OdbenchError
from odbench.feature_cache import FeatureCache
from odbench.features import extractor_spec
from odbench.outputs import check_output_folder
from odbench.training.data import select_ids, split_rows, steps_per_epoch
from odbench.training.resume import check_resumable


class TrainError(OdbenchError, ValueError):
    """A training run that cannot start or continue; one line naming the fix."""


def card_for_model(model: str) -> MethodCard:
    """``--model unet`` -> the ``unet-e2e`` card."""
    cards = {
        c.raw["model"]["type"]: c
        for c in method_cards().values()
        if c.raw.get("model", {}).get("type") not in (None, "decoder") and c.parent is None
    }
    if model not in cards:
        raise TrainError(f"--model {model!r}: expected one of {', '.join(sorted(cards))}")
    return cards[model]


def card_for_method(method: str) -> MethodCard:
    """``--method found`` (or a variant, ``found.multi``) -> the card whose ``[model]`` and
    ``[training]`` a run trains (a variant's parent)."""
    cards = method_cards()
    card = cards.get(method)
    if card is not None and card.parent is not None:
        card = cards[card.parent]
    trained = sorted(
        n for n, c in cards.items() if c.parent is None and c.raw.get("model", {}).get("family")
    )
    if card is None or not card.raw.get("model", {}).get("family") or "training" not in card.raw:
        raise TrainError(
            f"--method {method!r}: not a method odbench train trains with --method; one of "
            f"{', '.join(trained)} (or --model / --features)"
        )
    return card


def card_for_features(features: str) -> MethodCard:
    """``--features dino-vits16`` -> the decoder card of the extractor's family (``dino``); an
    unknown extractor is the registry's line, with its "did you mean"."""
    family = extractor_spec(features).family
    for card in method_cards().values():
        model = card.raw.get("model", {})
        if model.get("type") == "decoder" and model.get("family") == family and card.parent is None:
            return card
    raise TrainError(f"--features {features!r}: no decoder card for the {family!r} family")


def training_options(card: MethodCard, **overrides: Any) -> dict[str, Any]:
    """The card's ``[training]`` table with the given (non-None) options overriding it."""
    options = dict(card.raw.get("training", {}))
    if not options:
        raise TrainError(f"{card.path}: card has no [training] table")
    for key, value in overrides.items():
        if value is not None:
            if key not in options:
                raise TrainError(f"{card.path}: [training] has no {key!r}")
            options[key] = value
    return options


def run_options(opts: dict[str, Any]) -> dict[str, Any]:
    """The training options a run keeps when resumed (all but its length)."""
    return {k: v for k, v in opts.items() if k != "steps"}


def target_steps(
    n_train: int, batch_size: int, steps: int | None, epochs: int | None, opts: dict[str, Any]
) -> int:
    """The run's length in steps: ``--epochs``, else ``--steps``, else the card's."""
    if epochs is not None:
        return epochs * steps_per_epoch(n_train, batch_size)
    return int(steps or opts["steps"])


@dataclass
class Setup:
    """What both training and ``--cache-only`` need, checked: options, model spec, extractor,
    dataset and the ids drawn from it."""

    data: str
    n: int | None
    card: MethodCard
    opts: dict[str, Any]
    spec: dict[str, Any]
    device: str
    dataset: Any
    ids: list[str]
    extractor: Any = None
    extractor_info: dict[str, Any] | None = None
    resumed: dict[str, Any] | None = None  # rank 0 with --resume: the checkpoint's config

    @property
    def seed(self) -> int:
        return int(self.opts["seed"])

    @property
    def resolution(self) -> int:
        return int(self.opts["resolution"])

    @property
    def batch_size(self) -> int:
        return int(self.opts["batch_size"])

    @property
    def val_split(self) -> float:
        return float(self.opts["val_split"])


def setup(
    world: World,
    *,
    data: str,
    out: Path | None,
    model: str | None,
    features: str | None,
    method: str | None = None,
    data_root: Path | None,
    n: int | None,
    steps: int | None,
    epochs: int | None,
    resume: bool,
    device: str,
    cache_dir: Path | None,
    extractor_options: dict[str, Any] | None,
    cache_only: bool,
    overrides: dict[str, Any],
) -> Setup:
    """Every option checked, the extractor loaded, a resumed run's options compared with the
    checkpoint's, the dataset opened and the ids drawn: a run refused here has cost nothing.
    ``out`` is None for ``cache_only`` (no run folder)."""
    from odbench.data.base import create_dataset

    device = world.device(resolve_device(device))
    if method is not None:
        if model is not None:
            raise TrainError("give --method (with --features) or --model, not both")
        card = card_for_method(method)
        features = features or str(card.raw["model"]["features"])
        family, model_table = extractor_spec(features).family, card.raw["model"]
        allowed = list(model_table.get("families", [model_table["family"]]))
        if family not in allowed:
            raise TrainError(
                f"--features {features}: a {family} extractor; --method {card.name} trains on "
                f"{' or '.join(allowed)} features (e.g. {model_table['features']})"
            )
    elif (model is None) == (features is None):
        raise TrainError("give exactly one of --model (end to end) or --features (decoder)")
    else:
        card = card_for_model(model) if model is not None else card_for_features(str(features))
    if steps is not None and epochs is not None:
        raise TrainError("give --steps or --epochs, not both")
    if features is not None and overrides.get("resolution") is None:  # tiny extractors: small
        overrides = {**overrides, "resolution": extractor_spec(features).resolution}
    opts = training_options(card, **overrides)
    seed, resolution, bs = int(opts["seed"]), int(opts["resolution"]), int(opts["batch_size"])
    if not 0.0 <= float(opts["val_split"]) < 1.0:
        raise TrainError(f"--val-split must be in [0, 1), got {opts['val_split']}")
    for name, value in (
        ("--steps", steps),
        ("--epochs", epochs),
        ("--n", n),
        ("--batch-size", bs),
        ("--resolution", resolution),
    ):
        if value is not None and value < 1:
            raise TrainError(f"{name} must be >= 1, got {value}")
    if not float(opts["lr"]) > 0.0:
        raise TrainError(f"--lr must be > 0, got {opts['lr']}")
    if out is not None:
        _check_out(world, out, resume)
    if features is not None:
        check_output_folder(FeatureCache(cache_dir).folder, "--cache-dir")

    # The extractor first: a bad name fails before any data is read.
    found = Setup(data, n, card, opts, dict(card.raw["model"]), device, None, [])
    if features is not None:
        extractor_options = dict(extractor_options or {})
        if (
            card.hyperparameters.get("field_weights")
            and "field_url" in extractor_spec(features).config
        ):  # FOUND: the DINO checkpoint of the paper unless told otherwise
            extractor_options.setdefault("weights", "field")
        _load_extractor(found, features, extractor_options)
    elif "trunk_weights" in opts:
        found.spec["trunk_weights"] = opts["trunk_weights"]
    if resume and world.is_main and out is not None:
        # Before any data is read or feature computed: a resume that is refused costs nothing.
        found.resumed = read_config(out)
        check_resumable(
            out, found.resumed, card, found.spec, run_options(opts), found.extractor_info
        )
    found.dataset = create_dataset(data, data_root=data_root)
    found.ids = select_ids(found.dataset.ids(), n, seed)
    if not cache_only:
        n_train = len(split_rows(len(found.ids), found.val_split, seed)[0])
        if n_train < 1:
            raise TrainError(
                f"{len(found.ids)} samples leave none for training with --val-split "
                f"{opts['val_split']}"
            )
        if min(bs, n_train) < world.size:
            raise TrainError(
                f"a global batch of {min(bs, n_train)} cannot be split across {world.size} "
                f"processes (each needs a sample); raise --batch-size or use fewer processes"
            )
        total = target_steps(n_train, bs, steps, epochs, opts)
        done = int(found.resumed["step"]) if found.resumed is not None else 0
        if done > total:
            given = f"--epochs {epochs} ({total} steps)" if epochs is not None else f"{total} steps"
            raise TrainError(
                f"--resume: the run in {out} is at step {done} already, past {given}; give "
                f"--steps above {done} to train it further"
            )
    return found


def _check_out(world: World, out: Path, resume: bool) -> None:
    """``--out`` is a folder that can be written, holding a run exactly when resuming."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise TrainError(f"--out {out}: exists and is not a folder")
    if world.is_main:  # the run folder is rank 0's alone (it may not exist on other nodes)
        check_output_folder(out, "--out")
        has_ckpt = (out / CHECKPOINT_FILE).is_file()
        if has_ckpt and not resume:
            raise TrainError(
                f"--out {out}: holds a training run already; pass --resume to continue it or "
                f"choose another folder"
            )
        if resume and not has_ckpt:
            raise TrainError(f"--resume: {out / CHECKPOINT_FILE} not found; start without --resume")


def _load_extractor(setup: Setup, features: str, options: dict[str, Any]) -> None:
    """Load ``--features`` with its options into ``setup``; the decoder's spec takes its
    channels and strides."""
    from odbench.features import load_extractor

    try:
        extractor = load_extractor(features, device=setup.device, **options)
    except TypeError as e:  # the builders' "unknown option(s)"
        if "unknown option" not in str(e):
            raise
        raise TrainError(f"--extractor-option: {e}") from e
    if setup.resolution % extractor.input_multiple:
        raise TrainError(
            f"resolution {setup.resolution} is not a multiple of {extractor.input_multiple} "
            f"(what {features} needs); pass --resolution"
        )
    if setup.spec.get("type") == "found":  # keys + FOUND's pseudo-labels, cached together
        from odbench.training.found import SeedTargets

        hp = setup.card.hyperparameters
        extractor = SeedTargets(extractor, float(hp["bkg_th"]), bool(hp["weighted"]))
    setup.spec.update(channels=list(extractor.channels), strides=list(extractor.strides))
    setup.extractor = extractor
    setup.extractor_info = {
        "name": features,
        "identity": extractor.identity,
        "options": dict(options),
        "channels": list(extractor.channels),
        "strides": list(extractor.strides),
    }
