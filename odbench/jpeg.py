"""JPEG pixels decoded by OpenCV where they are provably Pillow's (for
:func:`odbench.imageio.read_rgb`).

Pillow and OpenCV both bundle libjpeg-turbo, whose default decode (ISLOW integer IDCT, fancy
upsampling) is bit-exact by design; OpenCV hands the pixels over as RGB directly, Pillow through
its 4-byte RGBX storage and a repacking copy (ECSSD: read_rgb 0.98-1.01 -> 0.90 ms/image, file
read and Pillow's header parse included; OpenCV's decode alone 0.84).  The OpenCV route
(:func:`pixels`) is taken only when all of these hold, so that every pixel, error line and warning
stays what Pillow gives:

* Pillow opened the file as a plain JPEG (not MPO), within ``Image.MAX_IMAGE_PIXELS`` (set):
  its header parse, EXIF reading, decompression-bomb check and warnings have run as always;
* the header, read here marker by marker (:func:`frame_size`), is a clean run of APPn, COM, DQT,
  DHT and DRI segments, one SOF0/1/2 frame (8-bit Huffman: baseline, extended, progressive) of
  1 or 3 components (Pillow's L or RGB) with common sampling (4:4:4, 4:2:2, 4:2:0, 4:4:0,
  4:1:1), then SOS; the frame's size is Pillow's; the file ends with EOI (a truncated file is
  left to Pillow, which says "image file is truncated");
* libjpeg printed nothing.  A damaged scan (a bad Huffman code, a marker met early, extraneous
  bytes) makes libjpeg conceal the damage and print a warning on the C ``stderr``: Pillow
  silences it, OpenCV prints it.  So while OpenCV decodes, the C library's ``stderr`` stream is a
  memory stream (:class:`_OpenCV`; glibc only, elsewhere the route is off): anything written
  there sends the file to Pillow, which conceals the damage the same way, silently.  Other C code
  printing to the C ``stderr`` at that instant (Python's own ``sys.stderr`` is untouched) is lost;
* OpenCV returned (H, W, 3) uint8 of the header's size.

On first use the route checks itself: three small JPEGs (4:2:0 baseline, 4:2:2 progressive with
restart markers, grayscale) must decode to Pillow's pixels, else it stays off for the process.
"""

from __future__ import annotations

import io
import os
import stat
import threading
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

SIGNATURE = b"\xff\xd8\xff"  # SOI and the first byte of a marker: what Pillow identifies
#: Segments a clean header may hold besides the frame: APP0-15, COM, DQT, DHT, DRI.
SEGMENTS = frozenset({*range(0xE0, 0xF0), 0xFE, 0xDB, 0xC4, 0xDD})
FRAMES = frozenset({0xC0, 0xC1, 0xC2})  # SOF0/1/2: 8-bit Huffman-coded DCT
SOS = 0xDA
#: Sampling bytes (h << 4 | v) per component: grayscale, and Y at 1x1, 2x1, 1x2, 2x2 or 4x1
#: with Cb and Cr at 1x1 (4:4:4, 4:2:2, 4:4:0, 4:2:0, 4:1:1).
SAMPLING = frozenset({(0x11,), *((y, 0x11, 0x11) for y in (0x11, 0x21, 0x12, 0x22, 0x41))})


def file_bytes(path: Path) -> bytes | None:
    """The bytes of ``path`` when it is a regular file that starts like a JPEG; None otherwise
    or on any error (Pillow then opens the path and names the problem)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or os.pread(fd, 3, 0) != SIGNATURE:
            return None
        data = os.read(fd, info.st_size)
    except OSError:
        return None
    finally:
        os.close(fd)
    return data if len(data) == info.st_size else None


def frame_size(data: bytes) -> tuple[int, int] | None:
    """``(H, W)`` of a JPEG whose header is a clean run of segments (see the module's notes)
    and whose last two bytes are EOI; None for anything else."""
    if data[:2] != b"\xff\xd8" or data[-2:] != b"\xff\xd9":
        return None
    pos, end, size = 2, len(data), None
    while pos + 4 <= end and data[pos] == 0xFF:
        marker = data[pos + 1]
        length = data[pos + 2] << 8 | data[pos + 3]
        if length < 2 or pos + 2 + length > end:
            return None
        if marker == SOS:
            return size
        if marker in FRAMES:
            if size is not None:  # a second frame
                return None
            size = _frame(data[pos + 4 : pos + 2 + length])
            if size is None:
                return None
        elif marker not in SEGMENTS:
            return None
        pos += 2 + length
    return None


def _frame(segment: bytes) -> tuple[int, int] | None:
    """``(H, W)`` from a frame header of 8-bit precision, non-zero size and sampling in
    :data:`SAMPLING`; None otherwise."""
    if len(segment) < 6:
        return None
    n = segment[5]
    height, width = segment[1] << 8 | segment[2], segment[3] << 8 | segment[4]
    if segment[0] != 8 or len(segment) != 6 + 3 * n or not height or not width:
        return None
    if tuple(segment[7 + 3 * i] for i in range(n)) not in SAMPLING:
        return None
    return height, width


def pixels(data: bytes, img: Image.Image) -> np.ndarray | None:
    """The (H, W, 3) uint8 RGB pixels of the JPEG ``data``, which Pillow opened as ``img`` (not
    yet loaded), decoded by OpenCV; read-only, as Pillow's are.  None when the module's
    conditions do not all hold: the caller then loads ``img`` with Pillow."""
    if img.format != "JPEG":  # an MPO (several images) is "MPO"
        return None
    width, height = img.size
    limit = Image.MAX_IMAGE_PIXELS
    if limit is None or width * height > limit or frame_size(data) != (height, width):
        return None
    decoder = _decoder()
    if decoder is None:
        return None
    arr = decoder.decode(data)
    if arr is None or arr.dtype != np.uint8 or arr.shape != (height, width, 3):
        return None
    arr.flags.writeable = False
    return arr


class _OpenCV:
    """``cv2.imdecode`` to RGB, EXIF orientation ignored (Pillow's ``open`` does not rotate
    either), with libjpeg's warnings caught: the C library's ``stderr`` points at a memory
    stream while any thread decodes (a count of open decodes under a lock, so threads decode in
    parallel; reset in a forked child); a decode during which that stream grew gives None."""

    def __init__(self, cv2: Any) -> None:
        import ctypes  # here, not at the top: odbench score never decodes a JPEG

        libc = ctypes.CDLL(None)
        self._imdecode = cv2.imdecode
        self._error = cv2.error
        self._flags = cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION
        self._ftell = libc.ftell
        self._ftell.argtypes, self._ftell.restype = [ctypes.c_void_p], ctypes.c_long
        self._rewind = libc.rewind
        self._rewind.argtypes, self._rewind.restype = [ctypes.c_void_p], None
        memstream = libc.open_memstream
        memstream.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_size_t)]
        memstream.restype = ctypes.c_void_p
        self._buffer, self._size = ctypes.c_char_p(), ctypes.c_size_t()  # kept alive with it
        self._capture = memstream(ctypes.byref(self._buffer), ctypes.byref(self._size))
        if not self._capture:
            raise OSError("open_memstream failed")
        self._stderr = ctypes.c_void_p.in_dll(libc, "stderr")
        self._real = self._stderr.value
        self._lock = threading.Lock()
        self._open = 0
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        """In a child forked while another thread decoded: that thread is not here, so no
        decode is open; the C ``stderr`` is the real one again."""
        self._lock = threading.Lock()
        self._open = 0
        self._stderr.value = self._real

    def decode(self, data: bytes) -> np.ndarray | None:
        """The RGB pixels, or None: OpenCV failed or libjpeg warned."""
        buf = np.frombuffer(data, np.uint8)
        with self._lock:
            if not self._open:
                self._stderr.value = self._capture
            self._open += 1
            start = self._ftell(self._capture)
        try:
            arr = self._imdecode(buf, self._flags)
        except self._error:
            arr = None
        finally:
            with self._lock:
                quiet = self._ftell(self._capture) == start
                self._open -= 1
                if not self._open:
                    self._stderr.value = self._real
                    if not quiet:
                        self._rewind(self._capture)  # what was caught is not kept
        return arr if quiet else None

    def agrees_with_pillow(self) -> bool:
        """Three small JPEGs decode to Pillow's pixels (see the module's notes)."""
        rng = np.random.default_rng(0)
        rgb = Image.fromarray(rng.integers(0, 256, (37, 45, 3), dtype=np.uint8))
        for img, options in (
            (rgb, {"subsampling": 2}),
            (rgb, {"subsampling": 1, "progressive": True, "restart_marker_blocks": 3}),
            (rgb.convert("L"), {}),
        ):
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=90, **options)
            with Image.open(buf) as stored:
                expected = np.asarray(stored.convert("RGB"))
            arr = self.decode(buf.getvalue())
            if arr is None or not np.array_equal(arr, expected):
                return False
        return True


_made = threading.Lock()
_decoders: list[_OpenCV | None] = []  # made once per process, by the first caller


def _decoder() -> _OpenCV | None:
    """The process's OpenCV decoder; None where the route is off (no cv2 with RGB decoding, not
    glibc, or the self-check failed)."""
    if _decoders:
        return _decoders[0]
    with _made:
        if not _decoders:
            _decoders.append(_make())
        return _decoders[0]


def _make() -> _OpenCV | None:
    try:
        import cv2
    except ImportError:  # pragma: no cover - a dependency; Pillow alone still works
        return None
    try:
        libc_name = os.confstr("CS_GNU_LIBC_VERSION") or ""
        if not hasattr(cv2, "IMREAD_COLOR_RGB") or not libc_name.startswith("glibc"):
            return None
        decoder = _OpenCV(cv2)
    except (AttributeError, OSError, TypeError, ValueError):  # not glibc, no such symbol
        return None
    return decoder if decoder.agrees_with_pillow() else None
