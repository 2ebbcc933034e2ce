"""Hyperparameter ranges (issue 16 item 4): cards declare valid values in ``[ranges]``; ``--set``
is checked against them in one line before any work; Python-style booleans are accepted."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from odbench.cards import method_card, method_cards
from odbench.cli import main


@pytest.mark.parametrize("name", sorted(method_cards()))
def test_card_ranges_name_hyperparameters_and_hold_the_defaults(name: str) -> None:
    card = method_card(name)
    assert card is not None
    assert set(card.ranges) <= set(card.hyperparameters), card.path
    for key, rule in card.ranges.items():
        assert set(rule) <= {"min", "max", "gt", "lt", "choices"}, (card.path, key)
        assert card.range_problem(key, card.hyperparameters[key]) is None, (card.path, key)


def test_range_rules() -> None:
    card = method_card("wctr")
    assert card is not None
    assert card.range_problem("pixels_per_superpixel", 0) == ">= 16"
    assert card.range_problem("sigma_clr", -1.0) == "> 0"
    assert card.range_problem("sigma_clr", float("nan")) == "> 0"
    assert card.range_problem("mu", 0.0) is None and card.range_problem("sigma_spa", 2.0) is None


def eval_args(tmp_path: Path, *sets: str) -> list[str]:
    args = ["eval", "--method", "wctr", "--dataset", "toy", "--limit", "1"]
    args += ["--results-dir", str(tmp_path / "res"), "--cache-dir", str(tmp_path / "cache")]
    for item in sets:
        args += ["--set", item]
    return args


@pytest.mark.parametrize(
    ("item", "needle"),
    [
        ("pixels_per_superpixel=0", "pixels_per_superpixel of method wctr must be >= 16"),
        ("pixels_per_superpixel=-5", "must be >= 16"),
        ("sigma_clr=-1", "sigma_clr of method wctr must be > 0"),
    ],
)
def test_out_of_range_set_is_one_line_before_any_work(
    tmp_path: Path, item: str, needle: str
) -> None:
    res = CliRunner().invoke(main, eval_args(tmp_path, item))
    assert res.exit_code != 0
    (line,) = res.output.strip().splitlines()
    assert needle in line and "wctr.toml [ranges]" in line
    assert not (tmp_path / "res").exists() and not (tmp_path / "cache").exists()


def test_python_style_booleans(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, eval_args(tmp_path, "fg_otsu=False", "released_graph=True"))
    assert res.exit_code == 0, res.output
