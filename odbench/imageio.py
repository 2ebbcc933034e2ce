"""Reading and writing images with one-line errors that name the file.

Pillow only (no torch, no OpenCV), so ``odbench score`` starts fast.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

_UMASK = os.umask(0o022)
os.umask(_UMASK)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class ImageReadError(ValueError):
    """An image that cannot be used; the message names the file and the problem."""


def _open(path: Path) -> Image.Image:
    try:
        img = Image.open(path)
        img.load()
    except FileNotFoundError as e:
        raise ImageReadError(f"{path}: file not found") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"{path}: unreadable or corrupt image ({e})") from e
    return img


def read_rgb(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB.  Grayscale and palette images are expanded; 16-bit is scaled to 8-bit;
    RGBA is refused (transparency has no meaning for a benchmark image)."""
    path = Path(path)
    img = _open(path)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        raise ImageReadError(f"{path}: image has an alpha channel ({img.mode}); save it as RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img).astype(np.float64)
        arr = np.clip(np.round(arr / 65535.0 * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    return np.asarray(img.convert("RGB"))


def read_gray(path: str | Path, *, what: str = "mask") -> np.ndarray:
    """A grayscale map as stored: (H, W) uint8, or uint16 for 16-bit files.

    RGB and palette files are converted to luminance (ITU-R 601-2, Pillow's ``L``) with a
    warning naming the file; files with an alpha channel are refused.
    """
    path = Path(path)
    img = _open(path)
    if img.mode in ("I;16", "I;16B", "I;16L"):
        return np.asarray(img).astype(np.uint16)
    if img.mode == "I":
        arr = np.asarray(img)
        if arr.min() < 0 or arr.max() > 65535:
            raise ImageReadError(f"{path}: 32-bit {what} with values outside 0..65535")
        return arr.astype(np.uint16)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        raise ImageReadError(
            f"{path}: {what} has an alpha channel ({img.mode}); save it as 8-bit grayscale"
        )
    if img.mode == "F":
        raise ImageReadError(f"{path}: floating-point {what}; save it as 8- or 16-bit grayscale")
    if img.mode == "1":
        return np.asarray(img).astype(np.uint8) * 255
    if img.mode != "L":
        warnings.warn(f"{path}: {what} stored as {img.mode}, converted to grayscale", stacklevel=2)
        img = img.convert("L")
    return np.asarray(img)


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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
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
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )
