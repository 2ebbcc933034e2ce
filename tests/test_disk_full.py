"""Disk full mid-run (issue 16 item 13): one line naming the full folder and saying the run
resumes once there is space; temp files are cleaned and the cache resumes."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from odbench.cache import PredictionCache
from odbench.cli import main


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc (Linux)")
def test_enospc_mid_run_is_one_line_and_the_run_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    args = ["eval", "--method", "center-prior", "--dataset", "toy", "--limit", "6",
            "--batch-size", "1", "--workers", "1", "--results-dir", str(tmp_path / "res"),
            "--cache-dir", str(cache)]  # fmt: skip
    real_pwritev = os.pwritev
    maps = {"n": 0}

    def full_disk(fd: int, buffers: list[bytes], offset: int) -> int:
        """The disk fills up after three prediction maps were cached: the fourth entry is
        written in part (a torn tail), then ENOSPC (claims, key files, results go through)."""
        maps["n"] += 1
        if maps["n"] > 3:
            real_pwritev(fd, [bytes(memoryview(buffers[0])[:10])], offset)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_pwritev(fd, buffers, offset)

    monkeypatch.setattr(os, "pwritev", full_disk)
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2, res.output
    (line,) = [x for x in res.stderr.splitlines() if x.startswith("error:")]  # after the bar
    assert line.startswith(f"error: {cache}") and "no space left" in line
    assert "resumes where it stopped" in line
    assert not [p for p in cache.rglob("*") if p.suffix in (".tmp", ".claim", ".holder")]  # cleaned
    (pack,) = cache.rglob("*.pack")
    assert len(PredictionCache(pack.parent).ids()) == 3  # no torn tail left
    monkeypatch.setattr(os, "pwritev", real_pwritev)
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    (path,) = (tmp_path / "res").glob("*.json")
    assert json.loads(path.read_text())["n_cached"] == 3  # the maps written before were kept


def test_a_full_disk_while_writing_the_results_json_leaves_no_records_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The records .npz is written, then the disk fills up before the JSON: one line, and no
    records file left without its JSON (it was, named as a finished run's)."""
    import odbench.results

    real = odbench.results._temp_file
    calls = {"n": 0}

    def full_at_the_json(folder: Path, data: object) -> Path:
        calls["n"] += 1
        if calls["n"] == 2:  # the JSON, after the records
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder))
        return real(folder, data)  # type: ignore[arg-type]

    monkeypatch.setattr(odbench.results, "_temp_file", full_at_the_json)
    results = tmp_path / "res"
    args = ["eval", "--method", "center-prior", "--dataset", "toy", "--limit", "3",
            "--workers", "1", "--results-dir", str(results),
            "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2, res.output
    (line,) = [x for x in res.stderr.splitlines() if x.startswith("error:")]
    assert "no space left" in line
    assert calls["n"] == 2
    assert sorted(p.name for p in results.iterdir()) == []


def test_a_full_temporary_folder_is_named_not_the_output_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The per-image records go to unnamed files in the temporary folder ($TMPDIR): a full disk
    there said "the output folder", sending the user to the results or cache folder."""
    import io
    import tempfile

    class Full(io.BytesIO):
        def write(self, data: object) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # names no file

    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    monkeypatch.setattr(tempfile, "TemporaryFile", lambda **_: Full())
    args = ["eval", "--method", "center-prior", "--dataset", "toy", "--limit", "3",
            "--workers", "1", "--results-dir", str(tmp_path / "res"),
            "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2, res.output
    (line,) = [x for x in res.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith(f"error: {temp}: no space left on the device"), line
