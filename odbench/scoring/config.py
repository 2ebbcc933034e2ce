"""``score --config runs.toml``: score many methods' prediction folders on many datasets.

The daily job of comparing against published prediction maps::

    protocol = "odbench"            # optional (default: --protocol)
    metrics = "all"                 # optional (default: --metrics): basic, all or names,
                                    # e.g. "s_measure,mae" or ["s_measure", "mae"]

    [datasets.ecssd]
    gt = "data/ECSSD/ground_truth_mask"   # GT masks; paths are relative to this file (~ = home)
    images = "data/ECSSD/images"          # optional: checked to exist
    prefix = ""                           # optional: file name = prefix + id + suffix
    suffix = ".png"                       # optional (default: any image extension)

    [methods.wctr]
    ecssd = "preds/wctr/ECSSD"            # a folder, or a table:
    [methods.basnet.ecssd]
    path = "preds/BASNet/ECSSD"
    suffix = "_sal.png"

The whole config is validated before anything is scored (every key is known, every folder
exists, every GT has a prediction and every prediction a GT, every file is an image whose size
fits the protocol -- read from the file headers, no image decoded) and every problem is listed
in one report.  Each (method, dataset) pair becomes one results JSON + records in the results
store, like ``odbench eval``'s, so ``leaderboard``, ``compare``, ``plot`` and ``report`` read them
(the results record the folders scored, absolute, and their file naming).  A pair whose inputs
(file contents, protocol definition, metric set, odbench version) and folders are unchanged since
its stored result is not scored again.
"""

from __future__ import annotations

import hashlib
import json
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from odbench.metrics.protocols import DEFAULT_PROTOCOL
from odbench.metrics.selection import MetricSelection
from odbench.scoring import ScoringError
from odbench.scoring.folders import check_workers, score_methods, why_not_a_file
from odbench.scoring.meters import make_meter


class ConfigError(ScoringError):
    """A runs.toml that cannot be read, or that has problems (all listed in one report)."""


TOP_KEYS = {"protocol", "metrics", "datasets", "methods"}
DATASET_KEYS = {"gt", "images", "prefix", "suffix"}
FOLDER_KEYS = {"path", "prefix", "suffix"}
MAX_LISTED = 5


@dataclass(frozen=True)
class Folder:
    """A folder of maps and how their file names map to image ids."""

    path: Path
    prefix: str = ""
    suffix: str = ""

    def ids(self, problems: list[str] | None = None, where: str = "") -> dict[str, Path]:
        """id -> file for the image files whose names fit prefix + id + suffix; two files
        giving one id (``0001.png`` and ``0001.jpg``) and a name that fits but is not a file
        (a folder, a broken link) are problems appended to ``problems``."""
        from odbench.imageio import IMAGE_SUFFIXES

        out: dict[str, Path] = {}
        twice: list[str] = []
        for p in sorted(self.path.iterdir()):
            name = p.name
            if name.startswith("."):
                continue
            if self.suffix:
                if not name.endswith(self.suffix):
                    continue
                core = name[: len(name) - len(self.suffix)]
            else:
                if p.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                core = p.stem
            if not core.startswith(self.prefix):
                continue
            image_id = core[len(self.prefix) :]
            if not p.is_file():
                if problems is None:  # nobody to tell: skipped
                    continue
                problems.append(f"{where}: {p}: {why_not_a_file(p)}")  # its id is not missing
            if image_id in out:
                twice.append(f"{out[image_id].name} and {name}")
            out[image_id] = p
        if twice and problems is not None:
            problems.append(
                f"{where}: {len(twice)} id(s) given by two files in {self.path}: {_names(twice)}; "
                "keep one of each (or set suffix to pick one kind)"
            )
        return out


@dataclass
class Job:
    """One (method, dataset) pair, validated: its matched files in id order."""

    method: str
    dataset: str
    preds: Folder
    gt: Folder
    pairs: list[tuple[str, Path, Path]]
    images: Path | None = None  # the dataset's images folder, when the config gives one

    def sources(self) -> tuple[dict[str, str], dict[str, str]]:
        """What the results record of the files scored, for ``odbench report`` to read the maps
        later (absolute paths): the method's prediction folder and file naming, the dataset's
        GT folder and naming and its images folder."""

        def folder(key: str, f: Folder) -> dict[str, str]:
            named = {f"{key}_prefix": f.prefix, f"{key}_suffix": f.suffix}
            return {key: str(f.path.absolute()), **{k: v for k, v in named.items() if v}}

        images = {"images": str(self.images.absolute())} if self.images is not None else {}
        return folder("predictions", self.preds), {**folder("gt", self.gt), **images}


def _names(items: list[str]) -> str:
    more = len(items) - MAX_LISTED
    return ", ".join(items[:MAX_LISTED]) + (f" and {more} more" if more > 0 else "")


def _folder(base: Path, value: Any, where: str, problems: list[str]) -> Folder | None:
    if isinstance(value, str):
        value = {"path": value}
    if not isinstance(value, dict) or not isinstance(value.get("path"), str):
        problems.append(f"{where}: expected a folder path or a table with path (prefix, suffix)")
        return None
    unknown = sorted(set(value) - FOLDER_KEYS)
    if unknown:
        problems.append(
            f"{where}: unknown key(s) {', '.join(unknown)}; valid: path, prefix, suffix"
        )
    folder = Folder(
        base / Path(value["path"]).expanduser(),
        str(value.get("prefix", "")),
        str(value.get("suffix", "")),
    )
    if not folder.path.is_dir():
        problems.append(f"{where}: folder {folder.path} does not exist")
        return None
    return folder


def load_config(path: Path) -> tuple[dict[str, Any], list[Job], list[str]]:
    """(settings, jobs, problems): every problem of the config, none fixed silently."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: file not found") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read ({e})") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from e
    base = path.parent
    problems: list[str] = []
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        problems.append(
            f"unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(TOP_KEYS))}"
        )
    settings: dict[str, Any] = {k: data[k] for k in ("protocol", "metrics") if k in data}
    datasets: dict[str, tuple[Folder, dict[str, Path], Path | None]] = {}
    raw_datasets = data.get("datasets")
    if not isinstance(raw_datasets, dict) or not raw_datasets:
        problems.append("no [datasets.NAME] table")
        raw_datasets = {}
    for name, table in raw_datasets.items():
        where = f"[datasets.{name}]"
        if not isinstance(table, dict) or not isinstance(table.get("gt"), str):
            problems.append(f'{where}: needs gt = "GT folder"')
            continue
        bad = sorted(set(table) - DATASET_KEYS)
        if bad:
            problems.append(
                f"{where}: unknown key(s) {', '.join(bad)}; valid: gt, images, prefix, suffix"
            )
        images = None
        if "images" in table and not isinstance(table["images"], str):
            problems.append(f"{where}: images = {table['images']!r}: expected a folder path")
        elif isinstance(table.get("images"), str):
            images = base / Path(table["images"]).expanduser()
            if not images.is_dir():
                problems.append(f"{where}: images folder {images} does not exist")
        gt = _folder(
            base,
            {"path": table["gt"], **{k: table[k] for k in ("prefix", "suffix") if k in table}},
            where + " gt",
            problems,
        )
        if gt is None:
            continue
        gt_ids = gt.ids(problems, where + " gt")
        if not gt_ids:
            problems.append(
                f"{where}: no GT masks in {gt.path} (prefix {gt.prefix!r}, suffix {gt.suffix!r})"
            )
            continue
        datasets[name] = (gt, gt_ids, images)
    jobs: list[Job] = []
    raw_methods = data.get("methods")
    if not isinstance(raw_methods, dict) or not raw_methods:
        problems.append("no [methods.NAME] table")
        raw_methods = {}
    for method, table in raw_methods.items():
        if not isinstance(table, dict) or not table:
            problems.append(f'[methods.{method}]: expected dataset = "prediction folder" entries')
            continue
        for dataset, value in table.items():
            where = f"[methods.{method}] {dataset}"
            if dataset not in raw_datasets:
                known = ", ".join(sorted(raw_datasets)) or "none"
                problems.append(f"{where}: no [datasets.{dataset}] (declared: {known})")
                continue
            preds = _folder(base, value, where, problems)
            if preds is None or dataset not in datasets:
                continue
            gt, gt_ids, images = datasets[dataset]
            pred_ids = preds.ids(problems, where)
            extra = sorted(pred_ids.keys() - gt_ids.keys())
            missing = sorted(gt_ids.keys() - pred_ids.keys())
            if extra:
                files = [pred_ids[i].name for i in extra]
                problems.append(
                    f"{where}: {len(extra)} prediction(s) in {preds.path} match no GT name: {_names(files)}"
                )
            if missing:
                problems.append(
                    f"{where}: {len(missing)} GT mask(s) have no prediction in {preds.path}: {_names(missing)}"
                )
            # the matched pairs are checked further (sizes) even when some names do not match,
            # so that one report lists every problem; only a config without problems is scored
            pairs = [(i, pred_ids[i], gt_ids[i]) for i in sorted(gt_ids) if i in pred_ids]
            jobs.append(Job(method, dataset, preds, gt, pairs, images))
    return settings, jobs, problems


def size_problems(jobs: list[Job], protocol: Any) -> list[str]:
    """Pairs whose sizes the protocol cannot score, and files that are not images: read from
    the file headers only (Pillow's lazy open, no pixel decoded), each GT once."""
    from odbench.imageio import ImageReadError, image_size
    from odbench.metrics.sizes import describe_mismatches, protocol_mismatches

    problems: list[str] = []
    known: dict[Path, tuple[int, int] | str] = {}  # file -> (H, W) or why it cannot be read

    def size(path: Path) -> tuple[int, int] | str:
        if path not in known:
            try:
                known[path] = image_size(path)
            except ImageReadError as e:
                known[path] = str(e).removeprefix(f"{path}: ")
        return known[path]

    for job in jobs:
        where = f"[methods.{job.method}] {job.dataset}"
        sizes, bad = [], []
        for image_id, pred, gt in job.pairs:
            if not (pred.is_file() and gt.is_file()):  # a folder, a broken link: reported
                continue
            p, g = size(pred), size(gt)
            bad += [f"{f} ({why})" for f, why in ((pred, p), (gt, g)) if isinstance(why, str)]
            if not isinstance(p, str) and not isinstance(g, str):
                sizes.append((image_id, p, g))
        if bad:
            problems.append(f"{where}: {len(bad)} file(s) cannot be read as images: {_names(bad)}")
        mismatched = protocol_mismatches(sizes, protocol)
        if mismatched:
            line = describe_mismatches(mismatched, len(job.pairs), "prediction")
            problems.append(
                f"{where}: {job.preds.path}: {line}; resize the predictions to their GT's size"
            )
    return problems


def files_digest(job: Job) -> bytes:
    """blake2b of the pairs' ids and file contents."""
    h = hashlib.blake2b(digest_size=32)
    for image_id, pred, gt in job.pairs:
        h.update(image_id.encode() + b"\0")
        h.update(hashlib.blake2b(pred.read_bytes(), digest_size=16).digest())
        h.update(hashlib.blake2b(gt.read_bytes(), digest_size=16).digest())
    return h.digest()


def inputs_digest(job: Job, protocol: Any, metrics: str, files: bytes | None = None) -> str:
    """sha256 of everything a result depends on: the files' contents and ids
    (:func:`files_digest`, computed unless given), the protocol's definition, the metric set
    and the odbench version."""
    from odbench.provenance import package_versions
    from odbench.results import jsonable

    h = hashlib.sha256()
    head = [jsonable(protocol.as_dict()), metrics, package_versions().get("odbench")]
    h.update(json.dumps(head, sort_keys=True).encode())
    h.update(files if files is not None else files_digest(job))
    return h.hexdigest()


def _card_size(dataset: str) -> dict[str, int]:
    """``{"n_images": N}`` when ``dataset`` names a registered dataset whose card gives its
    size: a GT folder holding fewer is then a subset (marked so in leaderboards)."""
    from odbench.cards import dataset_size

    size = dataset_size(dataset)
    return {"n_images": size} if size else {}


def _selection(
    cli: str | MetricSelection | None, configured: Any, problems: list[str]
) -> MetricSelection | None:
    """The ``MetricSelection`` of ``--metrics`` (else the config's ``metrics``: a string or a
    list of names), or None with the problem appended."""
    from odbench.metrics.selection import MetricsSpecError, parse_metrics

    if cli is None and configured is not None:
        ok = isinstance(configured, str) or (
            isinstance(configured, list) and all(isinstance(m, str) for m in configured)
        )
        if not ok:
            problems.append(
                f'metrics = {configured!r}: expected "basic", "all" or metric names, e.g. '
                '"s_measure,mae" or ["s_measure", "mae"]'
            )
            return None
        try:
            return parse_metrics(configured, option="metrics =")
        except MetricsSpecError as e:
            problems.append(str(e))
            return None
    return parse_metrics(cli)  # checked by the command already


def score_config(
    path: Path,
    protocol: str | None,
    metrics: str | MetricSelection | None,
    workers: int | None,
    results_dir: Path,
    show_progress: bool = False,
) -> list[dict[str, Any]]:
    """Validate ``path`` (one report of all problems, nothing scored) then score every pair whose
    inputs changed since its stored result; one summary row per pair."""
    from odbench.metrics.protocols import Protocol, get_protocol
    from odbench.outputs import OutputPathError, check_output_folder
    from odbench.registry import UnknownNameError
    from odbench.results import load_all_results

    check_workers(workers)
    settings, jobs, problems = load_config(path)
    protocol_name = protocol or settings.get("protocol", DEFAULT_PROTOCOL)
    selection = _selection(metrics, settings.get("metrics"), problems)
    metrics_set = selection.tier if selection is not None else "basic"
    proto: Protocol | None = None
    if not isinstance(protocol_name, str):
        problems.append(f'protocol = {protocol_name!r}: expected a protocol name, e.g. "odbench"')
    else:
        try:
            proto = get_protocol(protocol_name)
        except UnknownNameError as e:  # one line listing the valid ones
            problems.append(f"protocol: {e} (sizes not checked)")
    try:
        check_output_folder(results_dir, "--results-dir")
    except OutputPathError as e:
        problems.append(str(e))
    if proto is not None:
        problems += size_problems(jobs, proto)
    if problems or proto is None or selection is None:
        listing = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"{path}: {len(problems)} problem(s), nothing scored:\n{listing}")

    stored = {
        (r.method_name, r.dataset_name, r.protocol_name): r
        for r in sorted(load_all_results(results_dir), key=lambda r: (r.date, str(r.path)))
        if r.info.get("source") == "score --config"
    }
    rows: dict[int, dict[str, Any]] = {}
    todo: dict[tuple[tuple[str, Path], ...], list[tuple[int, Job, str]]] = {}
    for k, job in enumerate(jobs):
        files = files_digest(job)
        digest = inputs_digest(job, proto, metrics_set, files)
        # a stored result of every metric serves a request for the basic ones
        serves = {digest} | (
            {inputs_digest(job, proto, "all", files)} if metrics_set == "basic" else set()
        )
        key = (job.method, job.dataset, proto.name)
        before = stored.get(key)
        same = before is not None and before.info.get("inputs_sha256") in serves
        if same and before is not None and _recorded_sources(before) == job.sources():
            rows[k] = {
                "method": job.method,
                "dataset": job.dataset,
                "status": "unchanged",
                "results": str(before.path),
                **selection.shown(before.metrics["saliency"]),
            }
            continue
        # methods scored on the same GT files are scored together (score_methods): each GT
        # is read and its GT-only quantities computed once, not once per method
        gt_files = tuple((i, g) for i, _, g in job.pairs)
        todo.setdefault(gt_files, []).append((k, job, digest))
    for group in todo.values():
        meters = [make_meter(proto.name, selection) for _ in group]
        first = group[0][1]
        items = [
            (image_id, [job.pairs[n][1] for _, job, _ in group], gt)
            for n, (image_id, _, gt) in enumerate(first.pairs)
        ]
        start = time.perf_counter()
        scored = score_methods(items, meters, workers, show_progress)
        wall = (time.perf_counter() - start) / len(group)  # each method's share
        for (k, job, digest), meter, records in zip(group, meters, scored):
            out, metrics_out = _store(
                job, proto, metrics_set, meter, records, digest, wall, len(group), path, results_dir
            )
            rows[k] = {
                "method": job.method,
                "dataset": job.dataset,
                "status": "scored",
                "results": str(out),
                **selection.shown(metrics_out),
            }
    return [rows[k] for k in range(len(jobs))]


def _recorded_sources(run: Any) -> tuple[dict[str, str], dict[str, str]]:
    """The sources (:meth:`Job.sources`) a stored result records: a result whose folders moved
    is scored again, so that it records where its files are now."""
    method, dataset = run.method, run.dataset
    keys = ("predictions", "predictions_prefix", "predictions_suffix")
    return {k: method[k] for k in keys if k in method}, {
        k: dataset[k] for k in ("gt", "gt_prefix", "gt_suffix", "images") if k in dataset
    }


def _store(
    job: Job,
    proto: Any,
    metrics_set: str,
    meter: Any,
    scored: list[Any],
    digest: str,
    wall: float,
    n_methods: int,
    path: Path,
    results_dir: Path,
) -> tuple[Path, dict[str, Any]]:
    """Write one (method, dataset) pair's results JSON and records; returns the JSON's path and
    the metrics."""
    from odbench.provenance import utc_now
    from odbench.results import write_results
    from odbench.scoring.run import scored_run

    ids = tuple(i for i, _, _ in job.pairs)
    recorded_method, recorded_dataset = job.sources()
    when = utc_now()
    run = scored_run(
        {"name": job.method, **recorded_method},
        {"name": job.dataset, **recorded_dataset, **_card_size(job.dataset)},
        proto,
        metrics_set,
        meter.compute(),
        ids,
        scored,
        {
            "source": "score --config",
            "config": str(Path(path).resolve()),
            "inputs_sha256": digest,
            "wall_time_s": wall,
            "images_per_s": len(ids) / wall if wall > 0 else None,
            "methods_sharing_gt": n_methods,
        },
        when,
    )
    return write_results(run, Path(results_dir)), run.metrics["saliency"]
