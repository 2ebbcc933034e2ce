"""The "why my number differs" page: each known cause of disagreement between repositories,
measured on real data at build time.

The maps are ``center-prior``'s (weight-free, deterministic, computed from the image size
alone, so the numbers need no model and no image decoding), scored against real GT masks: a
fixed subset of ECSSD (every ``STEP``-th image in id order) and, for the GT binarisation rules
(whose effect shows only on anti-aliased masks), of DUTS-TR-1k.  Every number is computed by
odbench's own meters (:class:`~odbench.metrics.sod.FamilyMeter`, the code ``odbench score`` and
``odbench eval`` run) under a registered protocol or one that differs from the default in
exactly one setting.  Without the data the page says where it looked and shows no numbers.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from odbench.cache import quantize
from odbench.docsite.markdown import code, generated_note, table
from odbench.imageio import read_gray
from odbench.methods.center_prior import center_gaussian
from odbench.metrics.protocols import DEFAULT_PROTOCOL, PROTOCOLS, Protocol
from odbench.metrics.saliency import SaliencyMeter
from odbench.metrics.sod import FamilyMeter

#: Every STEP-th image (in id order) of each dataset: 50 of ECSSD's 1,000.
STEP = 20
#: The center-prior card's sigma (methods/center-prior.toml).
SIGMA = 0.25
#: The near-GT map: the GT shifted by SHIFT pixels (down and right) and blurred by BLUR pixels.
SHIFT, BLUR = 4, 3.0
#: The side a "network resolution" map is predicted at, in the resizing comparison.
NET_SIDE = 224
_ROOT = Path(__file__).resolve().parents[2]


def data_root() -> Path:
    """``$ODBENCH_DOCS_DATA``, else ``$ODBENCH_DATA``, else ``../shared/data`` beside the
    checkout (as the tests look for real data)."""
    for var in ("ODBENCH_DOCS_DATA", "ODBENCH_DATA"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser().resolve()
    return _ROOT.parent / "shared" / "data"


def subset(folder: Path, step: int = STEP) -> list[Path]:
    """The GT masks used: every ``step``-th PNG of ``folder`` by name."""
    return sorted(folder.glob("*.png"))[::step]


def prior_map(gt: np.ndarray) -> np.ndarray:
    """center-prior's map for the image of ``gt`` (float32 in (0, 1])."""
    return center_gaussian(gt.shape[0], gt.shape[1], SIGMA)


def near_gt_map(gt: np.ndarray) -> np.ndarray:
    """A strong method's stand-in: the binary GT (>= 128) shifted and blurred (float32)."""
    from scipy.ndimage import gaussian_filter, shift

    fg = (gt >= 128).astype(np.float32)
    return np.clip(gaussian_filter(shift(fg, (SHIFT, SHIFT), order=0), BLUR), 0, 1)


#: The maps scored: label -> map of a GT mask.
SOURCES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "center-prior": prior_map,
    "near-GT": near_gt_map,
}

Row = dict[str, float]
Pairs = list[tuple[np.ndarray, np.ndarray]]


def score(pairs: Pairs, protocol: Protocol, family: bool = False) -> Row:
    """Dataset metrics of (map, GT) pairs under ``protocol``; ``mean_fbeta`` is the mean of
    the dataset Fβ curve (as the catalog defines it)."""
    meter: FamilyMeter | SaliencyMeter = (
        FamilyMeter(protocol) if family else SaliencyMeter(protocol)
    )
    for i, (pred, gt) in enumerate(pairs):
        meter.update(pred, gt, str(i))
    out = meter.compute()
    row = {k: v for k, v in out.items() if isinstance(v, float)}
    row["mean_fbeta"] = float(np.mean(np.asarray(out["fbeta_curve"])))
    return row


def _one(setting: str, value: Any) -> Protocol:
    """The default protocol with one setting changed."""
    base = PROTOCOLS.get(DEFAULT_PROTOCOL)
    changes: dict[str, Any] = {setting: value}
    return replace(base, name=f"{base.name}+{setting}={value}", **changes)


def _nearest(gt: np.ndarray, side: int) -> np.ndarray:
    """GT resized to side x side by nearest neighbour (the GT-to-map direction)."""
    from PIL import Image

    return np.asarray(Image.fromarray(gt).resize((side, side), Image.Resampling.NEAREST))


@dataclass
class Measurements:
    """What the page shows: ``tables[name]`` = rows of (label, {source: Row})."""

    n_ecssd: int
    n_duts: int
    seconds: float
    tables: dict[str, list[tuple[str, dict[str, Row]]]]


def _rows(
    configs: list[tuple[str, Protocol, Callable[[np.ndarray, np.ndarray], tuple]]],
    pairs: dict[str, Pairs],
    family: bool = False,
) -> list[tuple[str, dict[str, Row]]]:
    """Each config (label, protocol, (map, gt) -> (map, gt)) scored on each source's pairs."""
    return [
        (label, {src: score([f(p, g) for p, g in ps], proto, family) for src, ps in pairs.items()})
        for label, proto, f in configs
    ]


def _same(p: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return p, g


def measure(root: Path | None = None) -> Measurements | None:
    """Every table of the page; None when ECSSD is not under ``root``."""
    from odbench.metrics.saliency import resize_bilinear

    root = data_root() if root is None else root
    net = (NET_SIDE, NET_SIDE)
    ecssd_dir = root / "ECSSD" / "ground_truth_mask"
    if not ecssd_dir.is_dir():
        return None
    start = time.perf_counter()
    ecssd = [read_gray(p) for p in subset(ecssd_dir)]
    duts_dir = root / "DUTS-TR-1k" / "DUTS-TR-Mask"
    duts = [read_gray(p) for p in subset(duts_dir)] if duts_dir.is_dir() else []
    pairs = {src: [(quantize(f(gt)), gt) for gt in ecssd] for src, f in SOURCES.items()}
    # each map as a method predicting at NET_SIDE² would give it
    small = {
        src: [(quantize(resize_bilinear(f(gt), net)), gt) for gt in ecssd]
        for src, f in SOURCES.items()
    }
    default = PROTOCOLS.get(DEFAULT_PROTOCOL)
    protos = [p for p in map(PROTOCOLS.get, PROTOCOLS.names()) if isinstance(p, Protocol)]
    tables = {
        "protocols": _rows([(f"`{p.name}`", p, _same) for p in protos], pairs),
        "causes": _rows(
            [
                (f"`{DEFAULT_PROTOCOL}` (reference)", default, _same),
                ("256 thresholds, ⌊255p⌋ ≥ k (`grid = ge_q256`)", _one("grid", "ge_q256"), _same),
                ("best threshold per image (`max_over = per_image`)",
                 _one("max_over", "per_image"), _same),
                ("β² squared again: 0.09 (`square_beta2 = true`)",
                 _one("square_beta2", True), _same),
                ("min-max normalised maps (`pred_norm = minmax`)",
                 _one("pred_norm", "minmax"), _same),
                ("Acc / IoU at p ≥ 0.5 (`binarize_op = >=`)", _one("binarize_op", ">="), _same),
                ("MAE of the binarised map (`mae_on = binary`)", _one("mae_on", "binary"), _same),
                ("maps saved as 8-bit PNG, round(255 p)", default,
                 lambda p, g: (np.round(p / 65535 * 255).astype(np.uint8), g)),
            ],
            pairs,
        ),
        "resize": _rows([("map at the GT's size", default, _same)], pairs)
        + _rows(
            [
                (f"map at {NET_SIDE}², resized to the GT (bilinear; `odbench`)", default, _same),
                (f"GT resized to the map's {NET_SIDE}² (nearest), scored there", default,
                 lambda p, g: (p, _nearest(g, NET_SIDE))),
            ],
            small,
        ),
        "gt_rule": [
            row
            for name, gts in (("ECSSD", ecssd), ("DUTS-TR-1k", duts))
            if gts
            for row in _rows(
                [(f"{name}, `gt_rule = {r}`", _one("gt_rule", r), _same)
                 for r in ("ge128", "gt128", "nonzero", "eq255")],
                {src: [(quantize(f(gt)), gt) for gt in gts] for src, f in SOURCES.items()},
            )
        ],
        "e_measure": _rows(
            [(f"`{p.name}`", p, _same) for p in (default, PROTOCOLS.get("pysodmetrics"))],
            pairs,
            family=True,
        ),
    }  # fmt: skip
    seconds = time.perf_counter() - start
    return Measurements(len(ecssd), len(duts), seconds, tables)


def _fmt(value: float) -> str:
    return "NaN" if value != value else f"{value:.4f}"


#: Column labels of the metric keys shown.
LABELS = {
    "acc": "Acc",
    "iou": "IoU",
    "max_fbeta": "maxFβ",
    "mean_fbeta": "meanFβ",
    "mae": "MAE",
    "e_measure_adaptive": "adpEξ",
    "e_measure_mean": "meanEξ",
    "e_measure_max": "maxEξ",
}


def _table(rows: list[tuple[str, dict[str, Row]]], keys: list[str], delta: bool = True) -> str:
    """One column per (source, metric); with ``delta``, the change from the first row."""
    sources = list(rows[0][1])
    header = ["", *(f"{src} {LABELS[k]}" for src in sources for k in keys)]
    body = []
    for label, by_source in rows:
        cells = []
        for src in sources:
            for k in keys:
                value, base = by_source[src][k], rows[0][1][src][k]
                text = _fmt(value)
                if delta and value == value and base == base and abs(value - base) >= 5e-5:
                    text += f" ({value - base:+.4f})"
                cells.append(text)
        body.append([label, *cells])
    return table(header, body)


_INTRO = """# Why my number differs

The field's repositories compute "maxFβ", IoU, Acc and MAE in incompatible ways, and users of
saliency toolkits keep filing issues about it (PySODEvalToolkit #14: 255 vs 256 thresholds;
SINet-V2 #2: E-measure variants; EDN #6: resizing before evaluation).  odbench names every such
choice in a [protocol](reference/protocols.md), records the protocol in every result, and
reproduces the other repositories' conventions exactly (`--protocol NAME`).  This page measures
what each choice does to the same maps on real data.
"""


def numbers_page(root: Path | None = None) -> str:
    """The page; with a note instead of numbers when the real data is absent."""
    root = data_root() if root is None else root
    out = [_INTRO, generated_note("`odbench/docsite/numbers.py`, run on real data at build time")]
    m = measure(root)
    if m is None:
        out.append(
            '!!! warning "No numbers in this build"\n    The real data was not found: '
            f"`{root}/ECSSD/ground_truth_mask` is absent.  Set `ODBENCH_DOCS_DATA` (or "
            "`ODBENCH_DATA`) to a folder holding `ECSSD/` (and `DUTS-TR-1k/`) and build "
            "again.\n"
        )
        return "\n".join(out)
    basic = ["acc", "iou", "max_fbeta", "mean_fbeta", "mae"]
    out.append(
        f"Two kinds of map, on {m.n_ecssd} ECSSD images (every {STEP}th, by file name)"
        + (f" and {m.n_duts} DUTS-TR-1k masks" if m.n_duts else "")
        + f" from `{root}`: **center-prior** (the registered weight-free floor row, "
        f"σ = {SIGMA}: a smooth map computed from the image size) and **near-GT**, a strong "
        f"method's stand-in (the GT shifted by {SHIFT} px and blurred, σ = {BLUR:g} px).  "
        "Maps are stored as `odbench eval` caches and scores them (16 bit, round(65535 p)).  "
        f"Computed at build time in {m.seconds:.1f} s by odbench's meters, the code "
        "`odbench score` and `odbench eval` run; in parentheses, the change from the first "
        "row of the table.\n"
    )
    out.append("## The same maps under each protocol\n")
    out.append(_table(m.tables["protocols"], basic, delta=False))
    out.append(
        "Each protocol's settings, with the source line each came from: "
        "[protocols](reference/protocols.md).\n"
    )
    out.append("## One cause at a time\n")
    out.append(
        f"Each row changes one setting of `{DEFAULT_PROTOCOL}` (or the maps) and nothing else.  "
        "A per-image best threshold and a squared β² flatter maxFβ; float thresholds that "
        "round differently move maps whose values sit on k/255; saving as 8-bit PNG moves "
        "every value by up to 1/510.\n"
    )
    out.append(_table(m.tables["causes"], basic))
    out.append("## Resizing the map or the GT\n")
    out.append(
        f"A method that predicts at {NET_SIDE}² is scored either after resizing its map to "
        "the GT (odbench, bilinear) or against a GT shrunk to the map (nearest): the second "
        "scores another, smaller, image set.\n"
    )
    out.append(_table(m.tables["resize"], basic))
    out.append("## GT binarisation\n")
    out.append(
        "ECSSD's masks hold only 0 and 255, so every rule agrees there; DUTS masks have "
        "anti-aliased edges, where ≥ 128, > 128, non-zero and = 255 differ.\n"
    )
    out.append(_table(m.tables["gt_rule"], basic, delta=False))
    out.append("## E-measure: adaptive, mean or max\n")
    out.append(
        "Three numbers share the name.  `e_measure_adaptive` binarises at "
        "p ≥ min(2·mean(p), 1); `e_measure_mean` / `e_measure_max` are the mean / max of the "
        "dataset curve over the protocol's thresholds (255 or 256 of them).\n"
    )
    e_keys = ["e_measure_adaptive", "e_measure_mean", "e_measure_max"]
    out.append(_table(m.tables["e_measure"], e_keys, delta=False))
    out.append(
        "Which number a paper reports: check the protocol it names (or the code it links) "
        "against the [protocols](reference/protocols.md) page, then score with "
        f"`odbench score --protocol NAME` ({code('odbench list protocols')}).\n"
    )
    return "\n".join(out)
