"""The options that several commands take, declared once: name, type, default and the usual help.

A command passes ``help=`` only where its option means something narrower (``leaderboard
--protocol`` applies to ``--format md/latex`` only).  This module imports click alone, so that
``odbench score --help`` and ``odbench list`` stay light (no torch, no numpy).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

FC = TypeVar("FC", bound=Callable[..., Any] | click.Command)

#: What ``--data-root`` means wherever a command reads a registered dataset.
DATA_ROOT_HELP = "Data root (default: $ODBENCH_DATA, else the user cache dir)."


def data_root(help: str = DATA_ROOT_HELP) -> Callable[[FC], FC]:
    """``--data-root``: the folder holding the datasets (``None``: ``$ODBENCH_DATA``, else the
    user cache folder, as :func:`odbench.data.paths.resolve_data_root` decides)."""
    return click.option(
        "--data-root", type=click.Path(file_okay=False, path_type=Path), default=None, help=help
    )


def device(
    default: str | None = "auto",
    help: str = "auto (CUDA when torch sees a GPU, else CPU), cpu, cuda or cuda:N.",
) -> Callable[[FC], FC]:
    """``--device``: where the model runs."""
    return click.option("--device", default=default, show_default=default is not None, help=help)


def on_mismatch(help: str) -> Callable[[FC], FC]:
    """``--on-mismatch error|skip``: what to do with an image whose mask has another size."""
    return click.option(
        "--on-mismatch",
        type=click.Choice(["error", "skip"]),
        default="error",
        show_default=True,
        help=help,
    )


def workers(help: str, default: int | None = None, type: Any = int) -> Callable[[FC], FC]:
    """``--workers N``: parallel workers (what they do is the command's ``help``)."""
    return click.option(
        "--workers", type=type, default=default, show_default=default is not None, help=help
    )


def metrics(help: str, default: str | None = None, name: str = "metrics") -> Callable[[FC], FC]:
    """``--metrics basic|all|NAME,...``, parsed by :func:`odbench.metrics.selection.parse_metrics`;
    ``name``: the command's parameter name."""
    return click.option(
        "--metrics",
        name,
        default=default,
        show_default=default is not None,
        metavar="basic|all|NAME,...",
        help=help,
    )


def protocol(help: str = "Evaluation protocol.", optional: bool = False) -> Callable[[FC], FC]:
    """``--protocol NAME`` (``odbench list protocols``), default
    :data:`odbench.metrics.protocols.DEFAULT_PROTOCOL`; ``optional``: ``None`` when not given,
    so that the command can take it from elsewhere (``score --config`` reads the file's)."""
    from odbench.metrics.protocols import DEFAULT_PROTOCOL

    if optional:
        return click.option(
            "--protocol", default=None, help=f"{help}  [default: {DEFAULT_PROTOCOL}]"
        )
    return click.option("--protocol", default=DEFAULT_PROTOCOL, show_default=True, help=help)


def results_dir(help: str) -> Callable[[FC], FC]:
    """``--results-dir``: the results store (:data:`odbench.results.DEFAULT_RESULTS_DIR`)."""
    from odbench.results import DEFAULT_RESULTS_DIR

    return click.option(
        "--results-dir",
        type=click.Path(path_type=Path),
        default=DEFAULT_RESULTS_DIR,
        show_default=True,
        help=help,
    )
