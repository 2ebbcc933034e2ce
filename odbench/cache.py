"""The prediction cache: per-image maps, the unit of caching, resuming, sharding and merging.

Layout: ``<root>/<method>/<key>/`` holding ``key.json`` (what the key hashes, for humans) and
the entries, in *pack files* ``<host>-<pid>-<nonce>.pack``: one per process that writes (its
forked workers included), append-only.  ``<root>`` is ``--cache-dir``, else
``$ODBENCH_CACHE/predictions``, else the user cache folder (platformdirs, e.g.
``~/.cache/odbench/predictions``); ``odbench cache info`` shows it and ``odbench cache clear``
empties it.  Each entry holds the map as uint16 (``round(map · 65535)``, :func:`quantize`), the
sample id, the CRC-32 of the image it was predicted from (:func:`image_digest`: an image replaced
by another of its size is predicted again), for localization the method's box and for discovery
its instances (scores, boxes, RLE masks: :meth:`PredictionCache.get_instances`); it is written as
soon as it is predicted, so a run that stops resumes where it stopped.

One entry = one ``write`` at the end of its process's pack: a 24-byte header (magic, format
:data:`PACK_VERSION`, the lengths of the two parts, the CRC-32 of both), a JSON part (the id and
each array's name, dtype and shape: no pickle) and the arrays' raw bytes.  An entry is read only
when the file holds all of it (so a run killed mid-write leaves a torn tail that readers skip:
that image is predicted again) and served only when its CRC matches (a damaged entry is
predicted again).  The entries are indexed when the cache is first read (packs in the order
they were last written); an id not in the index makes it look again at the packs' new tails
(entries stored by another process since).  Of several entries of one id (two processes that
raced on it, one predicted again after its entry was damaged) the last indexed whose CRC
matches is served: all come from one key, so from the same method, code, weights and data.  Why packs, not a file per entry (``np.savez`` to a temp file,
renamed; format 1): that cost 0.66 ms of CPU per image (zip writing, a file created and renamed
in a folder of thousands) where one appended write costs ~0.08 ms (``odbench bench runner``).
During a run (:meth:`PredictionCache.writing_behind`) the process running the model hands its
entries to a thread that writes them (``pwritev`` leaves the interpreter's lock), so the model
never waits on the disk; a claim is released only once its entry is written.  Maps are stored
uncompressed: deflate shrank a 400×300 uint16 map by only ~12% (208 -> 182 KiB,
smooth 16-bit data compresses poorly) for ~12 ms of CPU per image.

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
import errno
import hashlib
import importlib.util
import json
import os
import queue
import re
import shutil
import socket
import struct
import threading
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache as _memo
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from deflate import crc32 as _crc32  # libdeflate: zlib's CRC-32 values, ~15x faster

from odbench.errors import OdbenchError
from odbench.imageio import atomic_write_bytes, naming_full_disk
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
    """A finite [0, 1] float map as uint16, ``round(p · 65535)`` (half to even, as ``np.rint``;
    values outside [0, 1] clipped): what is cached, scored and saved.  One OpenCV pass over the
    float64 map: its product by 65535 is rounded to nearest-even and saturated to [0, 65535]
    (``saturate_cast``), the same as clipping first, since the product of a float32 value is
    exact and rounding is monotone (tested against ``np.rint`` on every tie); 2-3x numpy's
    clip-multiply-round-cast passes."""
    import cv2

    unit = np.asarray(pred, dtype=np.float64)  # float32 maps: widened exactly
    if unit.ndim != 2 or unit.size == 0:
        return _quantize_numpy(unit)
    return cv2.multiply(unit, 65535.0, dtype=cv2.CV_16U)


def _quantize_numpy(pred: np.ndarray) -> np.ndarray:
    """:func:`quantize` in numpy, for arrays OpenCV does not take as one image (not 2-D, or
    empty)."""
    unit = pred.astype(np.float64)  # a copy: the steps below work in place
    np.clip(unit, 0.0, 1.0, out=unit)
    unit *= 65535.0
    np.rint(unit, out=unit)  # what np.round does with no decimals: half to even
    return unit.astype(np.uint16)


# ----------------------------------------------------------------------------- code identity


def image_digest(image: np.ndarray) -> int:
    """The CRC-32 of an image's pixels and shape: which version of the image an entry was
    predicted from (:meth:`PredictionCache.put`'s ``source``), so an image file replaced by
    another of the same size is predicted again, not served the old map (~9 us per ECSSD
    image)."""
    pixels = np.ascontiguousarray(image)
    return int(_crc32(pixels.reshape(-1).view(np.uint8), _crc32(repr(pixels.shape).encode())))


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
        "format": PACK_VERSION,  # entries of another format live in another folder
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


#: The entry format (format 1: one ``.npz`` per entry, no longer read).
PACK_VERSION = 2
_MAGIC = b"ODPK"
_HEADER = struct.Struct("<4sHHIQI")  # magic, version, 0, JSON bytes, array bytes, CRC-32
_Entry = tuple[str, int, int, int]  # pack file name, offset, JSON bytes, array bytes


#: Entries a :meth:`PredictionCache.writing_behind` thread holds waiting, at most.
BEHIND = 8


class _Behind:
    """The thread of :meth:`PredictionCache.writing_behind`: writes, then ``then()``, in order."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.error: BaseException | None = None
        self.raised = False
        self.todo: queue.Queue[tuple[Callable[[], None], Callable[[], None] | None] | None]
        self.todo = queue.Queue(maxsize=BEHIND)
        self.thread = threading.Thread(target=self._run, name="odbench-cache", daemon=True)
        self.thread.start()

    def submit(self, write: Callable[[], None], then: Callable[[], None] | None) -> None:
        self.raise_error()
        self.todo.put((write, then))

    def raise_error(self) -> None:
        """The first write's error, once (later entries were dropped)."""
        if self.error is not None and not self.raised:
            self.raised = True
            raise self.error

    def close(self) -> None:
        self.todo.put(None)
        self.thread.join()

    def _run(self) -> None:
        while (task := self.todo.get()) is not None:
            write, then = task
            try:
                if self.error is None:
                    write()
            except BaseException as e:  # raised in the caller's thread, at its next put
                self.error = e
            if then is not None:
                try:
                    then()
                except BaseException as e:
                    self.error = self.error or e


@dataclass
class PredictionCache:
    """One folder of per-image entries in pack files (the module docstring): one (method
    identity, dataset) pair.

    ``key`` (the dict :func:`cache_key` hashed) is written to ``key.json`` together with the
    first entry, so a run that fails before predicting anything leaves no folder behind."""

    folder: Path
    key: dict[str, Any] | None = None
    _index: dict[str, list[_Entry]] = field(default_factory=dict, repr=False, compare=False)
    _scanned: dict[str, int] = field(default_factory=dict, repr=False, compare=False)
    _writer: tuple[int, int, str] | None = field(default=None, repr=False, compare=False)
    #: where this process's next entry goes in its pack: its own count, not ``_scanned``, which
    #: a look-up in another thread may set (scanning the pack just made, before it is ours)
    _end: int = field(default=0, repr=False, compare=False)
    _listed: bool = field(default=False, repr=False, compare=False)  # the folder read once
    _behind: _Behind | None = field(default=None, repr=False, compare=False)

    def path(self, sample_id: str) -> Path:
        """The pack file holding ``sample_id``'s entry; the folder when there is none."""
        found = self._find(sample_id)
        return self.folder / found[-1][0] if found else self.folder

    def has(self, sample_id: str, look_again: bool = True) -> bool:
        """Whether the folder holds an entry of ``sample_id``.  ``look_again=False``: among the
        entries indexed so far only (the packs are read on the first look-up), not those
        another process stored since: the cheap look-up before claiming an image, which is
        looked up again once claimed (one folder listing per image predicted, not two)."""
        return bool(self._find(sample_id, look_again))

    def why_missing(self, sample_id: str) -> str:
        """Why ``sample_id`` has no entry, for an error line: its old-format entry (format 1,
        one ``.npz`` per entry) when the folder still holds one, else plainly absent."""
        if (self.folder / f"{safe_name(sample_id)}.npz").is_file():
            return "is only in an older cache format (an .npz per image), no longer read"
        return "is not in the prediction cache"

    def ids(self) -> list[str]:
        """The sample ids of the entries in the folder (read from the entries), sorted."""
        self._refresh()
        return sorted(self._index)

    def put(
        self,
        sample_id: str,
        pred: np.ndarray,
        box: np.ndarray | None,
        instances: Instances | None = None,
        then: Callable[[], None] | None = None,
        source: int | None = None,
    ) -> None:
        """Store a uint16 map (and box, and instances) for ``sample_id``: one write at the end
        of this process's pack, then ``then()`` (releasing the image's claim).  Within
        :meth:`writing_behind`, in this process: handed to its thread (``then()`` runs there,
        after the write, or after it failed); the arrays must not change afterwards.
        ``source``: the :func:`image_digest` of the image it was predicted from."""
        behind = self._behind
        if behind is not None and behind.pid == os.getpid():
            behind.submit(partial(self._write, sample_id, pred, box, instances, source), then)
            return
        self._write(sample_id, pred, box, instances, source)
        if then is not None:
            then()

    @contextmanager
    def writing_behind(self) -> Iterator[None]:
        """Within the context, :meth:`put` in this process returns at once and a thread writes
        the entries, in order (at most :data:`BEHIND` waiting: a slow disk holds the model
        back rather than filling memory).  A write's error is raised by the next :meth:`put`
        or when the context ends (entries handed over after it are dropped, their ``then``
        still called); leaving the context waits for every write.  Enter it after forking:
        forked processes write themselves."""
        behind = self._behind = _Behind()
        try:
            yield
        finally:  # an error on its way out stays the one reported
            self._behind = None
            behind.close()
        behind.raise_error()

    def _write(
        self,
        sample_id: str,
        pred: np.ndarray,
        box: np.ndarray | None,
        instances: Instances | None = None,
        source: int | None = None,
    ) -> None:
        arrays: dict[str, np.ndarray] = {"map": np.ascontiguousarray(pred)}
        if box is not None:
            arrays["box"] = np.asarray(box, dtype=np.float64)
        if source is not None:
            arrays["source"] = np.array([source], np.uint32)
        if instances is not None:
            arrays.update(_instance_arrays(instances))
        meta = json.dumps(
            {"id": sample_id, "arrays": [[k, v.dtype.str, v.shape] for k, v in arrays.items()]}
        ).encode()
        data: list[Any] = [
            np.ascontiguousarray(v).reshape(-1).view(np.uint8) for v in arrays.values()
        ]
        crc = _crc32(meta)
        for part in data:
            crc = _crc32(part, crc)
        n_data = sum(part.nbytes for part in data)
        header = _HEADER.pack(_MAGIC, PACK_VERSION, 0, len(meta), n_data, crc)
        fd, name, start = self._pack()
        total = _HEADER.size + len(meta) + n_data
        try:
            with naming_full_disk(self.folder):
                if os.pwritev(fd, [header, meta, *data], start) != total:  # disk full
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.folder))
        except BaseException:
            try:  # no torn tail left behind: readers would skip it, and all after it
                os.ftruncate(fd, start)
            except OSError:
                self._writer = None  # the next entry starts a new pack
            raise
        self._writer, self._end = (os.getpid(), fd, name), start + total
        self._index.setdefault(sample_id, []).append((name, start, len(meta), n_data))
        self._scanned[name] = max(self._scanned.get(name, 0), start + total)

    def get(
        self, sample_id: str, look_again: bool = True, source: int | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(uint16 map, box or None) as stored; :class:`CacheError` for a corrupt or foreign
        entry.  ``look_again=False``: the newest sound entry indexed so far (as :meth:`has`),
        without first looking at the packs' new tails.  ``source``: only an entry predicted
        from that version of the image (:func:`image_digest`; else a :class:`CacheError`)."""
        arrays = self._read(sample_id, look_again, source)
        return arrays["map"], arrays.get("box")

    def get_instances(
        self, sample_id: str, look_again: bool = True, source: int | None = None
    ) -> Instances | None:
        """The stored instances of ``sample_id``; None for an entry stored without them (a run
        of another task): a discovery run predicts such an image again.  ``look_again``,
        ``source``: :meth:`get`'s."""
        arrays = self._read(sample_id, look_again, source)
        return _instances_from(arrays) if "inst_scores" in arrays else None

    def read_map(self, sample_id: str) -> np.ndarray:
        """The cached map of ``sample_id`` as float64 in [0, 1] (uint16 / 65535)."""
        return self.get(sample_id)[0].astype(np.float64) / 65535.0

    # -- the packs

    def _pack(self) -> tuple[int, str, int]:
        """(this process's pack, open for appending; its name; its size), made on first use
        (a forked worker makes its own), with ``key.json`` beside it."""
        if self._writer is not None and self._writer[0] == os.getpid():
            _, fd, name = self._writer
            return fd, name, self._end
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.key is not None and not (self.folder / "key.json").is_file():
            atomic_write_bytes(self.folder / "key.json", json.dumps(self.key, indent=2).encode())
        host = re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname())
        name = f"{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}.pack"
        with naming_full_disk(self.folder):
            fd = os.open(self.folder / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        weakref.finalize(self, _close_in, os.getpid(), fd)
        self._writer, self._end, self._scanned[name] = (os.getpid(), fd, name), 0, 0
        return fd, name, 0

    def _find(self, sample_id: str, look_again: bool = True) -> list[_Entry]:
        """The entries of ``sample_id``, oldest first."""
        found = self._index.get(sample_id)
        if found is None and (look_again or not self._listed):  # stored since it was read?
            self._refresh()
            found = self._index.get(sample_id)
        return found or []

    def _refresh(self) -> None:
        """Index the complete entries the packs gained since they were last read."""
        own = self._writer[2] if self._writer and self._writer[0] == os.getpid() else None
        scanned, grown = self._scanned, []
        try:  # this object's own pack is indexed as it writes: not even looked at
            with os.scandir(self.folder) as entries:
                for entry in entries:
                    name = entry.name
                    if name[-5:] == ".pack" and name != own:
                        try:
                            st = entry.stat()
                        except FileNotFoundError:  # cleared meanwhile
                            continue
                        if st.st_size > scanned.get(name, 0):
                            grown.append((st.st_mtime_ns, name, st.st_size))
        except (FileNotFoundError, NotADirectoryError):
            return
        self._listed = True
        for _, name, size in sorted(grown):  # in the order they were last written
            self._scan(name, size)

    def _scan(self, name: str, size: int) -> None:
        offset = self._scanned.get(name, 0)
        try:
            fd = os.open(self.folder / name, os.O_RDONLY)
        except OSError:
            return
        try:
            while offset + _HEADER.size <= size:
                head = os.pread(fd, _HEADER.size, offset)
                if len(head) < _HEADER.size:
                    break
                magic, version, _, n_meta, n_data, _ = _HEADER.unpack(head)
                end = offset + _HEADER.size + n_meta + n_data
                if magic != _MAGIC or version != PACK_VERSION:  # not ours: read no further
                    offset = size
                    break
                if end > size:  # a torn tail, or an entry being written: not (yet) served
                    break
                try:
                    sample_id = json.loads(os.pread(fd, n_meta, offset + _HEADER.size))["id"]
                except (ValueError, KeyError, TypeError):  # damaged: its CRC fails when read
                    sample_id = None
                if isinstance(sample_id, str):
                    self._index.setdefault(sample_id, []).append((name, offset, n_meta, n_data))
                offset = end
        finally:
            os.close(fd)
        self._scanned[name] = offset

    def _read(
        self, sample_id: str, look_again: bool = True, source: int | None = None
    ) -> dict[str, np.ndarray]:
        """The arrays of ``sample_id``'s newest sound entry (a :class:`CacheError` when
        ``source`` is given and it was predicted from another image); the newest one's error if
        none.  Reading looks at the packs' tails first (one folder listing; not with
        ``look_again`` False): a reader that lives on (a report, a test) serves an entry stored
        since by another process or object."""
        if look_again:
            self._refresh()
        found = self._find(sample_id, look_again)
        if not found:
            raise CacheError(
                f"{self.folder}: no cache entry for {sample_id!r}; re-run to predict it"
            )
        error = None
        for entry in reversed(found):
            try:
                arrays = self._read_entry(sample_id, entry)
            except CacheError as e:
                error = error or e
                continue
            stored = arrays.get("source")
            if source is not None and (stored is None or int(stored[0]) != source):
                raise CacheError(
                    f"{self.folder / entry[0]}: the cache entry of {sample_id!r} was predicted "
                    "from another version of its image; re-running predicts it again"
                )
            return arrays
        assert error is not None
        raise error

    def _read_entry(self, sample_id: str, entry: _Entry) -> dict[str, np.ndarray]:
        name, offset, n_meta, n_data = entry
        path = self.folder / name
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                head = os.pread(fd, _HEADER.size + n_meta, offset)
                body = np.empty(n_data, np.uint8)  # writable arrays, as np.load gave
                got = os.preadv(fd, [body.data], offset + _HEADER.size + n_meta)
            finally:
                os.close(fd)
            crc = _HEADER.unpack(head[: _HEADER.size])[5]
            if got != n_data or _crc32(body, _crc32(head[_HEADER.size :])) != crc:
                raise ValueError("checksum mismatch")
            meta = json.loads(head[_HEADER.size :])
            arrays: dict[str, np.ndarray] = {}
            at = 0
            for key, dtype, shape in meta["arrays"]:
                dt = np.dtype(dtype)
                if dt.hasobject:
                    raise ValueError(f"object array {key!r}")
                count = int(np.prod(shape, dtype=np.int64))
                arrays[key] = np.frombuffer(body, dt, count, at).reshape(shape)
                at += count * dt.itemsize
            stored_id = meta["id"]
        except (OSError, ValueError, KeyError, TypeError, struct.error) as e:
            raise CacheError(
                f"{path}: corrupt cache entry of {sample_id!r} at byte {offset} ({e}); "
                "re-running predicts it again"
            ) from e
        if stored_id != sample_id:
            raise CacheError(
                f"{path}: cache entry belongs to sample {stored_id!r}, not {sample_id!r}"
            )
        return arrays


def _close_in(pid: int, fd: int) -> None:
    """Close a pack opened by process ``pid`` (a forked copy of the cache leaves it alone)."""
    if os.getpid() == pid:
        try:
            os.close(fd)
        except OSError:
            pass


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


def _instances_from(npz: dict[str, np.ndarray]) -> Instances:
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
            n_entries = len(PredictionCache(key_dir).ids())
            n_entries += sum(p.suffix == ".npz" for p in files)  # format 1 entries
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
