"""``read_rgb``: every colour mode it accepts gives Pillow's RGB conversion, (H, W, 3) uint8; JPEGs
are decoded by OpenCV (:mod:`odbench.jpeg`) only where that gives Pillow's pixels, Pillow's
error lines and nothing more on stderr (C level, fd 2: ``capfd``)."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from realdata import REAL_DATA

from odbench import jpeg
from odbench.imageio import ImageReadError, read_rgb


@pytest.mark.parametrize(
    ("mode", "suffix"),
    [
        ("RGB", ".jpg"),
        ("RGB", ".png"),
        ("L", ".jpg"),
        ("L", ".png"),
        ("P", ".png"),
        ("CMYK", ".jpg"),
        ("1", ".png"),
    ],
)
def test_read_rgb_is_pillows_rgb_conversion(tmp_path: Path, mode: str, suffix: str) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    img = Image.fromarray(pixels, "RGB")
    img = img.convert(mode) if mode != "P" else img.quantize(17)
    path = tmp_path / f"x{suffix}"
    img.save(path)
    out = read_rgb(path)
    with Image.open(path) as stored:
        expected = np.asarray(stored.convert("RGB"))
    assert out.dtype == np.uint8 and out.shape == (37, 53, 3)
    assert np.array_equal(out, expected)


# --- JPEGs decoded by OpenCV (odbench.jpeg) only where that is Pillow's result -----------------


def _picture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A colour gradient with noise: smooth parts, edges, values near 0 and 255."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack(
        [x * 255 / max(width - 1, 1), y * 255 / max(height - 1, 1), (x + y) % 64 * 4.0], axis=-1
    )
    return np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)


PICTURE = _picture(37, 53)


def _pillow_jpeg(path: Path, pixels: np.ndarray, **options: object) -> Path:
    Image.fromarray(pixels).save(path, "JPEG", **options)
    return path


def _jpeg_bytes(pixels: np.ndarray, **options: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", **options)
    return buf.getvalue()


def _opencv_jpeg(path: Path, pixels: np.ndarray, *params: int) -> Path:
    ok, buf = cv2.imencode(".jpg", pixels, list(params))
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def _pillows(path: Path) -> np.ndarray:
    """What ``read_rgb`` gave before OpenCV: Pillow's RGB conversion."""
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


Outcome = tuple[str, "np.ndarray | str"]


def _outcome(path: Path) -> Outcome:
    try:
        return ("pixels", read_rgb(path))
    except ImageReadError as e:
        return ("error", str(e))


def _todays(path: Path, monkeypatch: pytest.MonkeyPatch) -> Outcome:
    """``read_rgb``'s outcome by the Pillow route alone (the route of every file before)."""
    with monkeypatch.context() as m:
        m.setattr(jpeg, "file_bytes", lambda path: None)
        return _outcome(path)


def _assert_same(new: Outcome, old: Outcome) -> None:
    assert new[0] == old[0], (new, old)
    if isinstance(new[1], np.ndarray):
        assert isinstance(old[1], np.ndarray) and np.array_equal(new[1], old[1])
        assert not new[1].flags.writeable  # read-only, as Pillow's array
    else:
        assert new[1] == old[1]


@pytest.fixture
def opencv_used(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """One entry per JPEG that Pillow opened in ``read_rgb``: whether OpenCV's pixels were used."""
    used: list[bool] = []
    real = jpeg.pixels

    def spy(data: bytes, img: Image.Image) -> np.ndarray | None:
        arr = real(data, img)
        used.append(arr is not None)
        return arr

    monkeypatch.setattr(jpeg, "pixels", spy)
    return used


REAL_JPEG_FOLDERS = [
    "ECSSD/images",
    "DUTS-TR-1k/DUTS-TR-Image",
    "tiny_coco/train2017",
    "tiny_coco/val2017",
]


@pytest.mark.slow
@pytest.mark.parametrize("folder", REAL_JPEG_FOLDERS)
def test_real_jpegs_are_pillows_pixels_by_opencv(folder: str, opencv_used: list[bool]) -> None:
    paths = sorted((REAL_DATA / folder).glob("*.jpg"))
    if not paths:
        pytest.skip(f"no JPEGs in {REAL_DATA / folder} (see shared/data/README.md)")
    for path in paths:
        out = read_rgb(path)
        assert np.array_equal(out, _pillows(path)), path
        assert not out.flags.writeable
    assert opencv_used == [True] * len(paths)  # all plain baseline JPEGs: OpenCV decoded them


def _with_exif_orientation(path: Path, pixels: np.ndarray) -> Path:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    return _pillow_jpeg(path, pixels, exif=exif)


SAMPLING = {"444": 0, "422": 1, "420": 2}
GENERATED = {
    **{
        f"q{q}-{name}": lambda p, q=q, s=s: _pillow_jpeg(p, PICTURE, quality=q, subsampling=s)
        for q in (10, 30, 50, 75, 90, 95, 100)
        for name, s in SAMPLING.items()
    },
    "progressive": lambda p: _pillow_jpeg(p, PICTURE, progressive=True),
    "progressive-444-q100": lambda p: _pillow_jpeg(
        p, PICTURE, progressive=True, subsampling=0, quality=100
    ),
    "optimize": lambda p: _pillow_jpeg(p, PICTURE, optimize=True),
    "progressive-optimize": lambda p: _pillow_jpeg(p, PICTURE, progressive=True, optimize=True),
    "restart-blocks": lambda p: _pillow_jpeg(p, PICTURE, restart_marker_blocks=3),
    "restart-rows-progressive": lambda p: _pillow_jpeg(
        p, PICTURE, restart_marker_rows=1, progressive=True
    ),
    "restart-opencv": lambda p: _opencv_jpeg(p, PICTURE, cv2.IMWRITE_JPEG_RST_INTERVAL, 2),
    **{
        f"opencv-{f}": lambda p, f=f: _opencv_jpeg(
            p,
            PICTURE,
            cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
            getattr(cv2, f"IMWRITE_JPEG_SAMPLING_FACTOR_{f}"),
        )
        for f in ("411", "420", "422", "440", "444")
    },
    "opencv-progressive": lambda p: _opencv_jpeg(p, PICTURE, cv2.IMWRITE_JPEG_PROGRESSIVE, 1),
    "gray": lambda p: _pillow_jpeg(p, PICTURE[..., 0], quality=90),
    "gray-progressive": lambda p: _pillow_jpeg(p, PICTURE[..., 1], progressive=True),
    "gray-opencv": lambda p: _opencv_jpeg(p, PICTURE[..., 2]),
    "rgb-coded": lambda p: _pillow_jpeg(p, PICTURE, keep_rgb=True),  # Adobe transform 0
    "exif-orientation": lambda p: _with_exif_orientation(p, PICTURE),
    **{
        f"size-{h}x{w}{'-progressive' if prog else ''}": lambda p, h=h, w=w, prog=prog: (
            _pillow_jpeg(p, _picture(h, w, seed=h * w), progressive=prog)
        )
        for h, w in ((1, 1), (1, 41), (41, 1), (8, 8), (16, 16), (17, 9), (9, 17), (33, 64))
        for prog in (False, True)
    },
    "size-1x1-gray": lambda p: _pillow_jpeg(p, _picture(1, 1)[..., 0]),
    "size-1x23-444": lambda p: _pillow_jpeg(p, _picture(1, 23), subsampling=0),
}


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_generated_jpeg_is_pillows_pixels_by_opencv(
    tmp_path: Path, name: str, opencv_used: list[bool]
) -> None:
    path = GENERATED[name](tmp_path / f"{name}.jpg")
    if name == "rgb-coded":
        adobe = _segment(path.read_bytes(), b"\xff\xee")
        assert adobe[4:9] == b"Adobe" and adobe[15] == 0  # colour transform 0: RGB as stored
    out = read_rgb(path)
    width, height = Image.open(path).size
    assert out.dtype == np.uint8 and out.shape == (height, width, 3)
    assert np.array_equal(out, _pillows(path)) and not out.flags.writeable
    assert opencv_used == [True]


@pytest.mark.parametrize("size", [(48, 48), (30, 50)])
def test_exif_orientation_is_ignored_as_pillow_does(
    tmp_path: Path, size: tuple[int, int], opencv_used: list[bool]
) -> None:
    """Pillow's ``open`` does not rotate; OpenCV would, unless told not to (a square image:
    other pixels; an oblong one: another shape, which sends it to Pillow)."""
    path = _with_exif_orientation(tmp_path / "x.jpg", _picture(*size))
    with Image.open(path) as img:
        assert img.getexif()[0x0112] == 6
    assert np.array_equal(read_rgb(path), _pillows(path))
    assert opencv_used == [True]


def _patched(data: bytes, marker: bytes, offset: int, value: bytes) -> bytes:
    """``data`` with ``value`` written ``offset`` bytes after the first ``marker``."""
    at = data.index(marker) + offset
    return data[:at] + value + data[at + len(value) :]


def _segment(data: bytes, marker: bytes) -> bytes:
    at = data.index(marker)
    return data[at : at + 2 + int.from_bytes(data[at + 2 : at + 4], "big")]


def _insert_after_soi(data: bytes, extra: bytes) -> bytes:
    return data[:2] + extra + data[2:]


BASELINE = _jpeg_bytes(PICTURE, quality=90)
#: Headers OpenCV must leave to Pillow (arithmetic coding, lossless, 12-bit, CMYK, unusual
#: sampling, two frames, a marker outside the clean set, an empty frame, junk between segments).
NOT_FOR_OPENCV = {
    "arithmetic-sof9": _patched(BASELINE, b"\xff\xc0", 1, b"\xc9"),
    "lossless-sof3": _patched(BASELINE, b"\xff\xc0", 1, b"\xc3"),
    "12-bit": _patched(BASELINE, b"\xff\xc0", 4, b"\x0c"),
    "chroma-2x2": _patched(BASELINE, b"\xff\xc0", 14, b"\x22"),  # Y, Cb 2x2; Cr 1x1
    "two-frames": _insert_after_soi(BASELINE, _segment(BASELINE, b"\xff\xc0")),
    "jpg0-marker": _insert_after_soi(BASELINE, b"\xff\xf0\x00\x04\x00\x00"),
    "zero-height": _patched(BASELINE, b"\xff\xc0", 5, b"\x00\x00"),
    "junk-in-header": _insert_after_soi(BASELINE, b"\x00\xfe\x00\x02"),  # a COM, but for its FF
}


@pytest.mark.parametrize("name", sorted(NOT_FOR_OPENCV))
def test_unusual_jpeg_header_is_left_to_pillow(
    tmp_path: Path,
    name: str,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    opencv_used: list[bool],
) -> None:
    data = NOT_FOR_OPENCV[name]
    assert jpeg.frame_size(data) is None
    assert jpeg.frame_size(BASELINE) == (37, 53)  # the file it was made from passes
    path = tmp_path / "x.jpg"
    path.write_bytes(data)
    _assert_same(_outcome(path), _todays(path, monkeypatch))
    assert True not in opencv_used
    assert capfd.readouterr().err == ""


def test_cmyk_jpeg_is_left_to_pillow(tmp_path: Path, opencv_used: list[bool]) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(PICTURE).convert("CMYK").save(path, "JPEG")
    assert jpeg.frame_size(path.read_bytes()) is None
    assert np.array_equal(read_rgb(path), _pillows(path))
    assert opencv_used == [False]


def test_mpo_is_left_to_pillow(tmp_path: Path, opencv_used: list[bool]) -> None:
    path = tmp_path / "x.mpo.jpg"
    first, second = Image.fromarray(PICTURE), Image.fromarray(PICTURE[::-1])
    first.save(path, "MPO", save_all=True, append_images=[second])
    with Image.open(path) as img:
        assert img.format == "MPO"
    assert np.array_equal(read_rgb(path), _pillows(path))
    assert opencv_used == [False]


@pytest.mark.parametrize("keep", [0.4, 0.8, -2, -1])
def test_truncated_jpeg_gives_todays_error_line(
    tmp_path: Path,
    keep: float,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    opencv_used: list[bool],
) -> None:
    """OpenCV would give a grey-filled image (or None) for a truncated file: the missing EOI
    sends it to Pillow, which says "image file is truncated"."""
    data = _jpeg_bytes(_picture(64, 80), progressive=keep == 0.8)
    cut = data[: int(len(data) * keep) if keep > 0 else int(keep)]
    assert jpeg.frame_size(cut) is None
    path = tmp_path / "cut.jpg"
    path.write_bytes(cut)
    new = _outcome(path)
    assert new[0] == "error" and "image file is truncated" in new[1]
    _assert_same(new, _todays(path, monkeypatch))
    assert opencv_used == [False] and capfd.readouterr().err == ""


def test_huge_frame_gives_todays_decompression_bomb_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "huge.jpg"
    path.write_bytes(_patched(BASELINE, b"\xff\xc0", 5, b"\xff\xff\xff\xff"))  # 65535 x 65535
    new = _outcome(path)
    assert new[0] == "error" and "image too large to decode safely" in new[1]
    _assert_same(new, _todays(path, monkeypatch))


def test_jpeg_beyond_max_image_pixels_is_left_to_pillow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, opencv_used: list[bool]
) -> None:
    """Pillow warns beyond ``MAX_IMAGE_PIXELS`` (and refuses beyond twice it): such a file, or
    any when the limit is off, takes the Pillow route."""
    path = _pillow_jpeg(tmp_path / "x.jpg", PICTURE)
    expected = _pillows(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 37 * 53 - 1)
    with pytest.warns(Image.DecompressionBombWarning):
        assert np.array_equal(read_rgb(path), expected)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    assert np.array_equal(read_rgb(path), expected)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 37 * 53)
    assert np.array_equal(read_rgb(path), expected)
    assert opencv_used == [False, False, True]


def _scan_start(data: bytes) -> int:
    sos = data.index(b"\xff\xda")
    return sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")


def _flip_scan(data: bytes) -> bytes:
    out = bytearray(data)
    start = _scan_start(data) + 200
    for i in range(start, start + 20):
        out[i] ^= 0x5A
    return bytes(out)


def _shorten_scan(data: bytes) -> bytes:
    start = _scan_start(data)
    return data[: start + 500] + data[-2:]


def _junk_before_eoi(data: bytes) -> bytes:
    return data[:-2] + bytes(range(1, 41)) + data[-2:]


def _restart_out_of_order(data: bytes) -> bytes:
    at = data.index(b"\xff\xd1", _scan_start(data))
    return data[: at + 1] + b"\xd5" + data[at + 2 :]


#: Damage inside a complete file: libjpeg conceals it and warns; Pillow silences the warning.
DAMAGED = {
    "scan-bytes-flipped": lambda: _flip_scan(_jpeg_bytes(_picture(120, 160))),
    "scan-shortened": lambda: _shorten_scan(_jpeg_bytes(_picture(120, 160))),
    "junk-before-eoi": lambda: _junk_before_eoi(BASELINE),
    "restart-out-of-order": lambda: _restart_out_of_order(
        _jpeg_bytes(_picture(64, 80), restart_marker_blocks=2)
    ),
}


@pytest.mark.parametrize("name", sorted(DAMAGED))
def test_damaged_scan_gives_todays_pixels_and_prints_nothing(
    tmp_path: Path,
    name: str,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    opencv_used: list[bool],
) -> None:
    data = DAMAGED[name]()
    path = tmp_path / "damaged.jpg"
    path.write_bytes(data)
    assert jpeg.frame_size(data) is not None  # the header is clean: only the decode can tell
    flags = cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION
    assert cv2.imdecode(np.frombuffer(data, np.uint8), flags) is not None
    assert "Corrupt JPEG data" in capfd.readouterr().err  # what OpenCV alone prints
    new = _outcome(path)
    assert capfd.readouterr().err == ""
    assert new[0] == "pixels"  # Pillow conceals the damage, silently, as libjpeg does
    _assert_same(new, _todays(path, monkeypatch))
    assert opencv_used == [False]  # libjpeg warned: Pillow decoded it
    assert capfd.readouterr().err == ""


def test_random_damage_gives_todays_outcome_and_prints_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """Seeded random damage (bytes flipped anywhere or in the scan, part of the scan cut out,
    junk inserted, the file cut with or without EOI): pixels or error line as before, and
    nothing on the C stderr."""
    rng = np.random.default_rng(7)
    bases = [
        BASELINE,
        _jpeg_bytes(_picture(61, 83), progressive=True),
        _jpeg_bytes(_picture(61, 83)[..., 0], restart_marker_blocks=3),
    ]
    path = tmp_path / "fuzz.jpg"
    for i in range(240):
        data = bytearray(bases[i % len(bases)])
        kind, scan = i // len(bases) % 5, _scan_start(data)
        if kind < 2:
            for _ in range(int(rng.integers(1, 4))):
                at = int(rng.integers(2 if kind == 0 else scan, len(data) - 2))
                data[at] ^= int(rng.integers(1, 256))
        elif kind == 2:
            at = int(rng.integers(scan, len(data) - 2))
            del data[at : at + int(rng.integers(1, 50))]
        elif kind == 3:
            at = int(rng.integers(2, len(data) - 2))
            data[at:at] = rng.integers(0, 256, int(rng.integers(1, 8))).astype(np.uint8).tobytes()
        else:
            data = data[: int(rng.integers(2, len(data) - 2))] + b"\xff\xd9" * (i % 2)
        path.write_bytes(bytes(data))
        _assert_same(_outcome(path), _todays(path, monkeypatch))
        assert capfd.readouterr().err == "", i


def test_opencv_result_of_another_shape_or_type_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _jpeg_bytes(PICTURE)
    decoder = jpeg._decoder()
    assert decoder is not None
    img = Image.open(io.BytesIO(data))
    for wrong in (np.zeros((53, 37, 3), np.uint8), np.zeros((37, 53, 3), np.uint16)):
        monkeypatch.setattr(decoder, "decode", lambda data, wrong=wrong: wrong)
        assert jpeg.pixels(data, img) is None


def test_self_check_turns_the_route_off_where_opencv_differs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decoder = jpeg._make()
    assert decoder is not None and decoder.agrees_with_pillow()
    real = decoder._imdecode
    monkeypatch.setattr(decoder, "_imdecode", lambda buf, flags: np.minimum(real(buf, flags), 254))
    assert not decoder.agrees_with_pillow()
    monkeypatch.setattr(jpeg._OpenCV, "agrees_with_pillow", lambda self: False)
    assert jpeg._make() is None


def test_threads_decoding_damaged_and_clean_jpegs_print_nothing(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    clean = _pillow_jpeg(tmp_path / "clean.jpg", _picture(120, 160))
    damaged = tmp_path / "damaged.jpg"
    damaged.write_bytes(_flip_scan(clean.read_bytes()))
    expected = {clean: _pillows(clean), damaged: _pillows(damaged)}
    wrong: list[Path] = []

    def work() -> None:
        for _ in range(25):
            for path in (clean, damaged):
                if not np.array_equal(read_rgb(path), expected[path]):
                    wrong.append(path)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not wrong and capfd.readouterr().err == ""
    decoder = jpeg._decoder()
    assert decoder is not None and decoder._open == 0 and decoder._stderr.value == decoder._real


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_child_forked_during_a_decode_gets_the_real_c_stderr_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoder = jpeg._decoder()
    assert decoder is not None
    real = decoder._imdecode
    read_end, write_end = os.pipe()

    def forking(buf: np.ndarray, flags: int) -> np.ndarray:
        assert decoder._stderr.value != decoder._real  # swapped while decoding
        pid = os.fork()
        if pid == 0:  # the child: no decode open, the real C stderr
            restored = decoder._open == 0 and decoder._stderr.value == decoder._real
            os.write(write_end, b"1" if restored else b"0")
            os._exit(0)
        os.waitpid(pid, 0)
        return real(buf, flags)

    monkeypatch.setattr(decoder, "_imdecode", forking)
    path = _pillow_jpeg(tmp_path / "x.jpg", PICTURE)
    assert np.array_equal(read_rgb(path), _pillows(path))
    assert os.read(read_end, 1) == b"1"
    os.close(read_end)
    os.close(write_end)
