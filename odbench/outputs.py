"""Output paths checked before any work: one line naming the option and the fix, nothing created.

A long run must not find out at the end that it cannot write its results.  These checks create
nothing: they walk up to the nearest existing folder and ask whether it can be written.
"""

from __future__ import annotations

import os
from pathlib import Path

from odbench.errors import OdbenchError


class OutputPathError(OdbenchError, ValueError):
    """An output path that cannot be written; the message names the option and the path."""


def _nearest_existing(path: Path) -> Path:
    probe = path.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def _problem(folder: Path) -> str | None:
    """Why ``folder`` cannot be (created and) written, or ``None``."""
    if folder.exists() and not folder.is_dir():
        return "exists and is not a folder"
    existing = _nearest_existing(folder)
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable; choose a folder you can write to"
    return None


def check_output_folder(path: Path | str, option: str) -> None:
    """``path`` is, or can be created as, a writable folder."""
    problem = _problem(Path(path))
    if problem:
        raise OutputPathError(f"{option} {path}: {problem}")


def check_output_file(path: Path | str, option: str) -> None:
    """``path`` is, or can be created as, a writable file (its folder may not exist yet)."""
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{option} {path}: is a folder; give a file name")
    parent = path.absolute().parent
    problem = _problem(parent)
    if parent.exists() and not parent.is_dir():
        problem = f"{parent} is a file, not a folder"
    if problem:
        raise OutputPathError(f"{option} {path}: {problem}")
