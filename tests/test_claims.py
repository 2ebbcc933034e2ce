"""``odbench.claims``: claim files on a shared prediction cache, and what they buy the runner:
resume after SIGKILL, two processes on one cache never computing the same image."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from odbench.claims import Claims


def test_claim_is_exclusive_between_live_processes(tmp_path: Path) -> None:
    a = Claims(tmp_path, pid=os.getpid())
    b = Claims(tmp_path, pid=os.getppid())  # another live process on this host
    assert a.acquire("img1")
    assert not b.acquire("img1") and b.held_by_other("img1")
    b.release("img1")  # not b's claim: left alone
    assert a.path("img1").exists()
    a.release("img1")
    assert not a.path("img1").exists()
    assert b.acquire("img1")


def test_claim_of_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    ghost = Claims(tmp_path, pid=int(dead.stdout))  # a pid that no longer runs
    assert ghost.acquire("img1")
    me = Claims(tmp_path)
    assert not me.held_by_other("img1")
    assert me.acquire("img1")
    holder = json.loads(me.path("img1").read_text())
    assert holder["pid"] == os.getpid()
    assert [p.name for p in tmp_path.iterdir()] == ["img1.claim"]  # nothing left aside


def test_claim_from_another_host_expires_after_the_lease(tmp_path: Path) -> None:
    other = Claims(tmp_path, host="node-b", pid=1)
    assert other.acquire("img1")
    assert not Claims(tmp_path, lease_s=3600).acquire("img1")
    old = os.stat(other.path("img1")).st_mtime - 7200
    os.utime(other.path("img1"), (old, old))
    assert Claims(tmp_path, lease_s=3600).acquire("img1")


def test_wait_returns_when_the_entry_appears_or_takes_an_abandoned_claim(tmp_path: Path) -> None:
    holder = Claims(tmp_path, pid=os.getppid())
    assert holder.acquire("img1")
    done = iter([False, False, True])
    assert Claims(tmp_path).wait("img1", lambda: next(done), poll_s=0.01) is False
    holder.release("img1")  # released without an entry (its run failed): the waiter takes it
    assert Claims(tmp_path).wait("img1", lambda: False, poll_s=0.01) is True
