"""One error base: every user-facing error of odbench derives from ``OdbenchError``, and the
command line turns it into one ``error:`` line, exit code 2, in one place (``odbench.cli``)."""

from __future__ import annotations

import errno
import importlib
import inspect
import pkgutil
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

import odbench
from odbench.cli import main
from odbench.errors import OdbenchError, UserError

#: Exception classes of odbench that never reach a user, and why.  A new one goes here with its
#: reason, or derives from OdbenchError.
NOT_USER_FACING = {
    "odbench.bench.references._LastAttention": "ends a reference loop's ViT forward; caught there",
    "odbench.cli.ErrorLine": "how the CLI shows an OdbenchError (a click exception)",
    "odbench.features.vit._KeysCaptured": "ends a ViT forward at the last qkv; caught there",
    "odbench.phases.MethodFailed": "carries a method's error from a worker; raised as ImageError",
    "odbench.synthesis.pipeline.SynthInterrupted": "test hook simulating a kill",
    "odbench.training.loop.Terminated": "SIGTERM as KeyboardInterrupt; the train command says where",
}


def _odbench_exception_classes() -> Iterator[type[BaseException]]:
    for info in pkgutil.walk_packages(odbench.__path__, "odbench."):
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and not issubclass(obj, Warning)
                and obj.__module__ == module.__name__
            ):
                yield obj


def test_every_user_facing_error_derives_from_the_base() -> None:
    classes = {f"{c.__module__}.{c.__qualname__}": c for c in _odbench_exception_classes()}
    assert len(classes) > 20, sorted(classes)  # the walk found the package's errors
    stray = [
        name
        for name, cls in classes.items()
        if not issubclass(cls, OdbenchError) and name not in NOT_USER_FACING
    ]
    assert not stray, f"derive these from odbench.errors.OdbenchError: {stray}"
    gone = set(NOT_USER_FACING) - set(classes)
    assert not gone, f"NOT_USER_FACING names classes that no longer exist: {gone}"


def _run(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> Result:
    """``odbench boom``: a command that raises ``error``."""

    @click.command("boom")
    def boom() -> None:
        raise error

    monkeypatch.setitem(main.commands, "boom", boom)
    return CliRunner().invoke(main, ["boom"])


class _LibraryError(OdbenchError, ValueError):
    """Like the library's errors: the base plus the builtin they were before."""


@pytest.mark.parametrize(
    "error",
    [
        UserError("--n 0: must be >= 1"),
        _LibraryError("x.png: not an image; convert it to PNG"),
        FileNotFoundError(2, "No such file or directory", "missing.json"),
    ],
)
def test_the_cli_prints_an_odbench_error_as_one_line(
    monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    result = _run(monkeypatch, error)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [f"error: {error}"], lines


def test_a_full_disk_is_one_line_saying_work_is_kept(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    full = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run.json"))
    result = _run(monkeypatch, full)
    assert result.exit_code == 2
    line = result.output.strip()
    assert line.startswith(f"error: {tmp_path}: no space left") and "finished work is kept" in line


@pytest.mark.parametrize("error", [ValueError("a bug"), KeyError("a bug")])
def test_anything_else_is_a_bug_and_keeps_its_traceback(
    monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    result = _run(monkeypatch, error)
    assert result.exit_code == 1 and result.exception is error
