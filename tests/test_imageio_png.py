"""``read_gray``'s fast path for 8-bit grayscale PNGs (libdeflate inflate, Pillow's unfiltering)
gives Pillow's pixels for every encoder setting, leaves every other file to Pillow, and a
damaged file is still Pillow's one-line error."""

from __future__ import annotations

import io
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from odbench.imageio import ImageReadError, _gray8_png, read_gray


def pillow_png(arr: np.ndarray, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", **kwargs)
    return buf.getvalue()


def maps(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = [np.zeros((1, 1), np.uint8), np.full((3, 200), 255, np.uint8)]
    for _ in range(6):
        h, w = (int(v) for v in rng.integers(2, 90, 2))
        noise = rng.integers(0, 256, (h, w), dtype=np.uint8)
        out += [noise, cv2.GaussianBlur(noise, (0, 0), 4)]  # busy and smooth: every filter
    return out


def test_fast_path_equals_pillow_for_every_encoder_setting():
    n = 0
    for arr in maps():
        encoded = [pillow_png(arr, compress_level=c) for c in (0, 1, 6, 9)]
        encoded.append(pillow_png(arr, optimize=True))
        for strategy in range(5):  # zlib strategies; OpenCV picks row filters adaptively
            for level in (1, 9):
                params = [cv2.IMWRITE_PNG_COMPRESSION, level, cv2.IMWRITE_PNG_STRATEGY, strategy]
                encoded.append(cv2.imencode(".png", arr, params)[1].tobytes())
        for data in encoded:
            fast = _gray8_png(data)
            assert fast is not None
            reference = np.asarray(Image.open(io.BytesIO(data)))
            assert fast.dtype == np.uint8 and np.array_equal(fast, reference)
            n += 1
    assert n == len(maps()) * 15


def interlaced_png() -> bytes:
    """A 1x1 8-bit grayscale PNG marked interlaced (Adam7 leaves one pixel as it is; Pillow
    writes no interlaced files): the IHDR flag flipped and its CRC redone."""
    data = bytearray(pillow_png(np.array([[7]], np.uint8)))
    data[28] = 1
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    return bytes(data)


def test_other_pngs_are_left_to_pillow(tmp_path: Path):
    arr = maps()[2]
    palette = io.BytesIO()
    Image.fromarray(arr).convert("P").save(palette, format="PNG")
    others = {
        "16-bit": pillow_png(arr.astype(np.uint16) * 257),
        "RGB": pillow_png(np.dstack([arr] * 3)),
        "palette": palette.getvalue(),
        "interlaced": interlaced_png(),
    }
    for name, data in others.items():
        assert _gray8_png(data) is None, name
        path = tmp_path / f"{name}.png"
        path.write_bytes(data)
        with Image.open(path) as img:
            reference = np.asarray(img.convert("L") if img.mode in ("RGB", "P") else img)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "converted to grayscale"
            np.testing.assert_array_equal(read_gray(path), reference)


def test_damaged_files_are_pillows_errors(tmp_path: Path):
    data = cv2.imencode(".png", maps()[4])[1].tobytes()
    idat = data.index(b"IDAT")
    flipped = bytearray(data)
    flipped[idat + 20] ^= 0xFF  # inside the deflate stream
    for name, bad in {"truncated": data[: idat + 30], "flipped": bytes(flipped)}.items():
        assert _gray8_png(bad) is None, name
        path = tmp_path / f"{name}.png"
        path.write_bytes(bad)
        with pytest.raises(ImageReadError, match=f"{name}.png: unreadable or corrupt image"):
            read_gray(path)
    with pytest.raises(ImageReadError, match="nope.png: file not found"):
        read_gray(tmp_path / "nope.png")


def test_png_size_from_the_header_and_a_bad_header_is_pillows_error(tmp_path: Path):
    from odbench.imageio import image_size

    for k, arr in enumerate(maps()[:6]):
        path = tmp_path / f"{k}.png"
        path.write_bytes(pillow_png(arr))
        assert image_size(path) == arr.shape
    data = bytearray(pillow_png(maps()[2]))
    data[17] ^= 1  # the width, under the IHDR checksum
    bad = tmp_path / "bad.png"
    bad.write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match="bad.png: unreadable or corrupt image"):
        image_size(bad)


def test_stored_zlib_streams_inflate_to_their_data():
    from odbench.imageio import _stored_zlib

    rng = np.random.default_rng(43)
    for n in (0, 1, 65534, 65535, 65536, 3 * 65535 + 7):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert zlib.decompress(_stored_zlib(data, zlib.adler32)) == data, n


def test_damage_after_a_valid_header_is_one_line_naming_the_file_for_any_workers(tmp_path: Path):
    """The header passes score's size pre-scan; the error comes from the worker's decode and
    names the file, not Pillow's in-memory buffer (``<_io.BytesIO object at 0x...>``, whose
    address also differed between --workers 1 and 2)."""
    from click.testing import CliRunner

    from odbench.cli import main

    for folder in ("gt", "pred"):
        (tmp_path / folder).mkdir()
    arr = maps()[4]
    for i in range(4):
        cv2.imwrite(str(tmp_path / "gt" / f"{i}.png"), (arr > 128).astype(np.uint8) * 255)
        cv2.imwrite(str(tmp_path / "pred" / f"{i}.png"), arr)
    bad = bytearray((tmp_path / "pred" / "2.png").read_bytes())
    bad[37:41] = b"\xff\xff\xff\xff"  # the first chunk's type, after a valid IHDR
    (tmp_path / "pred" / "2.png").write_bytes(bytes(bad))
    outputs = []
    for workers in ("1", "2"):
        args = ["score", "--pred-dir", str(tmp_path / "pred"), "--gt-dir", str(tmp_path / "gt")]
        out = CliRunner().invoke(main, [*args, "--workers", workers])
        lines = [line for line in out.output.splitlines() if line.strip()]
        assert out.exit_code == 2 and len(lines) == 1, out.output
        assert "2.png: unreadable or corrupt image" in lines[0]
        assert "BytesIO" not in lines[0] and " at 0x" not in lines[0], lines[0]
        outputs.append(lines[0])
    assert outputs[0] == outputs[1]


def test_an_unknown_critical_chunk_is_refused_and_an_unknown_ancillary_one_ignored(
    tmp_path: Path,
):
    """PNG spec: a decoder meeting a critical chunk (upper-case first letter) it does not know
    must not show the image as if it understood it; Pillow skips any unknown chunk."""
    arr = maps()[3]

    def with_chunk(data: bytes, kind: bytes) -> bytes:
        body = b"odbench"
        chunk = len(body).to_bytes(4, "big") + kind + body
        chunk += zlib.crc32(kind + body).to_bytes(4, "big")
        return data[:33] + chunk + data[33:]  # right after IHDR

    gray8, rgb = pillow_png(arr), pillow_png(np.dstack([arr] * 3))  # rgb: Pillow's anyway
    for name, data in (("gray8", with_chunk(gray8, b"ABCD")), ("rgb", with_chunk(rgb, b"XyZw"))):
        path = tmp_path / f"{name}.png"
        path.write_bytes(data)
        with pytest.raises(ImageReadError, match=f"{name}.png: PNG with an unknown critical"):
            read_gray(path)
    path = tmp_path / "ancillary.png"
    path.write_bytes(with_chunk(gray8, b"abCd"))
    np.testing.assert_array_equal(read_gray(path), arr)
    damaged = bytearray(gray8)  # the IDAT type's last letter hit: damage, not a new chunk
    damaged[40] ^= 0xFF
    path = tmp_path / "damaged.png"
    path.write_bytes(bytes(damaged))
    with pytest.raises(ImageReadError, match="damaged.png: unreadable or corrupt image"):
        read_gray(path)
