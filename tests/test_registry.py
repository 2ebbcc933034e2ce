"""Registry, cards, ``odbench list``, the toy dataset and center-prior.

Card checks are parametrised over the registries, so a new method or dataset is tested by being
registered; nothing heavy is imported (method modules are located, not imported).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import math
import subprocess
import sys
from importlib.metadata import EntryPoint
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from odbench.cards import dataset_card, dataset_cards, method_card, method_cards
from odbench.cli import main
from odbench.data.base import DatasetError, create_dataset
from odbench.leaderboard import DATASET_LABELS
from odbench.methods.base import create_method
from odbench.methods.center_prior import center_gaussian
from odbench.metrics.protocols import PROTOCOLS
from odbench.registry import DATASETS, METHODS, Registry, UnknownNameError
from odbench.reported import DISCOVERY_KEYS, reported_rows

TASKS = {"saliency", "localization", "discovery"}
TABLES = {"1a", "1b", "1c", "3", "4", "5", "6", "7"}


def _module_exists(entry: str) -> bool:
    module, _, attr = entry.partition(":")
    return bool(attr) and importlib.util.find_spec(module) is not None


@pytest.mark.parametrize("name", sorted(method_cards()))
def test_method_card(name: str) -> None:
    card = method_card(name)
    assert card is not None and card.name == name
    assert (card.parent or name) == card.path.stem  # a variant lives in its parent's card
    assert name == name.lower() and "_" not in name  # kebab-case ids (variants: parent.variant)
    assert name in METHODS and card.description and "\n" not in card.description
    assert _module_exists(card.entry), card.entry
    assert set(card.task) <= TASKS and card.task
    assert isinstance(card.hyperparameters, dict)


@pytest.mark.parametrize("name", sorted(dataset_cards()))
def test_dataset_card(name: str) -> None:
    card = dataset_card(name)
    assert card is not None and card.name == name == card.path.stem
    assert name == name.lower() and "-" not in name  # snake_case ids
    assert name in DATASETS and card.description
    assert _module_exists(card.entry), card.entry
    assert set(card.task) <= TASKS and card.task
    assert card.count is None or (isinstance(card.count, int) and card.count > 0)
    for alias in card.aliases:
        assert dataset_card(alias) is card


def test_reported_rows_have_valid_values() -> None:
    for row in reported_rows():
        if set(row.metrics) <= DISCOVERY_KEYS:  # DiffusionSeg's table ids select its tables
            assert row.table not in TABLES and row.source, row
        else:
            assert row.table in TABLES, row
        assert row.dataset in DATASET_LABELS, row
        for metric, value in row.metrics.items():
            upper = 100.0 if metric == "corloc" else 1.0
            assert 0.0 <= value <= upper and math.isfinite(value), row


def test_protocols_registered() -> None:
    assert set(PROTOCOLS.names()) >= {
        "odbench",
        "tokencut",
        "voynov",
        "selfmask",
        "found",
        "pysodmetrics",
    }
    for name in PROTOCOLS.names():
        assert PROTOCOLS.get(name).name == name


def test_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(UnknownNameError) as e:
        METHODS.get("centre-prior")
    msg = str(e.value)
    assert "Did you mean 'center-prior'?" in msg and "Valid: " in msg
    assert all(n in msg for n in METHODS.names())


def test_register_decorator_and_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    target = "odbench.methods.center_prior:CenterPrior"
    monkeypatch.setattr(
        importlib.metadata,
        "entry_points",
        lambda group: [EntryPoint(name="plugged", value=target, group=group)],
    )
    reg: Registry[Any] = Registry("method", entry_point_group="test.group")

    @reg.register("local", "a local method")
    class Local:
        pass

    assert reg.names() == ["local", "plugged"]
    assert reg.get("local") is Local
    from odbench.methods.center_prior import CenterPrior

    assert reg.get("plugged") is CenterPrior
    assert dict(reg.describe())["local"] == "a local method"
    with pytest.raises(ValueError, match="registered twice"):
        reg.add("local", obj=Local)


def test_list_command_shows_everything() -> None:
    result = CliRunner().invoke(main, ["list"])
    assert result.exit_code == 0, result.output
    for name in [*METHODS.names(), *DATASETS.names(), *PROTOCOLS.names()]:
        assert name in result.output
    toy = next(line for line in result.output.splitlines() if line.startswith("toy "))
    assert toy.split()[1:3] == ["sal+loc", "16"]
    only = CliRunner().invoke(main, ["list", "protocols"])
    assert only.exit_code == 0 and "methods:" not in only.output
    assert len(only.output.strip().splitlines()) == len(PROTOCOLS.names())
    bad = CliRunner().invoke(main, ["list", "models"])
    assert bad.exit_code == 2


def test_list_and_help_do_not_import_torch() -> None:
    code = (
        "import sys; from click.testing import CliRunner; from odbench.cli import main; "
        "r = CliRunner().invoke(main, ['list']); assert r.exit_code == 0, r.output; "
        "CliRunner().invoke(main, ['--help']); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_list_methods_imports_neither_numpy_nor_pillow() -> None:
    code = (
        "import sys; from click.testing import CliRunner; from odbench.cli import main; "
        "r = CliRunner().invoke(main, ['list', 'methods']); assert r.exit_code == 0, r.output; "
        "print(sorted(m for m in ('numpy', 'PIL') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- toy dataset


def test_toy_is_deterministic_and_consistent() -> None:
    ds = create_dataset("toy")
    assert len(ds) == 16 and ds.ids()[0] == "toy_00000"
    a, b = ds.load("toy_00005"), create_dataset("toy").load("toy_00005")
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)
    other = create_dataset("toy", seed=1).load("toy_00005")
    assert not np.array_equal(a.image, other.image)
    for s in ds:
        assert s.image.shape == (96, 128, 3) and s.image.dtype == np.uint8
        assert s.mask is not None and s.mask.dtype == np.uint8
        assert set(np.unique(s.mask)) <= {0, 255}
        ys, xs = np.nonzero(s.mask)
        assert s.boxes is not None
        np.testing.assert_array_equal(s.boxes, [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]])
        fg = s.mask > 0
        # The object differs in colour from the background (the dataset is solvable).
        assert np.abs(s.image[fg].mean(0) - s.image[~fg].mean(0)).max() > 20


def test_toy_size_and_bad_ids() -> None:
    ds = create_dataset("toy", n=3, size=(40, 50))
    assert ds.ids() == ["toy_00000", "toy_00001", "toy_00002"]
    assert ds.load("toy_00002").image.shape == (40, 50, 3)
    for bad in ("toy_00003", "cat"):
        with pytest.raises(DatasetError, match="toy: no sample"):
            ds.load(bad)
    with pytest.raises(DatasetError):
        create_dataset("toy", n=0)


# ----------------------------------------------------------------------------- center-prior


def test_center_gaussian_is_the_float32_of_the_direct_formula() -> None:
    """The separable product rounds to the same float32 map as exp(-(dx² + dy²) / 2σ²)
    computed per pixel (the map before the change; also checked on all 318 image sizes of
    ECSSD, DUTS-TR-1k and the COCO subset)."""
    sizes = [(h, w) for h in (1, 2, 7, 96, 266, 267, 300) for w in (1, 3, 128, 299, 400)]
    for sigma in (0.25, 0.1, 0.5):
        for h, w in sizes:
            y = (np.arange(h, dtype=np.float64) + 0.5) / h - 0.5
            x = (np.arange(w, dtype=np.float64) + 0.5) / w - 0.5
            direct = np.exp(-(y[:, None] ** 2 + x[None, :] ** 2) / (2.0 * sigma**2))
            np.testing.assert_array_equal(
                center_gaussian(h, w, sigma), direct.astype(np.float32), f"{h}x{w}, {sigma}"
            )


def test_center_gaussian_analytic() -> None:
    h, w, sigma = 40, 60, 0.25
    g = center_gaussian(h, w, sigma)
    assert g.shape == (h, w) and g.dtype == np.float32
    assert 0 < g.min() and g.max() <= 1
    np.testing.assert_allclose(g, g[::-1, ::-1], rtol=1e-6)  # symmetric about the centre
    # Offsets of pixel centres in units of the side: (i + 0.5) / n - 0.5.
    dy, dx = (19 + 0.5) / h - 0.5, (44 + 0.5) / w - 0.5
    assert g[19, 44] == pytest.approx(math.exp(-(dy**2 + dx**2) / (2 * sigma**2)), rel=1e-6)
    # 1-D profile through the centre rows: g(dx) / g(0) = exp(-dx² / 2σ²) for any dx.
    ratio = g[19, 30:] / g[19, 29]
    offsets = (np.arange(30, 60) + 0.5) / w - 0.5
    np.testing.assert_allclose(
        ratio, np.exp(-(offsets**2 - (29.5 / w - 0.5) ** 2) / (2 * sigma**2)), rtol=1e-5
    )


def test_center_prior_method() -> None:
    method = create_method("center-prior")
    images = [np.zeros((30, 40, 3), np.uint8), np.zeros((17, 9, 3), np.uint8)]
    maps = method.predict(images)
    assert [m.shape for m in maps] == [(30, 40), (17, 9)]
    wide = create_method("center-prior", sigma=0.5).predict(images[:1])[0]
    assert wide.mean() > maps[0].mean()
    assert method.describe()["hyperparameters"] == {"sigma": 0.25}
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        create_method("center-prior", sigmaa=1)
    boxes = method.predict_boxes(images[:1], maps[:1])
    x1, y1, x2, y2 = boxes[0]
    assert (x1 + x2) / 2 == pytest.approx(20) and (y1 + y2) / 2 == pytest.approx(15)


def test_aliases_resolve_in_the_registry() -> None:
    """Dataset aliases (from the cards) resolve in one place: DATASETS.canonical."""
    from odbench.cards import dataset_card
    from odbench.registry import DATASETS, Registry, UnknownNameError

    assert DATASETS.canonical("COCO20k") == "coco20k" and "CUB-200-2011" in DATASETS
    assert DATASETS.get("CUB") is DATASETS.get("cub")
    card = dataset_card("cub200")
    assert card is not None and card.name == "cub"
    assert dataset_card("nope") is None
    with pytest.raises(UnknownNameError, match="Valid:"):
        DATASETS.canonical("nope")
    reg: Registry[int] = Registry("thing")
    reg.add("a", obj=1, aliases=("A",))
    with pytest.raises(ValueError, match="registered twice"):
        reg.add("A", obj=2)
