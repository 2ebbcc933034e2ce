"""odbench.forked.forked_map: order, errors in order, warnings, a killed worker, early stop."""

import os
import signal
import sys
import time
import warnings
from contextlib import contextmanager

import pytest

from odbench.forked import WorkerDiedError, forked_map

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork: Linux")


@contextmanager
def deadline(seconds: int):
    """Fail instead of hanging."""

    def expired(*_):
        raise TimeoutError(f"forked_map did not return within {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def no_children_left() -> bool:
    """Every forked worker was waited for (none running, no zombie)."""
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def test_results_in_order_from_this_process_and_the_children():
    parent = os.getpid()

    def fn(i):
        time.sleep(0.02 if i % 3 == 0 else 0.001)  # uneven: finished out of order
        return i * i, os.getpid(), signal.getsignal(signal.SIGINT) == signal.SIG_IGN

    with deadline(30), forked_map(fn, 40, 3) as results:
        got = list(results)
    assert [v for v, _, _ in got] == [i * i for i in range(40)]
    pids = {pid for _, pid, _ in got}
    assert got[0][1] == parent  # index 0 runs here, before forking
    assert len(pids) == 3, pids  # this process and two children all worked
    assert sum(pid == parent for _, pid, _ in got) > 1  # this one works, not only waits
    assert all(ignored for _, pid, ignored in got if pid != parent)  # Ctrl-C: the parent's
    assert no_children_left()


def test_the_first_error_in_order_is_raised_whoever_met_it_first():
    def fn(i):
        if i == 3:
            time.sleep(0.3)  # met last
            raise ValueError("three")
        if i == 7:
            raise KeyError("seven")
        return i

    seen = []
    with deadline(30), pytest.raises(ValueError, match="three"):
        with forked_map(fn, 20, 2) as results:
            seen.extend(results)
    assert seen == [0, 1, 2]
    assert no_children_left()


def test_warnings_raised_in_children_reach_the_caller():
    parent = os.getpid()

    def fn(i):
        warnings.warn(f"w{i} {os.getpid() == parent}", UserWarning, stacklevel=1)
        time.sleep(0.02 if os.getpid() == parent else 0)  # so that the children take some
        return i

    with deadline(30), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with forked_map(fn, 12, 2) as results:
            assert list(results) == list(range(12))
    messages = [str(w.message) for w in caught]
    assert sorted(m.split()[0] for m in messages) == sorted(f"w{i}" for i in range(12))
    assert any(m.endswith("False") for m in messages)  # some came from the child
    assert all(w.category is UserWarning for w in caught)


def test_a_killed_worker_is_an_error_not_a_hang():
    parent = os.getpid()

    def fn(i):
        if os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)  # every child dies at its first index
        time.sleep(0.05)  # so that the children get some
        return i

    with deadline(30), pytest.raises(WorkerDiedError, match="died"):
        with forked_map(fn, 10, 3) as results:
            list(results)
    assert no_children_left()


def test_leaving_early_stops_the_children():
    parent = os.getpid()

    def fn(i):
        time.sleep(60 if i >= 3 and os.getpid() != parent else 0.01)
        return i

    t0 = time.perf_counter()
    with deadline(30), forked_map(fn, 8, 3) as results:
        assert [next(results) for _ in range(3)] == [0, 1, 2]
    assert time.perf_counter() - t0 < 20  # the children's 60 s sleeps were cut short
    assert no_children_left()


class Picky(Exception):
    """Pickles (by its module-level name) but does not load back: two arguments, one stored."""

    def __init__(self, a, b):
        super().__init__(f"{a}-{b}")


def test_an_exception_that_does_not_load_back_arrives_as_its_text():
    parent = os.getpid()

    def fn(i):
        if os.getpid() != parent:
            raise Picky("x", "y")
        time.sleep(0.05)
        return i

    with deadline(30), pytest.raises(RuntimeError, match="Picky: x-y"):
        with forked_map(fn, 6, 2) as results:
            list(results)


def test_one_worker_or_one_index_forks_nothing():
    parent = os.getpid()
    for n, workers in ((5, 1), (1, 4), (0, 4)):
        with forked_map(lambda i: os.getpid(), n, workers) as results:
            assert list(results) == [parent] * n
