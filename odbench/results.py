"""Results of ``odbench eval``: one JSON file per run plus a per-image records file beside it.

The JSON (``schema_version`` 1) identifies everything that produced the numbers: the method
(name, card sha256, resolved hyperparameters and the overrides given), the dataset
(``Dataset.describe()`` plus the ``--limit``), the protocol (name and its full declarative
definition), the metrics, package versions, date (UTC), device, wall time, images/s and the git
commit.  Leaderboards are generated only from these files and the reported rows.

The per-image records (``<stem>.records.npz``: ids, acc, iou, mae, the Fβ curve per image,
CorLoc hits and predicted boxes) are what ``odbench compare`` resamples.  Both files are written
atomically (temp file + rename); npz files are read with ``allow_pickle=False``.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import platform
import subprocess
import sys
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from odbench.imageio import atomic_write_bytes

SCHEMA_VERSION = 1
RESULTS_KIND = "odbench-results"
#: Packages whose version is recorded when they are imported in the running process.
TRACKED_PACKAGES = (
    "numpy",
    "scipy",
    "pillow",
    "torch",
    "torchvision",
    "diffusers",
    "transformers",
    "open_clip_torch",
    "timm",
    "opencv-python",
    "PyMaxflow",
)
_IMPORT_NAME = {
    "pillow": "PIL",
    "open_clip_torch": "open_clip",
    "opencv-python": "cv2",
    "PyMaxflow": "maxflow",
}


class ResultsError(ValueError):
    """A results or records file that cannot be used; the message names the file."""


def jsonable(obj: Any) -> Any:
    """Convert dataclasses, numpy scalars/arrays, tuples and paths into plain JSON values;
    non-finite floats become ``None`` (JSON has no NaN)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, str | int | bool) or obj is None:
        return obj
    return str(obj)


def package_versions() -> dict[str, str]:
    """odbench's version and those of the tracked packages that this process imported."""
    versions = {"odbench": _version("odbench"), "python": platform.python_version()}
    for dist in TRACKED_PACKAGES:
        if _IMPORT_NAME.get(dist, dist) in sys.modules or dist == "numpy":
            versions[dist] = _version(dist)
    return versions


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"


def git_commit(path: Path | None = None) -> str | None:
    """The commit of the checkout odbench runs from (``+dirty`` when it has local changes), or
    ``None`` outside a git checkout."""
    cwd = path or Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def utc_now() -> datetime:
    return datetime.now(UTC)


def results_stem(method: str, dataset: str, protocol: str, when: datetime) -> str:
    """``<method>__<dataset>__<protocol>__<YYYYmmddTHHMMSSZ>``."""
    return f"{method}__{dataset}__{protocol}__{when.strftime('%Y%m%dT%H%M%SZ')}"


def write_results(
    results: dict[str, Any], records: dict[str, np.ndarray], results_dir: Path, stem: str
) -> Path:
    """Write ``<stem>.records.npz`` then ``<stem>.json`` (both atomic) and return the JSON's path.

    A run finishing in the same second as an earlier one of the same method/dataset/protocol
    gets a ``-2``, ``-3``... suffix instead of overwriting it."""
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    final, n = stem, 1
    while (results_dir / f"{final}.json").exists():
        n += 1
        final = f"{stem}-{n}"
    records_name = f"{final}.records.npz"
    buf = io.BytesIO()
    np.savez_compressed(buf, allow_pickle=False, **records)
    atomic_write_bytes(results_dir / records_name, buf.getvalue())
    payload = {**results, "records": records_name}
    text = json.dumps(jsonable(payload), indent=2, allow_nan=False) + "\n"
    path = results_dir / f"{final}.json"
    atomic_write_bytes(path, text.encode())
    return path


#: (key, required sub-key) of a results file, beyond kind and schema_version.
_REQUIRED = (("method", "name"), ("dataset", "name"), ("protocol", "name"), ("metrics", None))


def read_results(path: Path) -> dict[str, Any]:
    """Load one results JSON; refuse files that are not odbench results of this schema."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ResultsError(f"{path}: cannot read results JSON: {e}") from e
    if not isinstance(data, dict) or data.get("kind") != RESULTS_KIND:
        raise ResultsError(f"{path}: not an odbench results file (no kind = {RESULTS_KIND!r})")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ResultsError(
            f"{path}: results schema_version {data.get('schema_version')!r} is not "
            f"{SCHEMA_VERSION}; re-run odbench eval"
        )
    missing = [
        key
        for key, sub in _REQUIRED
        if not isinstance(data.get(key), dict) or (sub is not None and sub not in data[key])
    ]
    missing += [key for key in ("records", "date") if not isinstance(data.get(key), str)]
    if missing:
        raise ResultsError(f"{path}: results file lacks {', '.join(missing)}; re-run odbench eval")
    data["_path"] = str(path)
    return data


def read_records(results: dict[str, Any]) -> dict[str, np.ndarray]:
    """The per-image records of a results dict loaded by :func:`read_results`."""
    path = Path(results["_path"]).parent / results["records"]
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as e:
        raise ResultsError(f"{path}: cannot read per-image records: {e}") from e


def load_all_results(results_dir: Path) -> list[dict[str, Any]]:
    """Every results JSON in ``results_dir`` (sorted by file name); a missing folder is empty.
    Shards of a run (``eval --shard``) are left out: only their merge is a result."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        return []
    runs = [read_results(p) for p in sorted(results_dir.glob("*.json"))]
    return [r for r in runs if "shard" not in r]
