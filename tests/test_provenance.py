"""odbench.provenance: package versions and the git commit are read once per process (each
``odbench eval`` run paid ~10 ms for each before), with the same content as a fresh read."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from odbench import provenance


@pytest.fixture(autouse=True)
def _forgotten() -> Any:
    """Each test starts and ends with nothing remembered."""
    provenance._version.cache_clear()
    provenance._git_commit.cache_clear()
    yield
    provenance._version.cache_clear()
    provenance._git_commit.cache_clear()


def test_package_versions_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A second call reads no package metadata; both give what importlib.metadata says."""
    read: list[str] = []

    def counting(dist: str) -> str:
        read.append(dist)
        return version(dist)

    monkeypatch.setattr(provenance, "version", counting)
    first = provenance.package_versions()
    n = len(read)
    assert n >= 2 and "odbench" in read and "numpy" in read
    assert provenance.package_versions() == first
    assert len(read) == n  # nothing read again
    assert first["numpy"] == version("numpy") and first["python"] == ".".join(
        map(str, sys.version_info[:3])
    )


def test_package_versions_follow_imports(monkeypatch: pytest.MonkeyPatch) -> None:
    """Which packages are listed is checked at every call: one imported after a first call is
    listed by the next (its version read then), one that is not imported is not."""
    monkeypatch.delitem(sys.modules, "maxflow", raising=False)
    assert "PyMaxflow" not in provenance.package_versions()
    monkeypatch.setitem(sys.modules, "maxflow", sys)  # as if imported now
    assert provenance.package_versions()["PyMaxflow"] == provenance._version("PyMaxflow")


def test_git_commit_read_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """git runs on the first call for a folder only; a later call (also through another spelling
    of the folder) answers from memory, the same commit; outside a checkout: None, remembered."""
    calls: list[list[str]] = []
    real = subprocess.run

    def counting(args: list[str], **kwargs: Any) -> Any:
        calls.append(args)
        return real(args, **kwargs)

    monkeypatch.setattr(provenance.subprocess, "run", counting)
    here = Path(provenance.__file__).resolve().parent.parent
    first = provenance.git_commit()
    n = len(calls)
    assert n >= 1
    assert provenance.git_commit() == first
    assert provenance.git_commit(here / "odbench" / "..") == first
    assert len(calls) == n
    head = real(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True)
    if head.returncode == 0:  # a checkout: its commit, as git says it
        assert first is not None and first.split("+")[0] == head.stdout.strip()
    outside = tmp_path / "not-a-checkout"
    outside.mkdir()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    assert provenance.git_commit(outside) is None
    m = len(calls)
    assert provenance.git_commit(outside) is None
    assert len(calls) == m
