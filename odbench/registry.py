"""One registry type for everything odbench looks up by name, and the registries of methods,
datasets and feature extractors.  The protocols' registry is
:data:`odbench.metrics.protocols.PROTOCOLS`, beside the protocols (the metric layer imports
nothing above it; this module imports only what its loaders fill the registries from).

Entries are lazy: a registry stores ``"module:attr"`` strings (from the TOML cards in
``methods/`` and ``datasets/``, or from the ``odbench.methods`` entry-point group) and imports
the target only when it is first asked for, so ``odbench list`` and ``odbench score`` never
import torch.  Objects may also be registered directly with the ``register`` decorator.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from odbench.errors import OdbenchError

T = TypeVar("T")


class UnknownNameError(OdbenchError, KeyError):
    """A name that is not registered; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


@dataclass
class Entry:
    name: str
    description: str
    target: str | None = None  # "module:attr", imported on first use
    obj: Any = None


def import_target(target: str) -> Any:
    """Import ``"package.module:attr"`` and return the attribute."""
    module_name, _, attr = target.partition(":")
    if not attr:
        raise ValueError(f"entry {target!r} must look like 'package.module:attr'")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attr)
    except AttributeError as e:
        raise ImportError(f"{module_name} has no attribute {attr!r} (entry {target!r})") from e


class Registry(Generic[T]):
    """Name -> object, with lazy imports and "did you mean" errors."""

    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._group = entry_point_group
        self._entry_points_loaded = entry_point_group is None
        self._loaders: list[Callable[[Registry[T]], None]] = []
        self._loaded = False
        self._aliases: dict[str, str] = {}

    def add_loader(self, loader: Callable[[Registry[T]], None]) -> None:
        """Register a function that fills the registry on first use (e.g. from cards)."""
        self._loaders.append(loader)

    def _ensure(self) -> None:
        if not self._loaded:
            self._loaded = True
            for loader in self._loaders:
                loader(self)
        if not self._entry_points_loaded:
            self._entry_points_loaded = True
            assert self._group is not None
            from importlib.metadata import entry_points  # ~30 ms: only when names are needed

            for ep in entry_points(group=self._group):
                if ep.name not in self._entries:
                    self._entries[ep.name] = Entry(ep.name, f"(plugin {ep.value})", ep.value)

    def add(
        self,
        name: str,
        *,
        target: str | None = None,
        obj: Any = None,
        description: str = "",
        aliases: tuple[str, ...] = (),
    ) -> None:
        if (target is None) == (obj is None):
            raise ValueError("give exactly one of target= or obj=")
        for key in (name, *aliases):
            if key in self._entries or key in self._aliases:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
        self._entries[name] = Entry(name, description, target, obj)
        self._aliases.update({alias: name for alias in aliases})

    def canonical(self, name: str) -> str:
        """The registered name of ``name`` or of its alias (the one place aliases resolve);
        :class:`UnknownNameError` listing the valid names otherwise."""
        self._ensure()
        if name in self._entries:
            return name
        if name in self._aliases:
            return self._aliases[name]
        raise UnknownNameError(self.unknown_message(name))

    def register(self, name: str, description: str = "") -> Callable[[T], T]:
        """Decorator: ``@METHODS.register("my-method", "one line")``."""

        def deco(obj: T) -> T:
            self._ensure()
            self.add(name, obj=obj, description=description or (obj.__doc__ or "").strip())
            return obj

        return deco

    def get(self, name: str) -> T:
        entry = self._entries[self.canonical(name)]
        if entry.obj is None:
            assert entry.target is not None
            entry.obj = import_target(entry.target)
        return entry.obj  # type: ignore[no-any-return]

    def unknown_message(self, name: str) -> str:
        names = self.names()
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return f"unknown {self.kind} {name!r}.{hint} Valid: {', '.join(names)}"

    def __contains__(self, name: object) -> bool:
        self._ensure()
        return name in self._entries or name in self._aliases

    def names(self) -> list[str]:
        self._ensure()
        return sorted(self._entries)

    def describe(self) -> list[tuple[str, str]]:
        """(name, one-line description) pairs, sorted by name; imports nothing."""
        self._ensure()
        return [(n, self._entries[n].description) for n in self.names()]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def _methods_from_cards(reg: Registry[Any]) -> None:
    from odbench.cards import method_cards

    for card in method_cards().values():
        reg.add(card.name, target=card.entry, description=card.description)


def _datasets_from_cards(reg: Registry[Any]) -> None:
    from odbench.cards import dataset_cards

    for card in dataset_cards().values():
        reg.add(card.name, target=card.entry, description=card.description, aliases=card.aliases)


def _builtin_features(reg: Registry[Any]) -> None:
    from odbench.features.specs import SPECS

    for spec in SPECS:
        reg.add(spec.name, obj=spec, description=spec.description)


#: Method classes (subclasses of :class:`odbench.methods.base.Method`).
METHODS: Registry[Any] = Registry("method", entry_point_group="odbench.methods")
METHODS.add_loader(_methods_from_cards)
#: Dataset classes (subclasses of :class:`odbench.data.base.Dataset`).
DATASETS: Registry[Any] = Registry("dataset", entry_point_group="odbench.datasets")
DATASETS.add_loader(_datasets_from_cards)

#: Feature extractors (:class:`odbench.features.specs.ExtractorSpec`; build with
#: :func:`odbench.features.load_extractor`).
FEATURES: Registry[Any] = Registry("feature extractor", entry_point_group="odbench.features")
FEATURES.add_loader(_builtin_features)
