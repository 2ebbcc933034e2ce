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
* A child that dies (killed, out of memory) is an error, not a hang, raised at the next result
  this process waits for, not once the others have done all the work (a child that ends
  cleanly sends :data:`FINISHED` last).  Leaving the context (done, an error, Ctrl-C) kills
  the children (which ignore Ctrl-C: the parent handles it).
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
from contextlib import ExitStack, contextmanager
from functools import partial
from typing import Any, TypeVar

from odbench.errors import OdbenchError
from odbench.messages import Slots, read_exactly, read_message, widen_pipe, write_message

T = TypeVar("T")

TICKET = 4  # bytes per index in the ticket pipe (PIPE_BUF >= 512: one write is atomic)
FINISHED = bytes(8)  # a message of length 0: a forked_map child's last, when no ticket is left


class WorkerDiedError(OdbenchError, RuntimeError):
    """A forked worker ended without returning its result (killed, out of memory), or could
    not be started (a limit on processes or open files)."""


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


#: Held back while forking: a child inherits the parent's handlers, and one that raises (eval's
#: SIGTERM handler raises KeyboardInterrupt) would unwind the child through the parent's code if
#: the parent stopped it before it set its own (a run of a few images stops its workers at once).
_HELD = {signal.SIGINT, signal.SIGTERM}
_mask: set[int | signal.Signals] = set()  # the parent's signal mask before the fork, for the child


def _fork() -> int:
    """``os.fork()`` with :data:`_HELD` blocked until the child has set its dispositions
    (:func:`_as_child`); in the parent, the mask is restored at once."""
    _mask.clear()
    _mask.update(signal.pthread_sigmask(signal.SIG_BLOCK, _HELD))
    try:
        pid = os.fork()
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, _mask)
        raise
    if pid:
        signal.pthread_sigmask(signal.SIG_SETMASK, _mask)
    return pid


def _as_child() -> None:
    """A forked worker's signals: Ctrl-C is the parent's to handle, SIGTERM (the parent stopping
    it) ends it; then what was held back while forking is delivered."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, _mask)


def _end(pid: int) -> None:
    """SIGTERM to a child, then SIGCONT: a stopped child (SIGSTOP, a debugger) handles the
    SIGTERM only once continued, and waiting for it would never return (Ctrl-C hung)."""
    for signum in (signal.SIGTERM, signal.SIGCONT):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            return


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
        _as_child()
        with os.fdopen(out_fd, "wb") as out:
            while len(ticket := os.read(tickets, TICKET)) == TICKET:
                i = int.from_bytes(ticket, "little")
                data = _pickled(i, _recorded(fn, i))
                out.write(len(data).to_bytes(8, "little"))
                out.write(data)
                out.flush()
            out.write(FINISHED)
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


def _not_started(error: OSError, started: int) -> WorkerDiedError:
    """A worker refused (a limit on processes or open files) as one line."""
    why = f"could not start worker process {started + 1} ({error.strerror or error})"
    return WorkerDiedError(f"{why}; run with fewer --workers")


def _no_thread(error: RuntimeError) -> WorkerDiedError:
    """A thread refused (a limit on processes, which counts threads, or memory for its stack)
    as one line."""
    return WorkerDiedError(
        f"could not start a thread for the workers ({error}); run with fewer --workers"
    )


class _Children:
    """``count`` forked workers, the ticket feeder and one receiving thread per worker."""

    def __init__(self, fn: Callable[[int], Any], n: int, count: int) -> None:
        self.fn, self.n = fn, n
        self.done: dict[int, Outcome] = {}
        self.changed = threading.Condition()
        self.died = False  # a child ended without FINISHED: its index, if it held one, is lost
        self.pids: list[int] = []
        self.threads: list[threading.Thread] = []  # started
        readers: list[int] = []
        try:
            self.tickets_r, self.tickets_w = os.pipe()
        except OSError as e:
            raise _not_started(e, 0) from e
        try:
            for _ in range(count):
                r, w = os.pipe()
                readers.append(r)
                try:
                    pid = _fork()
                except BaseException:  # its pipe's write end is ours alone
                    os.close(w)
                    raise
                if pid == 0:
                    os.close(r)
                    os.close(self.tickets_w)  # else the tickets never end
                    _child(fn, self.tickets_r, w)
                os.close(w)
                self.pids.append(pid)
        except BaseException as e:  # no process or pipe left behind (fork: out of memory...)
            self._abandon(readers)
            if isinstance(e, OSError):
                raise _not_started(e, len(self.pids)) from e
            raise
        self.running = len(readers)
        self.feeding = True
        # threads only after the last fork (forking a process with threads is unsafe)
        threads = [threading.Thread(target=self._feed, daemon=True)]
        threads += [threading.Thread(target=self._receive, args=(r,), daemon=True) for r in readers]
        try:
            for t in threads:
                t.start()
                self.threads.append(t)
        except RuntimeError as e:  # can't start new thread
            self._abandon(readers)
            raise _no_thread(e) from e

    def _abandon(self, readers: list[int]) -> None:
        """Undo a start refused (a fork, a pipe or a thread): the children stopped and waited
        for, every pipe closed (the feeder, started first, and a started receiver close their
        own)."""
        if not self.threads:
            os.close(self.tickets_w)
        self.stop()
        for r in readers[max(0, len(self.threads) - 1) :]:
            os.close(r)

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
        """One child's results until its FINISHED; an end without it is a death."""
        finished = False
        try:
            with os.fdopen(fd, "rb") as pipe:
                while len(header := pipe.read(8)) == 8 and not (finished := header == FINISHED):
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
                self.died = self.died or not finished
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
                    if self.died or (not tickets_left and self.running == 0):
                        raise WorkerDiedError(
                            "a worker process died before returning its result (killed? "
                            "out of memory?); run again, or with --workers 1"
                        )
                    if not tickets_left:
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
            _end(pid)
        for pid in self.pids:
            os.waitpid(pid, 0)
        os.close(self.tickets_r)  # a feeder blocked on a full pipe gets EPIPE
        for t in self.threads:
            t.join()


# ----------------------------------------------------------------------------- two-stage pipeline


class Pipeline:
    """Two stages of per-index work in this process and ``workers - 1`` forked children, for a
    caller (``odbench eval``) that runs a model between them in this process's main thread.

    * ``load(i) -> (public, kept)`` runs for every index, in whichever process is free first
      (tickets, as in :func:`forked_map`; at most ``depth`` ahead of the index the caller
      takes next, so memory does not grow with ``n``).  ``public`` comes back to the caller,
      in index order, from :meth:`loaded`; ``kept`` (None: nothing) stays in the process that
      loaded ``i`` (a decoded GT mask need not travel twice).
    * ``finish(i, kept, payload)`` runs in that same process once the caller :meth:`submit`\\ s
      ``payload`` for ``i`` (a model's output); :meth:`finished` returns its outcome.  A
      child takes its finish tasks before new tickets.  Tasks are written by the caller's
      thread (a few hundred bytes each, the arrays going through the slots: a pipe of 1 MiB
      does not fill); results are read by one thread per child, so a child never waits to
      write one.  (A sender thread per child cost more than it saved: each task handed the
      GIL back and forth between it and the caller.)
    * Arrays in the messages (a decoded image going to the caller, a model's map coming back)
      travel through shared memory (:class:`~odbench.messages.Slots`: one copy in, one copy
      out), not inside the pickle (four copies and a pipe's worth of system calls for each).

    Outcomes are ``(ok, value)``: an exception is returned, not raised, so the caller decides
    in index order.  This process takes a ticket itself whenever it would otherwise wait (and
    finishes what it loaded at once).  ``workers == 1``: everything here, in order, lazily.
    A child that dies is a :class:`WorkerDiedError` at the next wait.  Forking: as in
    :func:`forked_map` (index 0 is loaded here first; torch, when loaded, one thread in the
    children, as ``torch.utils.data`` workers do); OpenCV, when loaded, single-threaded while the
    pipeline runs, whatever ``workers``."""

    def __init__(
        self,
        load: Callable[[int], tuple[Any, Any]],
        finish: Callable[[int, Any, Any], Any],
        n: int,
        workers: int,
        depth: int,
    ) -> None:
        self.load, self.finish = load, finish
        self.n, self.depth = n, max(1, depth)
        self.kept: dict[int, Any] = {}  # what this process loaded and keeps
        self.owner: dict[int, int] = {}  # index -> child number; absent: here
        self.done: dict[tuple[str, int], tuple[bool, Any]] = {}
        self.changed = threading.Condition()
        self.taken = 0  # loads handed to the caller
        self.written = 0  # tickets issued
        self.children: list[_Child] = []
        self.dead = False
        self.stack = ExitStack()
        # one thread per process, here too: OpenCV's worker spun on sched_yield after each
        # call (~60 times per image of eval: ~0.1 ms of CPU), for calls too short to share
        self.stack.enter_context(_native_threads_stopped())
        if workers > 1 and n > 1:
            self._load_here(0)  # before forking: the children inherit what it imported
            self.written = 1
            try:
                self.tickets_r, self.tickets_w = os.pipe()
                self.stack.callback(self._stop)
                os.set_blocking(self.tickets_r, False)
                for k in range(min(workers, n) - 1):
                    self.children.append(_Child.fork(self, k))
            except BaseException as e:  # no child, pipe or OpenCV setting left behind
                self.stack.close()
                if isinstance(e, OSError):
                    raise _not_started(e, len(self.children)) from e
                raise
            try:
                for child in self.children:
                    child.start_threads(self)
            except RuntimeError as e:  # can't start new thread: stop what was started
                self.stack.close()
                raise _no_thread(e) from e

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.close()

    # -- the caller's side

    def loaded(self) -> Iterator[tuple[int, tuple[bool, Any]]]:
        """``(i, load outcome)`` for every index, in order."""
        for i in range(self.n):
            self._issue()
            outcome = self._wait(("L", i))
            self.taken = i + 1
            yield i, outcome

    def submit(self, i: int, payload: Any) -> None:
        """``finish(i, kept, payload)`` in the process that loaded ``i`` (here: now)."""
        k = self.owner.pop(i, None)
        if k is None:
            self.done["F", i] = _outcome(self.finish, i, self.kept.pop(i, None), payload)
        else:
            self.children[k].send((i, payload))

    def finished(self, i: int) -> tuple[bool, Any]:
        """The outcome of ``finish`` for ``i`` (submitted before)."""
        return self._wait(("F", i))

    # -- internals

    def _issue(self) -> None:
        """Tickets up to ``depth`` ahead of the caller."""
        if not self.children:
            return
        while self.written < min(self.n, self.taken + self.depth):
            os.write(self.tickets_w, self.written.to_bytes(TICKET, "little"))
            self.written += 1

    def _load_here(self, i: int) -> None:
        ok, value = _outcome(self.load, i)
        if ok:
            value, kept = value
            if kept is not None:
                self.kept[i] = kept
        self.done["L", i] = (ok, value)

    def _wait(self, key: tuple[str, int]) -> tuple[bool, Any]:
        while True:
            with self.changed:
                if key in self.done:
                    return self.done.pop(key)
            if not self.children:  # one worker: load on demand
                self._load_here(key[1])
                continue
            try:  # rather than wait idle, load the next ticket here
                ticket = os.read(self.tickets_r, TICKET)
            except BlockingIOError:
                ticket = b""
            if len(ticket) == TICKET:
                self._load_here(int.from_bytes(ticket, "little"))
                continue
            with self.changed:
                if key in self.done:
                    return self.done.pop(key)
                if self.dead:
                    raise WorkerDiedError(
                        "a worker process died before returning its result (killed? out of "
                        "memory?); run again, or with --workers 1"
                    )
                self.changed.wait(0.05)  # a ticket this process could take may appear

    def _received(self, k: int, message: tuple[str, int, bool, Any, list[Any]]) -> None:
        stage, i, ok, value, caught = message
        for warning in caught:
            warnings.warn(warning, stacklevel=1)
        if stage == "L" and ok and value[1]:  # the child keeps something for finish
            self.owner[i] = k
        if stage == "F":  # the child has copied the task's arrays out of its slots
            self.children[k].down.release(i)
        with self.changed:
            self.done[stage, i] = (ok, value[0] if stage == "L" and ok else value)
            self.changed.notify_all()

    def _died(self) -> None:
        with self.changed:
            self.dead = True
            self.changed.notify_all()

    def _stop(self) -> None:
        os.close(self.tickets_w)
        for child in self.children:
            child.stop()
        for child in self.children:
            child.join()
        os.close(self.tickets_r)


def _outcome(fn: Callable[..., Any], *args: Any) -> tuple[bool, Any]:
    try:
        return True, fn(*args)
    except Exception as e:
        return False, e


class _Child:
    """One forked worker of a :class:`Pipeline`: its task pipe, result pipe and thread."""

    def __init__(
        self, pid: int, tasks_w: int, results_r: int, number: int, up: Slots, down: Slots
    ) -> None:
        self.pid, self.tasks_w, self.results_r, self.number = pid, tasks_w, results_r, number
        self.up, self.down = up, down  # the child's slots (loads), this process's (tasks)
        self.tasks: Any = os.fdopen(tasks_w, "wb")
        self.threads: list[threading.Thread] = []

    @classmethod
    def fork(cls, pipeline: Pipeline, number: int) -> _Child:
        fds: list[int] = []
        try:  # a pipe or the fork refused (limits): no descriptor left open
            fds += [*os.pipe(), *os.pipe()]
            tasks_r, tasks_w, results_r, results_w = fds
            for fd in (tasks_w, results_w):
                widen_pipe(fd)
            count = min(pipeline.depth + 2, 32)  # in flight at once, at most
            up, down = Slots(count), Slots(count)
            pid = _fork()
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        if pid == 0:
            os.close(tasks_w)
            os.close(results_r)
            os.close(pipeline.tickets_w)
            for other in pipeline.children:  # siblings' pipes are not ours
                os.close(other.tasks_w)
                os.close(other.results_r)
            _pipeline_child(pipeline, tasks_r, results_w, up, down)
        os.close(tasks_r)
        os.close(results_w)
        return cls(pid, tasks_w, results_r, number, up, down)

    def start_threads(self, pipeline: Pipeline) -> None:
        """Threads only after the last fork (forking a process with threads is unsafe)."""
        thread = threading.Thread(target=self._receive, args=(pipeline,), daemon=True)
        thread.start()
        self.threads = [thread]

    def send(self, task: tuple[int, Any]) -> None:
        if self.tasks is None:
            return
        try:
            write_message(self.tasks, task, self.down, task[0])
        except OSError:  # the child is gone: its receiver reports it
            self._close_tasks()

    def _close_tasks(self) -> None:
        tasks, self.tasks = self.tasks, None
        if tasks is not None:
            try:
                tasks.close()
            except OSError:  # a message the child never read: it is gone anyway
                pass

    def _receive(self, pipeline: Pipeline) -> None:
        try:
            with os.fdopen(self.results_r, "rb") as pipe:
                while (message := read_message(pipe.read, self.up)) is not None:
                    pipeline._received(self.number, message)  # from our own fork
        except Exception:  # a worker killed mid-message
            pass
        pipeline._died()

    def stop(self) -> None:
        self._close_tasks()
        _end(self.pid)

    def join(self) -> None:
        os.waitpid(self.pid, 0)
        for t in self.threads:
            t.join()
        if not self.threads:  # stopped before its receiver started (which closes the pipe)
            os.close(self.results_r)
        self.up.close()
        self.down.close()


def _ignoring_index(task: Callable[[], Any]) -> Callable[[int], Any]:
    return lambda _: task()


def _pipeline_child(pipeline: Pipeline, tasks: int, out_fd: int, up: Slots, down: Slots) -> None:
    """A forked :class:`Pipeline` worker: finish tasks first, else the next ticket; never
    returns."""
    import select

    code = 1
    try:
        _as_child()
        torch = sys.modules.get("torch")
        if torch is not None:
            torch.set_num_threads(1)
        kept: dict[int, Any] = {}
        tickets: int | None = pipeline.tickets_r
        with os.fdopen(out_fd, "wb") as out:
            while True:
                ready = select.select([tasks] + ([tickets] if tickets is not None else []), [], [])
                if tasks in ready[0]:
                    message = read_message(partial(read_exactly, tasks), down)
                    if message is None:
                        break
                    i, payload = message  # from our own parent
                    up.release(i)  # the caller took i's loaded arrays (copied) before this
                    task = partial(pipeline.finish, i, kept.pop(i, None), payload)
                    ok, value, caught = _recorded(_ignoring_index(task), i)
                    write_message(out, ("F", i, ok, value, caught))
                    continue
                try:
                    ticket = os.read(tickets, TICKET)  # type: ignore[arg-type]
                except BlockingIOError:  # another process took it
                    continue
                if len(ticket) < TICKET:  # no more tickets: finish tasks only
                    tickets = None
                    continue
                i = int.from_bytes(ticket, "little")
                ok, value, caught = _recorded(pipeline.load, i)
                slots = None
                if ok:
                    public, keep = value
                    if keep is not None:  # a task for i will come (it frees the slots)
                        kept[i], slots = keep, up
                    value = (public, keep is not None)
                write_message(out, ("L", i, ok, value, caught), slots, i)
        code = 0
    finally:
        os._exit(code)
