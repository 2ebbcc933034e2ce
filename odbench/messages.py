"""Messages between a process and one it forked (:mod:`odbench.forked`'s pipeline): pickles
framed by their length on a pipe, their large arrays through shared-memory :class:`Slots` (one
copy in, one copy out) instead of inside the pickle (four copies and a pipe's worth of system
calls for each)."""

from __future__ import annotations

import mmap
import os
import pickle
import threading
from collections.abc import Callable
from typing import Any

#: Arrays from this size on travel through :class:`Slots`; smaller ones inside the pickle.
SLOT_MIN_BYTES = 1 << 16
#: One slot's size: larger arrays (an image over ~1.4 megapixels) travel inside the pickle.
SLOT_BYTES = 4 << 20


class Slots:
    """Fixed-size slots of shared memory (an anonymous shared mapping made before forking, so
    both processes see it; pages are only committed where written) through which one process
    sends arrays to one other: the sender copies an array into a free slot and names the slot
    in its pickled message (pickle protocol 5's out-of-band buffers), the receiver copies it
    out.  The sender alone allocates; a slot is freed (:meth:`release`) once the receiver has
    answered the message that used it — an answer comes after the receiver's copy, through
    the same pipes, so no memory ordering between the processes is relied on.  With no free
    slot, or an array over :data:`SLOT_BYTES`, the array travels inside the pickle; so do all
    where the mapping cannot be made (a strict overcommit policy refusing shared memory)."""

    def __init__(self, count: int) -> None:
        self.memory: mmap.mmap | None = None
        try:
            self.memory = mmap.mmap(-1, count * SLOT_BYTES)  # MAP_SHARED | MAP_ANONYMOUS
        except OSError:
            count = 0
        self.free = list(range(count))
        self.used: dict[int, list[int]] = {}  # message index -> its slots
        self.lock = threading.Lock()

    def put(self, index: int, buffer: pickle.PickleBuffer, refs: list[tuple[int, int]]) -> bool:
        """Copy ``buffer`` into a free slot for the message of ``index`` and note it in ``refs``
        (True); False: it travels inside the pickle."""
        data = buffer.raw()
        if data.nbytes < SLOT_MIN_BYTES or data.nbytes > SLOT_BYTES:
            return False
        with self.lock:
            if not self.free:
                return False
            k = self.free.pop()
            self.used.setdefault(index, []).append(k)
        assert self.memory is not None  # else there are no free slots
        self.memory[k * SLOT_BYTES : k * SLOT_BYTES + data.nbytes] = data
        refs.append((k, data.nbytes))
        return True

    def get(self, k: int, nbytes: int) -> bytearray:
        """A copy of what slot ``k`` holds (writable, as an in-band pickled array is)."""
        if self.memory is None:  # a message naming a slot of a mapping that does not exist
            raise RuntimeError("a message names a shared-memory slot, but there are none")
        with memoryview(self.memory) as view:
            return bytearray(view[k * SLOT_BYTES : k * SLOT_BYTES + nbytes])

    def release(self, index: int) -> None:
        with self.lock:
            self.free += self.used.pop(index, [])

    def close(self) -> None:
        if self.memory is not None:
            self.memory.close()


def widen_pipe(fd: int) -> None:
    """A 1 MiB pipe (Linux; fewer context switches per image-sized message), if allowed."""
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
    except (OSError, ImportError):
        pass


def write_message(
    out: Any, message: Any, slots: Slots | None = None, index: int | None = None
) -> None:
    """A pickle behind its length and the slots of its out-of-band arrays (``slots``: the
    sender's, used for the message of ``index``); an outcome (``(stage, i, ok, value,
    warnings)``) that does not pickle, or an exception that does not load back, is sent as a
    RuntimeError with its text."""
    refs: list[tuple[int, int]] = []

    def out_of_band(buffer: pickle.PickleBuffer) -> bool:  # False: out of band
        return slots is None or index is None or not slots.put(index, buffer, refs)

    try:
        data = pickle.dumps(message, protocol=5, buffer_callback=out_of_band)
        if len(message) == 5 and not message[2]:
            pickle.loads(data)  # some exception classes do not load back
    except Exception as e:
        if slots is not None and index is not None:
            slots.release(index)
        refs = []
        if len(message) != 5:
            raise
        stage, i, ok, value, caught = message
        what = value if not ok else e
        error = RuntimeError(f"{type(what).__name__}: {what}")
        data = pickle.dumps((stage, i, False, error, [str(m) for m in caught]))
    head = [len(data).to_bytes(8, "little"), len(refs).to_bytes(4, "little")]
    head += [k.to_bytes(4, "little") + n.to_bytes(8, "little") for k, n in refs]
    out.write(b"".join(head))
    out.write(data)
    out.flush()


def read_message(read: Callable[[int], bytes | None], slots: Slots) -> Any:
    """The message :func:`write_message` sent (its arrays copied out of ``slots``, the
    sender's), or None at the end of the pipe (or a message cut short)."""
    head = read(12)
    if head is None or len(head) != 12:
        return None
    size, n_refs = int.from_bytes(head[:8], "little"), int.from_bytes(head[8:], "little")
    refs = read(12 * n_refs) if n_refs else b""
    data = read(size)
    if refs is None or data is None or len(refs) != 12 * n_refs or len(data) != size:
        return None
    buffers = [
        slots.get(
            int.from_bytes(refs[j : j + 4], "little"),
            int.from_bytes(refs[j + 4 : j + 12], "little"),
        )
        for j in range(0, len(refs), 12)
    ]
    return pickle.loads(data, buffers=buffers)  # from our own fork


def read_exactly(fd: int, size: int) -> bytes | None:
    parts, left = [], size
    while left:
        chunk = os.read(fd, left)
        if not chunk:
            return None
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)
