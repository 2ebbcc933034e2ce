"""A new user's bad input ends in one ``error:`` line and exit code 2: never a traceback, never a
file written where nobody asked (found by trying the README's commands with wrong options)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from odbench.cli import main

TINY_SYNTH = ["--backbone", "sd-tiny", "--steps", "2", "--filter", "none", "--workers", "0"]


def _one_error_line(args: list[str]) -> str:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_synth_out_below_a_file(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    line = _one_error_line(
        ["synth", "--n", "1", "--out", str(tmp_path / "afile" / "syn"), *TINY_SYNTH]
    )
    assert "--out" in line and "is a file" in line


def test_synth_resolution_the_backbone_refuses(tmp_path: Path) -> None:
    out = tmp_path / "syn"
    line = _one_error_line(
        ["synth", "--n", "1", "--out", str(out), "--resolution", "33", *TINY_SYNTH]
    )
    assert "resolution 33 is not a multiple of" in line
    assert not out.exists()


def test_train_out_below_a_file(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    args = ["train", "--model", "unet", "--data", "toy", "--steps", "1"]
    line = _one_error_line([*args, "--out", str(tmp_path / "afile" / "run")])
    assert "--out" in line and "is a file" in line


def test_evaluate_refuses_maps_outside_0_1() -> None:
    """A map on the 0..255 scale used to be clipped by the scorer: a silently wrong maxFβ."""
    import pytest

    import odbench
    from odbench.runner import EvalError

    with pytest.raises(EvalError, match=r"values in \[\d+, 1\d\d\.\d+\].*must lie in \[0, 1\]"):
        odbench.evaluate(lambda ims: [im.mean(axis=2) for im in ims], "toy", limit=2)
    with pytest.raises(EvalError, match=r"values in \[-0\.\d+, "):
        odbench.evaluate(lambda ims: [im.mean(axis=2) / 255 - 0.5 for im in ims], "toy", limit=2)
    inside = odbench.evaluate(lambda ims: [im.mean(axis=2) / 255 for im in ims], "toy", limit=2)
    assert 0.0 < inside.metrics["saliency"]["max_fbeta"] <= 1.0


def test_report_out_below_a_file(tmp_path: Path) -> None:
    import odbench

    results = tmp_path / "results"
    odbench.evaluate(
        "center-prior", "toy", limit=2, results_dir=results, cache_dir=tmp_path / "cache"
    )
    (tmp_path / "afile").write_text("x")
    args = ["report", "--methods", "center-prior", "--dataset", "toy"]
    args += ["--results-dir", str(results)]
    line = _one_error_line([*args, "--out", str(tmp_path / "afile" / "rep")])
    assert "--out" in line and "is a file" in line
    line = _one_error_line([*args, "--grid", "1", "--out", str(tmp_path / "afile" / "f.png")])
    assert "--out" in line and "is a file" in line


def test_score_boxes_refuses_inverted_boxes(tmp_path: Path) -> None:
    """[x, y, w, h] given as corners makes x2 < x1: it used to count as a silent miss."""
    gt, pred = tmp_path / "gt.json", tmp_path / "pred.json"
    gt.write_text('{"a": [[20, 20, 30, 30]]}')
    pred.write_text('{"a": [20, 20, 10, 10]}')
    line = _one_error_line(["score-boxes", "--pred", str(pred), "--gt", str(gt)])
    assert str(pred) in line and "x2 < x1" in line
    pred.write_text('{"a": [20, 20, 30, 30]}')
    gt.write_text('{"a": [[30, 20, 20, 30]]}')
    assert "x2 < x1" in _one_error_line(["score-boxes", "--pred", str(pred), "--gt", str(gt)])


def test_train_refuses_bad_numbers_before_writing(tmp_path: Path) -> None:
    out = tmp_path / "run"
    base = ["train", "--model", "unet", "--data", "toy", "--steps", "1", "--out", str(out)]
    for option, value, said in (
        ("--lr", "-1", "--lr must be > 0"),
        ("--lr", "0", "--lr must be > 0"),
        ("--batch-size", "0", "--batch-size must be >= 1"),
        ("--resolution", "0", "--resolution must be >= 1"),
    ):
        assert said in _one_error_line([*base, option, value])
        assert not out.exists()


def test_set_outside_the_cards_ranges_is_one_line() -> None:
    """--set num_steps=0 was a ValueError traceback from the DDIM schedule; top_k=0 was
    silently run as top_k=1 while the results said 0."""
    base = ["eval", "--dataset", "toy", "--limit", "1", "--backbone", "sd-tiny"]
    for method in ("attentioncut", "attentioncut.row1", "kmeans-diffusion"):
        for setting in ("num_steps=0", "num_steps=1001", "top_k=0"):
            line = _one_error_line([*base, "--method", method, "--set", setting])
            assert setting.split("=")[0] in line


def test_truncated_records_file_is_one_line(tmp_path: Path) -> None:
    """A records .npz cut short (disk full, a copy killed midway) was a BadZipFile traceback
    in compare and report."""
    import odbench

    results = tmp_path / "results"
    for method in ("center-prior", "wctr"):
        odbench.evaluate(method, "toy", limit=2, results_dir=results, cache_dir=tmp_path / "c")
    npz = next(results.glob("wctr__*.records.npz"))
    npz.write_bytes(npz.read_bytes()[:50])
    args = ["--methods", "center-prior,wctr", "--dataset", "toy", "--results-dir", str(results)]
    assert str(npz) in _one_error_line(["compare", *args])
    assert str(npz) in _one_error_line(["report", *args, "--out", str(tmp_path / "rep")])


def test_train_feature_cache_below_a_file(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "run"
    args = ["train", "--features", "dino-tiny", "--data", "toy", "--steps", "1", "--out", str(out)]
    line = _one_error_line([*args, "--cache-dir", str(tmp_path / "afile")])
    assert "--cache-dir" in line and "is a file" in line
    assert not out.exists()


def test_cache_clear_names_an_unknown_method(tmp_path: Path) -> None:
    """``cache clear --method wctrr`` said "removed 0 folder(s)" as if there were nothing."""
    line = _one_error_line(["cache", "clear", "--method", "wctrr", "--cache-dir", str(tmp_path)])
    assert "wctrr" in line and "wctr" in line.split("wctrr", 1)[1]
    result = CliRunner().invoke(
        main, ["cache", "clear", "--method", "wctr", "--cache-dir", str(tmp_path)]
    )
    assert result.exit_code == 0 and "removed 0 folder(s)" in result.output


def test_synth_bad_shard_is_one_line(tmp_path: Path) -> None:
    """A ShardError is an OdbenchError like every other: one line (was click's usage + Error)."""
    out = tmp_path / "syn"
    line = _one_error_line(["synth", "--n", "1", "--out", str(out), "--shard", "2/2", *TINY_SYNTH])
    assert "--shard '2/2'" in line and "counted from 0" in line
    assert not out.exists()


def test_results_folder_refusing_the_write_at_the_end_is_one_line(
    tmp_path: Path, monkeypatch
) -> None:
    """The up-front check passes where the write later fails (root on a read-only mount, ACLs):
    the permission error at the end is one line naming the file, not a traceback."""
    import errno

    import odbench.results

    def refuse(folder: Path, data: bytes) -> Path:
        name = str(folder / ".results.x.tmp")
        raise PermissionError(errno.EACCES, "Permission denied", name)

    monkeypatch.setattr(odbench.results, "_temp_file", refuse)
    res = tmp_path / "res"
    r = CliRunner().invoke(
        main,
        ["eval", "--method", "center-prior", "--dataset", "toy", "--limit", "2", "--workers", "1",
         "--results-dir", str(res), "--cache-dir", str(tmp_path / "cache")],
    )  # fmt: skip
    assert r.exit_code == 2, r.output
    assert r.stderr.splitlines()[-1] == (
        f"error: {res / '.results.x.tmp'}: Permission denied; fix its permissions or choose "
        "another folder (finished work is kept: a re-run resumes where it stopped)"
    )
