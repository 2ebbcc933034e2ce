"""Real data from ``../shared/data`` (skipped when absent): ECSSD through the ``ecssd`` card,
DUTS-TR-1k through the ``duts_tr`` layout, tiny_coco through pycocotools."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from realdata import REAL_DATA

from odbench.data.base import create_dataset
from odbench.imageio import read_gray

SHARED = REAL_DATA


def need(sub: str) -> Path:
    path = SHARED / sub
    if not path.is_dir():
        pytest.skip(f"real data not available: {path} is absent")
    return path


def test_ecssd_all_pairs() -> None:
    need("ECSSD")
    ds = create_dataset("ecssd", data_root=SHARED, download=False)
    ids = ds.ids()
    assert len(ids) == 1000 and ids[0] == "0001" and ids[-1] == "1000"
    values: set[int] = set()
    for sid in ids[::50]:
        s = ds.load(sid)
        assert s.image.dtype == np.uint8 and s.image.ndim == 3 and s.image.shape[2] == 3
        assert s.mask.dtype == np.uint8 and s.mask.shape == s.image.shape[:2]
        values |= set(np.unique(s.mask).tolist())
    assert values == {0, 255}  # ECSSD masks are stored 0/255


def test_duts_tr_1k_via_duts_tr_layout() -> None:
    folder = need("DUTS-TR-1k")
    ds = create_dataset("duts_tr", path=folder)
    assert len(ds) == 1000
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # masks only (images cost 5x more to decode): the loader's pairing, imageio's reader
        masks = [read_gray(ds.files(sid)[1], what="GT mask") for sid in ds.ids()]
    rgb = [str(w.message) for w in caught if "converted to grayscale" in str(w.message)]
    assert len(rgb) == 1 and "DUTS-TR-Mask" in rgb[0]  # the one RGB mask of the release
    assert all(m.dtype == np.uint8 for m in masks)
    assert len(set(np.unique(masks[0]).tolist())) > 2  # anti-aliased edges, stored as is
    s = ds.load(ds.ids()[0])
    assert s.image.shape[:2] == s.mask.shape


@pytest.mark.parametrize("split", ["train2017", "val2017"])
def test_tiny_coco_with_pycocotools(split: str) -> None:
    folder = need("tiny_coco")
    ds = create_dataset("coco", path=folder, split=split)
    ann = json.loads((folder / "annotations" / f"instances_{split}.json").read_text())
    assert len(ds) == len(ann["images"]) == 50
    by_image: dict[int, list[list[float]]] = {}
    for a in ann["annotations"]:
        if a.get("iscrowd"):  # crowd boxes are left out by default (LOST's COCO20K protocol)
            continue
        x, y, w, h = a["bbox"]
        by_image.setdefault(a["image_id"], []).append([x, y, x + w, y + h])
    for info in ann["images"][:10]:
        s = ds.load(Path(info["file_name"]).stem)
        assert s.image.shape == (info["height"], info["width"], 3)
        expected = np.array(sorted(by_image.get(info["id"], [])), dtype=float).reshape(-1, 4)
        np.testing.assert_allclose(np.array(sorted(s.boxes.tolist())).reshape(-1, 4), expected)
