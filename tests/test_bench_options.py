"""``odbench bench NAME``'s bad options: one line and exit code 2 before any work (no traceback,
no benchmark run on a count of zero, no long run ending in an error about its own options).

The benchmarks themselves are not run here: every case below is refused up front.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner, Result

from odbench.cli import main


def bench(*args: str) -> Result:
    return CliRunner().invoke(main, ["bench", *args])


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["attentioncut", "--repeats", "0"], "--repeats"),
        (["wctr", "--toy", "--n", "0"], "--n"),
        (["wctr", "--n", "0"], "--n"),
        (["tokencut", "--planted-only", "--n", "0"], "--n"),
        (["dsm", "--solvers-only", "--n", "-1"], "--n"),
        (["discovery", "--images", "0"], "--images"),
        (["discovery", "--dets", "-1"], "--dets"),
        (["discovery", "--bootstrap", "-1"], "--bootstrap"),
    ],
)
def test_counts_below_their_minimum_are_refused(args: list[str], option: str) -> None:
    r = bench(*args)
    assert r.exit_code == 2, r.output
    assert f"Invalid value for '{option}'" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("name", ["tokencut", "dsm"])
def test_an_unknown_backbone_is_refused_before_the_solver_part(name: str) -> None:
    r = bench(name, "--planted-only", "--n", "1", "--backbone", "nosuch")
    assert r.exit_code == 2, r.output
    assert r.output.startswith("error: unknown feature extractor 'nosuch'"), r.output
    assert "ms CPU/image" not in r.output  # nothing was timed first
