"""Size mismatches (issue 16 item 3): every pair checked up front, all mismatches reported in
one line, refused by default, ``--on-mismatch skip`` leaves them out and records their ids;
same-aspect resizing of a prediction stays allowed under resizing protocols."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from odbench.cli import main
from odbench.imageio import write_png
from odbench.metrics.protocols import ODBENCH, TOKENCUT, VOYNOV
from odbench.metrics.sizes import pair_problem, protocol_mismatches, same_aspect


def test_pair_rule() -> None:
    assert pair_problem((30, 40), (30, 40), resize=False) is None
    assert pair_problem((40, 30), (30, 40), resize=True) == "transposed"
    assert pair_problem((30, 60), (30, 40), resize=True) == "aspect ratio"
    assert pair_problem((15, 20), (30, 40), resize=True) is None  # same aspect: resized
    assert pair_problem((15, 20), (30, 40), resize=False) == "size"
    assert same_aspect((224, 300), (300, 400)) and not same_aspect((220, 300), (300, 400))
    square = [("a", (30, 30), (30, 40))]
    assert protocol_mismatches(square, VOYNOV) == []  # already cropped to the centred square
    assert [m.reason for m in protocol_mismatches(square, ODBENCH)] == ["aspect ratio"]
    assert protocol_mismatches([("b", (15, 20), (30, 40))], ODBENCH) == []
    assert [m.reason for m in protocol_mismatches([("b", (15, 20), (30, 40))], TOKENCUT)] == [
        "size"
    ]


def make(root: Path, transposed: tuple[int, ...] = (), half: tuple[int, ...] = ()) -> None:
    rng = np.random.default_rng(3)
    for i in range(6):
        gt = ((rng.random((30, 40)) < 0.4) * 255).astype(np.uint8)
        pred = rng.integers(0, 256, (30, 40), dtype=np.uint8)
        if i in transposed:
            pred = np.ascontiguousarray(pred.T)
        if i in half:
            pred = pred[::2, ::2].copy()
        write_png(root / "gt" / f"{i}.png", gt)
        write_png(root / "pred" / f"{i}.png", pred)
        write_png(root / "images" / f"{i}.png", rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))
        write_png(root / "masks" / f"{i}.png", gt if i not in transposed else gt.T.copy())


def score(root: Path, *extra: str):  # type: ignore[no-untyped-def]
    args = ["score", "--pred-dir", str(root / "pred"), "--gt-dir", str(root / "gt"), "--json"]
    return CliRunner().invoke(main, [*args, *extra])


def test_score_refuses_all_mismatches_at_once_and_skip_records_them(tmp_path: Path) -> None:
    make(tmp_path, transposed=(1, 2, 4, 5))
    res = score(tmp_path)
    assert res.exit_code == 2
    (line,) = res.stderr.strip().splitlines()
    assert "4 of 6 prediction/GT pairs differ in size: 1 (30x40 vs 40x30, transposed)" in line
    assert "5 (30x40 vs 40x30, transposed)" in line and "more" not in line  # all four named
    assert "--on-mismatch skip" in line
    res = score(tmp_path, "--on-mismatch", "skip")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["skipped_ids"] == ["1", "2", "4", "5"] and out["n_images"] == 2
    for i in (1, 2, 4, 5):
        (tmp_path / "pred" / f"{i}.png").unlink()
    ref = json.loads(score(tmp_path, "--subset-of-gt").stdout)
    assert out["max_fbeta"] == ref["max_fbeta"] and out["iou"] == ref["iou"]


def test_skip_leaving_no_pair_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    make(tmp_path, transposed=tuple(range(6)))
    res = score(tmp_path, "--on-mismatch", "skip", "--workers", "2")
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 2 and "6 of 6 prediction/GT pairs differ" in lines[0], res.stderr
    assert "nothing left to score" in lines[1] and str(tmp_path / "pred") in lines[1]


def test_score_same_aspect_resize_allowed_only_where_the_protocol_resizes(tmp_path: Path) -> None:
    make(tmp_path, half=(0, 3))
    assert score(tmp_path).exit_code == 0
    res = score(tmp_path, "--protocol", "tokencut")
    assert res.exit_code == 2 and "2 of 6 prediction/GT pairs differ in size" in res.stderr


@pytest.mark.parametrize("command", ["stats", "eval"])
def test_dataset_mismatches_reported_at_once(tmp_path: Path, command: str) -> None:
    make(tmp_path, transposed=(0, 2, 3))
    if command == "stats":
        args = ["stats", str(tmp_path)]
    else:
        args = ["eval", "--method", "center-prior", "--dataset", "folder", "--data-root",
                str(tmp_path), "--results-dir", str(tmp_path / "res"), "--cache-dir",
                str(tmp_path / "cache")]  # fmt: skip
    res = CliRunner().invoke(main, args)
    assert res.exit_code != 0
    (line,) = res.stderr.strip().splitlines()
    assert "3 of 6 image/GT pairs differ in size: 0 (40x30 vs 30x40, transposed)" in line
    res = CliRunner().invoke(main, [*args, "--on-mismatch", "skip"])
    assert res.exit_code == 0, res.output
    if command == "eval":
        (path,) = (tmp_path / "res").glob("*.json")
        data = json.loads(path.read_text())
        assert data["dataset"]["skipped_ids"] == ["0", "2", "3"]
        assert data["dataset"]["n_evaluated"] == 3
        board = ["leaderboard", "--task", "saliency", "--results-dir", str(tmp_path / "res")]
        hidden = CliRunner().invoke(main, board)
        assert hidden.exit_code == 0 and "center-prior" not in hidden.stdout
        assert "1 run(s) with other settings or on a subset are not shown" in hidden.stderr
        shown = CliRunner().invoke(main, [*board, "--all"])
        (row,) = [line for line in shown.output.splitlines() if "center-prior" in line]
        assert "[subset, 3 skipped]" in row and "*" in row
    else:
        assert "| masks | 3 |" in res.stdout


def test_a_long_list_of_mismatches_is_written_whole_to_a_file_named_in_the_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 26 item 8: the line named 3 pairs "and 60 more"; every pair is listed (in the
    line up to 10, else in a file the line names)."""
    import tempfile

    from odbench.metrics.sizes import describe_mismatches, size_mismatches

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    pairs = [(f"im{i:02d}", (40, 30), (30, 40)) for i in range(12)]
    mismatches = size_mismatches(pairs, resize=True)
    ten = describe_mismatches(mismatches[:10], 300, "prediction")
    assert ten.count("transposed") == 10 and "more" not in ten
    line = describe_mismatches(mismatches, 300, "prediction")
    assert line.startswith("12 of 300 prediction/GT pairs differ in size: im00 (30x40 vs 40x30")
    assert "im02" in line and "im03" not in line and " and 9 more, all listed in " in line
    listing = Path(line.rsplit("all listed in ", 1)[1])
    assert listing.parent == tmp_path
    rows = listing.read_text().splitlines()[1:]
    assert rows == [f"im{i:02d} (30x40 vs 40x30, transposed)" for i in range(12)]


def test_a_transposed_mask_under_a_cropping_protocol_is_described_by_the_stored_files() -> None:
    """Issue 26 item 8: under voynov (centre crop) a transposed mask read "481x321 vs 321x321,
    aspect ratio" (the cropped GT)."""
    (m,) = protocol_mismatches([("a", (321, 481), (481, 321))], VOYNOV)
    assert m.describe() == "a (481x321 vs 321x481, transposed)"
    (m,) = protocol_mismatches([("b", (300, 500), (481, 321))], VOYNOV)
    assert m.describe() == "b (500x300 vs 321x481, aspect ratio)"
