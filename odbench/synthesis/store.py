"""The output folder of ``odbench synth``: resumable, shardable, mergeable.

Layout (``{id}`` = :func:`sample_id`, from the run seed and the sample index)::

    DIR/records/{id}.json   one per generated sample, kept or rejected: the unit of resume and merge
    DIR/images/{id}.png     RGB, kept samples only
    DIR/masks/{id}.png      0/255 8-bit, kept samples only
    DIR/manifest.jsonl      every record, one line each, in index order
    DIR/manifest.json       the ``synthetic`` dataset loader's manifest (kept samples) whose
                            ``generator`` block holds the run's configuration and the counts of
                            kept and rejected samples by reason

Every file goes through a temp file and a rename.  A sample is done when its record exists; its
PNGs are written before it, so a killed run leaves at most a stale temp file (removed on the next
start) or PNGs without a record (made again, byte-identical, on resume).  The manifests are views
of the records, rewritten periodically and at the end.  A shard's folder differs from an
unsharded run only by ``"shard": [I, N]`` in ``manifest.json`` and by holding the indices
``i = I mod N``; :func:`merge` checks the shards agree and are complete and writes exactly the
folder one unsharded run writes.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from odbench.data.synthetic import FORMAT, VERSION
from odbench.errors import OdbenchError
from odbench.imageio import atomic_write_bytes, write_png
from odbench.outputs import check_output_folder

#: Why a sample is rejected, in the order the checks run (the first failing one is recorded).
REASONS = (
    "non_finite",
    "clip_disagrees",
    "mask_empty",
    "mask_tiny",
    "mask_nearly_full",
    "mask_all_borders",
)


class SynthStoreError(OdbenchError, ValueError):
    """An output folder that cannot be used as asked; the message names the folder and the fix."""


def sample_id(seed: int, index: int) -> str:
    """``s{seed}-{index:07d}``: the same sample has the same id in every shard layout."""
    return f"s{seed}-{index:07d}"


def _dumps(obj: Any, indent: int | None = None) -> bytes:
    return (json.dumps(obj, sort_keys=True, indent=indent, ensure_ascii=False) + "\n").encode()


def check_target(folder: Path) -> None:
    """Refuse an output path that is a file, cannot be created or written, or a non-empty folder
    that is not a synth folder."""
    if folder.exists() and not folder.is_dir():
        raise SynthStoreError(f"{folder}: exists and is not a folder; give another --out")
    check_output_folder(folder, "--out")
    if folder.is_dir() and not (folder / "manifest.json").is_file() and any(folder.iterdir()):
        raise SynthStoreError(
            f"{folder}: not empty and not an odbench synth folder; give an empty or new --out"
        )


class SynthStore:
    """One output folder (see module docstring); thread-safe :meth:`add`."""

    def __init__(
        self,
        folder: str | Path,
        header: dict[str, Any],
        shard: tuple[int, int] | None = None,
        owner: bool = True,
    ) -> None:
        """``header``: ``{"config": ..., "model": ..., "odbench": ...}`` — what must match when
        a run resumes (``n`` may grow: a finished run can be extended).  ``owner = False``: one
        of several processes of a launch writing disjoint samples into the folder; only the
        owner (rank 0, which opens it first) cleans it up and writes the manifests."""
        self.folder = Path(folder)
        self.header = header
        self.shard = shard
        self.owner = owner
        self.records: dict[int, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._open()

    # -- opening / resuming
    def _open(self) -> None:
        folder = self.folder
        manifest = folder / "manifest.json"
        check_target(folder)
        if manifest.is_file():
            gen = _read_json(manifest).get("generator", {})
            for key in ("config", "model", "odbench"):
                if gen.get(key) != self.header[key]:
                    raise SynthStoreError(
                        f"{folder}: holds a run with another {key} ({_diff(gen.get(key), self.header[key])}); "
                        "resume with the same options or give a new --out"
                    )
            theirs = gen.get("shard")
            ours = list(self.shard) if self.shard else None
            if theirs != ours:
                raise SynthStoreError(
                    f"{folder}: holds shard {theirs} but this run is shard {ours}; give a new --out"
                )
        if not self.owner:
            self.reload()
            return
        for sub in ("images", "masks", "records"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        for sub in (".", "images", "masks", "records"):
            for tmp in (folder / sub).glob(".*.tmp"):  # left by a killed write
                tmp.unlink()
        self.reload()
        self.flush()

    def reload(self) -> None:
        """Read every record on disk (also those other processes wrote)."""
        records = {}
        for path in sorted((self.folder / "records").glob("*.json")):
            rec = _read_json(path)
            records[int(rec["index"])] = rec
        with self._lock:
            self.records = records

    def done(self, index: int) -> bool:
        return index in self.records

    # -- writing
    def add(
        self, record: dict[str, Any], image: np.ndarray | None, mask: np.ndarray | None
    ) -> None:
        """Write one sample: its PNGs (kept samples), then its record (the commit point)."""
        sid = record["id"]
        if image is not None and mask is not None:
            write_png(self.folder / record["image"], image)
            write_png(self.folder / record["mask"], mask)
        atomic_write_bytes(self.folder / "records" / f"{sid}.json", _dumps(record))
        with self._lock:
            self.records[int(record["index"])] = record

    def counts(self) -> dict[str, Any]:
        with self._lock:
            reasons = Counter(r["reason"] for r in self.records.values() if not r["kept"])
            kept = sum(1 for r in self.records.values() if r["kept"])
            total = len(self.records)
        return {"generated": total, "kept": kept, "rejected": {k: reasons[k] for k in REASONS}}

    def flush(self, n: int | None = None) -> None:
        """Rewrite ``manifest.jsonl`` and ``manifest.json`` from the records (owner only)."""
        if not self.owner:
            return
        with self._lock:
            records = [self.records[i] for i in sorted(self.records)]
        gen: dict[str, Any] = {"tool": "odbench synth", **self.header, "counts": self.counts()}
        if n is not None:
            gen["n"] = n
        elif (self.folder / "manifest.json").is_file():
            old = _read_json(self.folder / "manifest.json").get("generator", {})
            if "n" in old:
                gen["n"] = old["n"]
        if self.shard is not None:
            gen["shard"] = list(self.shard)
        samples = [
            {"id": r["id"], "image": r["image"], "mask": r["mask"]} for r in records if r["kept"]
        ]
        data = {"format": FORMAT, "version": VERSION, "generator": gen, "samples": samples}
        atomic_write_bytes(
            self.folder / "manifest.jsonl", b"".join(_dumps(r) for r in records) or b""
        )
        atomic_write_bytes(self.folder / "manifest.json", _dumps(data, indent=1))

    def finish(self, n: int) -> None:
        """Final manifests, and PNGs that no record claims (a killed run's leftovers) removed."""
        if not self.owner:
            return
        self.flush(n)
        claimed = {r[k] for r in self.records.values() if r["kept"] for k in ("image", "mask")}
        for sub in ("images", "masks"):
            for path in (self.folder / sub).iterdir():
                if f"{sub}/{path.name}" not in claimed:
                    path.unlink()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SynthStoreError(
            f"{path}: unreadable ({e}); delete it to make the sample again"
        ) from e
    if not isinstance(data, dict):
        raise SynthStoreError(f"{path}: expected a JSON object")
    return data


def _diff(a: Any, b: Any) -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        return ", ".join(f"{k}: {a.get(k)!r} there, {b.get(k)!r} now" for k in keys[:3])
    return f"{a!r} there, {b!r} now"


def merge(folders: Sequence[str | Path], out: str | Path) -> dict[str, Any]:
    """Combine the folders of shards 0..N-1 of one run into ``out``, byte for byte what the
    unsharded run writes.  Refuses shards of different runs, missing or repeated shards and
    incomplete shards (resume those first).  Returns the merged counts."""
    gens = []
    for f in folders:
        m = Path(f) / "manifest.json"
        if not m.is_file():
            raise SynthStoreError(f"{f}: no manifest.json (not an odbench synth folder)")
        gens.append(_read_json(m).get("generator", {}))
    first = gens[0]
    for f, g in zip(folders, gens):
        for key in ("config", "model", "odbench", "n"):
            if g.get(key) != first.get(key):
                raise SynthStoreError(
                    f"{f}: another run than {folders[0]} ({key}: {_diff(g.get(key), first.get(key))})"
                )
    shards = [tuple(g["shard"]) if g.get("shard") else (0, 1) for g in gens]
    count = shards[0][1]
    if sorted(shards) != [(i, count) for i in range(count)]:
        have = ", ".join(f"{f} = {i}/{n}" for f, (i, n) in zip(folders, shards))
        seen: dict[tuple[int, int], str | Path] = {}
        for f, shard in zip(folders, shards):
            if shard in seen:
                raise SynthStoreError(
                    f"{seen[shard]} and {f} are both shard {shard[0]}/{shard[1]}; pass each "
                    "shard once"
                )
            seen[shard] = f
        absent = [f"{i}/{count}" for i in range(count) if (i, count) not in seen]
        fix = f"make it with odbench synth … --shard {absent[0]}" if absent else "merge one run"
        raise SynthStoreError(
            f"merge needs shards 0..{count - 1} of {count} once each, got {have}"
            + (f" ({', '.join(absent)} missing)" if absent else "")
            + f"; {fix}, then merge"
        )
    n = int(first["n"])
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SynthStoreError(f"{out}: exists and is not empty; merge into a new folder")
    check_output_folder(out, "--out")
    sources: dict[int, Path] = {}
    for f, (i, count) in zip(folders, shards):
        indices = {int(p.stem.rsplit("-", 1)[1]) for p in (Path(f) / "records").glob("*.json")}
        missing = sorted(set(range(i, n, count)) - indices)
        if missing:
            raise SynthStoreError(
                f"{f}: shard {i}/{count} is incomplete ({len(missing)} of "
                f"{len(range(i, n, count))} samples missing); resume it with the same command"
            )
        for index in indices:
            sources[index] = Path(f)
    # Every record and PNG is checked before anything is written, and the merge is made in a
    # temporary folder renamed to ``out`` at the end: a shard that turns out damaged, a full
    # disk or a kill leaves no half-merged ``out`` behind.
    records: dict[int, tuple[Path, dict[str, Any]]] = {}
    for index in sorted(sources):
        src = sources[index]
        path = src / "records" / f"{sample_id(int(first['config']['seed']), index)}.json"
        rec = _read_json(path)
        for key in ("image", "mask") if rec.get("kept") else ():
            if not (src / str(rec.get(key))).is_file():
                raise SynthStoreError(
                    f"{src / str(rec.get(key))}: missing, but {path} says the sample was kept; "
                    f"delete that record and resume the shard with the same command (it makes "
                    "the sample again), then merge"
                )
        records[index] = (path, rec)
    header = {k: first[k] for k in ("config", "model", "odbench")}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".merging", dir=out.parent))
    try:
        store = SynthStore(tmp, header)
        for index, (path, rec) in records.items():
            src = path.parent.parent
            for key in ("image", "mask") if rec["kept"] else ():
                atomic_write_bytes(tmp / rec[key], (src / rec[key]).read_bytes())
            atomic_write_bytes(tmp / "records" / path.name, path.read_bytes())
            store.records[index] = rec
        store.finish(n)
        if out.is_dir():
            out.rmdir()  # empty (checked above)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return store.counts()
