"""COCO from the CLI (issue 16 item 7) on the real ``tiny_coco`` (50 train2017 + 50 val2017
images; skipped when absent): ``--data-root DIR`` with its one annotation file, ``--split NAME``
when there are several, crowd boxes excluded by default (LOST's COCO20K protocol)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from realdata import REAL_DATA

from odbench.cli import main
from odbench.data.base import create_dataset

TINY = REAL_DATA / "tiny_coco"
pytestmark = pytest.mark.skipif(not TINY.is_dir(), reason=f"real data absent: {TINY}")


def eval_coco(tmp_path: Path, root: Path, *extra: str):  # type: ignore[no-untyped-def]
    args = ["eval", "--method", "center-prior", "--dataset", "coco", "--data-root", str(root)]
    args += ["--results-dir", str(tmp_path / "res"), "--cache-dir", str(tmp_path / "cache")]
    return CliRunner().invoke(main, [*args, *extra])


def test_coco_split_from_the_cli(tmp_path: Path) -> None:
    res = eval_coco(tmp_path, TINY)
    assert res.exit_code != 0
    (line,) = res.output.strip().splitlines()
    assert "2 annotation files (train2017, val2017); choose one with --split" in line
    res = eval_coco(tmp_path, TINY, "--split", "val2017", "--limit", "5")
    assert res.exit_code == 0, res.output
    (path,) = (tmp_path / "res").glob("*.json")
    data = json.loads(path.read_text())
    assert data["dataset"]["annotations"].endswith("instances_val2017.json")
    assert data["dataset"]["drop_crowd"] is True and data["dataset"]["n_images"] == 50


def test_one_annotation_file_needs_no_split_and_crowd_is_excluded(tmp_path: Path) -> None:
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    shutil.copy(TINY / "annotations" / "instances_val2017.json", root / "annotations")
    (root / "val2017").symlink_to(TINY / "val2017")
    res = eval_coco(tmp_path, root, "--limit", "3")
    assert res.exit_code == 0, res.output
    ann = json.loads((root / "annotations" / "instances_val2017.json").read_text())
    crowd = [a for a in ann["annotations"] if a.get("iscrowd")]
    assert crowd
    by_id = {im["id"]: Path(im["file_name"]).stem for im in ann["images"]}
    sample = by_id[crowd[0]["image_id"]]
    kept = create_dataset("coco", data_root=root).load(sample).boxes
    every = create_dataset("coco", data_root=root, drop_crowd=False).load(sample).boxes
    x, y, w, h = crowd[0]["bbox"]
    assert any(np.allclose(b, [x, y, x + w, y + h]) for b in every)
    assert not any(np.allclose(b, [x, y, x + w, y + h]) for b in kept)
    n_crowd = sum(1 for a in crowd if a["image_id"] == crowd[0]["image_id"])
    assert len(every) - len(kept) == n_crowd
