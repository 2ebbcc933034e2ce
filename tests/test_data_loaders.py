"""Loaders on folders already on disk: the layouts of TokenCut, SelfMask/FOUND/Deep Spectral and
the official archives; bad input gives one clear error naming the file; synthetic and COCO
formats; the ``odbench data`` commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from odbench.cli import main
from odbench.data.base import DatasetError, create_dataset
from odbench.data.synthetic import SyntheticWriter

RNG = np.random.default_rng(1)


def write_pair(
    images: Path, masks: Path, stem: str, size: tuple[int, int] = (10, 14)
) -> np.ndarray:
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    Image.fromarray(RNG.integers(0, 256, (*size, 3), dtype=np.uint8)).save(images / f"{stem}.jpg")
    m = (RNG.random(size) > 0.5).astype(np.uint8) * 255
    Image.fromarray(m).save(masks / f"{stem}.png")
    return m


@pytest.mark.parametrize(
    ("name", "rel"),
    [
        ("ecssd", "ECSSD/images|ECSSD/ground_truth_mask"),  # official, SelfMask, FOUND
        ("ecssd", "ECSSD/img|ECSSD/gt"),  # TokenCut
        ("duts_te", "DUTS-TE/DUTS-TE-Image|DUTS-TE/DUTS-TE-Mask"),  # official archive
        ("duts_te", "DUTS_Test/img|DUTS_Test/gt"),  # TokenCut
        ("duts_te", "DUTS/DUTS-TE/DUTS-TE-Image|DUTS/DUTS-TE/DUTS-TE-Mask"),  # both DUTS sets
        ("dut_omron", "DUT-OMRON/DUT-OMRON-image|DUT-OMRON/pixelwiseGT-new-PNG"),
        ("dut_omron", "DUT-OMRON/img|DUT-OMRON/gt"),
    ],
)
def test_known_layouts_under_data_root(tmp_path: Path, name: str, rel: str) -> None:
    img_rel, gt_rel = rel.split("|")
    m = write_pair(tmp_path / img_rel, tmp_path / gt_rel, "a1")
    write_pair(tmp_path / img_rel, tmp_path / gt_rel, "b2")
    ds = create_dataset(name, data_root=tmp_path, download=False)
    assert ds.ids() == ["a1", "b2"]
    np.testing.assert_array_equal(ds.load("a1").mask, m)
    # the data root may also be the dataset folder itself, and so may an explicit path
    folder = (tmp_path / img_rel).parent
    assert len(create_dataset(name, data_root=folder, download=False)) == 2
    assert len(create_dataset(name, path=folder)) == 2


def test_wrong_layout_names_expected_and_found(tmp_path: Path) -> None:
    write_pair(tmp_path / "ECSSD" / "imgs", tmp_path / "ECSSD" / "masks", "x")
    with pytest.raises(DatasetError) as e:
        create_dataset("ecssd", data_root=tmp_path, download=False)
    msg = str(e.value)
    assert "ECSSD: wrong ecssd layout" in msg
    assert "expected images/ + ground_truth_mask/" in msg and "img/ + gt/ (TokenCut)" in msg
    assert "found: imgs/, masks/" in msg
    assert "\n" not in msg


def test_missing_dataset_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(
        DatasetError,
        match=r"duts_te: not found under .*DUTS-TE/, DUTS_Test/.*odbench data download duts_te",
    ) as e:
        create_dataset("duts_te", data_root=tmp_path, download=False)
    # the hint downloads where it looked (issue 26 item 10), not into the default data root
    assert f"`odbench data download duts_te --data-root {tmp_path.resolve()}`" in str(e.value)
    with pytest.raises(DatasetError, match="folder not found"):
        create_dataset("ecssd", path=tmp_path / "nope")


def test_image_without_gt_and_reverse(tmp_path: Path) -> None:
    images, masks = tmp_path / "images", tmp_path / "ground_truth_mask"
    write_pair(images, masks, "0001")
    write_pair(images, masks, "0002")
    (masks / "0002.png").unlink()
    with pytest.raises(DatasetError, match=r"images/0002.jpg: image has no GT mask .*1 image\(s\)"):
        create_dataset("ecssd", path=tmp_path)
    (images / "0002.jpg").unlink()
    write_pair(tmp_path / "spare", masks, "0003")
    with pytest.raises(DatasetError, match=r"ground_truth_mask/0003.png: GT mask has no image"):
        create_dataset("ecssd", path=tmp_path)


def test_hidden_and_stray_files_ignored(tmp_path: Path) -> None:
    images, masks = tmp_path / "images", tmp_path / "masks"
    write_pair(images, masks, "a")
    write_pair(images / ".ipynb_checkpoints", masks / ".ipynb_checkpoints", "a-checkpoint")
    (images / "Thumbs.db").write_bytes(b"\x00" * 10)
    (masks / "desktop.ini").write_text("[x]")
    (images / ".DS_Store").write_bytes(b"\x00")
    (masks / "._a.png").write_bytes(b"\x00\x05\x16\x07")  # AppleDouble junk is hidden too
    ds = create_dataset("folder", path=tmp_path)
    assert ds.ids() == ["a"]


def test_empty_dataset(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DatasetError, match="no images found"):
        create_dataset("folder", path=tmp_path)


def test_mask_formats(tmp_path: Path) -> None:
    images, masks = tmp_path / "images", tmp_path / "masks"
    write_pair(images, masks, "pal")
    pal = Image.fromarray(np.array([[0, 1] * 7] * 10, dtype=np.uint8), mode="P")
    pal.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    pal.save(masks / "pal.png")
    write_pair(images, masks, "rgba")
    Image.new("RGBA", (14, 10)).save(masks / "rgba.png")
    write_pair(images, masks, "big", size=(10, 14))
    Image.fromarray(np.zeros((11, 14), np.uint8)).save(masks / "big.png")
    write_pair(images, masks, "deep")
    Image.fromarray(np.full((10, 14), 40000, np.uint16)).save(masks / "deep.png")
    (images / "bad.jpg").write_bytes(b"not a jpeg")
    Image.fromarray(np.zeros((10, 14), np.uint8)).save(masks / "bad.png")
    ds = create_dataset("folder", path=tmp_path)
    with pytest.warns(UserWarning, match=r"pal.png: GT mask stored as P, converted to grayscale"):
        mask = ds.load("pal").mask
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 255}
    assert ds.load("deep").mask.dtype == np.uint16  # 16-bit kept as stored
    with pytest.raises(DatasetError, match="rgba.png: GT mask has an alpha channel"):
        ds.load("rgba")
    with pytest.raises(
        DatasetError, match=r"big.png: GT mask is 14x11 but its image big.jpg is 14x10"
    ):
        ds.load("big")
    with pytest.raises(DatasetError, match=r"bad.jpg: unreadable or corrupt image"):
        ds.load("bad")


def test_loader_never_resizes(tmp_path: Path) -> None:
    write_pair(tmp_path / "images", tmp_path / "masks", "odd", size=(37, 53))
    s = create_dataset("folder", path=tmp_path).load("odd")
    assert s.image.shape == (37, 53, 3) and s.mask.shape == (37, 53)


def test_synthetic_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "syn"
    img = RNG.integers(0, 256, (8, 9, 3), dtype=np.uint8)
    mask = (RNG.random((8, 9)) > 0.5).astype(np.uint8) * 255
    with SyntheticWriter(out, generator={"method": "test", "seed": 3}) as w:
        w.add("000001", img, mask)
    with SyntheticWriter(out) as w:  # reopening appends
        assert "000001" in w
        w.add("000002", img, mask)
    (out / "images" / "stray.png").write_bytes(b"left by an interrupted run")
    ds = create_dataset("synthetic", path=out)
    assert ds.ids() == ["000001", "000002"]
    s = ds.load("000002")
    np.testing.assert_array_equal(s.image, img)
    np.testing.assert_array_equal(s.mask, mask)
    assert ds.describe()["generator"] == {"method": "test", "seed": 3}
    (out / "masks" / "000001.png").unlink()
    with pytest.raises(
        DatasetError, match=r"masks/000001.png: mask of sample '000001' .* is missing"
    ):
        create_dataset("synthetic", path=out)
    (out / "manifest.json").write_text(json.dumps({"format": "other", "version": 1}))
    with pytest.raises(DatasetError, match="expected format 'odbench-synthetic'"):
        create_dataset("synthetic", path=out)
    (out / "manifest.json").write_text("[]")
    with pytest.raises(DatasetError, match="manifest.json: expected a JSON object, got list"):
        create_dataset("synthetic", path=out)
    header = {"format": "odbench-synthetic", "version": 1}
    for bad in ({"image": "a.png", "mask": "b.png"}, {"id": "a", "image": 3, "mask": "b.png"}, 7):
        (out / "manifest.json").write_text(json.dumps({**header, "samples": [bad]}))
        with pytest.raises(DatasetError, match="manifest.json: a sample must be"):
            create_dataset("synthetic", path=out)


def test_coco_loader_boxes_and_crowd(tmp_path: Path) -> None:
    (tmp_path / "val2017").mkdir()
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "val2017" / "000000000001.jpg")
    ann = {
        "images": [{"id": 1, "file_name": "000000000001.jpg", "height": 20, "width": 30}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [2.5, 3, 10, 5],
                "iscrowd": 0,
                "area": 50,
                "segmentation": [[2.5, 3, 12.5, 3, 12.5, 8, 2.5, 8]],
            },
            {
                "id": 2,
                "image_id": 1,
                "category_id": 1,
                "bbox": [0, 0, 4, 4],
                "iscrowd": 1,
                "area": 16,
                "segmentation": {"counts": [0, 600], "size": [20, 30]},
            },
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(ann))
    ds = create_dataset("coco", path=tmp_path, split="val2017", drop_crowd=False)
    np.testing.assert_allclose(ds.load("000000000001").boxes, [[2.5, 3, 12.5, 8], [0, 0, 4, 4]])
    ds = create_dataset("coco", path=tmp_path)  # the one annotation file; crowd boxes dropped
    np.testing.assert_allclose(ds.load("000000000001").boxes, [[2.5, 3, 12.5, 8]])
    ds = create_dataset(
        "coco",
        annotations=tmp_path / "annotations" / "instances_val2017.json",
        images=tmp_path / "val2017",
        masks=True,
    )
    s = ds.load("000000000001")
    np.testing.assert_allclose(s.boxes, [[2.5, 3, 12.5, 8]])
    assert (
        s.mask.dtype == np.uint8
        and s.mask.max() == 255
        and s.mask[5, 6] == 255
        and s.mask[15, 25] == 0
    )
    with pytest.raises(DatasetError, match="give the COCO folder"):
        create_dataset("coco")
    (tmp_path / "annotations" / "instances_train2017.json").write_text(json.dumps(ann))
    with pytest.raises(DatasetError, match=r"2 annotation files \(train2017, val2017\); choose"):
        create_dataset("coco", path=tmp_path)


def test_cli_data_commands(tmp_path: Path) -> None:
    runner = CliRunner()
    write_pair(tmp_path / "ECSSD" / "img", tmp_path / "ECSSD" / "gt", "0001")
    res = runner.invoke(main, ["data", "list", "--data-root", str(tmp_path)])
    assert res.exit_code == 0
    assert f"present: {tmp_path / 'ECSSD'}" in res.output and "absent (download)" in res.output
    res = runner.invoke(main, ["data", "path", "ecssd", "--data-root", str(tmp_path)])
    assert res.exit_code == 0 and res.output.strip() == str(tmp_path / "ECSSD")
    res = runner.invoke(main, ["data", "verify", "ecssd", "--data-root", str(tmp_path)])
    assert res.exit_code == 1
    assert "1 samples (card: 1000)" in res.output and "the card says 1000" in res.output
    res = runner.invoke(main, ["data", "path", "voc07", "--data-root", str(tmp_path)])
    assert res.exit_code == 2 and res.output.startswith("error: voc07: not found under")
    res = runner.invoke(main, ["data", "verify", "ecsd"])
    assert res.exit_code == 2 and "Did you mean 'ecssd'?" in res.output
    res = runner.invoke(main, ["data", "download", "toy"])
    assert res.exit_code == 2 and "nothing to download" in res.output
