"""Reading and writing images with one-line errors that name the file.

Pillow (no torch; OpenCV only once :func:`read_rgb` meets a JPEG, see :mod:`odbench.jpeg`), so
``odbench score`` starts fast; 8-bit grayscale PNGs, what prediction folders and GT masks hold,
are inflated with libdeflate (:func:`_gray8_png`).
"""

from __future__ import annotations

import errno
import io
import os
import tempfile
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from odbench import jpeg
from odbench.errors import OdbenchError

UMASK = os.umask(0o022)
os.umask(UMASK)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class ImageReadError(OdbenchError, ValueError):
    """An image that cannot be used; the message names the file and the problem."""


class BinaryMaskWarning(UserWarning):
    """A map stored with the values 0 and 1 only, read as a binary mask (1 -> 255 or 65535).

    Raised once per file by :func:`read_gray`; :func:`read_warnings` turns them into one line."""


class EightBitIn16Warning(UserWarning):
    """A 16-bit map whose values all lie in 0..255: 8-bit values saved in a 16-bit file (e.g. a
    uint8 array cast to uint16 before saving).  Read on its 16-bit scale it would be nearly
    black (a GT mask: empty), so it is read on the 8-bit scale (v -> 257 v, 255 = 1.0), with a
    warning.  Raised once per file by :func:`read_gray`; summarised by :func:`read_warnings`."""


class ConvertedToGrayWarning(UserWarning):
    """A colour (RGB, palette...) map converted to grayscale by :func:`read_gray`; its message
    names the file and the mode.  :func:`read_warnings` prints one such warning as it is and
    several as ONE line (methods often save every map as RGB)."""

    def __str__(self) -> str:
        return str(self.args[0])

    @property
    def path(self) -> str:
        return str(self.args[1]) if len(self.args) > 1 else str(self.args[0])


MAX_NAMED = 3  # files named in a summary line
#: Warnings about many files, each summarised in ONE line by :func:`read_warnings`.
SUMMARISED = {
    BinaryMaskWarning: "{n} mask file(s) store only the values 0 and 1 and were read as binary "
    "masks (1 = foreground)",
    EightBitIn16Warning: "{n} 16-bit file(s) hold only the values 0..255 (8-bit values in a "
    "16-bit file) and were read on the 8-bit scale (255 = 1.0); re-save them as 8-bit to "
    "silence this",
    ConvertedToGrayWarning: "{n} colour (RGB or palette) file(s) were converted to grayscale "
    "(luminance, ITU-R 601-2)",
}
REEXPORT = "re-export it (or copy it again) as PNG or JPEG"

DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


def _unreadable(path: Path, e: OSError) -> ImageReadError:
    """The line for a file the system will not read: what is wrong and the fix (not "corrupt,
    re-export it": the bytes were never seen)."""
    if isinstance(e, PermissionError):
        return ImageReadError(
            f"{path}: permission denied (this user may not read the file); make it readable "
            f"(chmod a+r '{path}') or score a copy that is"
        )
    if isinstance(e, IsADirectoryError):
        return ImageReadError(f"{path}: a folder, not an image file")
    return ImageReadError(f"{path}: cannot read the file ({e.strerror or e})")


def _open(path: Path, data: bytes | None = None, *, load: bool = True) -> Image.Image:
    """``path`` (or its bytes ``data``) opened by Pillow and, with ``load``, decoded; Pillow's
    errors as one line naming the file."""
    with _pillow_errors(path):
        img = Image.open(path if data is None else io.BytesIO(data))
        if load:
            img.load()
    return img


@contextmanager
def _pillow_errors(path: Path) -> Iterator[None]:
    """Pillow's errors while opening or decoding ``path`` as :class:`ImageReadError` lines."""
    try:
        yield
    except FileNotFoundError as e:
        raise ImageReadError(f"{path}: file not found") from e
    except (PermissionError, IsADirectoryError) as e:
        raise _unreadable(path, e) from e
    except Image.DecompressionBombError as e:
        raise ImageReadError(f"{path}: {_too_large(e)}") from e
    except UnidentifiedImageError as e:  # its text names the file object (BytesIO at 0x...)
        raise ImageReadError(
            f"{path}: unreadable or corrupt image (not an image format "
            f"Pillow identifies, or damaged); {REEXPORT}"
        ) from e
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"{path}: unreadable or corrupt image ({e}); {REEXPORT}") from e


def _too_large(e: Exception) -> str:
    return (
        f"image too large to decode safely ({e}); a map this size is probably not the right "
        "file (raise PIL.Image.MAX_IMAGE_PIXELS if it is)"
    )


def image_size(path: str | Path) -> tuple[int, int]:
    """``(H, W)`` of an image file from its header (the pixels are not decoded)."""
    path = _as_path(path)
    try:  # os.open / os.read: a third of open()'s time, which builds a buffered file object
        fd = os.open(path, os.O_RDONLY)
        try:
            head = os.read(fd, 33)
        finally:
            os.close(fd)
    except (PermissionError, IsADirectoryError) as e:
        raise _unreadable(path, e) from e
    except OSError:
        head = b""  # Pillow below says what is wrong
    if (
        head[:8] == _PNG_SIGNATURE
        and head[8:16] == b"\0\0\0\rIHDR"
        and zlib.crc32(head[12:29]) == int.from_bytes(head[29:33], "big")
    ):
        width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        if width > 0 and height > 0:
            return height, width
    try:
        with Image.open(path) as img:
            w, h = img.size
    except FileNotFoundError as e:
        raise ImageReadError(f"{path}: file not found") from e
    except (PermissionError, IsADirectoryError) as e:
        raise _unreadable(path, e) from e
    except Image.DecompressionBombError as e:
        raise ImageReadError(f"{path}: {_too_large(e)}") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"{path}: unreadable or corrupt image ({e}); {REEXPORT}") from e
    return h, w


def read_rgb(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB.  Grayscale and palette images are expanded; 16-bit is scaled to 8-bit;
    RGBA is refused (transparency has no meaning for a benchmark image).  Most JPEGs are
    decoded by OpenCV, where its pixels are provably Pillow's (:mod:`odbench.jpeg`)."""
    path = _as_path(path)
    data = jpeg.file_bytes(path)
    img = _open(path, data, load=False)
    if data is not None:
        arr = jpeg.pixels(data, img)
        if arr is not None:
            return arr
    with _pillow_errors(path):
        img.load()
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        raise ImageReadError(f"{path}: image has an alpha channel ({img.mode}); save it as RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img).astype(np.float64)
        arr = np.clip(np.round(arr / 65535.0 * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if img.mode == "RGB":  # convert() would copy it first: a quarter of the decode's time
        return np.asarray(img)
    return np.asarray(img.convert("RGB"))


def read_gray(path: str | Path, *, what: str = "mask") -> np.ndarray:
    """A grayscale map as stored: (H, W) uint8, or uint16 for 16-bit files.

    RGB and palette files are converted to luminance (ITU-R 601-2, Pillow's ``L``) with a
    warning naming the file; files with an alpha channel are refused.  A map whose values are
    only 0 and 1 is read as a binary mask (1 -> 255, or 65535 for 16-bit) with a
    :class:`BinaryMaskWarning`.
    """
    path = _as_path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise ImageReadError(f"{path}: file not found") from e
    except OSError as e:  # a folder, no permission...
        raise _unreadable(path, e) from e
    fast = _gray8_png(data)
    if fast is not None:
        return _binary01(fast, path)
    unknown = _unknown_critical_chunk(data)
    if unknown is not None:  # Pillow would skip it and decode as if it meant nothing
        raise ImageReadError(
            f"{path}: PNG with an unknown critical chunk {unknown!r}, which may change what the "
            f"pixels mean (the PNG spec forbids decoding it as if it were not there); {REEXPORT}"
        )
    img = _open(path, data)
    if img.mode in ("I;16", "I;16B", "I;16L"):
        return _eight_bit_in_16(_binary01(np.asarray(img).astype(np.uint16), path), path)
    if img.mode == "I":
        arr = np.asarray(img)
        if arr.min() < 0 or arr.max() > 65535:
            raise ImageReadError(f"{path}: 32-bit {what} with values outside 0..65535")
        return _eight_bit_in_16(_binary01(arr.astype(np.uint16), path), path)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        raise ImageReadError(
            f"{path}: {what} has an alpha channel ({img.mode}); save it as 8-bit grayscale"
        )
    if img.mode == "F":
        raise ImageReadError(f"{path}: floating-point {what}; save it as 8- or 16-bit grayscale")
    if img.mode == "1":
        return np.asarray(img).astype(np.uint8) * 255
    if img.mode != "L":
        message = f"{path}: {what} stored as {img.mode}, converted to grayscale"
        warnings.warn(ConvertedToGrayWarning(message, str(path)), stacklevel=2)
        img = img.convert("L")
    return _binary01(np.asarray(img), path)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _gray8_png(data: bytes) -> np.ndarray | None:
    """Decode an 8-bit grayscale, non-interlaced PNG (what prediction folders and GT masks
    hold) faster than Pillow: the IDAT stream inflated in one call by libdeflate (ECSSD masks:
    4x zlib's speed; noisy maps: 2x zlib, 1.3x zlib-ng), the scanlines
    unfiltered by Pillow's own PNG decoder fed the inflated bytes as stored deflate blocks.
    The pixels are Pillow's (the same unfiltering code); None for any other file or anything
    unexpected, which the caller then reads with Pillow (and its errors)."""
    try:
        import deflate
    except ImportError:  # pragma: no cover - a dependency; Pillow alone still works
        return None
    if len(data) < 33 or data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR":
        return None
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    depth, color, compression, filtering, interlace = data[24:29]
    if (depth, color, compression, filtering, interlace) != (8, 0, 0, 0, 0):
        return None
    limit = Image.MAX_IMAGE_PIXELS  # beyond it Pillow warns or refuses: let it
    if width * height == 0 or (limit is not None and width * height > limit):
        return None
    view = memoryview(data)
    chunks = []
    pos = 8
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        if pos + 12 + length > len(data):
            return None
        if kind == b"IDAT":
            chunks.append(view[pos + 8 : pos + 8 + length])
        elif kind == b"IEND":
            break
        elif kind == b"PLTE" or not kind[:1].islower() and kind != b"IHDR":
            return None  # a critical chunk this path does not know
        pos += 12 + length
    expected = height * (width + 1)  # a filter byte and the pixels per row
    try:
        stream = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        raw = deflate.zlib_decompress(stream, expected)  # checks the Adler-32 too
    except deflate.DeflateError:  # damaged, or more data than the rows hold
        return None
    if len(raw) != expected:
        return None
    try:
        img = Image.frombytes("L", (width, height), _stored_zlib(raw, deflate.adler32), "zip", "L")
    except (OSError, ValueError):
        return None
    return np.asarray(img)


#: The critical chunks of PNG (ISO/IEC 15948 §4.3); a chunk whose type starts with an upper-case
#: letter and is not one of these cannot be safely ignored.
PNG_CRITICAL = {b"IHDR", b"PLTE", b"IDAT", b"IEND"}


def _unknown_critical_chunk(data: bytes) -> str | None:
    """The type of the first critical chunk of a PNG that is not one of :data:`PNG_CRITICAL`
    (None: none, or not a PNG; a damaged chunk -- a type that is not four letters, a CRC that
    does not match -- is left to Pillow's errors: it is damage, not an unknown chunk)."""
    if data[:8] != _PNG_SIGNATURE:
        return None
    pos = 8
    while pos + 12 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        if kind == b"IEND" or not kind.isalpha():
            return None
        if kind[:1].isupper() and kind not in PNG_CRITICAL:
            end = pos + 8 + length
            crc = data[end : end + 4]
            intact = zlib.crc32(data[pos + 4 : end]) == int.from_bytes(crc, "big")
            return kind.decode("ascii") if len(crc) == 4 and intact else None
        pos += 12 + length
    return None


def _stored_zlib(data: bytes | bytearray, adler32: Callable[[bytes | bytearray], int]) -> bytes:
    """``data`` as a zlib stream of stored (uncompressed) deflate blocks (RFC 1950/1951):
    what ``zlib.compress(data, 0)`` makes, without its copy through the compressor."""
    out: list[bytes | memoryview] = [b"\x78\x01"]
    view = memoryview(data)
    for start in range(0, max(len(data), 1), 65535):
        block = view[start : start + 65535]
        final = start + 65535 >= len(data)
        n = len(block)
        out += [bytes((final,)) + n.to_bytes(2, "little") + (n ^ 0xFFFF).to_bytes(2, "little")]
        out.append(block)
    out.append(adler32(data).to_bytes(4, "big"))
    return b"".join(out)


def _binary01(arr: np.ndarray, path: Path) -> np.ndarray:
    """A map whose only values are 0 and 1 (several public datasets store masks so) is a
    binary mask, not a nearly black map: scale 1 to the dtype's maximum, with a warning."""
    if arr.size and int(arr.max()) == 1:
        warnings.warn(BinaryMaskWarning(str(path)), stacklevel=3)
        return arr * np.array(np.iinfo(arr.dtype).max, dtype=arr.dtype)
    return arr


def _eight_bit_in_16(arr: np.ndarray, path: Path) -> np.ndarray:
    """A 16-bit map whose values are at most 255 (and not just 0/1, see :func:`_binary01`)
    holds 8-bit values: scale them to 16 bits (v -> 257 v, so v / 255 is kept exactly), with an
    :class:`EightBitIn16Warning`."""
    peak = int(arr.max()) if arr.size else 0
    if 1 < peak <= 255:
        warnings.warn(EightBitIn16Warning(str(path)), stacklevel=3)
        return arr * np.uint16(257)
    return arr


@contextmanager
def read_warnings() -> Iterator[list[str]]:
    """Collect the warnings raised while reading maps; on exit, ``lines`` holds one line per
    warning, except those of :data:`SUMMARISED`, each kind in ONE line (count + first files).
    The caller prints the lines after the ``with`` block."""
    lines: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        for kind in SUMMARISED:
            warnings.simplefilter("always", kind)
        warnings.simplefilter("always", UserWarning)
        try:
            yield lines
        finally:
            kinds = tuple(SUMMARISED)
            lines.extend(str(w.message) for w in caught if not issubclass(w.category, kinds))
            for kind, text in SUMMARISED.items():
                mine = [w.message for w in caught if issubclass(w.category, kind)]
                if kind is ConvertedToGrayWarning and len({str(m) for m in mine}) == 1:
                    lines.append(str(mine[0]))  # one file: its own line (what and mode)
                    continue
                files = sorted({getattr(m, "path", str(m)) for m in mine})
                if files:
                    more = len(files) - MAX_NAMED
                    lines.append(
                        text.format(n=len(files))
                        + f": {', '.join(files[:MAX_NAMED])}"
                        + (f" and {more} more" if more > 0 else "")
                    )


def to_unit(arr: np.ndarray) -> np.ndarray:
    """Scale a grayscale map to float64 in [0, 1] by its dtype's maximum (255 or 65535);
    float input is taken as already in [0, 1] and clipped."""
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float64) / 65535.0
    if arr.dtype == np.bool_:
        return arr.astype(np.float64)
    if np.issubdtype(arr.dtype, np.floating):
        return np.clip(arr.astype(np.float64), 0.0, 1.0)
    raise TypeError(f"unsupported map dtype {arr.dtype}")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write a file through a temp file in the same folder and a rename: never half-written."""
    with atomic_writer(path) as f:
        f.write(data)


@contextmanager
def atomic_writer(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file to write in parts: a temp file in the same folder, renamed to ``path``
    when the block ends without an error (removed otherwise): never half-written."""
    path = _as_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with naming_full_disk(path.parent):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                yield f
            os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp makes 0600; give the usual permissions
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


@contextmanager
def naming_full_disk(folder: Path) -> Iterator[None]:
    """A full disk (``ENOSPC``, ``EDQUOT``) while writing into ``folder`` is re-raised with the
    folder as the error's file name, so the one-line error can say where space is missing
    (:func:`odbench.cli.user_errors`); a plain ``write()`` names no file."""
    try:
        yield
    except OSError as e:
        if e.errno in DISK_FULL and not e.filename:
            raise OSError(e.errno, e.strerror, str(folder)) from e
        raise


def write_png(path: str | Path, arr: np.ndarray) -> None:
    """Save a uint8/uint16 grayscale or uint8 RGB array as PNG, atomically."""
    import io

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly in ``folder``, sorted; hidden files and stray files skipped."""
    folder = Path(folder)
    with os.scandir(folder) as entries:  # the file type from the listing: no stat per file
        names = [
            e.name
            for e in entries
            if not e.name.startswith(".")
            and os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES
            and e.is_file()
        ]
    names.sort(key=os.path.normcase)  # the order of the paths (case-folded on Windows)
    return [folder / name for name in names]


def _as_path(path: str | Path) -> Path:
    """``path`` as a Path, not rebuilt when it is one (rebuilding parses it again: ~5 us)."""
    return path if isinstance(path, Path) else Path(path)
