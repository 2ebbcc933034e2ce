"""The ``odbench`` command line.

Commands live in their own modules (``odbench/commands/``, ``odbench/bench/``) and are imported
only when invoked, so ``odbench --help``, ``odbench list`` and ``odbench score`` start without
importing torch.  Errors that the user must fix are printed as one line, exit code 2.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from odbench.errors import OdbenchError, UserError
from odbench.registry import import_target

# name -> ("module:attr", one-line help).  The help is here so --help imports nothing.
COMMANDS: dict[str, tuple[str, str]] = {
    "list": ("odbench.commands.listing:list_cmd", "List registered methods, datasets, protocols."),
    "score": ("odbench.commands.score:score", "Score saved prediction maps against GT masks."),
    "score-boxes": ("odbench.commands.score:score_boxes", "Score saved boxes (CorLoc)."),
    "score-detections": (
        "odbench.commands.detections:score_detections_cmd",
        "Class-agnostic COCO AP/AR of a COCO-results file.",
    ),
    "eval": ("odbench.commands.evaluate:eval_cmd", "Run a method over a dataset and score it."),
    "merge": ("odbench.commands.merge:merge_cmd", "Merge the results of eval --shard I/N runs."),
    "leaderboard": ("odbench.commands.leaderboard:leaderboard", "Render markdown leaderboards."),
    "compare": ("odbench.commands.leaderboard:compare", "Compare methods with bootstrap CIs."),
    "plot": ("odbench.commands.plot:plot", "PR, Fβ and E curves from stored results."),
    "cite": ("odbench.commands.cite:cite", "BibTeX for the methods, datasets, metrics used."),
    "cache": ("odbench.commands.cache:cache", "Show or clear the prediction cache."),
    "data": ("odbench.commands.data:data", "Download, verify and locate benchmark datasets."),
    "stats": ("odbench.commands.stats:stats", "Dataset statistics: size, contrast, center, shape."),
    "report": ("odbench.commands.report:report", "Static HTML report / PNG grid of runs."),
    "synth": (
        "odbench.commands.synth:synth",
        "Make a synthetic dataset: SD images + AttentionCut masks.",
    ),
    "bench": ("odbench.cli:bench", "Speed and memory benchmarks."),
    "train": ("odbench.commands.train:train_cmd", "Train a decoder or an end-to-end segmenter."),
    "reproduce": ("odbench.commands.reproduce:reproduce_cmd", "A paper's pipeline, resumable."),
}

BENCHMARKS: dict[str, tuple[str, str]] = {
    "metrics": ("odbench.bench.metrics:cli", "Saliency metrics vs pysodmetrics; score images/s."),
    "backbone": ("odbench.bench.backbone:cli", "SD UNet inversion + capture speed and memory."),
    "attentioncut": ("odbench.bench.attentioncut:cli", "AttentionCut per-stage timing."),
    "wctr": ("odbench.bench.wctr:cli", "wCtr images/s on one core."),
    "tokencut": ("odbench.bench.tokencut:cli", "TokenCut NCut eigen-solve time."),
    "dsm": ("odbench.bench.dsm:cli", "Deep Spectral Methods eigensolve time; images/s."),
    "synth": ("odbench.bench.synth:cli", "Synthesis pairs/s and time shares (SD-1.4 random)."),
    "runner": (
        "odbench.bench.runner:cli",
        "eval's pipeline vs a plain decode, workers, memory; methods vs their reference loops.",
    ),
    "learn": ("odbench.bench.learn:cli", "Train unet-e2e on real DUTS-TR-1k, score on ECSSD."),
    "report": ("odbench.bench.report:cli", "odbench report at DUTS-TE size; page sort time."),
    "scale": ("odbench.bench.scale:cli", "eval with 1 and 2 processes: the speed-up."),
    "decoder": ("odbench.bench.decoder:cli", "Decoder training steps/s on cached features."),
    "features": ("odbench.bench.features:cli", "Extractor images/s; SD vs diffusers' DDIM loop."),
    "discovery": (
        "odbench.bench.discovery:cli",
        "Class-agnostic COCO AP vs pycocotools and faster-coco-eval.",
    ),
    "gpu": (
        "odbench.bench.gpu:cli",
        "The one GPU check (tests, SD, extractors); --dry-run on CPU.",
    ),
}


class ErrorLine(click.ClickException):
    """How the command line shows an :class:`~odbench.errors.OdbenchError`: one line, exit 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


class LazyGroup(click.Group):
    def __init__(self, *args: Any, lazy: dict[str, tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            target, _ = self.lazy[cmd_name]
            try:
                cmd = import_target(target)
            except ImportError as e:
                raise UserError(f"command {cmd_name!r} is not available: {e}") from e
            return cmd  # type: ignore[no-any-return]
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, self.lazy[name][1]) for name in sorted(self.lazy)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


class RootGroup(LazyGroup):
    """The ``odbench`` group: the one place that turns an :class:`~odbench.errors.OdbenchError`
    raised by any command into one ``error:`` line, exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            with user_errors():
                return super().invoke(ctx)
        except OdbenchError as e:
            raise ErrorLine(str(e)) from e


@click.group(cls=RootGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="odbench")
def main() -> None:
    """odbench: benchmark and evaluation toolkit for unsupervised object discovery."""


@click.group(cls=LazyGroup, lazy=BENCHMARKS)
def bench() -> None:
    """Speed and memory benchmarks (ratios against a reference run in the same process)."""


@contextmanager
def user_errors() -> Iterator[None]:
    """The errors a user must fix as :class:`~odbench.errors.OdbenchError`: a missing file, and a
    full disk (which says that finished work is kept).  Everything else is a bug and keeps its
    traceback.  The ``odbench`` group wraps every command in it and prints the one line."""
    try:
        yield
    except OdbenchError:
        raise
    except FileNotFoundError as e:
        raise UserError(str(e)) from e
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS) and e.filename:
            # found at the end when the up-front check passed: root on a read-only mount, ACLs
            raise UserError(
                f"{e.filename}: {e.strerror or 'permission denied'}; fix its permissions or "
                "choose another folder (finished work is kept: a re-run resumes where it stopped)"
            ) from e
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = Path(e.filename) if e.filename else None
        folder = where if where is None or where.is_dir() else where.parent
        raise UserError(
            f"{folder or 'the output folder'}: no space left on the device; free some space "
            "and run the command again: finished work is kept and the run resumes where it "
            "stopped"
        ) from e
