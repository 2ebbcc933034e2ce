"""``odbench.merge``: shards merged are the unsharded run (bit-identical metrics, the same
records in the same order); shards that do not fit are refused in one line, nothing written."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from odbench.cards import method_card
from odbench.cli import main
from odbench.data.base import create_dataset
from odbench.distributed import Shard, shard_block
from odbench.merge import MergeError, Part, merge
from odbench.methods.center_prior import CenterPrior
from odbench.metrics.protocols import get_protocol
from odbench.results import RunResult, load_all_results, read_results, write_results
from odbench.runner import run

#: Fields that describe one process's run rather than the result.
PER_RUN = {"date", "wall_time_s", "images_per_s", "records", "records_sha256", "_path"}
PER_RUN |= {"merged_from"}
PER_RUN |= {"n_predicted", "n_cached", "cache", "processes", "packages", "cpu_time_s"}


def assert_same_run(run_a: RunResult, run_b: RunResult) -> None:
    """Same result (metrics exactly, records with dtype and order), run details aside."""
    a, b = run_a.to_json(), run_b.to_json()
    assert a["metrics"] == b["metrics"]
    assert {k: v for k, v in a.items() if k not in PER_RUN} == {
        k: v for k, v in b.items() if k not in PER_RUN
    }
    ra, rb = run_a.records.arrays(), run_b.records.arrays()
    assert sorted(ra) == sorted(rb)
    for key in ra:
        assert ra[key].dtype == rb[key].dtype, key
        np.testing.assert_array_equal(ra[key], rb[key], err_msg=key)


def _run_whole(tmp_path: Path, protocol: str = "odbench", **kw: Any) -> RunResult:
    method = CenterPrior(method_card("center-prior"), **kw)
    method.name = "center-prior"
    return run(
        method,
        create_dataset("toy"),
        get_protocol(protocol),
        dataset_name="toy",
        cache_dir=tmp_path / "cache",
        results_dir=tmp_path / "whole",
    )


def _split(out: RunResult, count: int) -> list[Part]:
    """The shards of a whole run: its records cut by :class:`Shard`, with shard blocks."""
    ids = list(out.records.ids)
    parts = []
    for i in range(count):
        results = copy.deepcopy(out.to_json())
        results["shard"] = shard_block(Shard(i, count), ids)
        results["dataset"]["n_evaluated"] = len(Shard(i, count).take(ids))
        records = {k: v[i::count] for k, v in out.records.arrays().items()}
        parts.append(Part(results, records, f"s{i}.json"))
    return parts


def _write_shards(whole: RunResult, folder: Path, count: int = 2) -> list[Path]:
    """The whole run's shards written as ``eval --shard`` names them; their JSON paths."""
    paths = []
    for part in _split(whole, count):
        shard = RunResult.from_json(part.results, records=part.records)
        paths.append(write_results(shard, folder))
    return paths


@pytest.mark.parametrize(("protocol", "count"), [("odbench", 2), ("tokencut", 3), ("found", 5)])
def test_shards_merged_equal_one_run(tmp_path: Path, protocol: str, count: int) -> None:
    whole = _run_whole(tmp_path, protocol)
    parts = _split(whole, count)
    results, records = merge(parts[::-1])  # any order
    assert results["metrics"] == whole.metrics  # bit-identical
    assert {k: v for k, v in results.items() if k not in PER_RUN | {"metrics"}} == {
        k: v for k, v in whole.to_json().items() if k not in PER_RUN | {"metrics"}
    }
    for key, value in whole.records.arrays().items():
        assert records[key].dtype == value.dtype
        np.testing.assert_array_equal(records[key], value, err_msg=key)
    assert [p["n_images"] for p in results["merged_from"]] == [len(p.records["ids"]) for p in parts]


def test_merge_command_writes_the_one_run(tmp_path: Path) -> None:
    whole = _run_whole(tmp_path)
    paths = _write_shards(whole, tmp_path / "shards")
    assert load_all_results(tmp_path / "shards") == []  # a shard is no result for leaderboards
    out = tmp_path / "merged"
    result = CliRunner().invoke(main, ["merge", *map(str, paths), "--results-dir", str(out)])
    assert result.exit_code == 0, result.output
    assert "merged 2 shards (16 images)" in result.output
    (merged,) = out.glob("*.json")
    assert "shard" not in merged.name
    assert whole.path is not None
    assert_same_run(read_results(merged), read_results(whole.path))
    # Refusals are one line, exit 2, nothing written.
    refused = CliRunner().invoke(main, ["merge", str(paths[0]), "--results-dir", str(out / "x")])
    assert refused.exit_code == 2 and refused.output.count("\n") == 1
    assert "shard(s) 1/2 missing: pass all 2 shard results" in refused.output
    assert f"(given: {paths[0]}); a shard that failed" in refused.output
    assert not (out / "x").exists()


def test_merge_command_refuses_bad_paths_in_one_line(tmp_path: Path) -> None:
    """What a user may pass by mistake — a records file, the shards' folder, a damaged shard
    JSON, an output folder that cannot be made — is one line naming it and the fix, exit 2,
    nothing written."""
    whole = _run_whole(tmp_path)
    paths = _write_shards(whole, tmp_path / "shards")
    truncated = tmp_path / "truncated.json"
    truncated.write_text(paths[1].read_text()[:200])
    records = paths[1].with_name(paths[1].name.replace(".json", ".records.npz"))
    (tmp_path / "a_file").write_text("")
    out = tmp_path / "out"
    cases = [
        ([paths[0], records], [], f"{records}: a per-image records file; pass the shards' .json"),
        ([tmp_path / "shards"], [], "shards: is a folder; pass the shard results JSONs in it"),
        ([paths[0], truncated], [], "truncated.json: cannot read results JSON: "),
        (paths, ["--results-dir", str(tmp_path / "a_file" / "x")], "a_file is a file, not a"),
    ]
    for args, options, message in cases:
        result = CliRunner().invoke(
            main, ["merge", *map(str, args), "--results-dir", str(out), *options]
        )
        assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
        assert result.output.startswith("error: ") and message in result.output, result.output
        assert not out.exists()
    damaged = CliRunner().invoke(
        main, ["merge", str(paths[0]), str(truncated), "--results-dir", str(out)]
    )
    assert "; re-run that shard (its odbench eval … --shard I/N command)" in damaged.output


def _tweak(part: Part, path: tuple[str, ...], value: Any) -> Part:
    results = copy.deepcopy(part.results)
    target = results
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return Part(results, part.records, part.name)


def test_merge_refuses_shards_that_do_not_fit(tmp_path: Path) -> None:
    a, b = _split(_run_whole(tmp_path), 2)
    c = _split(_run_whole(tmp_path), 3)[2]
    sod = {**b.records, "s_measure": b.records["mae"]}  # scored with --metrics all
    cases = [
        ([_tweak(b, ("method", "hyperparameters", "sigma"), 0.3), a], "differ in hyperparameters"),
        ([a, _tweak(b, ("method", "card_sha256"), "x")], "differ in method card"),
        ([a, _tweak(b, ("protocol", "name"), "tokencut")], "differ in protocol"),
        ([a, _tweak(b, ("dataset", "limit"), 10)], "dataset.limit (None vs 10)"),
        ([a, _tweak(b, ("shard", "n_total"), 15)], "cut from different id lists"),
        ([a], "shard(s) 1/2 missing"),
        ([a, a, b], "s0.json is given twice; pass each shard once"),
        ([a, Part(a.results, a.records, "rerun.json"), b], "are both shard 0/2; pass each shard"),
        ([a, Part(b.results, sod, "b")], "(--metrics basic vs --metrics all); merge only shards"),
        ([a, _tweak(b, ("date",), "yesterday")], "date 'yesterday' is not ISO 8601; re-run that"),
        ([a, _tweak(b, ("cache",), "/c/center-prior/0123")], "by different method code or weights"),
        ([a, _tweak(b, ("shard", "count"), "2")], "s1.json: damaged shard or date field; re-run"),
        ([a, b, c], "is one of 2 shards but s2.json is shard 2/3"),
        ([a, Part({k: v for k, v in b.results.items() if k != "shard"}, b.records, "w")], "w: not"),
        ([a, Part(b.results, {**b.records, "ids": a.records["ids"]}, "b")], "is in both"),
        ([a, Part(b.results, {k: v[:-1] for k, v in b.records.items()}, "b")], "hold 15 images"),
    ]
    for parts, message in cases:
        with pytest.raises(MergeError) as err:
            merge(parts)
        assert message in str(err.value) and "\n" not in str(err.value)


def _eval(tmp_path: Path, out: str, *extra: str) -> Path:
    args = ["eval", "--method", "center-prior", "--dataset", "toy", "--results-dir"]
    args += [str(tmp_path / out), "--cache-dir", str(tmp_path / "cache"), *extra]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    (path,) = sorted((tmp_path / out).glob("*.json"))
    return path


def test_eval_shards_merged_equal_one_eval(tmp_path: Path) -> None:
    """``eval --shard 0/2`` and ``1/2`` (each predicting its own images into one cache), then
    ``odbench merge``: the results JSON + records of one unsharded ``eval``."""
    shards = [_eval(tmp_path, f"s{i}", "--shard", f"{i}/2") for i in (1, 0)]
    for i, path in zip((1, 0), shards):
        r = read_results(path)
        assert path.name.endswith(f"__shard-{i}-of-2.json")
        assert r.n_evaluated == 8 and r.info["shard"]["index"] == i
        assert list(r.records.ids) == create_dataset("toy").ids()[i::2]
        assert r.info["n_predicted"] == 8  # each shard predicted only its own images
    out = tmp_path / "merged"
    result = CliRunner().invoke(main, ["merge", *map(str, shards), "--results-dir", str(out)])
    assert result.exit_code == 0, result.output
    (merged,) = out.glob("*.json")
    whole = _eval(tmp_path, "whole")
    assert read_results(whole).info["n_cached"] == 16  # the shards filled the shared cache
    assert_same_run(read_results(merged), read_results(whole))
    bad = CliRunner().invoke(
        main, ["eval", "--method", "center-prior", "--dataset", "toy", "--shard", "2/2"]
    )
    assert bad.exit_code == 2 and "--shard '2/2': expected I/N" in bad.output


def sequential_worlds() -> Any:
    """A World class for two ranks run one after the other in this process (rank 1 first):
    rank 1's gather leaves its object for rank 0's."""
    from odbench.distributed import World

    box: list[Any] = [None, None]

    class SequentialWorld(World):
        def gather(self, obj: Any) -> list[Any] | None:
            box[self.rank] = obj
            return list(box) if self.is_main else None

    return SequentialWorld


def center_prior() -> CenterPrior:
    method = CenterPrior(method_card("center-prior"))
    method.name = "center-prior"
    return method


def test_a_launch_of_one_shard_merges_with_the_other_shards(tmp_path: Path) -> None:
    """``--shard 1/3`` under a 2-process launch: rank r runs shard 1 + 3r of 6, rank 0 merges
    them into shard 1/3 itself (its own results file); with shards 0/3 and 2/3 run plainly,
    ``merge`` gives the whole run.  (Ranks run one after the other here, standing in for a
    launch; the gloo launch itself is tested in test_distributed.py.)"""
    from odbench.runner import run_launched

    SequentialWorld = sequential_worlds()
    method = center_prior()
    ds, proto = create_dataset("toy"), get_protocol("odbench")
    kw: dict[str, Any] = {"cache_dir": tmp_path / "cache", "results_dir": tmp_path / "launch"}
    ranks = [
        run_launched(SequentialWorld(r, 2), method, ds, proto, "toy", {}, shard=Shard(1, 3), **kw)
        for r in (1, 0)
    ]
    assert ranks[0].info["rank"] == 1 and ranks[0].path is None
    launched = ranks[1]
    assert launched.path is not None and launched.path.name.endswith("__shard-1-of-3.json")
    assert list(launched.records.ids) == ds.ids()[1::3] and launched.info["processes"] == 2
    assert [p["n_images"] for p in launched.info["merged_from"]] == [3, 2]  # ids 1,7,13 | 4,10
    parts = [Part(launched.to_json(), launched.records.arrays(), "launched 1/3")]
    for i in (0, 2):
        r = run(
            method,
            ds,
            proto,
            dataset_name="toy",
            shard=Shard(i, 3),
            cache_dir=kw["cache_dir"],
            results_dir=None,
        )
        parts.append(Part(r.to_json(), r.records.arrays(), f"{i}/3"))
    results, records = merge(parts)
    whole = _run_whole(tmp_path)
    assert results["metrics"] == whole.metrics
    for key, value in whole.records.arrays().items():
        np.testing.assert_array_equal(records[key], value, err_msg=key)


def test_compare_on_unmerged_shards_says_how_to_merge_them(tmp_path: Path) -> None:
    """Shards are no result: a command that needs the run says to merge them (was: run eval)."""
    whole = _run_whole(tmp_path)
    shards = tmp_path / "shards"
    _write_shards(whole, shards)
    args = ["compare", "--methods", "center-prior,wctr", "--dataset", "toy"]
    result = CliRunner().invoke(main, [*args, "--results-dir", str(shards)])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    pattern = str(shards / "center-prior__toy__odbench__*__shard-*-of-*.json")
    assert f"holds only its shards (eval --shard): merge them first, odbench merge {pattern}" in (
        result.output
    )
    board = CliRunner().invoke(main, ["leaderboard", "--results-dir", str(shards)])
    assert board.exit_code == 0 and f"not shown: odbench merge {pattern}" in board.stderr
    merged = CliRunner().invoke(
        main,
        [
            "merge",
            *map(str, sorted(shards.glob(pattern.rsplit("/", 1)[1]))),
            "--results-dir",
            str(shards),
        ],
    )
    assert merged.exit_code == 0, merged.output
    assert (
        "run: odbench eval --method wctr"
        in CliRunner().invoke(main, [*args, "--results-dir", str(shards)]).output
    )  # center-prior now has its result; wctr has none and no shards
    board = CliRunner().invoke(main, ["leaderboard", "--results-dir", str(shards)])
    assert board.exit_code == 0 and "not merged" not in board.stderr


def test_a_launch_with_more_processes_than_images_is_refused_before_any_work(
    tmp_path: Path,
) -> None:
    """Every rank refuses alike before predicting (was: rank 0 predicted, then waited in the
    gather for the rank whose share was empty, which had stopped: a gloo traceback)."""
    from odbench.distributed import World
    from odbench.runner import EvalError, run_launched

    method = CenterPrior(method_card("center-prior"))
    method.name = "center-prior"
    ds, proto = create_dataset("toy"), get_protocol("odbench")
    with pytest.raises(EvalError, match="the run has 1 image\\(s\\) for 2 processes: launch at"):
        run_launched(
            World(0, 2), method, ds, proto, "toy", {}, limit=1, cache_dir=tmp_path / "cache"
        )
    assert not (tmp_path / "cache").exists()


def test_save_preds_boxes_of_a_launch_and_of_shards_are_all_there(tmp_path: Path) -> None:
    """--save-preds boxes.json of a 2-rank launch holds every image's box, as one process writes
    it (each rank wrote its own share over the others'); shards write boxes.shard-I-of-N.json."""
    import json

    from odbench.runner import run_launched

    SequentialWorld = sequential_worlds()
    method = center_prior()
    ds, proto = create_dataset("toy"), get_protocol("odbench")
    kw: dict[str, Any] = {"cache_dir": tmp_path / "cache", "results_dir": None}
    run(method, ds, proto, dataset_name="toy", save_preds=tmp_path / "one", **kw)
    for r in (1, 0):
        run_launched(
            SequentialWorld(r, 2), method, ds, proto, "toy", {}, save_preds=tmp_path / "two", **kw
        )
    for i in (0, 1):
        run(
            method,
            ds,
            proto,
            dataset_name="toy",
            shard=Shard(i, 2),
            save_preds=tmp_path / "s",
            **kw,
        )
    one = json.loads((tmp_path / "one" / "boxes.json").read_text())
    assert len(one) == 16
    assert json.loads((tmp_path / "two" / "boxes.json").read_text()) == one
    shards = [
        json.loads((tmp_path / "s" / f"boxes.shard-{i}-of-2.json").read_text()) for i in (0, 1)
    ]
    assert {**shards[0], **shards[1]} == one and not (tmp_path / "s" / "boxes.json").exists()


def test_the_progress_bar_of_a_launch_says_it_counts_rank_0s_share(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rank 0 alone shows a bar, over its own share (8 of 16): its label says whose share."""
    from contextlib import contextmanager

    import odbench.runner
    from odbench.runner import run_launched

    bars: list[tuple[int, str, bool]] = []

    @contextmanager
    def progress(total: int, label: str, show: bool) -> Any:
        bars.append((total, label, show))
        yield lambda n: None

    monkeypatch.setattr(odbench.runner, "_progress", progress)
    SequentialWorld = sequential_worlds()
    method = center_prior()
    ds, proto = create_dataset("toy"), get_protocol("odbench")
    kw: dict[str, Any] = {"cache_dir": tmp_path / "cache", "results_dir": None}
    for r in (1, 0):
        run_launched(SequentialWorld(r, 2), method, ds, proto, "toy", {}, show_progress=True, **kw)
    assert bars[0][2] is False  # rank 1: no bar
    assert bars[1] == (8, "center-prior on toy (rank 0 of 2)", True)
