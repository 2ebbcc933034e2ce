"""An ordered parallel map in forked processes, this process working too (Linux, no torch).

:func:`forked_map` computes ``fn(i)`` for ``i`` in ``range(n)`` in this process and in
``workers - 1`` processes forked from it, and yields the results in index order.  Built for
``odbench score``, whose per-image work (decoding two PNGs, one histogram) is about a
millisecond: a :class:`multiprocessing.Pool` of ``workers`` processes left this process idle
but for its three handler threads, which took ~10 % of the CPU time from the workers on a
2-core machine; here this process takes work like the others (``odbench bench metrics``).

* ``fn(0)`` runs here before forking, so the children inherit what it loaded (OpenCV,
  libdeflate, lookup tables) instead of each loading it again.
* Indices 1..n-1 are tickets in a pipe (4 bytes each, written one at a time, so each read gets
  a whole one); every process takes the next ticket when it is free, so a slow index does not
  hold up the others.  A child sends back (index, result, warnings raised) through its own
  pipe; ``fn`` is never pickled (the children are forks), only the results.
* Results are yielded in index order; an exception raised by ``fn(i)`` is raised when index
  ``i``'s turn comes, so the error reported is the first in order whichever process met it
  first.  Warnings a child caught are re-issued here (``warnings.warn``) with its results.
* A child that dies (killed, out of memory) is an error, not a hang.  Leaving the context
  (done, an error, Ctrl-C) kills the children (which ignore Ctrl-C: the parent handles it).
* No native worker thread exists when forking: a child inherits the memory of the parent's
  threads, not the threads, so a lock one of them held at that instant stays locked forever in
  the child.  OpenCV's pool did this (a worker descheduled on a busy machine while holding its
  mutex: the child then blocked in ``pthread_mutex_lock`` in its first parallel OpenCV call,
  e.g. ``cv2.distanceTransform``, once in tens of calls of ``score --workers 2``), so OpenCV
  is set to one thread before forking (``cv2.setNumThreads(1)`` joins its worker threads;
  ``0`` leaves them running) and back when the map ends: this process and the children each
  work single-threaded, one per core.  OpenBLAS (numpy's and OpenCV's) stops its threads
  itself at fork (``pthread_atfork``); torch is never loaded here.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from odbench.errors import OdbenchError

T = TypeVar("T")

TICKET = 4  # bytes per index in the ticket pipe (PIPE_BUF >= 512: one write is atomic)


class WorkerDiedError(OdbenchError, RuntimeError):
    """A forked worker ended without returning its result (killed, out of memory)."""


@contextmanager
def forked_map(fn: Callable[[int], T], n: int, workers: int) -> Iterator[Iterator[T]]:
    """``fn(0), fn(1), ... fn(n - 1)`` in order, computed by this process and ``workers - 1``
    forked children (see the module docstring); ``workers == 1`` or ``n <= 1``: here, lazily.
    Leaving the context stops the children."""
    if workers <= 1 or n <= 1:
        yield (fn(i) for i in range(n))
        return
    first = _here(fn, 0)  # before forking: the children inherit what it loaded
    if not first[0]:
        raise first[1]
    with _native_threads_stopped():
        children = _Children(fn, n, min(workers, n) - 1)
        try:
            yield children.results(first)
        finally:
            children.stop()


@contextmanager
def _native_threads_stopped() -> Iterator[None]:
    """OpenCV (if loaded) single-threaded, its worker threads joined, until the context ends;
    then its thread count as before (see the module docstring)."""
    cv2 = sys.modules.get("cv2")
    if cv2 is None:  # not loaded: the children cannot inherit its pool
        yield
        return
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)  # joins the pool's threads now (0 would keep them)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


Outcome = tuple[bool, Any, list[Any]]  # (ok, the result or the exception, warnings caught)


def _here(fn: Callable[[int], Any], i: int) -> Outcome:
    """``fn(i)`` in this process (its warnings go where the caller's filters send them)."""
    try:
        return True, fn(i), []
    except Exception as e:  # raised when index i's turn comes
        return False, e, []


def _child(fn: Callable[[int], Any], tickets: int, out_fd: int) -> None:
    """A forked worker: take tickets until there are none, send each outcome; never returns."""
    code = 1
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the parent stops us with it
        with os.fdopen(out_fd, "wb") as out:
            while len(ticket := os.read(tickets, TICKET)) == TICKET:
                i = int.from_bytes(ticket, "little")
                data = _pickled(i, _recorded(fn, i))
                out.write(len(data).to_bytes(8, "little"))
                out.write(data)
                out.flush()
        code = 0
    finally:
        os._exit(code)  # no atexit handlers, no flushing the parent's buffers twice


def _recorded(fn: Callable[[int], Any], i: int) -> Outcome:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outcome = _here(fn, i)
    return outcome[0], outcome[1], [w.message for w in caught]


def _pickled(i: int, outcome: Outcome) -> bytes:
    """The outcome as bytes that load again; an exception that does not (or a result that
    does not pickle) is sent as a RuntimeError with its text."""
    try:
        data = pickle.dumps((i, *outcome), protocol=pickle.HIGHEST_PROTOCOL)
        if not outcome[0]:
            pickle.loads(data)  # some exception classes do not load back
        return data
    except Exception as e:
        what = outcome[1] if not outcome[0] else e
        error = RuntimeError(f"{type(what).__name__}: {what}")
        return pickle.dumps((i, False, error, [str(m) for m in outcome[2]]))


class _Children:
    """``count`` forked workers, the ticket feeder and one receiving thread per worker."""

    def __init__(self, fn: Callable[[int], Any], n: int, count: int) -> None:
        self.fn, self.n = fn, n
        self.done: dict[int, Outcome] = {}
        self.changed = threading.Condition()
        self.tickets_r, self.tickets_w = os.pipe()
        self.pids: list[int] = []
        readers: list[int] = []
        try:
            for _ in range(count):
                r, w = os.pipe()
                readers.append(r)
                pid = os.fork()
                if pid == 0:
                    os.close(r)
                    os.close(self.tickets_w)  # else the tickets never end
                    _child(fn, self.tickets_r, w)
                os.close(w)
                self.pids.append(pid)
        except BaseException:  # no process or pipe left behind (fork: out of memory...)
            self.threads = []
            os.close(self.tickets_w)
            self.stop()
            for r in readers:
                os.close(r)
            raise
        self.running = len(readers)
        self.feeding = True
        # threads only after the last fork (forking a process with threads is unsafe)
        self.threads = [threading.Thread(target=self._feed, daemon=True)]
        self.threads += [
            threading.Thread(target=self._receive, args=(r,), daemon=True) for r in readers
        ]
        for t in self.threads:
            t.start()

    def _feed(self) -> None:
        try:
            for i in range(1, self.n):
                if not self.feeding:
                    break
                os.write(self.tickets_w, i.to_bytes(TICKET, "little"))
        except OSError:  # every reader gone: stopped early
            pass
        finally:
            os.close(self.tickets_w)

    def _receive(self, fd: int) -> None:
        try:
            with os.fdopen(fd, "rb") as pipe:
                while len(header := pipe.read(8)) == 8:
                    data = pipe.read(int.from_bytes(header, "little"))
                    i, ok, value, caught = pickle.loads(data)  # from our own fork
                    with self.changed:
                        self.done[i] = (ok, value, caught)
                        self.changed.notify_all()
        except Exception:  # a worker killed mid-message: counted as died below
            pass
        finally:
            with self.changed:
                self.running -= 1
                self.changed.notify_all()

    def _take(self) -> int | None:
        ticket = os.read(self.tickets_r, TICKET)
        return int.from_bytes(ticket, "little") if len(ticket) == TICKET else None

    def results(self, first: Outcome) -> Iterator[Any]:
        self.done[0] = first
        tickets_left = True
        for k in range(self.n):
            while True:
                with self.changed:
                    if k in self.done:
                        ok, value, caught = self.done.pop(k)
                        break
                    if not tickets_left:
                        if self.running == 0:
                            raise WorkerDiedError(
                                "a worker process died before returning its result (killed? "
                                "out of memory?); run again, or with --workers 1"
                            )
                        self.changed.wait()
                        continue
                i = self._take()  # rather than wait idle, take the next index
                if i is None:
                    tickets_left = False
                    continue
                outcome = _here(self.fn, i)
                with self.changed:
                    self.done[i] = outcome
            for message in caught:  # the Warning itself: its class and arguments
                warnings.warn(message, stacklevel=1)
            if not ok:
                raise value
            yield value

    def stop(self) -> None:
        self.feeding = False
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for pid in self.pids:
            os.waitpid(pid, 0)
        os.close(self.tickets_r)  # a feeder blocked on a full pipe gets EPIPE
        for t in self.threads:
            t.join()
