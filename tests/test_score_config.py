"""``odbench score --config runs.toml``: validation in one report, results in the store,
re-running scores only what changed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from odbench.cli import main
from odbench.imageio import write_png
from odbench.results import load_all_results
from odbench.scoring.folders import score_folders


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def make_project(root: Path, n: int = 5) -> Path:
    """GT folder, two methods' prediction folders (one named with a prefix/suffix), runs.toml."""
    rng = np.random.default_rng(0)
    for folder in ("gt", "preds/a", "preds/b"):
        (root / folder).mkdir(parents=True)
    for i in range(n):
        gt = np.zeros((12, 16), np.uint8)
        gt[3 : 8 + i % 3, 4:11] = 255
        write_png(root / "gt" / f"{i:04d}.png", gt)
        write_png(root / "preds/a" / f"{i:04d}.png", rng.integers(0, 256, gt.shape, np.uint8))
        write_png(root / "preds/b" / f"m_{i:04d}_sal.png", rng.integers(0, 256, gt.shape, np.uint8))
    config = root / "runs.toml"
    config.write_text(
        'metrics = "all"\n'
        "[datasets.ecssd]\n"
        'gt = "gt"\n'
        "[methods.method-a]\n"
        'ecssd = "preds/a"\n'
        "[methods.method-b.ecssd]\n"
        'path = "preds/b"\n'
        'prefix = "m_"\n'
        'suffix = "_sal.png"\n'
    )
    return config


def run_config(config: Path, results: Path, *extra: str) -> list[dict]:
    out = invoke("score", "--config", str(config), "--results-dir", str(results), "--json", *extra)
    assert out.exit_code == 0, out.output
    return json.loads(out.stdout)


def test_config_scores_every_pair_into_the_store_and_rescoring_skips_unchanged(tmp_path):
    config = make_project(tmp_path)
    results = tmp_path / "results"
    rows = run_config(config, results)
    assert [(r["method"], r["dataset"], r["status"]) for r in rows] == [
        ("method-a", "ecssd", "scored"),
        ("method-b", "ecssd", "scored"),
    ]
    direct = score_folders(tmp_path / "preds/a", tmp_path / "gt", metrics="all")
    for key in ("max_fbeta", "mae", "s_measure", "weighted_fbeta", "e_measure_max"):
        assert rows[0][key] == pytest.approx(direct[key], abs=1e-12), key
    runs = {r.method_name: r for r in load_all_results(results)}
    assert set(runs) == {"method-a", "method-b"}
    assert runs["method-b"].n_evaluated == 5 and runs["method-b"].records.sod is not None
    assert "curves" in runs["method-a"].metrics["saliency"]
    lb = tmp_path / "lb.md"  # 5 of ECSSD's 1,000 images: a subset, shown with --all
    board = invoke("leaderboard", "--results-dir", str(results), "--all", "--out", str(lb))
    assert board.exit_code == 0, board.output
    assert "method-a [saved maps, subset]" in lb.read_text()

    again = run_config(config, results)
    assert [r["status"] for r in again] == ["unchanged", "unchanged"]
    assert len(list(results.glob("*.json"))) == 2
    # one prediction changes: only its pair is scored again
    write_png(tmp_path / "preds/b" / "m_0002_sal.png", np.zeros((12, 16), np.uint8))
    third = run_config(config, results)
    assert [r["status"] for r in third] == ["unchanged", "scored"]
    assert len(list(results.glob("*.json"))) == 3


def test_config_problems_are_one_report_before_scoring_anything(tmp_path):
    config = make_project(tmp_path)
    (tmp_path / "preds/a" / "0003.png").rename(tmp_path / "preds/a" / "0003_typo.png")
    config.write_text(config.read_text() + '[methods.method-c]\necssd = "preds/missing"\n')
    results = tmp_path / "results"
    out = invoke("score", "--config", str(config), "--results-dir", str(results))
    assert out.exit_code == 2
    report = out.stderr
    assert report.startswith(f"error: {config}: 3 problem(s), nothing scored")
    assert "preds/missing does not exist" in report
    assert "0003_typo.png" in report and "match no GT name" in report  # the unmatched name
    assert "have no prediction" in report and "0003" in report  # and the GT it leaves alone
    assert not results.exists() or not list(results.iterdir())


def test_config_file_errors_are_one_line(tmp_path):
    config = tmp_path / "runs.toml"
    config.write_text("[datasets.ecssd\n")
    out = invoke("score", "--config", str(config))
    assert out.exit_code == 2 and "not valid TOML" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    config.write_text('[datasets.ecssd]\ngt = "gt"\n[methods.x]\nduts = "p"\n')
    out = invoke("score", "--config", str(config))
    assert "no [datasets.duts]" in out.stderr and "gt: folder" in out.stderr
    out = invoke("score", "--config", str(config), "--pred-dir", str(tmp_path))
    assert out.exit_code == 2 and "one or the other" in out.stderr
    for flag in (["--subset-of-gt"], ["--on-mismatch", "skip"]):  # not silently ignored
        out = invoke("score", "--config", str(config), *flag)
        assert out.exit_code == 2 and "go with --pred-dir/--gt-dir" in out.stderr


def test_config_report_lists_sizes_and_unreadable_files_beside_folder_and_name_problems(
    tmp_path, monkeypatch
):
    """One report holds every kind of problem at once: a missing folder, an unmatched name,
    a size mismatch and a file that is not an image; sizes come from the headers only."""
    from PIL import Image, ImageFile

    config = make_project(tmp_path)
    (tmp_path / "preds/a" / "0003.png").rename(tmp_path / "preds/a" / "0003_typo.png")
    write_png(tmp_path / "preds/a" / "0001.png", np.zeros((16, 12), np.uint8))  # transposed
    (tmp_path / "preds/b" / "m_0002_sal.png").write_bytes(b"not a png")
    config.write_text(config.read_text() + '[methods.method-c]\necssd = "preds/missing"\n')

    def no_decoding(self, *args, **kwargs):
        raise AssertionError("validation decoded pixels")

    Image.init()  # every format plugin imported before pixel decoding is forbidden
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    results = tmp_path / "results"
    out = invoke("score", "--config", str(config), "--results-dir", str(results))
    assert out.exit_code == 2, out.output
    report = out.stderr
    assert report.startswith(f"error: {config}: 5 problem(s), nothing scored"), report
    assert "preds/missing does not exist" in report
    assert "0003_typo.png" in report and "have no prediction" in report
    assert "[methods.method-a] ecssd" in report and "1 of 4 prediction/GT pairs differ" in report
    assert "0001 (12x16 vs 16x12, transposed)" in report
    assert "[methods.method-b] ecssd: 1 file(s) cannot be read" in report
    assert "m_0002_sal.png" in report
    assert "Traceback" not in out.output
    assert not results.exists() or not list(results.iterdir())


def test_config_metrics_list_and_typos_are_reported(tmp_path):
    config = make_project(tmp_path, n=3)
    text = config.read_text().replace('metrics = "all"', 'metrics = ["s_measure", "mae"]')
    config.write_text(text)
    rows = run_config(config, tmp_path / "res")
    assert {k for k in rows[0] if k in ("s_measure", "mae", "max_fbeta", "weighted_fbeta")} == {
        "s_measure",
        "mae",
    }
    (run,) = [r for r in load_all_results(tmp_path / "res") if r.method_name == "method-a"]
    assert "weighted_fbeta" in run.metrics["saliency"]  # the store keeps what was computed
    # --metrics overrides the file; a list naming only basic metrics is the basic set
    rows = run_config(config, tmp_path / "res2", "--metrics", "mae,iou")
    assert "iou" in rows[0] and "s_measure" not in rows[0] and "acc" not in rows[0]
    config.write_text(text.replace('"s_measure"', '"s_mesure"') + "[methods.x]\necssd = 'nope'\n")
    out = invoke("score", "--config", str(config), "--results-dir", str(tmp_path / "res3"))
    assert out.exit_code == 2 and "2 problem(s)" in out.stderr, out.output
    assert "metrics = s_mesure,mae: unknown metric s_mesure (did you mean s_measure?)" in out.stderr
    bad = invoke("score", "--config", str(config), "--metrics", "wf")
    assert bad.exit_code == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "--metrics wf: unknown metric" in bad.stderr and "weighted_fbeta" in bad.stderr


def test_saved_maps_of_a_registered_method_show_in_tables_and_subsets_are_marked(tmp_path):
    """Maps scored under a registered method's name (wctr) are not "other card settings":
    they show in the tables, labelled [saved maps]; a GT folder smaller than the registered
    dataset's card (ECSSD: 1,000) is a subset, hidden by default and starred with --all."""
    make_project(tmp_path)
    config = tmp_path / "runs.toml"
    config.write_text(
        '[datasets.ecssd]\ngt = "gt"\n[datasets.mine]\ngt = "gt"\n'
        '[methods.wctr]\necssd = "preds/a"\nmine = "preds/a"\n'
    )
    res = tmp_path / "res"
    run_config(config, res)

    def board(*extra: str):
        return invoke("leaderboard", "--results-dir", str(res), *extra)

    md = board("--format", "md", "--metrics", "mae")
    assert md.exit_code == 0, md.output
    assert "| wctr |" in md.stdout and "mine MAE↓" in md.stdout and "ecssd" not in md.stdout
    starred = board("--format", "md", "--metrics", "mae", "--all")
    assert "ecssd MAE↓" in starred.stdout and "\\* evaluated on a subset" in starred.stdout
    (row,) = [ln for ln in starred.stdout.splitlines() if ln.startswith("| wctr")]
    assert row.count("\\*") == 1  # the ecssd cell only
    csv_all = board("--format", "csv", "--all", "--metrics", "mae").stdout
    assert "wctr,ecssd,odbench,5," in csv_all and "wctr,mine,odbench,5," in csv_all
    paper = board("--task", "saliency", "--all")
    assert "wctr [saved maps, subset]" in paper.stdout and "wctr [saved maps]" in paper.stdout
    only_ecssd = board("--format", "latex", "--datasets", "ecssd")
    assert only_ecssd.exit_code == 2 and "1 run(s) on subsets" in only_ecssd.stderr
    assert "--all shows them" in only_ecssd.stderr


def test_unchanged_pairs_report_their_stored_numbers_and_all_serves_basic(tmp_path):
    config = make_project(tmp_path, n=3)  # metrics = "all"
    res = tmp_path / "res"
    first = run_config(config, res)
    again = run_config(config, res, "--metrics", "mae,max_fbeta")  # basic: served by "all"
    assert [r["status"] for r in again] == ["unchanged", "unchanged"]
    for a, b in zip(first, again):
        assert b["mae"] == a["mae"] and b["max_fbeta"] == a["max_fbeta"]
        assert "s_measure" not in b and b["results"] == a["results"]
    assert len(list(res.glob("*.json"))) == 2


def test_config_values_of_the_wrong_type_and_ids_given_twice_are_reported(tmp_path):
    make_project(tmp_path, n=3)
    (tmp_path / "preds/a" / "0001.jpg").write_bytes(
        (tmp_path / "preds/a" / "0001.png").read_bytes()
    )
    config = tmp_path / "bad.toml"
    config.write_text(
        'protocol = 5\n[datasets.ecssd]\ngt = "gt"\nimages = 3\n[methods.a]\necssd = "preds/a"\n'
    )
    out = invoke("score", "--config", str(config), "--results-dir", str(tmp_path / "res"))
    assert out.exit_code == 2 and "Traceback" not in out.output, out.output
    assert "3 problem(s)" in out.stderr
    assert "protocol = 5: expected a protocol name" in out.stderr
    assert "images = 3: expected a folder path" in out.stderr
    assert "1 id(s) given by two files" in out.stderr and "0001.jpg and 0001.png" in out.stderr


def test_config_paths_may_start_with_the_home_folder(tmp_path, monkeypatch):
    make_project(tmp_path / "home", n=3)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    config = tmp_path / "elsewhere" / "runs.toml"
    config.parent.mkdir()
    config.write_text(
        '[datasets.d]\ngt = "~/gt"\nimages = "~/preds"\n[methods.m]\nd = "~/preds/a"\n'
    )
    (row,) = run_config(config, tmp_path / "res")
    assert row["status"] == "scored" and row["n_images"] == 3


def test_workers_below_one_are_refused_before_any_file_is_read(tmp_path, monkeypatch):
    """``--config --workers 0`` was accepted when every pair was unchanged (nothing to score)
    and refused only after every file had been read and hashed when one had changed; now it
    is one line before anything is read, either way."""
    import odbench.scoring.config as config_module

    config = make_project(tmp_path)
    results = tmp_path / "results"
    run_config(config, results)  # stored: a re-run has nothing to score

    def read(*args: object) -> bytes:
        raise AssertionError("files read before --workers was checked")

    monkeypatch.setattr(config_module, "files_digest", read)
    for store in (results, tmp_path / "empty-store"):
        out = invoke(
            "score", "--config", str(config), "--results-dir", str(store), "--workers", "0"
        )
        assert out.exit_code == 2, out.output
        assert out.output.strip() == "error: --workers must be >= 1, got 0"
    assert not (tmp_path / "empty-store").exists()


def test_a_map_that_is_a_folder_or_a_broken_link_is_reported_by_name(tmp_path):
    """A prediction or GT named like an image that is a folder or a broken link was skipped
    while listing: the report said its GT had no prediction (or its prediction no GT)."""
    config = make_project(tmp_path, n=3)
    (tmp_path / "preds/a/0001.png").unlink()
    (tmp_path / "preds/a/0001.png").mkdir()
    (tmp_path / "gt/0002.png").unlink()
    (tmp_path / "gt/0002.png").symlink_to(tmp_path / "moved.png")
    out = invoke("score", "--config", str(config), "--results-dir", str(tmp_path / "res"))
    assert out.exit_code == 2 and "Traceback" not in out.output, out.output
    assert f"{tmp_path / 'preds/a/0001.png'}: folder named like an image file" in out.stderr
    assert f"{tmp_path / 'gt/0002.png'}: broken link" in out.stderr
    assert "no prediction" not in out.stderr and "match no GT" not in out.stderr


TERMINATED_WHILE_STORING = """
import os, signal, sys
import odbench.results as results
real = results._link_exclusive
def terminated_first(*args):  # SIGTERM while the records' temp file exists
    os.kill(os.getpid(), signal.SIGTERM)
    return real(*args)
results._link_exclusive = terminated_first
from odbench.cli import main
main(["score", "--config", sys.argv[1], "--results-dir", sys.argv[2], "--workers", "2"])
"""


def test_sigterm_while_storing_leaves_no_temp_file_and_is_one_line(tmp_path):
    """SIGTERM (``timeout``, ``kill``, a job's time limit) while a result was being stored
    ended the process at once: a hidden ``.results.*.tmp`` of the records (megabytes) stayed
    in the results folder.  Now it is cleaned up, as on Ctrl-C, and said in one line."""
    import os
    import subprocess
    import sys

    config, results = make_project(tmp_path), tmp_path / "results"
    script = tmp_path / "terminate.py"
    script.write_text(TERMINATED_WHILE_STORING)
    out = subprocess.run(
        [sys.executable, str(script), str(config), str(results)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert out.stderr.strip().splitlines() == [
        "error: terminated (SIGTERM); the pairs finished are stored: run the same command "
        "again to score the rest"
    ]
    assert sorted(p.name for p in results.iterdir()) == []
