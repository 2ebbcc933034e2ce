"""``odbench bench scale``'s own error paths (the benchmark itself runs torchrun: not a test)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from odbench.cli import main

#: What torchrun prints when a rank exits with odbench's one error line: the line, once per
#: rank, then the launcher's own report ending in a rule.
TORCHRUN_FAILURE = """error: shard 1/2 of 1 images is empty: use at most 1 shards (or processes)
Traceback (most recent call last):
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
  traceback : To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html
============================================================
"""


def test_a_failed_launch_reports_odbench_error_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(cmd, 1, "", TORCHRUN_FAILURE)

    monkeypatch.setattr(subprocess, "run", fake_run)
    result = CliRunner().invoke(main, ["bench", "scale", "--toy", "--n", "4"])
    assert result.exit_code == 1
    assert result.output.splitlines()[-1].endswith(
        "failed: error: shard 1/2 of 1 images is empty: use at most 1 shards (or processes)"
    ), result.output


def test_fewer_images_than_processes_is_refused_before_running(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["bench", "scale", "--toy", "--n", "1"])
    assert result.exit_code == 2 and "'--n': 1 is not in the range x>=2" in result.output
