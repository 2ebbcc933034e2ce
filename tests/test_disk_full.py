"""Disk full mid-run (issue 16 item 13): one line naming the full folder and saying the run
resumes once there is space; temp files are cleaned and the cache resumes."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from odbench.cli import main


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc (Linux)")
def test_enospc_mid_run_is_one_line_and_the_run_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    args = ["eval", "--method", "center-prior", "--dataset", "toy", "--limit", "6",
            "--batch-size", "1", "--workers", "1", "--results-dir", str(tmp_path / "res"),
            "--cache-dir", str(cache)]  # fmt: skip
    real_fdopen = os.fdopen
    maps = {"n": 0}

    class FullFile:
        """The disk fills up after three prediction maps were cached: from the fourth map on,
        every write fails with ENOSPC (claims, key files and results still go through)."""

        def __init__(self, fd: int, *args: object, **kwargs: object) -> None:
            self.full = ".npz." in os.readlink(f"/proc/self/fd/{fd}")
            if self.full:
                maps["n"] += 1
            self.f = real_fdopen(fd, *args, **kwargs)  # type: ignore[arg-type]

        def __enter__(self):  # type: ignore[no-untyped-def]
            return self

        def __exit__(self, *exc):  # type: ignore[no-untyped-def]
            self.f.close()

        def write(self, data: bytes) -> int:
            if self.full and maps["n"] > 3:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return int(self.f.write(data))

    monkeypatch.setattr(os, "fdopen", FullFile)
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2, res.output
    (line,) = [x for x in res.stderr.splitlines() if x.startswith("error:")]  # after the bar
    assert line.startswith(f"error: {cache}") and "no space left" in line
    assert "resumes where it stopped" in line
    assert not [p for p in cache.rglob("*") if p.suffix in (".tmp", ".claim")]  # cleaned
    monkeypatch.setattr(os, "fdopen", real_fdopen)
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    (path,) = (tmp_path / "res").glob("*.json")
    assert json.loads(path.read_text())["n_cached"] == 3  # the maps written before were kept
