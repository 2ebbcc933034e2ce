"""``.npz`` files written a block of rows at a time: ``np.savez_compressed``'s bytes without
holding the arrays, or the whole compressed file, in memory (the results' records file:
:func:`odbench.results.write_results`)."""

from __future__ import annotations

import mmap
import zipfile
from typing import BinaryIO

import numpy as np

#: Bytes of an array written at a time (the pages of a memory-mapped array are dropped after
#: each block): writing holds at most this much of an array.
BLOCK = 1 << 18


def write_npz(file: BinaryIO, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez_compressed(file, allow_pickle=False, **arrays)`` byte for byte (the same zip
    members, ``.npy`` headers and deflate streams), written :data:`BLOCK` bytes of rows at a
    time, so arrays memory-mapped from files (a run's streamed records, :mod:`odbench.phases`)
    are never all in this process's memory."""
    with zipfile.ZipFile(file, "w", zipfile.ZIP_DEFLATED) as npz:
        for key, value in arrays.items():
            array = np.asanyarray(value)
            with npz.open(f"{key}.npy", "w", force_zip64=True) as out:
                header = np.lib.format.header_data_from_array_1_0(array)
                if array.dtype.hasobject or header["fortran_order"] or array.ndim == 0:
                    np.lib.format.write_array(out, array, allow_pickle=False)  # numpy's way
                    continue
                np.lib.format.write_array_header_1_0(out, header)
                rows = max(1, BLOCK // max(1, array[:1].nbytes))
                for start in range(0, len(array), rows):
                    out.write(np.ascontiguousarray(array[start : start + rows]).tobytes())
                    _drop_pages(array)


def _drop_pages(array: np.ndarray) -> None:
    """Drop the pages of a memory-mapped array read so far from this process (they are read
    from the file again if used); nothing for an array in memory."""
    mapped = getattr(array, "_mmap", None)  # np.memmap's map of its file
    if mapped is not None and hasattr(mmap, "MADV_DONTNEED"):
        mapped.madvise(mmap.MADV_DONTNEED)
