"""odbench.score(): the Python API of ``odbench score``, the same numbers as the command."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from test_score_cli import make_pairs, score_json  # tests/ is on sys.path

import odbench
from odbench.errors import OdbenchError


def same(a, b) -> bool:
    """Equal to the bit, NaN (the CLI's null) equal to NaN, lists element-wise."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and math.isnan(a):
        return b is None or (isinstance(b, float) and math.isnan(b))
    return a == b


@pytest.mark.parametrize(
    ("metrics", "protocol"),
    [("basic", "odbench"), ("all", "pysodmetrics"), ("s_measure,mae", "tokencut")],
)
def test_score_gives_the_numbers_of_the_command(tmp_path, metrics, protocol):
    pred_dir, gt_dir = make_pairs(tmp_path, n=6)
    cli = score_json(pred_dir, gt_dir, "--metrics", metrics, "--protocol", protocol)
    run = odbench.score(pred_dir, gt_dir, metrics=metrics, protocol=protocol, workers=2)
    assert cli.pop("n_gt_skipped") == run.dataset["n_gt_skipped"] == 0
    assert cli.pop("skipped_ids") == run.dataset["skipped_ids"] == []
    assert same(run.metrics["saliency"], cli), (run.metrics["saliency"], cli)
    assert run.protocol_name == protocol and run.method_name == "pred"
    records = run.records
    assert records.ids == tuple(f"img{i}" for i in range(6))
    mean_mae = float(np.mean(records.saliency.mae))
    assert mean_mae == pytest.approx(cli["mae"], abs=1e-15)
    assert (records.sod is not None) == (metrics != "basic")


def test_score_names_the_run_and_refuses_bad_inputs_with_an_odbench_error(tmp_path):
    pred_dir, gt_dir = make_pairs(tmp_path, n=3)
    run = odbench.score(pred_dir, gt_dir, method="mine", dataset="toy")
    assert (run.method_name, run.dataset_name, run.info["source"]) == (
        "mine",
        "toy",
        "odbench.score",
    )
    (pred_dir / "img0.png").unlink()
    with pytest.raises(OdbenchError, match="GT mask\\(s\\) without a prediction"):
        odbench.score(pred_dir, gt_dir)
    partial = odbench.score(pred_dir, gt_dir, subset_of_gt=True)
    assert partial.dataset["n_gt_skipped"] == 1 and partial.metrics["saliency"]["n_images"] == 2


def test_score_does_not_import_torch_or_click(tmp_path):
    pred_dir, gt_dir = make_pairs(tmp_path, n=2)
    code = (
        "import sys, json, odbench\n"
        f"run = odbench.score({str(pred_dir)!r}, {str(gt_dir)!r}, metrics='all')\n"
        "print(json.dumps([run.metrics['saliency']['n_images'], 'torch' in sys.modules, "
        "'click' in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [2, False, False]
