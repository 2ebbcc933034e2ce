"""``odbench reproduce diffusionseg``: the paper's whole pipeline as one resumable command.

1. synthesize image/mask pairs (§3.2, :func:`odbench.synthesis.pipeline.synthesize`) into
   ``OUT/synthetic`` (resumed where it stopped);
2. train the segment decoder on their frozen features (§3.3, :func:`odbench.training.train`) into
   ``OUT/run`` (resumed from its checkpoint; skipped once it reached its step target);
3. evaluate ``diffusionseg`` with that checkpoint on every benchmark of the scale that is present
   under the data root (absent ones are listed and skipped), predictions cached per image in
   ``OUT/cache``, results in ``OUT/results``;
4. write ``OUT/leaderboard.md``: these runs beside the paper's rows.

The scales (``tiny``: random tiny SD on CPU, 20-60 s on 2 cores, the first 3 images of the toy
benchmark and of each benchmark present under the data root, for CI and for checking a data
root; ``1k``; ``paper``: ~50k pairs) are the ``[reproduce.*]`` tables of
``methods/diffusionseg.toml``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from odbench.cards import method_card
from odbench.errors import OdbenchError
from odbench.imageio import atomic_write_bytes

METHOD = "diffusionseg"


class ReproduceError(OdbenchError, ValueError):
    """A reproduction that cannot start (unknown scale, bad folder); one line."""


@dataclass
class Reproduction:
    out: Path
    synth: dict[str, Any]
    trained_steps: int
    evaluated: dict[str, dict[str, Any]] = field(default_factory=dict)  # dataset -> metrics
    skipped: dict[str, str] = field(default_factory=dict)  # dataset -> why
    leaderboard: Path | None = None


def scales() -> dict[str, dict[str, Any]]:
    card = method_card(METHOD)
    assert card is not None
    return dict(card.raw.get("reproduce", {}))


def reproduce(
    scale: str,
    out: Path,
    *,
    data_root: Path | None = None,
    device: str = "auto",
    show_progress: bool = False,
    echo: Callable[[str], None] = lambda line: None,
) -> Reproduction:
    """Run (or resume) the pipeline at ``scale`` into ``out`` (see the module docstring)."""
    from odbench.checkpoint import CHECKPOINT_FILE, read_config
    from odbench.data.base import DatasetError, create_dataset
    from odbench.leaderboard import render
    from odbench.runner import run_eval
    from odbench.synthesis.pipeline import SynthOptions, synthesize
    from odbench.training import train

    known = scales()
    if scale not in known:
        raise ReproduceError(f"--scale {scale!r}: expected one of {', '.join(known)}")
    plan = known[scale]
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ReproduceError(f"--out {out}: exists and is not a folder")

    echo(f"[1/4] synthesize {plan['synth_n']} samples into {out / 'synthetic'}")
    opts = SynthOptions(n=int(plan["synth_n"]), device=device, **plan.get("synth_options", {}))
    summary = synthesize(opts, out / "synthetic")

    run = out / "run"
    done = False
    if (run / CHECKPOINT_FILE).is_file():
        config = read_config(run)
        done = int(config["step"]) >= int(config["target_steps"])
    if done:
        echo(f"[2/4] {run} already trained ({config['step']} steps)")
        steps = int(config["step"])
    else:
        echo(f"[2/4] train the decoder on {plan['features']} features into {run}")
        result = train(
            data="synthetic",
            data_root=out / "synthetic",
            features=str(plan["features"]),
            out=run,
            resume=(run / CHECKPOINT_FILE).is_file(),
            device=device,
            cache_dir=out / "cache",
            extractor_options=dict(plan.get("extractor_options", {})),
            show_progress=show_progress,
            steps=plan.get("steps"),
            resolution=plan.get("resolution"),
        )
        steps = result.step

    rep = Reproduction(out, summary, steps)
    limit = plan.get("limit")
    first = f" (the first {limit} images of each: the {scale} scale's limit)" if limit else ""
    echo(f"[3/4] evaluate {METHOD} on {', '.join(plan['datasets'])}{first}")
    for name in plan["datasets"]:
        try:
            create_dataset(name, data_root=data_root)
        except DatasetError as e:
            rep.skipped[name] = str(e)
            echo(f"      {name}: absent, skipped ({e})")
            continue
        outcome = run_eval(
            METHOD,
            name,
            checkpoint=run,
            device=device,
            data_root=data_root,
            limit=limit,
            cache_dir=out / "cache",
            results_dir=out / "results",
            show_progress=show_progress,
        )
        rep.evaluated[name] = outcome.metrics
    if rep.evaluated:
        tables = [
            beside_paper(rep.evaluated, scale),
            render("saliency", out / "results"),
            render("localization", out / "results"),
        ]
        rep.leaderboard = out / "leaderboard.md"
        atomic_write_bytes(rep.leaderboard, "\n".join(tables).encode())
        echo(f"[4/4] leaderboard: {rep.leaderboard}")
    return rep


def beside_paper(evaluated: dict[str, dict[str, Any]], scale: str) -> str:
    """A markdown table: this reproduction's metrics per dataset beside the paper's DiffusionSeg
    row (Tables 1a-1c) for the same dataset ("-" where the paper has none)."""
    from odbench.leaderboard import reported_rows
    from odbench.metrics.catalog import METRICS

    paper: dict[str, dict[str, float]] = {}
    for row in reported_rows():
        if row.method == "DiffusionSeg" and not row.variant and row.table in ("1a", "1b", "1c"):
            paper.setdefault(row.dataset, {}).update(row.metrics)
    keys = ("acc", "iou", "max_fbeta", "corloc")

    heads = [METRICS[k].label + (" %" if k == "corloc" else "") for k in keys]

    def cells(values: dict[str, Any]) -> list[str]:
        out = []
        for k in keys:
            v = values.get(k)
            out.append("-" if v is None else f"{v:.1f}" if k == "corloc" else f"{v:.3f}")
        return out

    lines = [
        f"## DiffusionSeg reproduced (scale {scale}) beside the paper (Ma et al. 2023, Table 1)",
        "",
        "| dataset | " + " | ".join(heads + [f"paper {h}" for h in heads]) + " |",
        "|---|" + "---|" * 2 * len(keys),
    ]
    for name, metrics in evaluated.items():
        ours = {**metrics.get("saliency", {}), **metrics.get("localization", {})}
        lines.append("| " + " | ".join([name, *cells(ours), *cells(paper.get(name, {}))]) + " |")
    return "\n".join(lines) + "\n"
