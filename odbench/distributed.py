"""Who does which images: shards of stable sample ids, and a thin adapter over the launcher.

Two ways to split a run, which compose:

* ``--shard I/N`` (a SLURM array, several machines on a shared filesystem, no torch.distributed):
  shard ``I`` of ``N`` takes every ``N``-th id of the dataset's order starting at ``I``
  (``ids[I::N]``).  Striding rather than contiguous blocks balances the load when the cost of an
  image drifts along the dataset (sorted by size or by class), and never pads: every id is in
  exactly one shard, so no image is counted twice (a ``DistributedSampler`` that repeats indices
  to even out the shards would bias the metrics).
* A launcher (``accelerate launch``, ``torchrun``): rank ``r`` of ``W`` takes sub-shard ``r`` of
  its shard, i.e. shard ``I + N·r`` of ``N·W`` (``ids[I::N][r::W]`` is ``ids[I + N·r :: N·W]``).

The launcher adapter reads the world from accelerate's :class:`~accelerate.PartialState` (which
reads the ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` variables that ``torchrun`` and
``accelerate launch`` set, and the MPI ones) and uses it only to gather the per-rank results on
rank 0 and to hold ranks at a barrier; a single process never imports accelerate or torch.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from odbench.errors import OdbenchError

T = TypeVar("T")

#: Environment variables a launcher sets to the number of processes (torchrun and accelerate:
#: WORLD_SIZE; MPI launchers, which accelerate also accepts, the others).
_WORLD_SIZE_VARS = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


#: How long a rank waits at the final gather for the others (torch's default is 30 minutes).
RANK_WAIT_HOURS = 24


class ShardError(OdbenchError, ValueError):
    """A shard specification or a set of shards that cannot be used; one line."""


class DeviceError(OdbenchError, ValueError):
    """A ``--device`` that this machine cannot give; one line."""


class LaunchError(ShardError):
    """Another process of the launch stopped (its own error line says why); one line."""


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based): the ids at positions ``index, index + count, …``."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ShardError(f"shard {self.index}/{self.count}: expected 0 <= I < N")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"I/N"`` (e.g. ``"0/4"``; ``$SLURM_ARRAY_TASK_ID/4`` in a SLURM array)."""
        index, sep, count = text.partition("/")
        try:
            if not sep:
                raise ValueError
            return cls(int(index), int(count))
        except ValueError:
            hint = "e.g. 0/4"
            if sep and index.strip().isdigit() and index.strip() == count.strip() != "0":
                n = int(count)  # I = N: counted from 1, as in a SLURM array --array=1-N
                hint = f"counted from 0: the last of {n} shards is {n - 1}/{n}, a SLURM array "
                hint += f"over them --array=0-{n - 1}"
            raise ShardError(f"--shard {text!r}: expected I/N with 0 <= I < N, {hint}") from None

    @property
    def whole(self) -> bool:
        return self.count == 1

    def take(self, ids: Sequence[T]) -> list[T]:
        """This shard's items, in the dataset's order."""
        return list(ids[self.index :: self.count])

    def split(self, parts: int, part: int) -> Shard:
        """Sub-shard ``part`` of ``parts`` of this shard, as a shard of the whole:
        ``Shard(I, N).split(W, r).take(ids) == Shard(I, N).take(ids)[r::W]``."""
        if not 0 <= part < parts:
            raise ShardError(f"part {part} of {parts}: expected 0 <= part < parts")
        return Shard(self.index + self.count * part, self.count * parts)

    def label(self) -> str:
        """``shard-I-of-N``: the file-name suffix of a shard's results."""
        return f"shard-{self.index}-of-{self.count}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def interleave(parts: Sequence[Sequence[T]]) -> list[T]:
    """Undo a split into ``len(parts)`` strided shards: ``interleave([S.take(x) for S in
    Shard(i, W) for i in range(W)]) == list(x)``.  Raises :class:`ShardError` when the part
    lengths cannot come from one strided split (they must differ by at most one, longer first)."""
    w = len(parts)
    n = sum(len(p) for p in parts)
    expected = [len(range(i, n, w)) for i in range(w)]
    if [len(p) for p in parts] != expected:
        raise ShardError(
            f"shard sizes {[len(p) for p in parts]} do not come from splitting {n} ids "
            f"{w} ways (expected {expected})"
        )
    return [parts[k % w][k // w] for k in range(n)]


def ids_digest(ids: Sequence[str]) -> str:
    """sha256 of the ids in order (one per line): identifies the id list a shard was cut from."""
    h = hashlib.sha256()
    for i in ids:
        h.update(i.encode())
        h.update(b"\n")
    return h.hexdigest()


def shard_block(shard: Shard, all_ids: Sequence[str]) -> dict[str, Any]:
    """The ``shard`` field of a shard's results: which part of which id list it holds
    (``odbench merge`` checks the parts against it)."""
    return {
        "index": shard.index,
        "count": shard.count,
        "n_total": len(all_ids),
        "ids_sha256": ids_digest(all_ids),
    }


def _gpu_device_nodes() -> bool:
    return any(Path(p).exists() for p in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd"))


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu`` (torch is not imported when the
    machine has no GPU device node, so CPU-only methods start fast); ``cpu`` and ``cuda[:N]``
    are checked."""
    if device == "auto":
        if "torch" not in sys.modules and not _gpu_device_nodes():
            return "cpu"
        try:
            import torch
        except ImportError:
            return "cpu"
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise DeviceError(f"--device {device}: torch sees no CUDA device; use --device cpu")
        return device
    if device != "cpu":
        raise DeviceError(f"--device {device!r}: expected auto, cpu or cuda[:N]")
    return device


def launched_world_size() -> int:
    """The number of processes a launcher started this one among (1 when none did)."""
    for var in _WORLD_SIZE_VARS:
        value = os.environ.get(var, "").strip()
        if value:
            try:
                return max(int(value), 1)
            except ValueError:
                raise ShardError(f"${var}={value!r} is not a number of processes") from None
    return 1


def peer_failure(error: BaseException) -> bool:
    """Whether ``error`` is a collective operation failing because another process of the launch
    is gone (killed, crashed, stopped on its own error): torch's ``DistError`` family, or the
    ``RuntimeError`` gloo raises when a peer's connection closes."""
    import sys

    dist = sys.modules.get("torch.distributed")
    if dist is not None and isinstance(error, getattr(dist, "DistError", ())):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and any(
        word in text for word in ("gloo", "NCCL", "Connection closed by peer", "Connection reset")
    )


def short_error(error: BaseException) -> str:
    """The first line of an error's message, without the C++ source location gloo puts first."""
    line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    if line.startswith("[") and "] " in line:
        line = line.split("] ", 1)[1]
    return line.split(". ")[0].rstrip(".")


@dataclass
class World:
    """The processes of one launch: ``rank`` of ``size``; ``local_rank`` picks the GPU.

    ``state`` is accelerate's ``PartialState`` when launched, else ``None`` (one process)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    state: Any = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, requested: str) -> str:
        """The device this rank runs on: ``cuda`` (or ``auto`` with a GPU) becomes this rank's
        own ``cuda:<local_rank>`` under a launcher; anything else is kept."""
        if self.size > 1 and requested in ("cuda", "auto") and self.state is not None:
            if self.state.device.type == "cuda":
                return f"cuda:{self.state.device.index or 0}"
        return requested

    def gather(self, obj: T) -> list[T] | None:
        """Every rank's ``obj`` in rank order on rank 0 (``None`` elsewhere); collective."""
        if self.size == 1:
            return [obj]
        from accelerate.utils import gather_object

        # gather_object all-gathers (a list per rank); objects stay in process memory.
        try:
            gathered: list[T] = gather_object([obj])
        except RuntimeError as e:  # a peer died (its own error line is above): gloo / NCCL
            raise LaunchError(
                f"rank {self.rank}: another process of this launch stopped before the end "
                f"({type(e).__name__} in the gather); its own error line says why: fix that "
                "and run the same command again (finished work is kept)"
            ) from e
        return gathered if self.is_main else None

    def broadcast(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank; collective."""
        if self.size == 1:
            return obj
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([obj], from_process=0)[0]  # type: ignore[no-any-return]

    def barrier(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()

    def close(self) -> None:
        """Leave the process group (so torch does not warn about a leaked one at exit)."""
        if self.state is not None:
            self.state.destroy_process_group()


def detect_world(device: str = "cpu") -> World:
    """The launch this process belongs to.  Without a launcher: ``World()`` (nothing imported).
    With one: accelerate's ``PartialState`` joins the process group (gloo when the run is on
    CPU or torch sees no GPU, NCCL otherwise)."""
    if launched_world_size() == 1:
        return World()
    import torch
    from accelerate import PartialState

    cpu = device == "cpu" or not torch.cuda.is_available()
    # Ranks meet only at the end (gather) and may wait there for the slowest one for long
    # (a resumed rank with nothing left to do waits for one that predicts everything).
    state = PartialState(cpu=cpu, timeout=timedelta(hours=RANK_WAIT_HOURS))
    return World(state.process_index, state.num_processes, state.local_process_index, state)
