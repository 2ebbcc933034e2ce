"""The generated pages are functions of the code: a new method card (with a variant and
reported rows) or metric catalog entry appears on its page with no other edit, card comments
are shown beside their values, and each protocol setting names the line that sets it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from docs_helpers import build_site, copy_repo, titled

from odbench.docsite.cards import read_comments
from odbench.docsite.tables import field_meanings, setting_sources
from odbench.metrics.protocols import FOUND, ODBENCH, SELFMASK, Protocol

ROOT = Path(__file__).resolve().parents[1]

NEW_CARD = """name = "zz-new-method"
description = "A method added by the docs test."
entry = "odbench.methods.center_prior:CenterPrior"
task = ["saliency"]
citation = "@misc{zz2026, title={ZZ}}"

[hyperparameters]
# the width of the thing
sigma = 0.3      # in image sides

[[reported]]
source = "ZZ et al. 2026"
table = "9"
dataset = "ecssd"
iou = 0.777

[variants.small]
description = "ZZ with a small sigma."
[variants.small.hyperparameters]
sigma = 0.1
"""

NEW_METRIC = """    ("zz_metric",          "ZZ metric",            "ZZm",    "ZZm",            "zzm",
        "↓", "sod",      None,                      True),
"""


def test_a_new_card_and_catalog_entry_appear_with_no_other_edit(tmp_path: Path) -> None:
    """A copy of the checkout, plus one card file and the catalog row of the adding-a-metric
    guide, built with mkdocs."""
    pytest.importorskip("mkdocs", reason="the docs extra is not installed")
    copy = copy_repo(tmp_path / "repo")
    (copy / "methods" / "zz-new-method.toml").write_text(NEW_CARD)
    catalog = copy / "odbench" / "metrics" / "catalog.py"
    text = catalog.read_text()
    assert "\n)\n# fmt: on" in text
    row = titled("adding-a-metric.md", "odbench/metrics/catalog.py (inside _TABLE)")
    catalog.write_text(text.replace("\n)\n# fmt: on", "\n" + row + ")\n# fmt: on", 1))
    # no real data: the numbers page says so (and the build stays quick)
    build_site(copy, tmp_path / "site", ODBENCH_DOCS_DATA=str(tmp_path / "no-data"))
    zoo = (tmp_path / "site" / "reference" / "zoo.html").read_text()
    for expected in (
        'id="zz-new-method"',
        'id="zz-new-method-small"',
        "A method added by the docs test.",
        "ZZ with a small sigma.",
        "the width of the thing in image sides",  # the comment above and on the line
        "ZZ et al. 2026",
        "0.777",
        "zz2026",
    ):
        assert expected in zoo, expected
    # the papers' rows of methods without a card (leaderboard/reported/)
    assert 'id="reported-elsewhere"' in zoo and "diffusionseg-paper.toml" in zoo
    metrics = (tmp_path / "site" / "reference" / "metrics.html").read_text()
    assert 'id="precision05"' in metrics and "precision@0.5" in metrics
    assert "No definition written yet" in metrics
    numbers = (tmp_path / "site" / "why-numbers-differ.html").read_text()
    assert "No numbers in this build" in numbers and str(tmp_path / "no-data") in numbers


def test_card_comments(tmp_path: Path) -> None:
    card = tmp_path / "c.toml"
    card.write_text(
        'name = "x"  # the name\n\n# a note on the table\n[hyperparameters]\n'
        '# above\n# two lines\na = "b # not a comment"   # inline\nb = 1\n\n'
        "# about the rows\n[[reported]]\nsource = 'y'\n"
    )
    comments = read_comments(card)
    assert comments.keys[""] == {"name": "the name"}
    assert comments.keys["hyperparameters"] == {"a": "above two lines inline"}
    assert comments.notes["hyperparameters"] == ["a note on the table"]
    assert comments.notes["[[reported]]"] == ["about the rows"]


def _line(path: Path, pattern: str) -> int:
    lines = path.read_text().splitlines()
    return next(i + 1 for i, line in enumerate(lines) if re.search(pattern, line))


def test_protocol_settings_name_their_source_line() -> None:
    src = ROOT / "odbench" / "metrics" / "protocols.py"
    found = setting_sources(FOUND)
    # set in FOUND's own definition
    assert found["gt_rule"] == f"odbench/metrics/protocols.py:{_line(src, 'gt_rule=.eq255.')}"
    # inherited from SELFMASK through replace(SELFMASK, ...)
    square = _line(src, "square_beta2=True")
    assert found["square_beta2"] == f"odbench/metrics/protocols.py:{square} (from SELFMASK)"
    assert setting_sources(SELFMASK)["square_beta2"] == f"odbench/metrics/protocols.py:{square}"
    # the dataclass default
    assert setting_sources(ODBENCH)["beta2"] == (
        f"default, odbench/metrics/protocols.py:{_line(src, r'^    beta2: float')}"
    )


def test_every_protocol_setting_has_a_meaning() -> None:
    meanings = field_meanings(Protocol)
    fields = set(Protocol.__dataclass_fields__) - {"name", "description"}
    assert fields <= set(meanings), fields - set(meanings)
    assert meanings["beta2"] == meanings["square_beta2"]


def test_every_catalog_metric_has_its_definition():
    from odbench.metrics.catalog import METRICS
    from odbench.metrics.definitions import DEFINITIONS

    assert sorted(set(METRICS) - set(DEFINITIONS)) == []
    assert sorted(set(DEFINITIONS) - set(METRICS)) == []
