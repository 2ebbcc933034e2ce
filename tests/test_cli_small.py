"""Small CLI promises (issue 16 item 12): a file given as a folder, scoring a subset of a GT
folder, ``score-boxes --help`` describing its JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from odbench.cli import main
from odbench.imageio import write_png


def make(root: Path, n: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(1)
    for i in range(n):
        write_png(root / "pred" / f"{i}.png", rng.integers(0, 256, (10, 12), dtype=np.uint8))
        write_png(root / "gt" / f"{i}.png", ((rng.random((10, 12)) < 0.4) * 255).astype(np.uint8))
    return root / "pred", root / "gt"


def test_pred_dir_pointing_at_a_file(tmp_path: Path) -> None:
    pred, gt = make(tmp_path, 2)
    res = CliRunner().invoke(
        main, ["score", "--pred-dir", str(pred / "0.png"), "--gt-dir", str(gt)]
    )
    assert res.exit_code == 2
    assert res.stderr.strip() == (
        f"error: {pred / '0.png'}: is a file, not a folder; give the folder that holds the "
        "prediction files"
    )


def test_score_subset_of_gt(tmp_path: Path) -> None:
    pred, gt = make(tmp_path / "all", 5)
    sub = tmp_path / "sub"
    sub.mkdir()
    for i in (1, 3):
        (sub / f"{i}.png").write_bytes((pred / f"{i}.png").read_bytes())
    runner = CliRunner()
    res = runner.invoke(main, ["score", "--pred-dir", str(sub), "--gt-dir", str(gt), "--json"])
    assert res.exit_code == 2 and "--subset-of-gt" in res.stderr
    res = runner.invoke(
        main, ["score", "--pred-dir", str(sub), "--gt-dir", str(gt), "--json", "--subset-of-gt"]
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    gt2 = tmp_path / "gt2"
    gt2.mkdir()
    for i in (1, 3):
        (gt2 / f"{i}.png").write_bytes((gt / f"{i}.png").read_bytes())
    ref = json.loads(
        runner.invoke(
            main, ["score", "--pred-dir", str(sub), "--gt-dir", str(gt2), "--json"]
        ).stdout
    )
    assert out["n_images"] == 2 and out["n_gt_skipped"] == 3 and ref["n_gt_skipped"] == 0
    assert {k: v for k, v in out.items() if k != "n_gt_skipped"} == {
        k: v for k, v in ref.items() if k != "n_gt_skipped"
    }


def test_score_boxes_help_describes_json() -> None:
    res = CliRunner().invoke(main, ["score-boxes", "--help"])
    assert res.exit_code == 0
    assert "{image_id: box or null}" in res.output and "{image_id: [box, ...]}" in res.output
    assert "[x1, y1, x2, y2]" in res.output
