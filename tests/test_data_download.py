"""Loopback tests: for every downloadable card, a miniature of the official archives (same file
and folder names) is served from 127.0.0.1 and the real download -> verify -> load path runs
against it, with the miniature's sha256 passed through the card.  No network."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import tarfile
import threading
import zipfile
from collections.abc import Callable, Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pytest
from PIL import Image

from odbench.cards import DatasetCard, dataset_card
from odbench.data.base import DatasetError, Sample
from odbench.data.download import read_lock, safe_extract
from odbench.data.verify import verify_dataset
from odbench.registry import DATASETS

# ----------------------------------------------------------------------------- server


class RangeHandler(SimpleHTTPRequestHandler):
    """Static files with ``Range: bytes=N-`` support; records each request's Range header."""

    log: list[tuple[str, str | None]]

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        path = Path(self.translate_path(self.path))
        self.log.append((urlparse(self.path).path, self.headers.get("Range")))
        rng = self.headers.get("Range")
        if not rng or not path.is_file():
            super().do_GET()
            return
        data = path.read_bytes()
        start = int(rng.removeprefix("bytes=").split("-")[0])
        if start >= len(data):
            self.send_response(416)
            self.end_headers()
            return
        self.send_response(206)
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        self.wfile.write(data[start:])


@dataclasses.dataclass
class Server:
    root: Path
    base: str
    log: list[tuple[str, str | None]]

    def put(self, url: str, data: bytes) -> str:
        """Serve ``data`` at the path of the real ``url``; return the loopback URL."""
        parsed = urlparse(url)
        target = self.root / parsed.path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return self.base + parsed.path + (f"?{parsed.query}" if parsed.query else "")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "www"
    root.mkdir()
    log: list[tuple[str, str | None]] = []
    handler = partial(type("H", (RangeHandler,), {"log": log}), directory=str(root))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield Server(root, f"http://127.0.0.1:{httpd.server_address[1]}", log)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


# ----------------------------------------------------------------------------- miniatures

RNG = np.random.default_rng(0)


def jpg(h: int = 12, w: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def mask_array(h: int = 12, w: int = 16) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    y, x = RNG.integers(0, h // 2), RNG.integers(0, w // 2)
    m[y : y + h // 2, x : x + w // 2] = 255
    return m


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def make_zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def make_tar(
    files: dict[str, bytes], mode: str = "w:gz", links: dict[str, str] | None = None
) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tf.addfile(info)
    return buf.getvalue()


@dataclasses.dataclass
class Miniature:
    files: dict[str, bytes]  # archive file name (as in the card URL) -> bytes
    expected: dict[str, dict[str, Any]]  # sample id -> {"mask": array, "boxes": array}
    count: int


def saliency_pairs(
    stems: list[str], img_dir: str, gt_dir: str
) -> tuple[dict[str, bytes], dict[str, bytes], dict]:
    images, masks, expected = {}, {}, {}
    for stem in stems:
        m = mask_array()
        images[f"{img_dir}/{stem}.jpg"] = jpg()
        masks[f"{gt_dir}/{stem}.png"] = png(m)
        expected[stem] = {"mask": m}
    return images, masks, expected


def mini_ecssd() -> Miniature:
    images, masks, exp = saliency_pairs(["0001", "0002", "0003"], "images", "ground_truth_mask")
    return Miniature(
        {"images.zip": make_zip(images), "ground_truth_mask.zip": make_zip(masks)}, exp, 3
    )


def mini_duts(split: str) -> Miniature:
    stems = ["ILSVRC2012_test_00000003", "sun_aaabhshfqutsklcz"]
    images, masks, exp = saliency_pairs(
        stems, f"DUTS-{split}/DUTS-{split}-Image", f"DUTS-{split}/DUTS-{split}-Mask"
    )
    return Miniature({f"DUTS-{split}.zip": make_zip({**images, **masks})}, exp, 2)


def mini_dut_omron() -> Miniature:
    images, masks, exp = saliency_pairs(
        ["im005", "im010"], "DUT-OMRON-image", "pixelwiseGT-new-PNG"
    )
    masks["__MACOSX/pixelwiseGT-new-PNG/._im005.png"] = b"\x00\x05\x16\x07junk"
    return Miniature(
        {
            "DUT-OMRON-image.zip": make_zip(images),
            "DUT-OMRON-gt-pixelwise.zip.zip": make_zip(masks),
        },
        exp,
        2,
    )


def mini_cub() -> Miniature:
    rels = [
        "001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111.jpg",
        "001.Black_footed_Albatross/Black_Footed_Albatross_0002_55.jpg",
        "002.Laysan_Albatross/Laysan_Albatross_0001_545.jpg",
        "002.Laysan_Albatross/Laysan_Albatross_0002_1027.jpg",
    ]
    split = [0, 2, 1, 2]
    files: dict[str, bytes] = {"attributes.txt": b"1 has_bill_shape::curved\n"}
    segs: dict[str, bytes] = {}
    expected = {}
    lines, boxes = [], []
    for i, rel in enumerate(rels, 1):
        files[f"CUB_200_2011/images/{rel}"] = jpg()
        soft = (RNG.integers(0, 5, (12, 16)) * 63).astype(np.uint8)  # annotator-agreement levels
        segs[f"segmentations/{rel[:-4]}.png"] = png(soft)
        lines.append(f"{i} {rel}")
        x, y, w, h = 1.0 + i, 2.0, 5.0, 4.0 + i
        boxes.append(f"{i} {x} {y} {w} {h}")
        if split[i - 1] == 2:
            expected[Path(rel).stem] = {"mask": soft, "boxes": np.array([[x, y, x + w, y + h]])}
    files["CUB_200_2011/images.txt"] = ("\n".join(lines) + "\n").encode()
    files["CUB_200_2011/bounding_boxes.txt"] = ("\n".join(boxes) + "\n").encode()
    files["CUB_200_2011/train_test_split.txt"] = b"1 1\n2 0\n3 1\n4 0\n"
    redo = "".join(f"{i} {s}\n" for i, s in enumerate(split, 1)).encode()
    return Miniature(
        {
            "CUB_200_2011.tgz": make_tar(files),
            "segmentations.tgz": make_tar(segs),
            "train_val_test_split.txt": redo,
        },
        expected,
        2,
    )


VOC_XML = """<annotation><folder>VOC{year}</folder><filename>{id}.jpg</filename>
<size><width>16</width><height>12</height><depth>3</depth></size>{objects}</annotation>"""
VOC_OBJ = """<object><name>dog</name><pose>Left</pose><truncated>{t}</truncated><difficult>{d}</difficult>
<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox>
<part><name>head</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax></bndbox></part></object>"""


def mini_voc(year: str, archive: str, ids: list[str]) -> Miniature:
    files: dict[str, bytes] = {}
    expected = {}
    base = f"VOCdevkit/VOC{year}"
    for k, sid in enumerate(ids):
        objs = [
            (1, 1, 16, 12, 0, 0),
            (3, 2, 9.5, 8, k % 2, 1),
        ]  # whole image; a difficult/truncated one
        xml = VOC_XML.format(
            year=year,
            id=sid,
            objects="".join(
                VOC_OBJ.format(x1=a, y1=b, x2=c, y2=d, d=e, t=f) for a, b, c, d, e, f in objs
            ),
        )
        files[f"{base}/Annotations/{sid}.xml"] = xml.encode()
        files[f"{base}/JPEGImages/{sid}.jpg"] = jpg()
        expected[sid] = {"boxes": np.array([[0, 0, 16, 12], [2, 1, 9.5, 8]], dtype=float)}
    files[f"{base}/ImageSets/Main/trainval.txt"] = ("\n".join(ids) + "\n").encode()
    files[f"{base}/ImageSets/Main/train.txt"] = (ids[0] + "\n").encode()
    return Miniature({archive: make_tar(files, mode="w")}, expected, len(ids))


def mini_coco20k() -> Miniature:
    ids = [9, 25, 30, 34]
    names = [f"COCO_train2014_{i:012d}.jpg" for i in ids]
    images = {f"train2014/{n}": jpg() for n in names}
    anns = []
    for k, i in enumerate(ids):
        anns.append(
            {
                "id": 100 + k,
                "image_id": i,
                "category_id": 1,
                "bbox": [1.5, 2.0, 4.0, 3.25],
                "iscrowd": 0,
                "area": 13.0,
                "segmentation": [[1.5, 2, 5.5, 2, 5.5, 5.25]],
            }
        )
        anns.append(
            {
                "id": 200 + k,
                "image_id": i,
                "category_id": 1,
                "bbox": [0.0, 0.0, 8.0, 8.0],
                "iscrowd": 1,
                "area": 64.0,
                "segmentation": {"counts": [0, 192], "size": [12, 16]},
            }
        )
    instances = {
        "info": {"description": "mini"},
        "images": [
            {"id": i, "file_name": n, "height": 12, "width": 16} for i, n in zip(ids, names)
        ],
        "annotations": anns,
        "categories": [{"id": 1, "name": "dog", "supercategory": "animal"}],
    }
    selected = names[1:]  # the list leaves image 9 out
    listing = "".join(f"train2014/{n}\n" for n in selected).encode()
    expected = {Path(n).stem: {"boxes": np.array([[1.5, 2.0, 5.5, 5.25]])} for n in selected}
    return Miniature(
        {
            "train2014.zip": make_zip(images),
            "annotations_trainval2014.zip": make_zip(
                {"annotations/instances_train2014.json": json.dumps(instances).encode()}
            ),
            "coco_20k_filenames.txt": listing,
        },
        expected,
        3,
    )


def mini_lvis() -> Miniature:
    """LVIS v1 val: images from val2017 and train2017, named by coco_url, no file_name."""
    url = "http://images.cocodataset.org/{}/{:012d}.jpg"
    images = [(1, "val2017"), (2, "train2017")]
    lvis = {
        "images": [
            {"id": i, "coco_url": url.format(s, i), "height": 12, "width": 16} for i, s in images
        ],
        "annotations": [
            {"id": 10 + i, "image_id": i, "category_id": 3, "bbox": [1.0, 2.0, 4.0, 3.0],
             "area": 12.0, "segmentation": [[1, 2, 5, 2, 5, 5, 1, 5]]}
            for i, _ in images
        ],
        "categories": [{"id": 3, "name": "dog"}],
    }  # fmt: skip
    files = {
        "lvis_v1_val.json.zip": make_zip({"lvis_v1_val.json": json.dumps(lvis).encode()}),
        "val2017.zip": make_zip({f"val2017/{1:012d}.jpg": jpg()}),
        "train2017.zip": make_zip({f"train2017/{2:012d}.jpg": jpg()}),
    }
    expected = {f"{i:012d}": {"boxes": np.array([[1.0, 2.0, 5.0, 5.0]])} for i, _ in images}
    return Miniature(files, expected, 2)


MINIATURES: dict[str, Callable[[], Miniature]] = {
    "ecssd": mini_ecssd,
    "duts_te": lambda: mini_duts("TE"),
    "duts_tr": lambda: mini_duts("TR"),
    "dut_omron": mini_dut_omron,
    "cub": mini_cub,
    "voc07": lambda: mini_voc("2007", "VOCtrainval_06-Nov-2007.tar", ["000005", "000007"]),
    "voc12": lambda: mini_voc(
        "2012", "VOCtrainval_11-May-2012.tar", ["2008_000002", "2008_000003"]
    ),
    "coco20k": mini_coco20k,
    "lvis": mini_lvis,
}


def serve_card(
    card: DatasetCard, mini: Miniature, server: Server, with_sha: bool = True
) -> DatasetCard:
    """The real card with each URL pointed at the loopback copy of its miniature archive and the
    miniature's sha256 (or ``""``) in place of the real one; everything else unchanged."""
    raw = json.loads(json.dumps(card.raw))
    for entry in raw["download"]["files"]:
        name = entry.get("filename") or Path(urlparse(entry["url"]).path).name
        data = mini.files[name]
        entry["url"] = server.put(entry["url"], data)
        entry["sha256"] = hashlib.sha256(data).hexdigest() if with_sha else ""
        entry.pop("md5", None)  # the published md5 is that of the real archive
    return dataclasses.replace(card, raw=raw, count=mini.count)


def downloadable() -> list[str]:
    return [n for n in DATASETS.names() if (c := dataset_card(n)) and c.raw.get("download")]


def test_every_downloadable_card_has_a_miniature() -> None:
    assert sorted(downloadable()) == sorted(MINIATURES)


def check_sample(sample: Sample, exp: dict[str, Any]) -> None:
    assert sample.image.dtype == np.uint8 and sample.image.ndim == 3
    if "mask" in exp:
        assert sample.mask is not None
        np.testing.assert_array_equal(sample.mask, exp["mask"])
        assert sample.mask.shape == sample.image.shape[:2]
    if "boxes" in exp:
        assert sample.boxes is not None
        np.testing.assert_allclose(sample.boxes, exp["boxes"])


@pytest.mark.parametrize("name", sorted(MINIATURES))
def test_card_download_verify_load(name: str, server: Server, tmp_path: Path) -> None:
    card = dataset_card(name)
    assert card is not None
    mini = MINIATURES[name]()
    served = serve_card(card, mini, server)
    root = tmp_path / "root"
    cls = DATASETS.get(name)
    ds = cls.from_card(
        served, data_root=root, progressbar=False, download=True
    )  # downloads on first use
    assert ds.ids() == sorted(mini.expected)
    for sid, exp in mini.expected.items():
        check_sample(ds.load(sid), exp)
    # verify: count matches the (miniature) card, every image has its GT and reads
    report = verify_dataset(served, data_root=root)
    assert report.ok, report.lines()
    assert report.n_samples == mini.count
    # nothing half-done left behind; known checksums are not re-recorded
    assert not [p for p in root.iterdir() if p.name.startswith(".partial")]
    assert (root / served.raw["download"]["target"]).is_dir()
    assert read_lock(root)["files"] == {}
    # second use: no new request
    n_requests = len(server.log)
    cls.from_card(served, data_root=root, progressbar=False, download=True)
    assert len(server.log) == n_requests


def test_voc_drop_difficult_and_truncated(server: Server, tmp_path: Path) -> None:
    card = dataset_card("voc07")
    assert card is not None
    served = serve_card(card, MINIATURES["voc07"](), server)
    root = tmp_path / "root"
    cls = DATASETS.get("voc07")
    keep_all = cls.from_card(served, data_root=root, progressbar=False, download=True)
    assert len(keep_all.load("000007").boxes) == 2
    no_difficult = cls.from_card(served, data_root=root, drop_difficult=True)
    assert len(no_difficult.load("000005").boxes) == 2  # k=0: not difficult
    assert len(no_difficult.load("000007").boxes) == 1
    no_truncated = cls.from_card(served, data_root=root, drop_truncated=True)
    np.testing.assert_allclose(no_truncated.load("000005").boxes, [[0, 0, 16, 12]])
    train = cls.from_card(served, data_root=root, image_set="train")
    assert train.ids() == ["000005"]


def test_coco20k_records_selection_checksum(server: Server, tmp_path: Path) -> None:
    card = dataset_card("coco20k")
    assert card is not None
    mini = MINIATURES["coco20k"]()
    served = serve_card(card, mini, server)
    root = tmp_path / "root"
    DATASETS.get("coco20k").from_card(served, data_root=root, progressbar=False, download=True)
    sel = json.loads(
        (root / "COCO" / "annotations" / "instances_train2014_sel20k.json").read_text()
    )
    digest = hashlib.sha256(mini.files["coco_20k_filenames.txt"]).hexdigest()
    assert sel["info"]["odbench"]["selection_sha256"] == digest
    source = root / "COCO" / "annotations" / "instances_train2014.json"
    assert (
        sel["info"]["odbench"]["source_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    )
    assert len(sel["images"]) == 3 and sum(a["iscrowd"] for a in sel["annotations"]) == 3
    data = DATASETS.get("coco20k").from_card(served, data_root=root)
    sample = data.load(data.ids()[0])
    assert sample.boxes is not None and len(sample.boxes) == 1  # crowd left out (CorLoc)
    assert sample.instances is not None and sample.instances.iscrowd.tolist() == [False, True]
    assert sample.instances.masks is not None and len(sample.instances.masks) == 2
    # a file built by an older odbench (crowd removed, no format) is rebuilt, not used
    path = root / "COCO" / "annotations" / "instances_train2014_sel20k.json"
    old = {**sel, "annotations": [a for a in sel["annotations"] if not a["iscrowd"]]}
    old["info"]["odbench"].pop("format")
    path.write_text(json.dumps(old))
    again = DATASETS.get("coco20k").from_card(served, data_root=root)
    assert again.load(data.ids()[0]).instances.iscrowd.tolist() == [False, True]  # type: ignore[union-attr]


# ----------------------------------------------------------------------------- checksums


def test_trust_on_first_use_then_enforced(server: Server, tmp_path: Path) -> None:
    card = dataset_card("ecssd")
    assert card is not None
    mini = mini_ecssd()
    served = serve_card(card, mini, server, with_sha=False)
    root = tmp_path / "root"
    cls = DATASETS.get("ecssd")
    assert len(cls.from_card(served, data_root=root, progressbar=False, download=True)) == 3
    lock = read_lock(root)["files"]
    urls = [f["url"] for f in served.raw["download"]["files"]]
    assert sorted(lock) == sorted(urls)
    assert lock[urls[0]]["sha256"] == hashlib.sha256(mini.files["images.zip"]).hexdigest()
    # the server now hands out a different images.zip: a fresh download must refuse it
    for p in (root / "ECSSD", root / ".downloads"):
        __import__("shutil").rmtree(p)
    server.put(card.raw["download"]["files"][0]["url"], make_zip({"images/0001.jpg": jpg()}))
    with pytest.raises(DatasetError, match="checksum mismatch.*odbench-lock.json"):
        cls.from_card(served, data_root=root, progressbar=False, download=True)
    assert not (root / "ECSSD").exists()
    assert not (root / ".downloads" / "images.zip").exists()


def test_wrong_checksum_in_card(server: Server, tmp_path: Path) -> None:
    card = dataset_card("duts_te")
    assert card is not None
    served = serve_card(card, mini_duts("TE"), server)
    served.raw["download"]["files"][0]["sha256"] = "0" * 64
    root = tmp_path / "root"
    with pytest.raises(DatasetError, match="checksum mismatch.*from the card"):
        DATASETS.get("duts_te").from_card(served, data_root=root, progressbar=False, download=True)
    assert not root.exists()  # nothing kept, so the folders this download made are gone


def test_truncated_archive_clear_error_nothing_left(server: Server, tmp_path: Path) -> None:
    card = dataset_card("duts_te")
    assert card is not None
    mini = mini_duts("TE")
    mini.files["DUTS-TE.zip"] = mini.files["DUTS-TE.zip"][:-60]  # cut inside the central directory
    served = serve_card(card, mini, server, with_sha=False)
    root = tmp_path / "root"
    with pytest.raises(DatasetError, match="truncated or corrupt archive.*deleted"):
        DATASETS.get("duts_te").from_card(served, data_root=root, progressbar=False, download=True)
    assert sorted(p.name for p in root.iterdir()) == [".downloads"]
    assert not list((root / ".downloads").iterdir())


def test_truncated_tarball(tmp_path: Path) -> None:
    data = make_tar({"CUB_200_2011/images.txt": b"x" * 5000, "CUB_200_2011/b.txt": RNG.bytes(5000)})
    archive = tmp_path / "CUB_200_2011.tgz"
    archive.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        safe_extract(archive, tmp_path / "out")


def test_interrupted_download_resumes_with_range(server: Server, tmp_path: Path) -> None:
    card = dataset_card("duts_te")
    assert card is not None
    mini = mini_duts("TE")
    served = serve_card(card, mini, server)
    root = tmp_path / "root"
    part = root / ".downloads" / "DUTS-TE.zip.part"
    part.parent.mkdir(parents=True)
    half = len(mini.files["DUTS-TE.zip"]) // 2
    part.write_bytes(mini.files["DUTS-TE.zip"][:half])
    ds = DATASETS.get("duts_te").from_card(served, data_root=root, progressbar=False, download=True)
    assert len(ds) == 2
    assert ("/duts/download/DUTS-TE.zip", f"bytes={half}-") in server.log
    assert not part.exists()


# ----------------------------------------------------------------------------- malicious archives


@pytest.mark.parametrize(
    ("files", "links", "message"),
    [
        ({"../evil.txt": b"x"}, None, r"escapes the target folder"),
        ({"/tmp/odbench-evil.txt": b"x"}, None, r"absolute path"),
        ({"a/ok.txt": b"x"}, {"a/link": "../../outside"}, r"points outside"),
        ({"a/ok.txt": b"x"}, {"a/abs": "/etc/passwd"}, r"points outside"),
    ],
)
def test_malicious_tar_refused(
    tmp_path: Path, files: dict, links: dict | None, message: str
) -> None:
    archive = tmp_path / "bad.tar"
    archive.write_bytes(make_tar(files, mode="w", links=links))
    out = tmp_path / "out"
    with pytest.raises(DatasetError, match=message):
        safe_extract(archive, out)
    assert not out.exists()  # nothing written, and no empty target folder (issue 16 item 13)
    assert not (tmp_path / "evil.txt").exists()
    (tmp_path / "kept").mkdir()
    with pytest.raises(DatasetError, match=message):
        safe_extract(archive, tmp_path / "kept" / "a" / "b")
    assert list((tmp_path / "kept").iterdir()) == []  # an existing folder stays, emptied


def test_internal_tar_link_allowed(tmp_path: Path) -> None:
    archive = tmp_path / "ok.tar"
    archive.write_bytes(make_tar({"a/real.txt": b"x"}, mode="w", links={"a/alias.txt": "real.txt"}))
    safe_extract(archive, tmp_path / "out")
    assert (tmp_path / "out" / "a" / "alias.txt").read_bytes() == b"x"


def test_malicious_zip_refused(tmp_path: Path) -> None:
    archive = tmp_path / "bad.zip"
    archive.write_bytes(make_zip({"images/0001.jpg": b"x", "../../evil.txt": b"x"}))
    with pytest.raises(DatasetError, match="escapes the target folder"):
        safe_extract(archive, tmp_path / "out")
    link = zipfile.ZipInfo("images/link")
    link.external_attr = 0o120777 << 16
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(link, "../../etc/passwd")
    archive.write_bytes(buf.getvalue())
    with pytest.raises(DatasetError, match="symbolic link"):
        safe_extract(archive, tmp_path / "out2")


def test_malicious_archive_through_download_leaves_nothing(server: Server, tmp_path: Path) -> None:
    card = dataset_card("voc07")
    assert card is not None
    mini = MINIATURES["voc07"]()
    mini.files["VOCtrainval_06-Nov-2007.tar"] = make_tar(
        {"VOCdevkit/VOC2007/Annotations/000005.xml": b"<annotation/>"},
        mode="w",
        links={"VOCdevkit/VOC2007/JPEGImages": "../../../../outside"},
    )
    served = serve_card(card, mini, server)
    root = tmp_path / "root"
    with pytest.raises(DatasetError, match="points outside"):
        DATASETS.get("voc07").from_card(served, data_root=root, progressbar=False, download=True)
    assert sorted(p.name for p in root.iterdir()) == [".downloads"]


def test_wrong_layout_in_archive(server: Server, tmp_path: Path) -> None:
    card = dataset_card("ecssd")
    assert card is not None
    mini = mini_ecssd()
    mini.files["images.zip"] = make_zip({"imgs/0001.jpg": jpg()})
    served = serve_card(card, mini, server)
    root = tmp_path / "root"
    with pytest.raises(
        DatasetError,
        match=r"expected images/ \+ ground_truth_mask/.*found: ground_truth_mask/, imgs/",
    ):
        DATASETS.get("ecssd").from_card(served, data_root=root, progressbar=False, download=True)
    assert not (root / "ECSSD").exists()


def test_cli_download_and_verify(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    import odbench.cards
    from odbench.cli import main

    card = dataset_card("ecssd")
    assert card is not None
    served = serve_card(card, mini_ecssd(), server)
    real = odbench.cards.dataset_card
    monkeypatch.setattr(
        odbench.cards, "dataset_card", lambda n: served if n == "ecssd" else real(n)
    )
    root = tmp_path / "root"
    runner = CliRunner()
    res = runner.invoke(main, ["data", "download", "ecssd", "--data-root", str(root), "--quiet"])
    assert res.exit_code == 0, res.output
    assert f"ecssd: 3 samples at {root / 'ECSSD'}" in res.output
    res = runner.invoke(main, ["data", "verify", "ecssd", "--data-root", str(root)])
    assert res.exit_code == 0 and res.output.strip().endswith("OK")
    (root / "ECSSD" / "ground_truth_mask" / "0002.png").write_bytes(b"garbage")
    res = runner.invoke(main, ["data", "verify", "ecssd", "--data-root", str(root)])
    assert res.exit_code == 1
    assert "0002.png: unreadable or corrupt image" in res.output and "1 problem(s)" in res.output


# ----------------------------------------------------------------------------- no unasked writes


def test_eval_never_downloads_and_creates_nothing(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16 item 8: a wrong --data-root is one line naming the layouts looked for and the
    download command; no request is made and no folder (.downloads/ or the root) is created."""
    from click.testing import CliRunner

    import odbench.cards
    from odbench.cli import main

    card = dataset_card("ecssd")
    assert card is not None
    served = serve_card(card, mini_ecssd(), server)
    real = odbench.cards.dataset_card
    monkeypatch.setattr(
        odbench.cards, "dataset_card", lambda n: served if n == "ecssd" else real(n)
    )
    existing = tmp_path / "shared"
    existing.mkdir()
    for root in (existing, tmp_path / "absent"):
        res = CliRunner().invoke(
            main,
            [
                "eval",
                "--method",
                "center-prior",
                "--dataset",
                "ecssd",
                "--data-root",
                str(root),
                "--results-dir",
                str(tmp_path / "res"),
                "--cache-dir",
                str(tmp_path / "cache"),
            ],
        )
        assert res.exit_code != 0, res.output
        lines = res.output.strip().splitlines()
        assert len(lines) == 1, res.output
        assert "ECSSD/" in lines[0] and "images/ + ground_truth_mask/" in lines[0]
        assert "odbench data download ecssd" in lines[0]
    assert not server.log  # nothing was requested
    assert list(existing.iterdir()) == [] and not (tmp_path / "absent").exists()


def test_failed_download_leaves_nothing(tmp_path: Path) -> None:
    """Issue 16 item 8: a download that fails before its first byte removes the folders it made."""
    card = dataset_card("ecssd")
    assert card is not None
    raw = json.loads(json.dumps(card.raw))
    for entry in raw["download"]["files"]:
        entry["url"] = "http://127.0.0.1:9/" + Path(urlparse(entry["url"]).path).name
    dead = dataclasses.replace(card, raw=raw)
    root = tmp_path / "new" / "root"
    with pytest.raises(DatasetError, match="download failed"):
        DATASETS.get("ecssd").from_card(dead, data_root=root, progressbar=False, download=True)
    assert not root.exists()
    (tmp_path / "kept").mkdir()
    with pytest.raises(DatasetError, match="download failed"):
        DATASETS.get("ecssd").from_card(
            dead, data_root=tmp_path / "kept", progressbar=False, download=True
        )
    assert list((tmp_path / "kept").iterdir()) == []
