"""``odbench.claims``: claim files on a shared prediction cache, and what they buy the runner:
resume after SIGKILL, two processes on one cache never computing the same image."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

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
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["img1.claim", _holder_name(holder)])  # the ghost's holder removed
    me.release("img1")
    me.close()
    assert not list(tmp_path.iterdir())  # nothing left aside, nothing left behind


def _holder_name(holder: dict[str, object]) -> str:
    import re

    host = re.sub(r"[^A-Za-z0-9._]", "_", str(holder["host"]))
    return f".{host}-{holder['pid']}-{holder['nonce']}.holder"


def test_a_claim_is_one_link_of_its_holder_file_and_released_without_reading_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Claiming is one ``link()`` of the process's holder file (no file written per image);
    releasing a claim whose inode is the holder's reads nothing."""
    me = Claims(tmp_path)
    assert me.acquire("img1") and me.acquire("img2")
    holder = json.loads(me.path("img1").read_text())
    (made,) = tmp_path.glob("*.holder")
    assert made.name == _holder_name(holder) and made.stat().st_nlink == 3
    assert me.path("img2").stat().st_ino == made.stat().st_ino
    monkeypatch.setattr(Claims, "_read", staticmethod(lambda path: pytest.fail("read")))
    me.release("img1")
    assert not me.path("img1").exists() and made.stat().st_nlink == 2


def test_claims_of_a_process_forked_from_the_holder_are_released_by_it(tmp_path: Path) -> None:
    """A forked worker claims in its parent's name (its own holder file, the parent's pid): the
    parent releases those claims and removes the worker's holder file when it closes."""
    claims = Claims(tmp_path)
    pid = os.fork()
    if pid == 0:  # the worker: claims img1 with a holder file of its own, then exits
        os._exit(0 if claims.acquire("img1") else 1)
    assert os.waitpid(pid, 0)[1] == 0
    assert len(list(tmp_path.glob("*.holder"))) == 1
    assert Claims(tmp_path, pid=os.getppid()).held_by_other("img1")  # held, by this process
    claims.release("img1")
    assert not claims.path("img1").exists()
    claims.close()
    assert not list(tmp_path.iterdir())


def test_a_holder_that_keeps_claiming_stays_live_for_other_hosts(tmp_path: Path) -> None:
    """The lease runs from the holder's last sign of life: a claim's time is its holder file's,
    touched each time it claims (at most once a second)."""
    other = Claims(tmp_path, host="node-b", pid=1)
    assert other.acquire("img1")
    old = os.stat(other.path("img1")).st_mtime - 7200
    os.utime(other.path("img1"), (old, old))  # silent for two hours...
    other._touched = 0.0  # (more than a second ago)
    assert other.acquire("img2")  # ...until it claims another image
    assert not Claims(tmp_path, lease_s=3600).acquire("img1")


def test_a_full_disk_while_claiming_is_named_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(*args: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    claims = Claims(tmp_path / "c")
    monkeypatch.setattr(os, "write", full)  # the holder file cannot be written
    with pytest.raises(OSError, match="No space left") as info:
        claims.acquire("img1")
    assert info.value.filename == str(tmp_path / "c") and not list((tmp_path / "c").iterdir())
    monkeypatch.undo()
    assert claims.acquire("img1")
    monkeypatch.setattr(os, "link", full)  # nor a claim linked (a directory block)
    with pytest.raises(OSError, match="No space left") as info:
        claims.acquire("img2")
    assert info.value.filename == str(tmp_path / "c") and not claims.path("img2").exists()


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


# --------------------------------------------------------------------------- the runner

#: A child process that evaluates ``toy`` with a slow center-prior logging what it predicts.
CHILD = """
import json, sys, time
from pathlib import Path
from odbench.cards import method_card
from odbench.data.base import create_dataset
from odbench.runner import run
from odbench.methods.center_prior import CenterPrior
from odbench.metrics.protocols import get_protocol

cache, log, delay, peers = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
hang_after = int(sys.argv[5])  # > 0: the batch after that many predicted images never returns
(log.parent / f"ready-{log.name}-{time.time_ns()}").touch()
while len(list(log.parent.glob(f"ready-{log.name}-*"))) < peers:  # start together
    time.sleep(0.01)

class Slow(CenterPrior):
    done = 0
    in_workers = False  # batches in the main process, as a model

    def predict(self, images):
        if hang_after and Slow.done >= hang_after:
            time.sleep(3600)  # killed here, with this batch claimed
        Slow.done += len(images)
        out = super().predict(images)
        time.sleep(delay)
        with open(log, "a") as f:
            f.write("".join(f"{im.shape[0]}\\n" for im in images))
        return out

method = Slow(method_card("center-prior"))
method.name = "center-prior"
ds = create_dataset("toy")
out = run(method, ds, get_protocol("odbench"), dataset_name="toy", batch_size=2, workers=1,
          cache_dir=cache, results_dir=None)
print(json.dumps({"metrics": out.metrics, "n_predicted": out.info["n_predicted"]}))
"""


def _child(
    tmp_path: Path, log: str, delay: float, peers: int = 1, hang_after: int = 0
) -> subprocess.Popen[str]:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    args = [sys.executable, str(script), str(tmp_path / "cache"), str(tmp_path / log)]
    args += [str(delay), str(peers), str(hang_after)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(child: subprocess.Popen[str], timeout: float = 30) -> str:
    """The child's stdout once it exits 0 (killed, and the test failed, if it hangs)."""
    try:
        out, err = child.communicate(timeout=timeout)
    finally:
        child.kill()
    assert child.returncode == 0, err
    return out


def _entries(tmp_path: Path, suffix: str) -> list[Path]:
    return sorted((tmp_path / "cache").rglob(f"*{suffix}"))


def _stored(tmp_path: Path) -> list[str]:
    """The ids the cache holds entries of (complete ones: a torn tail is not one)."""
    from odbench.cache import PredictionCache

    folders = {p.parent for p in _entries(tmp_path, ".pack")}
    return sorted(i for folder in folders for i in PredictionCache(folder).ids())


def _in_flight(tmp_path: Path) -> list[Path]:
    """Claims on images that have no cache entry yet."""
    stored = set(_stored(tmp_path))
    return [p for p in _entries(tmp_path, ".claim") if p.stem not in stored]


def _fresh_metrics(tmp_path: Path) -> dict[str, object]:
    from odbench.cards import method_card
    from odbench.data.base import create_dataset
    from odbench.methods.center_prior import CenterPrior
    from odbench.metrics.protocols import get_protocol
    from odbench.runner import run

    method = CenterPrior(method_card("center-prior"))
    method.name = "center-prior"
    out = run(
        method,
        create_dataset("toy"),
        get_protocol("odbench"),
        dataset_name="toy",
        cache_dir=tmp_path / "fresh",
        results_dir=None,
    )
    return out.metrics  # type: ignore[return-value]


def test_sigkill_then_resume_recomputes_only_the_batch_in_flight(tmp_path: Path) -> None:
    child = _child(tmp_path, "killed.log", delay=0.0, hang_after=6)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (  # images are claimed as they are loaded
        len(_stored(tmp_path)) >= 6 and len(_in_flight(tmp_path)) >= 2
    ):
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)  # while it predicts its 4th batch (which never returns)
    child.wait()
    done = len(_stored(tmp_path))
    assert done == 6
    assert len(_in_flight(tmp_path)) == 2  # the batch in flight is left claimed
    from odbench.cache import PredictionCache

    (pack,) = _entries(tmp_path, ".pack")
    for sample_id in _stored(tmp_path):  # no partial entries
        assert PredictionCache(pack.parent).get(sample_id)[0].shape == (96, 128)
    result = json.loads(_finish(_child(tmp_path, "resumed.log", delay=0.0)))
    assert result["n_predicted"] == 16 - done  # the killed run's claims were taken over
    assert (tmp_path / "resumed.log").read_text().count("\n") == 16 - done
    assert not _entries(tmp_path, ".claim")
    assert not _entries(tmp_path, ".holder")  # the killed run's too
    assert result["metrics"] == _fresh_metrics(tmp_path)


def test_two_processes_on_one_cache_never_compute_the_same_image(tmp_path: Path) -> None:
    children = [_child(tmp_path, "both.log", delay=0.2, peers=2) for _ in range(2)]
    results = [json.loads(_finish(child)) for child in children]
    assert sum(r["n_predicted"] for r in results) == 16
    assert (tmp_path / "both.log").read_text().count("\n") == 16  # each image predicted once
    assert results[0]["metrics"] == results[1]["metrics"] == _fresh_metrics(tmp_path)
    assert len(_stored(tmp_path)) == 16 and not _entries(tmp_path, ".claim")
    assert not _entries(tmp_path, ".holder")
    assert len(_entries(tmp_path, ".pack")) <= 2  # one per process that predicted


def test_eval_lists_the_cache_folder_once_per_image_it_predicts_and_not_per_cached_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before claiming an image the look-up (and the read of a cached entry) is among the
    entries indexed so far; once claimed, the folder is listed again (an entry stored meanwhile
    by another process is served)."""
    from odbench.cache import PredictionCache

    listings = []
    refresh = PredictionCache._refresh
    monkeypatch.setattr(PredictionCache, "_refresh", lambda self: listings.append(refresh(self)))
    from odbench.cards import method_card
    from odbench.data.base import create_dataset
    from odbench.methods.center_prior import CenterPrior
    from odbench.metrics.protocols import get_protocol
    from odbench.runner import run

    def run_once() -> dict[str, object]:
        out = run(CenterPrior(method_card("center-prior")), create_dataset("toy"),
                  get_protocol("odbench"), dataset_name="toy", batch_size=2, workers=1,
                  cache_dir=tmp_path / "c", results_dir=None)  # fmt: skip
        return out.info

    assert run_once()["n_predicted"] == 16
    assert 16 <= len(listings) <= 16 + 2
    listings.clear()  # a resumed run serves every image from what it read at the start
    assert run_once()["n_cached"] == 16 and len(listings) <= 2


def test_on_a_filesystem_without_hard_links_a_claim_is_a_file_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(*args: object) -> None:
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(os, "link", no_links)
    a, b = Claims(tmp_path, pid=os.getpid()), Claims(tmp_path, pid=os.getppid())
    assert a.acquire("img1") and not b.acquire("img1") and b.held_by_other("img1")
    assert json.loads(a.path("img1").read_text())["pid"] == os.getpid()
    b.release("img1")  # not b's: left alone
    a.release("img1")
    assert b.acquire("img1") and not a.acquire("img1")
    b.release("img1")
    a.close()
    b.close()
    assert not list(tmp_path.iterdir())
