"""Claim files: processes sharing a prediction cache never compute the same image twice.

Before predicting an image a process claims it: it makes ``<cache>/<name>.claim`` a hard link
of its *holder file* ``<cache>/.<host>-<pid>-<nonce>.holder`` (its host, pid and a random
nonce, written once per process), one ``link()`` that fails when the claim exists (atomic on
local filesystems and NFS; on a filesystem without hard links the claim is a file of its own
with that content, made with ``O_CREAT | O_EXCL``); it deletes the claim once the image's cache
entry is written (a claim whose inode is its holder's is known to be its own: no read).  A
process that finds an image claimed waits for the entry (:meth:`Claims.wait`) before going on
in the dataset's order, so two runs of one command on one cache finish together, one having
predicted what the other read.  A claim is *stale*, and may be taken over, when its holder is
gone: on the same host, its pid no longer runs; from another host, it has shown no sign of life
for longer than the lease (``$ODBENCH_CLAIM_LEASE_S``, default 30 minutes — far longer than one
batch of any method): a claim's modification time is its holder file's (one inode), which the
holder touches each time it claims an image (at most once a second).  So a run killed with
SIGKILL leaves at most its in-flight batch claimed, and the restarted run (same host) takes
those claims over at once.  Holder files go when their process is done with the folder
(:meth:`Claims.close`); those of dead processes when another one makes or closes its own.

Cache entries themselves are appended whole to each process's own pack file and checked (length,
CRC-32) when read (:mod:`odbench.cache`), so a lost race can only cost a duplicate computation of
the same bytes, never a corrupt entry.  Taking over a stale
claim renames it aside first and checks that the file it moved is the one it judged stale, so
two processes cannot both take one over.
"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from odbench.imageio import DISK_FULL, naming_full_disk

DEFAULT_LEASE_S = 1800.0
#: ``link()`` errors of a filesystem without hard links (FAT, some FUSE and SMB mounts)
_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK}
_HOLDER = ".holder"


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


def _file_host(host: str) -> str:
    return re.sub(r"[^A-Za-z0-9._]", "_", host)  # no '-': it separates the name's parts


@dataclass
class Claims:
    """Claim files in ``folder`` (the cache folder), one per image name."""

    folder: Path
    lease_s: float = field(default_factory=_lease_from_env)
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    #: this object's holder file (made on first use) and the inodes of those it made
    _holder: str | None = field(default=None, init=False, repr=False, compare=False)
    _inodes: set[tuple[int, int]] = field(
        default_factory=set, init=False, repr=False, compare=False
    )
    _touched: float = field(default=0.0, init=False, repr=False, compare=False)
    _payload: bytes = field(default=b"", init=False, repr=False, compare=False)
    _links: bool = field(default=True, init=False, repr=False, compare=False)  # hard links work

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.claim"

    def acquire(self, name: str) -> bool:
        """Claim ``name``; ``False`` when a live process holds it."""
        path = f"{self.folder}{os.sep}{name}.claim"
        for _ in range(4):
            holder = self._holder or self._make_holder()
            try:
                if self._links:
                    os.link(holder, path)
                else:
                    self._write_claim(path)
            except FileNotFoundError:  # no folder, or our holder file was removed: make it
                self._holder = None
                continue
            except FileExistsError:
                found = self._read(path)
                if found is None:  # vanished (released), or a half-written (older) claim
                    if os.path.exists(path) and self._age(path) < 5.0:
                        return False  # being written right now by its creator
                    self._take_over(path, None)
                    continue
                if not self._stale(path, found):
                    return False
                self._take_over(path, found.get("nonce"))
                continue
            except OSError as e:
                if e.errno in _NO_LINKS and self._links:  # a filesystem without hard links
                    self._links = False
                    continue
                if e.errno in DISK_FULL:
                    raise OSError(e.errno, e.strerror, str(self.folder)) from e
                raise
            now = time.time()
            if self._links and now - self._touched > 1.0:  # a sign of life, for the lease
                try:
                    os.utime(holder)
                except FileNotFoundError:  # removed meanwhile: this claim, a new holder next
                    self._holder = None
                    try:
                        os.utime(path)
                    except FileNotFoundError:
                        pass
                self._touched = now
            return True
        return False

    def release(self, name: str) -> None:
        """Delete our claim on ``name`` (a claim someone else holds is left alone)."""
        path = f"{self.folder}{os.sep}{name}.claim"
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if (st.st_dev, st.st_ino) not in self._inodes:  # made by a process forked from us?
            holder = self._read(path)
            if holder is None or holder.get("host") != self.host or holder.get("pid") != self.pid:
                return
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def close(self) -> None:
        """Remove this identity's holder files (any process's of it: forked workers make their
        own) and those of dead processes; the claims themselves stay until released."""
        self._holder, self._touched = None, 0.0
        self._sweep(mine=True)

    def remove_if_empty(self) -> None:
        """:meth:`close`, then remove the folder when it holds nothing (a run that failed before
        storing anything leaves no folder behind); a folder someone writes into stays."""
        self.close()
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

    def _write_claim(self, path: str) -> None:
        """The claim as a file of its own with the holder's content (``O_CREAT | O_EXCL``): where
        the filesystem has no hard links."""
        with naming_full_disk(self.folder):
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            try:
                os.write(fd, self._payload)
            except BaseException:  # e.g. a full disk: no half-written claim left behind
                os.unlink(path)
                raise
            finally:
                os.close(fd)

    def _make_holder(self) -> str:
        """This object's holder file, written whole before any claim links it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if not self._inodes:  # the first in this folder: clear dead processes' away
            self._sweep(mine=False)
        nonce = uuid.uuid4().hex
        path = f"{self.folder}{os.sep}.{_file_host(self.host)}-{self.pid}-{nonce}{_HOLDER}"
        payload = {"host": self.host, "pid": self.pid, "nonce": nonce, "time": time.time()}
        self._payload = json.dumps(payload).encode()
        with naming_full_disk(self.folder):
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            try:
                os.write(fd, self._payload)
                st = os.fstat(fd)
            except BaseException:  # e.g. a full disk: no half-written holder left behind
                os.unlink(path)
                raise
            finally:
                os.close(fd)
        self._inodes.add((st.st_dev, st.st_ino))
        self._holder, self._touched = path, time.time()
        return path

    def _sweep(self, mine: bool) -> None:
        """Remove the holder files of dead processes (same host: pid gone; another host: not
        touched for the lease) and, with ``mine``, those of this identity."""
        own = _file_host(self.host)
        try:
            entries = [e for e in os.scandir(self.folder) if e.name.endswith(_HOLDER)]
        except OSError:
            return
        for entry in entries:
            host, pid, *_ = entry.name[1 : -len(_HOLDER)].rsplit("-", 2) + ["", ""]
            try:
                if host == own and int(pid) == self.pid:
                    gone = mine
                elif host == own:
                    gone = not _pid_running(int(pid))
                else:
                    gone = time.time() - entry.stat().st_mtime > self.lease_s
                if gone:
                    os.unlink(entry.path)
            except (OSError, ValueError):
                pass

    def _stale(self, path: str | Path, holder: dict[str, object]) -> bool:
        pid = holder.get("pid")
        if holder.get("host") == self.host and isinstance(pid, int):
            return pid == self.pid or not _pid_running(pid)
        return self._age(path) > self.lease_s

    @staticmethod
    def _age(path: str | Path) -> float:
        try:
            return time.time() - os.stat(path).st_mtime
        except FileNotFoundError:
            return 0.0

    @staticmethod
    def _read(path: str | Path) -> dict[str, object] | None:
        try:  # os-level: ~4x Path.read_text's speed
            fd = os.open(path, os.O_RDONLY)
            try:
                data = json.loads(os.read(fd, 4096))
            finally:
                os.close(fd)
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _take_over(self, path: str | Path, nonce: object) -> None:
        """Move a stale claim aside; if what moved is not the claim judged stale (someone
        replaced it meanwhile), put it back."""
        aside = f"{path}.{uuid.uuid4().hex}.stale"
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
        try:
            os.unlink(aside)
        except FileNotFoundError:
            pass
