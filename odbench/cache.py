"""The prediction cache: per-image maps, the unit of caching, resuming, sharding and merging.

Layout: ``<root>/<method>/<key>/<id>.npz`` plus ``key.json`` (what the key hashes, for humans).
``<root>`` is ``--cache-dir``, else ``$ODBENCH_CACHE/predictions``, else the user cache folder
(platformdirs, e.g. ``~/.cache/odbench/predictions``); ``odbench cache info`` shows it and
``odbench cache clear`` empties it.  Each entry holds the map as uint16 (``round(map · 65535)``,
:func:`quantize`), the sample id, for localization the method's box and for discovery its
instances (scores, boxes, RLE masks: :meth:`PredictionCache.get_instances`); it is written
atomically (temp file + rename) as soon as it is predicted, so a run that stops resumes where it
stopped.  Entries are stored uncompressed (``np.savez``): deflate shrank a 400×300 uint16 map by
only ~12% (208 -> 182 KiB, smooth 16-bit data compresses poorly) for ~12 ms of CPU per image,
2.5× the time to decode the image itself.

The key (:func:`cache_key`) hashes everything that changes a prediction: the method name, its
card's sha256, the resolved hyperparameters, the method's *code identity*
(:func:`code_identity`: the sha256 of its module's source and of every odbench module that
module imports, transitively, plus odbench's version), the identity of its weights when it has
any (:meth:`odbench.methods.base.Method.weights_identity`) and the dataset's description
(absolute folders).  Editing a method's code therefore never serves old maps.  The protocol and
``--limit`` are not part of the key: maps are per image.

Reading the cache (public API, used by reports)::

    cache = PredictionCache(Path(results["cache"]))   # the folder a results JSON names
    unit_map = cache.read_map("0001")                 # float64 (H, W) in [0, 1]
    raw_u16, box = cache.get("0001")                  # as stored
    cache.ids()                                       # sample ids it holds
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import io
import json
import os
import re
import shutil
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache as _memo
from pathlib import Path
from typing import Any

import numpy as np

from odbench.errors import OdbenchError
from odbench.imageio import atomic_write_bytes
from odbench.metrics.instances import Instances

_SAFE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


class CacheError(OdbenchError, ValueError):
    """A cache entry that cannot be used; the message names the file and the fix."""


def default_cache_root() -> Path:
    """``$ODBENCH_CACHE/predictions`` or the user cache folder (platformdirs) ``/predictions``."""
    env = os.environ.get("ODBENCH_CACHE")
    if env:
        return Path(env) / "predictions"
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("odbench")) / "predictions"


def safe_name(sample_id: str) -> str:
    """A file name for a sample id: the id itself when it is a plain name, otherwise the id with
    odd characters replaced and a short hash appended (so distinct ids never collide)."""
    if _SAFE_ID.fullmatch(sample_id):
        return sample_id
    digest = hashlib.sha256(sample_id.encode()).hexdigest()[:10]
    return re.sub(r"[^A-Za-z0-9._-]", "_", sample_id).lstrip(".") + f"-{digest}"


def quantize(pred: np.ndarray) -> np.ndarray:
    """A [0, 1] float map as uint16, ``round(p · 65535)``: what is cached, scored and saved."""
    unit = pred.astype(np.float64)  # a copy: the steps below work in place
    np.clip(unit, 0.0, 1.0, out=unit)
    unit *= 65535.0
    np.rint(unit, out=unit)  # what np.round does with no decimals: half to even
    return unit.astype(np.uint16)


# ----------------------------------------------------------------------------- code identity


def _imported_modules(source: str, package: str) -> set[str]:
    """Modules of ``package`` named by the import statements anywhere in ``source`` (function
    bodies included: odbench imports heavy modules lazily)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == package}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == package:
                found.add(node.module)
                # ``from odbench.methods import base`` imports a module, not an attribute
                found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def _module_file(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


@_memo
def _modules_sha256(root_modules: tuple[str, ...]) -> str:
    todo, seen, files = list(root_modules), set(), {}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = _module_file(name)
        if path is None:
            continue
        data = path.read_bytes()
        files[name] = hashlib.sha256(data).hexdigest()
        todo.extend(_imported_modules(data.decode(), name.split(".")[0]))
    blob = json.dumps(sorted(files.items())).encode()
    return hashlib.sha256(blob).hexdigest()


def code_identity(cls: type) -> dict[str, str]:
    """sha256 over the source of the modules defining ``cls`` and its base classes and of every
    module of their package they import (statically, transitively), plus odbench's version.

    Static import analysis rather than ``sys.modules`` so the identity does not depend on what
    else the process happened to import."""
    from odbench import __version__

    roots = tuple(
        sorted({k.__module__ for k in cls.__mro__ if k.__module__ not in ("builtins", "abc")})
    )
    return {"odbench": __version__, "sources_sha256": _modules_sha256(roots)}


def cache_key(method: Any, dataset_info: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(sha256 in 16 hex digits, the hashed dict) of everything that changes a method's maps:
    its name, card sha256, hyperparameters, code identity (:func:`code_identity`), weights
    identity (:meth:`odbench.methods.base.Method.weights_identity`) and the dataset's
    description.  ``method`` is an :class:`odbench.methods.base.Method`."""
    from odbench.results import jsonable

    key = {
        "method": method.name,
        "card_sha256": method.card.sha256 if method.card else None,
        "hyperparameters": jsonable(method.hparams),
        "code": code_identity(type(method)),
        "weights": jsonable(method.weights_identity()),
        "dataset": jsonable(dataset_info),
    }
    checkpoint = method.describe().get("checkpoint")  # trained methods: the weights' sha256
    if checkpoint is not None:
        key["checkpoint_sha256"] = checkpoint["sha256"]
    blob = json.dumps(key, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16], key


# ----------------------------------------------------------------------------- the cache


@dataclass
class PredictionCache:
    """One folder of per-image npz entries: one (method identity, dataset) pair.

    ``key`` (the dict :func:`cache_key` hashed) is written to ``key.json`` together with the
    first entry, so a run that fails before predicting anything leaves no folder behind."""

    folder: Path
    key: dict[str, Any] | None = None

    def path(self, sample_id: str) -> Path:
        return self.folder / f"{safe_name(sample_id)}.npz"

    def has(self, sample_id: str) -> bool:
        return self.path(sample_id).is_file()

    def ids(self) -> list[str]:
        """The sample ids of the entries in the folder (read from the entries), sorted."""
        out = []
        for path in sorted(self.folder.glob("*.npz")):
            with np.load(path, allow_pickle=False) as npz:
                out.append(str(npz["id"]))
        return sorted(out)

    def put(
        self,
        sample_id: str,
        pred: np.ndarray,
        box: np.ndarray | None,
        instances: Instances | None = None,
    ) -> None:
        """Store a uint16 map (and box, and instances) for ``sample_id``, atomically."""
        if self.key is not None and not (self.folder / "key.json").is_file():
            atomic_write_bytes(self.folder / "key.json", json.dumps(self.key, indent=2).encode())
        arrays: dict[str, np.ndarray] = {"map": pred, "id": np.array(sample_id)}
        if box is not None:
            arrays["box"] = np.asarray(box, dtype=np.float64)
        if instances is not None:
            arrays.update(_instance_arrays(instances))
        buf = io.BytesIO()
        np.savez(buf, allow_pickle=False, **arrays)  # uncompressed: see the module docstring
        atomic_write_bytes(self.path(sample_id), buf.getvalue())

    def get(self, sample_id: str) -> tuple[np.ndarray, np.ndarray | None]:
        """(uint16 map, box or None) as stored; :class:`CacheError` for a corrupt or foreign
        entry."""
        path = self.path(sample_id)
        try:
            with np.load(path, allow_pickle=False) as npz:
                stored_id = str(npz["id"])
                pred = npz["map"]
                box = npz["box"] if "box" in npz.files else None
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
            raise CacheError(f"{path}: corrupt cache entry ({e}); delete it and re-run") from e
        if stored_id != sample_id:
            raise CacheError(
                f"{path}: cache entry belongs to sample {stored_id!r}, not {sample_id!r}"
            )
        return pred, box

    def get_instances(self, sample_id: str) -> Instances | None:
        """The stored instances of ``sample_id``; None for an entry stored without them (a run
        of another task): a discovery run predicts such an image again."""
        path = self.path(sample_id)
        try:
            with np.load(path, allow_pickle=False) as npz:
                if "inst_scores" not in npz.files or str(npz["id"]) != sample_id:
                    return None
                return _instances_from(npz)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
            raise CacheError(f"{path}: corrupt cache entry ({e}); delete it and re-run") from e

    def read_map(self, sample_id: str) -> np.ndarray:
        """The cached map of ``sample_id`` as float64 in [0, 1] (uint16 / 65535)."""
        return self.get(sample_id)[0].astype(np.float64) / 65535.0


def _instance_arrays(instances: Instances) -> dict[str, np.ndarray]:
    """Instances as plain arrays (no pickle): scores, boxes, and the RLEs' sizes and counts."""
    out = {
        "inst_scores": np.asarray(instances.scores, dtype=np.float64).reshape(-1),
        "inst_boxes": np.asarray(instances.boxes, dtype=np.float64).reshape(-1, 4),
        "inst_has_masks": np.array(instances.masks is not None),
    }
    masks = instances.masks or []
    out["inst_sizes"] = np.array([m["size"] for m in masks], dtype=np.int64).reshape(-1, 2)
    counts = [m["counts"] for m in masks]
    out["inst_counts"] = np.array([c.encode() if isinstance(c, str) else c for c in counts], "S")
    return out


def _instances_from(npz: Any) -> Instances:
    masks = None
    if bool(npz["inst_has_masks"]):
        masks = [
            {"size": [int(h), int(w)], "counts": bytes(c)}
            for (h, w), c in zip(npz["inst_sizes"], npz["inst_counts"])
        ]
    return Instances(npz["inst_scores"], npz["inst_boxes"], masks)


# ----------------------------------------------------------------------------- info / clear


def cache_dir_option(cache_dir: Path | None) -> str:
    """`` --cache-dir DIR`` (shell-quoted) when one was given, for a hint that must find the
    same cache: `odbench cache clear` alone would empty the default one."""
    import shlex

    return "" if cache_dir is None else f" --cache-dir {shlex.quote(str(cache_dir))}"


@dataclass(frozen=True)
class CacheFolder:
    """One ``<method>/<key>`` folder: its entry count and size in bytes."""

    method: str
    key: str
    path: Path
    n_entries: int
    n_bytes: int


def cache_folders(root: Path) -> list[CacheFolder]:
    """Every ``<method>/<key>`` folder under ``root`` that holds a ``key.json`` (sorted); a
    missing root is empty.  Other folders are not the cache's: a ``--cache-dir`` given by mistake
    (a project folder) must not have its results or checkpoints listed or cleared."""
    out: list[CacheFolder] = []
    if not root.is_dir():
        return out
    for method_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for key_dir in sorted(p for p in method_dir.iterdir() if (p / "key.json").is_file()):
            files = [p for p in key_dir.iterdir() if p.is_file()]
            n_entries = sum(p.suffix == ".npz" for p in files)
            size = sum(p.stat().st_size for p in files)
            out.append(CacheFolder(method_dir.name, key_dir.name, key_dir, n_entries, size))
    return out


def clear_cache(root: Path, methods: Iterable[str] = ()) -> list[CacheFolder]:
    """Delete the cache folders of ``methods`` (all when empty) under ``root``; returns them."""
    wanted = set(methods)
    removed = [f for f in cache_folders(root) if not wanted or f.method in wanted]
    for folder in removed:
        shutil.rmtree(folder.path)
    for method_dir in {f.path.parent for f in removed}:
        if method_dir.is_dir() and not any(method_dir.iterdir()):
            method_dir.rmdir()
    return removed
