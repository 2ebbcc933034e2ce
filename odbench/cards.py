"""Declarative cards: one TOML file per method (``methods/``) and per dataset (``datasets/``).

A card holds what a researcher needs to know and cite: hyperparameters, weights, URLs and
checksums, the paper's reported numbers.  It also names the Python object that implements it
(``entry = "odbench.methods.center_prior:CenterPrior"``), which is how built-in methods and
datasets are registered without importing anything (see :mod:`odbench.registry`).

In a source checkout the cards are read from the repository's top-level folders; an installed
wheel carries them under ``odbench/_cards/`` (see ``pyproject.toml``).
"""

from __future__ import annotations

import hashlib
import operator
import tomllib
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

from odbench.errors import OdbenchError

_PKG = Path(__file__).resolve().parent


def card_dir(kind: str) -> Path:
    """Folder holding the cards of ``kind`` ("methods", "datasets" or "reported")."""
    installed = _PKG / "_cards" / kind
    if installed.is_dir():
        return installed
    repo = _PKG.parent / ("leaderboard/reported" if kind == "reported" else kind)
    return repo


class CardError(OdbenchError, ValueError):
    """A card that cannot be read; the message names the file."""


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise CardError(f"{path}: cannot read card: {e}") from e


def _require(data: dict[str, Any], key: str, path: Path) -> Any:
    if key not in data:
        raise CardError(f"{path}: card lacks the required key {key!r}")
    return data[key]


def _common_fields(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """The fields every card has (name, description, entry, task, citation) plus its path,
    sha256 and raw table."""
    return {
        "name": _require(data, "name", path),
        "description": _require(data, "description", path),
        "entry": _require(data, "entry", path),
        "path": path,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "task": tuple(data.get("task", ["saliency"])),
        "citation": data.get("citation", ""),
        "raw": data,
    }


# [ranges] keys: (key, how it reads, test); NaN fails every test.
_LIMITS = (
    ("min", ">=", operator.ge),
    ("gt", ">", operator.gt),
    ("max", "<=", operator.le),
    ("lt", "<", operator.lt),
)


@dataclass(frozen=True)
class MethodCard:
    """A method's card.  ``reported`` rows: dicts with ``source``, ``dataset`` and metric keys
    (``acc``, ``iou``, ``max_fbeta``, ``corloc``), as published, never computed by odbench.
    ``task`` always holds ``discovery``: every method proposes instances (one per image by
    default, :meth:`odbench.methods.base.Method.predict_instances`).

    A card may hold **variants** (e.g. the Table 6 rows of ``attentioncut``)::

        [variants.row1]
        description = "Table 6 row 1: A_c."
        [variants.row1.hyperparameters]
        terms = ["A_c"]
        [[variants.row1.reported]]
        ...

    Each is a card of its own named ``<card>.<variant>`` (``attentioncut.row1``), with the same
    entry, task and citation, the card's hyperparameters updated by the variant's (a variant can
    only change existing ones), and its own ``reported`` rows; ``parent`` names the card."""

    name: str
    description: str
    entry: str
    path: Path
    sha256: str
    task: tuple[str, ...] = ("saliency",)
    paper: str = ""
    citation: str = ""
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    ranges: dict[str, dict[str, Any]] = field(default_factory=dict)
    reported: tuple[dict[str, Any], ...] = ()
    raw: dict[str, Any] = field(default_factory=dict)
    parent: str | None = None
    #: Images the method takes at once to use its device well (1: it works image by image);
    #: ``eval`` feeds it batches of this size unless ``--batch-size`` says otherwise.
    batch_size: int = 1

    @classmethod
    def from_file(cls, path: Path) -> MethodCard:
        data = _read_toml(path)
        common = _common_fields(data, path)
        if "discovery" not in common["task"]:  # every method: Method.predict_instances
            common["task"] = (*common["task"], "discovery")
        batch_size = data.get("batch_size", 1)
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise CardError(f"{path}: batch_size must be an integer >= 1, got {batch_size!r}")
        return cls(
            **common,
            batch_size=batch_size,
            paper=data.get("paper", ""),
            hyperparameters=dict(data.get("hyperparameters", {})),
            ranges=dict(data.get("ranges", {})),
            reported=tuple(data.get("reported", [])),
        )

    def range_problem(self, key: str, value: Any) -> str | None:
        """Why ``value`` is outside the valid values the card's ``[ranges]`` table declares for
        hyperparameter ``key`` (``min``/``max``: inclusive, ``gt``/``lt``: exclusive,
        ``choices``: a list); None when it is inside or no range is declared."""
        rule = self.ranges.get(key, {})
        if "choices" in rule and value not in rule["choices"]:
            return f"one of {', '.join(map(repr, rule['choices']))}"
        if not isinstance(value, int | float) or isinstance(value, bool):
            return None
        limits = [(k, sym, op) for k, sym, op in _LIMITS if k in rule]
        if all(op(value, rule[k]) for k, _, op in limits):
            return None
        return " and ".join(f"{sym} {rule[k]}" for k, sym, _ in limits)

    def variants(self) -> list[MethodCard]:
        """The cards of the ``[variants.*]`` tables (see the class docstring)."""
        out = []
        for key, table in dict(self.raw.get("variants", {})).items():
            where = f"{self.path}: [variants.{key}]"
            if not isinstance(table, dict) or "description" not in table:
                raise CardError(f"{where} needs a description")
            extra = sorted(set(table) - {"description", "hyperparameters", "reported"})
            if extra:
                raise CardError(
                    f"{where}: unknown key(s) {', '.join(extra)}; a variant has description, "
                    "hyperparameters and reported"
                )
            changes = dict(table.get("hyperparameters", {}))
            unknown = sorted(set(changes) - set(self.hyperparameters))
            if unknown:
                raise CardError(
                    f"{where} sets hyperparameter(s) {', '.join(unknown)} the card does not have"
                )
            out.append(
                replace(
                    self,
                    name=f"{self.name}.{key}",
                    description=str(table["description"]),
                    hyperparameters={**self.hyperparameters, **changes},
                    reported=tuple(table.get("reported", [])),
                    parent=self.name,
                )
            )
        return out


@dataclass(frozen=True)
class DatasetCard:
    """A dataset's card.  Download/layout fields are kept in ``raw`` and read by
    :mod:`odbench.data`; the fields here are the ones every dataset has."""

    name: str
    description: str
    entry: str
    path: Path
    sha256: str
    task: tuple[str, ...] = ("saliency",)
    aliases: tuple[str, ...] = ()
    count: int | None = None
    citation: str = ""
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_file(cls, path: Path) -> DatasetCard:
        data = _read_toml(path)
        return cls(
            **_common_fields(data, path),
            aliases=tuple(data.get("aliases", [])),
            count=data.get("count"),
        )


@cache
def method_cards() -> dict[str, MethodCard]:
    out: dict[str, MethodCard] = {}
    for p in sorted(card_dir("methods").glob("*.toml")):
        card = MethodCard.from_file(p)
        for c in (card, *card.variants()):
            if c.name in out:
                raise CardError(f"{p}: method {c.name!r} is also defined in {out[c.name].path}")
            out[c.name] = c
    return out


@cache
def dataset_cards() -> dict[str, DatasetCard]:
    cards = (DatasetCard.from_file(p) for p in sorted(card_dir("datasets").glob("*.toml")))
    return {c.name: c for c in cards}


def method_card(name: str) -> MethodCard | None:
    return method_cards().get(name)


def dataset_card(name: str) -> DatasetCard | None:
    """The card of a dataset name or of one of its ``aliases`` (None: no card has it)."""
    cards = dataset_cards()
    if name in cards:
        return cards[name]
    return next((c for c in cards.values() if name in c.aliases), None)


def dataset_size(name: str) -> int | None:
    """How many images the whole dataset ``name`` has, by its card (``count``): a copy holding
    fewer is incomplete and runs on it are subsets.  None for a name without a card or count,
    and for a generated dataset (a card with ``[generator]``: it is as large as asked)."""
    card = dataset_card(name)
    if card is None or "generator" in card.raw:
        return None
    return card.count
