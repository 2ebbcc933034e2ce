"""Results of ``odbench eval``: one JSON file per run plus a per-image records file beside it.

The JSON (``schema_version`` 1) identifies everything that produced the numbers: the method
(name, card sha256, resolved hyperparameters and the overrides given), the dataset
(``Dataset.describe()`` plus the ``--limit``), the protocol (name and its full declarative
definition), the metrics, package versions, date (UTC), device, wall time, images/s and the git
commit (:mod:`odbench.provenance`).  Leaderboards are generated only from these files and the reported rows.

The per-image records (``<stem>.records.npz``: ids, acc, iou, mae, the Fβ curve per image,
CorLoc hits and predicted boxes, discovery match records; :class:`Records`) are what ``odbench
compare`` resamples.  A run travels as a typed :class:`RunResult`.  Both files are written atomically and under names taken
by exclusive creation (:func:`write_results`); npz files are read with ``allow_pickle=False``.
The JSON holds the records file's sha256 (``records_sha256``; older files may lack it): records
edited, re-ordered or swapped for another run's are refused when read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from odbench.cards import method_card
from odbench.distributed import Shard
from odbench.errors import OdbenchError
from odbench.metrics.catalog import keys
from odbench.metrics.discovery_records import DiscoveryRecords
from odbench.metrics.protocols import DEFAULT_PROTOCOL
from odbench.npz import write_npz

SCHEMA_VERSION = 1
#: Where ``odbench eval`` writes and the results commands read unless ``--results-dir`` says
#: otherwise.
DEFAULT_RESULTS_DIR = Path("leaderboard/results")
RESULTS_KIND = "odbench-results"


class ResultsError(OdbenchError, ValueError):
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


def results_stem(method: str, dataset: str, protocol: str, when: datetime) -> str:
    """``<method>__<dataset>__<protocol>__<YYYYmmddTHHMMSSZ>`` (``:`` and ``/`` of names such
    as ``folder:SOD`` become ``-``)."""
    name = "__".join(n.replace(":", "-").replace("/", "-") for n in (method, dataset, protocol))
    return f"{name}__{when.strftime('%Y%m%dT%H%M%SZ')}"


def run_stem(run: RunResult) -> str:
    """The file stem of a run: :func:`results_stem` of its method, dataset, protocol and date
    (UTC), with ``__shard-I-of-N`` for a shard (a run with a ``shard`` block)."""
    when = datetime.fromisoformat(run.date)
    if when.tzinfo is not None:
        when = when.astimezone(UTC)
    stem = results_stem(run.method_name, run.dataset_name, run.protocol_name, when)
    shard = run.info.get("shard")
    if shard:
        stem += f"__{Shard(int(shard['index']), int(shard['count'])).label()}"
    return stem


# ----------------------------------------------------------------------------- typed records


@dataclasses.dataclass(frozen=True)
class SaliencyRecords:
    """Per-image saliency scores (arrays aligned with :attr:`Records.ids`); ``fbeta`` is (n, T),
    the Fβ curve of each image over the protocol's thresholds."""

    acc: np.ndarray
    iou: np.ndarray
    mae: np.ndarray
    fbeta: np.ndarray


@dataclasses.dataclass(frozen=True)
class SodRecords:
    """Per-image salient-object family (``--metrics all``, :mod:`odbench.metrics.sod`): the
    scalars (n,), and the TP / FP pixel counts per threshold (n, T) with |G| and N (n,), from
    which the PR, ROC and E-measure curves are recomputed exactly."""

    s_measure: np.ndarray
    e_measure_adaptive: np.ndarray
    weighted_fbeta: np.ndarray
    adaptive_fbeta: np.ndarray
    dice: np.ndarray
    ber: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    n_gt: np.ndarray
    n_pix: np.ndarray


#: The per-image scalars of the salient-object family kept in :class:`SodRecords` (the
#: catalog's per-image ``sod`` metrics).
SOD_SCALARS = keys(meter="sod", per_image=True)


def saliency_records(images: Sequence[Any]) -> SaliencyRecords:
    """The arrays of per-image :class:`odbench.metrics.saliency.ImageRecord` s, in order."""
    return SaliencyRecords(
        acc=np.array([r.acc for r in images], dtype=np.float64),
        iou=np.array([r.iou for r in images], dtype=np.float64),
        mae=np.array([r.mae for r in images], dtype=np.float64),
        fbeta=np.stack([np.asarray(r.fbeta, dtype=np.float64) for r in images]),
    )


def sod_records(images: Sequence[Any]) -> SodRecords:
    """The arrays of per-image :class:`odbench.metrics.sod.SodRecord` s, in order."""
    return SodRecords(
        **{k: np.array([getattr(r, k) for r in images], dtype=np.float64) for k in SOD_SCALARS},
        tp=np.stack([r.tp for r in images]).astype(np.int64),
        fp=np.stack([r.fp for r in images]).astype(np.int64),
        n_gt=np.array([r.n_gt for r in images], dtype=np.int64),
        n_pix=np.array([r.n_pix for r in images], dtype=np.int64),
    )


@dataclasses.dataclass(frozen=True)
class LocalizationRecords:
    """Per-image CorLoc hits, the predicted ``[x1, y1, x2, y2]`` boxes and the number of GT
    boxes, (n,), (n, 4) and (n,); an image with 0 GT boxes is left out of CorLoc
    (:mod:`odbench.metrics.boxes`)."""

    hit: np.ndarray
    pred_box: np.ndarray
    n_boxes: np.ndarray


@dataclasses.dataclass(frozen=True)
class Records:
    """The per-image records of one run: the output of the runner's *score* phase and what
    ``odbench compare`` resamples.  Stored as ``<stem>.records.npz`` with the arrays ``ids``,
    ``acc``, ``iou``, ``mae``, ``fbeta`` (saliency) and ``hit``, ``pred_box`` (localization)."""

    ids: tuple[str, ...]
    saliency: SaliencyRecords | None = None
    localization: LocalizationRecords | None = None
    sod: SodRecords | None = None
    discovery: DiscoveryRecords | None = None

    def __len__(self) -> int:
        """The number of images."""
        return len(self.ids)

    def arrays(self) -> dict[str, np.ndarray]:
        """Every per-image array by its name in the records file (the arrays themselves, not
        copies: the runner's are read-only memory maps of its streamed records)."""
        out: dict[str, np.ndarray] = {"ids": np.array(self.ids)}
        for part in (self.saliency, self.localization, self.sod):
            if part is not None:
                out.update((f.name, getattr(part, f.name)) for f in dataclasses.fields(part))
        return {**out, **(self.discovery.arrays() if self.discovery is not None else {})}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], origin: object = "records") -> Records:
        if "ids" not in arrays:
            raise ResultsError(f"{origin}: per-image records lack 'ids'")
        n = len(arrays["ids"])
        if "hit" in arrays and "n_boxes" not in arrays:  # written before n_boxes: every image
            arrays = {**arrays, "n_boxes": np.ones(n, dtype=np.int64)}  # counted, as then
        try:
            parts: dict[str, Any] = {"discovery": DiscoveryRecords.from_arrays(arrays, n)}
        except ValueError as e:
            raise ResultsError(f"{origin}: {e}; re-run odbench eval") from e
        kinds = (
            ("saliency", SaliencyRecords),
            ("localization", LocalizationRecords),
            ("sod", SodRecords),
        )
        for name, kind in kinds:
            keys = [f.name for f in dataclasses.fields(kind)]
            present = [k for k in keys if k in arrays]
            if not present:
                continue
            if len(present) != len(keys) or any(len(arrays[k]) != n for k in keys):
                raise ResultsError(f"{origin}: incomplete {name} records; re-run odbench eval")
            _check_shapes(name, {k: arrays[k] for k in keys}, origin)
            parts[name] = kind(**{k: arrays[k] for k in keys})
        return cls(tuple(str(i) for i in arrays["ids"]), **parts)

    def take(self, order: np.ndarray) -> Records:
        """The records of the images ``order`` (indices), in that order."""

        def sub(part: Any) -> Any:
            if part is None:
                return None
            fields = dataclasses.asdict(part)
            return type(part)(**{k: v[order] for k, v in fields.items()})

        ids = tuple(self.ids[i] for i in order)
        disc = self.discovery.take(order) if self.discovery is not None else None
        return Records(ids, sub(self.saliency), sub(self.localization), sub(self.sod), disc)


#: Record fields holding a row per image (curves, boxes); every other field is one number each.
RECORD_ROWS = {"fbeta": None, "tp": None, "fp": None, "pred_box": 4}


def _check_shapes(name: str, arrays: dict[str, np.ndarray], origin: object) -> None:
    """Numbers, one per image (or one row of the part's common width per image): a records
    file edited or written by something else is one error line, not a failure deep in the
    statistics."""
    widths = set()
    for key, values in arrays.items():
        ndim = 2 if key in RECORD_ROWS else 1
        ok = values.ndim == ndim and values.dtype.kind in "biuf"
        if ok and ndim == 2:
            width = RECORD_ROWS[key]
            ok = values.shape[1] > 0 and width in (None, values.shape[1])
            if width is None:
                widths.add(values.shape[1])
        if not ok:
            raise ResultsError(
                f"{origin}: {name} records: {key!r} is {values.dtype} of shape {values.shape}, "
                f"expected numbers, {'one row' if ndim == 2 else 'one'} per image; the records "
                "file is damaged or not odbench's: re-run odbench eval (or score)"
            )
    if len(widths) > 1:
        raise ResultsError(
            f"{origin}: {name} records: curves of different lengths {sorted(widths)}; the records "
            "file is damaged or not odbench's: re-run odbench eval (or score)"
        )


# ----------------------------------------------------------------------------- one run


@dataclasses.dataclass
class RunResult:
    """One run of a method over a dataset under a protocol: what ``odbench eval`` writes and
    :func:`odbench.evaluate` returns.

    ``metrics["saliency"]`` holds ``acc``, ``iou``, ``max_fbeta``, ``mae`` (and ``n_images``,
    ``best_threshold``, ``fbeta_curve``); ``metrics["localization"]`` holds ``corloc`` (%),
    ``hits``, ``n_images``.  ``method``, ``dataset`` and ``protocol`` are the identifying
    tables of the JSON (see the module docstring); ``info`` the rest (date, device, timing,
    cache, packages, git commit)."""

    method: dict[str, Any]
    dataset: dict[str, Any]
    protocol: dict[str, Any]
    tasks: list[str]
    metrics: dict[str, dict[str, Any]]
    date: str
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    path: Path | None = None
    records_file: str | None = None
    records_sha256: str | None = None  # of the records file's bytes, checked when it is read
    _records: Records | None = dataclasses.field(default=None, repr=False)

    @property
    def method_name(self) -> str:
        return str(self.method["name"])

    @property
    def overrides(self) -> dict[str, Any]:
        return dict(self.method.get("overrides") or {})

    @property
    def dataset_name(self) -> str:
        return str(self.dataset["name"])

    @property
    def protocol_name(self) -> str:
        return str(self.protocol["name"])

    @property
    def limit(self) -> int | None:
        return self.dataset.get("limit")

    @property
    def n_evaluated(self) -> int:
        return int(self.dataset.get("n_evaluated", 0))

    @property
    def records(self) -> Records:
        """The per-image records (read from the records file on first use)."""
        if self._records is None:
            if self.path is None or self.records_file is None:
                raise ResultsError("this run has no per-image records")
            records_path = self.path.parent / self.records_file
            try:
                data = records_path.read_bytes()
            except OSError as e:  # missing, a folder...
                raise ResultsError(f"{records_path}: cannot read per-image records: {e}") from e
            if self.records_sha256 not in (None, hashlib.sha256(data).hexdigest()):
                raise ResultsError(  # edited, or another run's file copied over it
                    f"{records_path}: changed since {self.path.name} was written (its sha256 "
                    "differs); the records file does not belong to this run"
                )
            try:
                with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                    arrays = {k: npz[k] for k in npz.files}
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # truncated...
                raise ResultsError(f"{records_path}: cannot read per-image records: {e}") from e
            self._records = Records.from_arrays(arrays, records_path)
        return self._records

    def to_json(self) -> dict[str, Any]:
        """The results JSON (``records`` names the records file once written)."""
        out = {
            "schema_version": SCHEMA_VERSION,
            "kind": RESULTS_KIND,
            "method": self.method,
            "dataset": self.dataset,
            "protocol": self.protocol,
            "tasks": self.tasks,
            "metrics": self.metrics,
            "date": self.date,
            **self.info,
        }
        if self.records_file is not None:
            out["records"] = self.records_file
        if self.records_sha256 is not None:
            out["records_sha256"] = self.records_sha256
        return jsonable(out)  # type: ignore[no-any-return]

    @classmethod
    def from_json(
        cls,
        data: dict[str, Any],
        path: Path | None = None,
        records: dict[str, np.ndarray] | None = None,
    ) -> RunResult:
        """A run from its JSON dict (and, optionally, its records' arrays)."""
        known = {"schema_version", "kind", "method", "dataset", "protocol", "tasks", "metrics"}
        known |= {"date", "records", "records_sha256", "_path"}
        return cls(
            method=data["method"],
            dataset=data["dataset"],
            protocol=data["protocol"],
            tasks=list(data.get("tasks", [])),
            metrics=data["metrics"],
            date=data["date"],
            info={k: v for k, v in data.items() if k not in known},
            path=path,
            records_file=data.get("records"),
            records_sha256=data.get("records_sha256"),
            _records=None if records is None else Records.from_arrays(records),
        )


def _link_exclusive(tmp: Path, final: Path) -> bool:
    """Give the finished temp file ``tmp`` the name ``final`` unless that name exists (a hard
    link is atomic and exclusive); ``False`` when the name is taken."""
    try:
        os.link(tmp, final)
    except FileExistsError:
        return False
    except OSError:  # a file system without hard links: exclusive create, then copy
        try:
            with final.open("xb") as f:
                f.write(tmp.read_bytes())
        except FileExistsError:
            return False
    return True


def _temp_file(folder: Path, data: bytes | Callable[[BinaryIO], None]) -> Path:
    """A finished temp file in ``folder`` holding ``data`` or what ``data(file)`` wrote
    (removed when writing fails)."""
    from odbench.imageio import naming_full_disk

    with naming_full_disk(folder):
        fd, name = tempfile.mkstemp(dir=folder, prefix=".results.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                if isinstance(data, bytes):
                    f.write(data)
                else:
                    data(f)
            os.chmod(name, 0o644)
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise
    return Path(name)


def write_results(run: RunResult, results_dir: Path) -> Path:
    """Write ``<stem>.records.npz`` then ``<stem>.json`` into ``results_dir`` and return the
    JSON's path (also set as ``run.path``); the stem is the run's (:func:`run_stem`): the one
    place results files are named and written.

    Names are taken by exclusive creation (a hard link of a finished temp file), so two runs
    finishing in the same second — in one process or several — never overwrite each other: the
    later one gets a ``-2``, ``-3``... suffix.  Neither file is ever visible half-written."""
    results_dir = Path(results_dir)
    stem = run_stem(run)
    results_dir.mkdir(parents=True, exist_ok=True)
    records_tmp = _temp_file(results_dir, lambda f: write_npz(f, run.records.arrays()))
    try:
        with records_tmp.open("rb") as f:
            run.records_sha256 = hashlib.file_digest(f, "sha256").hexdigest()
        for n in range(1, 10_000):
            final = stem if n == 1 else f"{stem}-{n}"
            records_path = results_dir / f"{final}.records.npz"
            if (results_dir / f"{final}.json").exists():
                continue
            if not _link_exclusive(records_tmp, records_path):
                continue
            linked = False
            try:
                run.records_file = records_path.name
                text = json.dumps(run.to_json(), indent=2, allow_nan=False) + "\n"
                json_tmp = _temp_file(results_dir, text.encode())
                try:
                    linked = _link_exclusive(json_tmp, results_dir / f"{final}.json")
                finally:
                    json_tmp.unlink(missing_ok=True)
            finally:  # the JSON name taken after all, or its write failed (disk full)
                if not linked:  # no records file without its JSON: give the name back
                    records_path.unlink(missing_ok=True)
            if linked:
                run.path = results_dir / f"{final}.json"
                return run.path
        raise ResultsError(f"{results_dir}: no free results file name for {stem}")
    finally:
        records_tmp.unlink(missing_ok=True)


#: (key, required sub-key) of a results file, beyond kind and schema_version.
_REQUIRED = (("method", "name"), ("dataset", "name"), ("protocol", "name"), ("metrics", None))


def read_results(path: Path) -> RunResult:
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
    if bad := _malformed_metrics(data["metrics"]):
        raise ResultsError(f"{path}: results file has a malformed {bad}; re-run odbench eval")
    return RunResult.from_json(data, path)


def _malformed_metrics(metrics: dict[str, Any]) -> str:
    """The first ``metrics.<task>[.<key>]`` the readers cannot use (a task not a table, a metric
    not a number or null, curves of the wrong type), else ``""``: refused, not a traceback."""

    def number(v: Any) -> bool:
        return v is None or (isinstance(v, int | float) and not isinstance(v, bool))

    for task, values in metrics.items():
        if not isinstance(values, dict):
            return f"metrics.{task}"
        for key, v in values.items():
            if (
                (key in keys() and not number(v))
                or (key == "fbeta_curve" and not (isinstance(v, list) and all(map(number, v))))
                or (key == "curves" and not isinstance(v, dict))
            ):
                return f"metrics.{task}.{key}"
    return ""


def shard_pattern(method: str, dataset: str, protocol: str) -> str:
    """The glob of the shard results files of ``eval --shard I/N`` runs of one setting."""
    name = results_stem(method, dataset, protocol, datetime.min).rsplit("__", 1)[0]
    return f"{name}__*__shard-*-of-*.json"


def unmerged_hint(results_dir: Path, method: str, dataset: str, protocol: str) -> str:
    """How to make the result from its shards when ``results_dir`` holds shard results of the
    setting (a sharded run not merged yet), else ``""``."""
    pattern = shard_pattern(method, dataset, protocol)
    if not any(Path(results_dir).glob(pattern)):
        return ""
    return (
        f"{results_dir} holds only its shards (eval --shard): merge them first, "
        f"odbench merge {Path(results_dir) / pattern} --results-dir {results_dir}"
    )


def unmerged_shards(results_dir: Path) -> list[str]:
    """The ``method__dataset__protocol`` settings of which ``results_dir`` holds shard results
    (``eval --shard``) but no result, by file name (a sharded run not merged yet)."""
    names = [p.name for p in Path(results_dir).glob("*.json")] if Path(results_dir).is_dir() else []
    shards = {"__".join(n.split("__")[:3]) for n in names if "__shard-" in n}
    merged = {"__".join(n.split("__")[:3]) for n in names if "__shard-" not in n}
    return sorted(shards - merged)


def load_all_results(results_dir: Path, skipped: list[str] | None = None) -> list[RunResult]:
    """Every results JSON in ``results_dir`` (sorted by file name); a missing folder is empty.
    Shards of a run (``eval --shard``) are left out: only their merge is a result.  A file that
    is not a readable result raises :class:`ResultsError`, or, given a ``skipped`` list, is
    left out with its one-line reason appended there."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        return []
    runs = []
    for path in sorted(results_dir.glob("*.json")):
        try:
            runs.append(read_results(path))
        except ResultsError as e:
            if skipped is None:
                raise
            skipped.append(str(e))
    return [r for r in runs if "shard" not in r.info]


# ----------------------------------------------------------------------------- the run of a method


def is_subset(run: RunResult) -> bool:
    """Whether the run saw fewer images than the dataset has (``--limit``, skipped images, or
    a copy of the dataset missing images); a ``--limit`` at least the dataset's size is the
    full dataset."""
    n_images = run.dataset.get("n_images")
    return n_images is not None and run.n_evaluated < int(n_images)


def is_saved_maps(run: RunResult) -> bool:
    """Whether the run scored a folder of someone's prediction maps (``score --config``)
    rather than running odbench's method."""
    return run.info.get("source") == "score --config"


def has_card_settings(run: RunResult) -> bool:
    """No overrides, and the hyperparameters the card has now (a card edited since the run
    makes it a run of other settings).  Saved maps scored by ``score --config`` carry no
    settings of odbench's: the card does not apply to them."""
    if run.overrides:
        return False
    if is_saved_maps(run):
        return True
    card = method_card(run.method_name)
    return card is None or jsonable(card.hyperparameters) == run.method.get("hyperparameters")


def _collision_index(run: RunResult) -> int:
    """Which of the runs finishing in one second ``run`` is: 1 for ``<stem>.json``, N for the
    ``<stem>-N.json`` :func:`write_results` gives the N-th (0 for a file renamed by hand)."""
    if run.path is None:
        return 0
    name = Path(run.path).name.removesuffix(".json")
    rest = name.removeprefix(run_stem(run))
    if rest == "":
        return 1
    return int(rest[1:]) if rest[:1] == "-" and rest[1:].isdigit() else 0


def preference(run: RunResult) -> tuple[bool, bool, str, int, str]:
    """The order in which runs of one method, dataset and protocol are preferred (the largest
    wins): the card's settings (:func:`has_card_settings`) before any other, then the full
    dataset before a subset (:func:`is_subset`), then the latest (date; in one second the
    later ``-N`` file name of :func:`write_results`, ``-10`` after ``-9``)."""
    return (
        has_card_settings(run),
        not is_subset(run),
        run.date,
        _collision_index(run),
        str(run.path),
    )


def select(
    runs: Iterable[RunResult],
    method: str,
    dataset: str,
    protocol: str = DEFAULT_PROTOCOL,
    *,
    task: str | None = None,
    results_dir: Path | None = None,
) -> RunResult:
    """The run of ``method`` on ``dataset`` under ``protocol`` (with metrics of ``task``, when
    given): the first by :func:`preference`.  The one rule for "the run" of a method, used by
    the leaderboard, compare, plot, report and cite.  None: a :class:`ResultsError` saying how
    to make one (with ``results_dir``: that the folder is missing, or to merge its shards)."""
    matching = [
        r
        for r in runs
        if r.method_name == method
        and r.dataset_name == dataset
        and r.protocol_name == protocol
        and (task is None or task in r.metrics)
    ]
    if matching:
        return max(matching, key=preference)
    if results_dir is not None and not Path(results_dir).is_dir():
        raise ResultsError(
            f"--results-dir {results_dir}: no such folder; give the folder eval or "
            "score --config wrote the runs to"
        )
    fix = unmerged_hint(results_dir, method, dataset, protocol) if results_dir else ""
    what = f"{task} results" if task else "results"
    raise ResultsError(
        f"no {what} of method {method!r} on dataset {dataset!r} with protocol {protocol!r}; "
        + (fix or f"run: odbench eval --method {method} --dataset {dataset} --protocol {protocol}")
    )


def select_all(runs: Iterable[RunResult], task: str | None = None) -> list[RunResult]:
    """The :func:`select` ed run of every (method, dataset, protocol) that ``runs`` hold (with
    metrics of ``task``, when given), in that order."""
    runs = [r for r in runs if task is None or task in r.metrics]
    settings = sorted({(r.method_name, r.dataset_name, r.protocol_name) for r in runs})
    return [select(runs, *setting) for setting in settings]
