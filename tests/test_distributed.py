"""``odbench.distributed``: shards of stable ids, the launcher adapter, and a real 2-process
launch of ``odbench eval`` on CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from odbench.cache import PredictionCache
from odbench.distributed import (
    Shard,
    ShardError,
    World,
    ids_digest,
    interleave,
    launched_world_size,
)


@pytest.mark.parametrize("n", [0, 1, 2, 7, 16, 1000])
@pytest.mark.parametrize("count", [1, 2, 3, 8])
def test_shards_partition_the_ids_without_padding(n: int, count: int) -> None:
    ids = [f"img{i:04d}" for i in range(n)]
    parts = [Shard(i, count).take(ids) for i in range(count)]
    flat = [x for p in parts for x in p]
    assert sorted(flat) == sorted(ids) and len(flat) == n  # union = all, no duplicates
    assert max(map(len, parts)) - min(map(len, parts)) <= 1  # balanced
    for p in parts:  # each shard keeps the dataset's order
        assert p == sorted(p, key=ids.index)
    assert interleave(parts) == ids
    assert [Shard(i, count).take(ids) for i in range(count)] == parts  # deterministic


def test_shard_assignment_is_keyed_by_position_in_the_stable_id_order() -> None:
    ids = [f"s{i}" for i in range(10)]
    assert Shard(1, 3).take(ids) == ["s1", "s4", "s7"]
    assert Shard(0, 3).take(ids) == ["s0", "s3", "s6", "s9"]


@pytest.mark.parametrize(("index", "count", "ways"), [(0, 1, 2), (1, 3, 2), (2, 4, 3)])
def test_split_composes_a_shard_with_a_launch(index: int, count: int, ways: int) -> None:
    ids = [str(i) for i in range(29)]
    shard = Shard(index, count)
    for r in range(ways):
        assert shard.split(ways, r).take(ids) == shard.take(ids)[r::ways]
    assert interleave([shard.split(ways, r).take(ids) for r in range(ways)]) == shard.take(ids)


def test_interleave_refuses_parts_that_are_not_a_strided_split() -> None:
    with pytest.raises(ShardError, match="do not come from splitting"):
        interleave([["a"], ["b", "c"]])


@pytest.mark.parametrize("text", ["2/2", "-1/2", "1", "a/b", "1/0", "", "0/2/3"])
def test_shard_parse_refuses_bad_specs(text: str) -> None:
    with pytest.raises(ShardError, match="I/N|0 <= I < N"):
        Shard.parse(text)


def test_shard_counted_from_one_says_how_to_count() -> None:
    """``--shard 8/8`` is what a SLURM array ``--array=1-8`` gives: the line says the fix."""
    with pytest.raises(ShardError) as err:
        Shard.parse("8/8")
    assert "counted from 0: the last of 8 shards is 7/8" in str(err.value)
    assert "--array=0-7" in str(err.value)


def test_shard_parse_and_label() -> None:
    s = Shard.parse("3/8")
    assert (s.index, s.count, str(s), s.label()) == (3, 8, "3/8", "shard-3-of-8")


def test_ids_digest_depends_on_order_and_content() -> None:
    assert ids_digest(["a", "b"]) != ids_digest(["b", "a"])
    assert ids_digest(["ab"]) != ids_digest(["a", "b"])
    assert ids_digest(["a", "b"]) == ids_digest(("a", "b"))


def test_world_size_from_launcher_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    assert launched_world_size() == 1
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    assert launched_world_size() == 4
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert launched_world_size() == 2
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ShardError, match="WORLD_SIZE"):
        launched_world_size()


def test_single_process_world_imports_nothing() -> None:
    code = (
        "import sys; from odbench.distributed import detect_world; w = detect_world('cpu'); "
        "print(w.size, w.rank, w.gather('x'), 'torch' in sys.modules, 'accelerate' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "PMI_SIZE")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.split() == ["1", "0", "['x']", "False", "False"], out.stderr
    assert World().device("cuda") == "cuda"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_two_process_launch_equals_one_process(tmp_path: Path) -> None:
    """``torchrun --nproc-per-node 2 -m odbench eval`` on CPU (gloo, loopback): one results JSON,
    written by rank 0, identical to a single process's; each rank predicted its own half."""
    from click.testing import CliRunner
    from test_merge import assert_same_run

    from odbench.cli import main
    from odbench.results import read_results

    common = ["eval", "--method", "center-prior", "--dataset", "toy", "--device", "cpu"]
    single = CliRunner().invoke(
        main,
        [*common, "--results-dir", str(tmp_path / "one"), "--cache-dir", str(tmp_path / "c1")],
    )
    assert single.exit_code == 0, single.output
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    launcher += ["--master-addr", "127.0.0.1", "--master-port", str(_free_port())]
    launcher += ["--log-dir", str(tmp_path / "torchrun")]  # not /tmp/torchelastic_*
    args = [*common, "--results-dir", str(tmp_path / "two"), "--cache-dir", str(tmp_path / "c2")]
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path / "tmp")}
    run = subprocess.run(
        [*launcher, "-m", "odbench", *args], capture_output=True, text=True, env=env, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert any((tmp_path / "torchrun").iterdir())  # torchrun's logs: here, not in /tmp
    assert run.stdout.count("results: ") == 1 and "2 processes" in run.stdout  # rank 0 only
    (one,) = (tmp_path / "one").glob("*.json")
    (two,) = (tmp_path / "two").glob("*.json")
    assert len(list((tmp_path / "two").iterdir())) == 2  # the JSON and its records
    r2 = read_results(two)
    assert_same_run(r2, read_results(one))
    merged_from = [(p["name"], p["n_images"]) for p in r2.info["merged_from"]]
    assert merged_from == [("rank 0", 8), ("rank 1", 8)]
    (folder,) = {p.parent for p in (tmp_path / "c2").rglob("*.pack")}
    assert r2.info["n_predicted"] == 16 and len(PredictionCache(folder).ids()) == 16


def test_a_peer_that_died_is_one_line_on_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    """When a rank stops on its own error, the others fail in the gather (gloo: 'Connection
    closed by peer'): one line pointing at that rank's error, not a traceback."""
    import accelerate.utils

    from odbench.distributed import LaunchError, World

    def peer_gone(obj: object) -> object:
        raise RuntimeError("[pair.cc:561] Connection closed by peer [127.0.0.1]:1752")

    monkeypatch.setattr(accelerate.utils, "gather_object", peer_gone)
    with pytest.raises(LaunchError) as err:
        World(rank=0, size=2).gather({"n": 1})
    assert "rank 0: another process of this launch stopped before the end" in str(err.value)
    assert "its own error line says why" in str(err.value)


def test_a_peer_gone_is_told_from_other_errors() -> None:
    """The errors a collective raises when another process of the launch died (gloo's
    RuntimeError as torch 2.14 raises it, torch's DistError family) are told from every other
    error, and shortened to their cause for the one-line report."""
    from odbench.distributed import peer_failure, short_error

    gloo = RuntimeError(
        "[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:561] Connection "
        "closed by peer [127.0.0.1]:2432. This is typically caused by a remote worker crashing."
    )
    import torch.distributed

    assert peer_failure(gloo) and peer_failure(torch.distributed.DistBackendError("NCCL error"))
    assert short_error(gloo) == "Connection closed by peer [127.0.0.1]:2432"
    assert not peer_failure(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not peer_failure(ValueError("gloo"))
