"""Claim files: processes sharing a prediction cache never compute the same image twice.

Before predicting an image a process creates ``<cache>/<name>.claim`` with ``O_CREAT | O_EXCL``
(atomic on local filesystems and NFSv3+), holding its host, pid and a random nonce; it deletes
the claim once the image's cache entry is written.  A process that finds an image claimed waits for
the entry (:meth:`Claims.wait`) before going on in the dataset's order, so two runs of one
command on one cache finish together, one having predicted what the other read.  A claim is *stale*, and may be taken
over, when its holder is gone: on the same host, its pid no longer runs; from another host, it
is older than the lease (``$ODBENCH_CLAIM_LEASE_S``, default 30 minutes — far longer than one
batch of any method).  So a run killed with SIGKILL leaves at most its in-flight batch claimed,
and the restarted run (same host) takes those claims over at once.

Cache entries themselves are appended whole to each process's own pack file and checked (length,
CRC-32) when read (:mod:`odbench.cache`), so a lost race can only cost a duplicate computation of
the same bytes, never a corrupt entry.  Taking over a stale
claim renames it aside first and checks that the file it moved is the one it judged stale, so
two processes cannot both take one over.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from odbench.imageio import naming_full_disk

DEFAULT_LEASE_S = 1800.0


def _lease_from_env() -> float:
    raw = os.environ.get("ODBENCH_CLAIM_LEASE_S", "")
    try:
        return float(raw) if raw.strip() else DEFAULT_LEASE_S
    except ValueError:
        return DEFAULT_LEASE_S


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@dataclass
class Claims:
    """Claim files in ``folder`` (the cache folder), one per image name."""

    folder: Path
    lease_s: float = field(default_factory=_lease_from_env)
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.claim"

    def acquire(self, name: str) -> bool:
        """Claim ``name``; ``False`` when a live process holds it."""
        path = self.path(name)
        for _ in range(3):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileNotFoundError:  # no folder yet, or the empty one was just removed
                self.folder.mkdir(parents=True, exist_ok=True)
                continue
            except FileExistsError:
                holder = self._read(path)
                if holder is None:  # vanished (released) or half-written: look again
                    if path.exists() and self._age(path) < 5.0:
                        return False  # being written right now by its creator
                    self._take_over(path, None)
                    continue
                if not self._stale(path, holder):
                    return False
                self._take_over(path, holder.get("nonce"))
                continue
            payload = {"host": self.host, "pid": self.pid, "nonce": uuid.uuid4().hex}
            try:
                with naming_full_disk(self.folder):
                    os.write(fd, json.dumps({**payload, "time": time.time()}).encode())
            except BaseException:  # e.g. a full disk: no half-written claim left behind
                path.unlink(missing_ok=True)
                raise
            finally:
                os.close(fd)
            return True
        return False

    def release(self, name: str) -> None:
        """Delete our claim on ``name`` (a claim someone else holds is left alone)."""
        path = self.path(name)
        holder = self._read(path)
        if holder is not None and holder.get("host") == self.host and holder.get("pid") == self.pid:
            path.unlink(missing_ok=True)

    def remove_if_empty(self) -> None:
        """Remove the folder when it holds nothing (a run that failed before storing anything
        leaves no folder behind); a folder someone writes into stays."""
        try:
            self.folder.rmdir()
        except OSError:
            pass

    def held_by_other(self, name: str) -> bool:
        """Whether a live process other than this one holds ``name``."""
        path = self.path(name)
        holder = self._read(path)
        if holder is None:
            return path.exists()
        mine = holder.get("host") == self.host and holder.get("pid") == self.pid
        return not mine and not self._stale(path, holder)

    def wait(self, name: str, done: Callable[[], bool], poll_s: float = 0.2) -> bool:
        """Wait until ``done()`` (someone else finished ``name``: return ``False``) or the claim
        can be taken (its holder died or released it unfinished: return ``True``, now ours)."""
        while True:
            if done():
                return False
            if self.acquire(name):
                if done():  # finished between the two checks
                    self.release(name)
                    return False
                return True
            time.sleep(poll_s)

    def _stale(self, path: Path, holder: dict[str, object]) -> bool:
        pid = holder.get("pid")
        if holder.get("host") == self.host and isinstance(pid, int):
            return pid == self.pid or not _pid_running(pid)
        return self._age(path) > self.lease_s

    @staticmethod
    def _age(path: Path) -> float:
        try:
            return time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return 0.0

    @staticmethod
    def _read(path: Path) -> dict[str, object] | None:
        try:  # os-level: a claim is read once per image (release), ~4x Path.read_text's speed
            fd = os.open(path, os.O_RDONLY)
            try:
                data = json.loads(os.read(fd, 4096))
            finally:
                os.close(fd)
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _take_over(self, path: Path, nonce: object) -> None:
        """Move a stale claim aside; if what moved is not the claim judged stale (someone
        replaced it meanwhile), put it back."""
        aside = path.with_name(f"{path.name}.{uuid.uuid4().hex}.stale")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return
        moved = self._read(aside)
        if moved is not None and moved.get("nonce") != nonce:
            try:
                os.link(aside, path)  # restore it unless a new claim appeared meanwhile
            except FileExistsError:
                pass
        aside.unlink(missing_ok=True)
