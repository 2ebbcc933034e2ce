"""``odbench bench scale``'s own error paths (the benchmark itself runs torchrun: not a test)."""

from __future__ import annotations

import json
import subprocess
import tempfile
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


def test_the_plan_counts_the_images_there_are_and_torchrun_logs_stay_in_the_run_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """--n beyond the dataset: the first line says how many images run (toy: 16); torchrun's
    logs go into the temporary run folder (they were left in /tmp/torchelastic_*)."""
    calls: list[list[str]] = []

    def fake_run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        results = Path(cmd[cmd.index("--results-dir") + 1])
        results.mkdir(parents=True)
        ranks = [{"cpu_time_s": 0.5}, {"cpu_time_s": 0.5}]
        doc = {"metrics": {"iou": 0.5}, "dataset": {"n_evaluated": 16}, "wall_time_s": 1.0,
               "cpu_time_s": 1.0, "merged_from": ranks}  # fmt: skip
        (results / "run.json").write_text(json.dumps(doc))
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    result = CliRunner().invoke(main, ["bench", "scale", "--toy", "--n", "400"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("scale: wctr on the first 16 images of toy"), result.output
    torchrun = calls[1]
    log_dir = Path(torchrun[torchrun.index("--log-dir") + 1])
    assert log_dir.parent == Path(torchrun[torchrun.index("--results-dir") + 1]).parents[1]
    assert torchrun.index("--log-dir") < torchrun.index("-m", 3)  # torchrun's, not eval's
    assert list(tmp_path.iterdir()) == []  # the run folder is gone
