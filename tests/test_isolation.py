"""Issue 26 item 9: the test suite writes only under pytest's temporary folders, never into the
user's ``~/.cache/odbench`` (``tests/conftest.py::caches_under_tmp``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from odbench.cli import main


def _inside(path: Path, folder: Path) -> bool:
    return Path(path).resolve().is_relative_to(folder.resolve())


def test_every_default_cache_folder_is_under_pytests_tmp(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    import platformdirs

    from odbench.cache import default_cache_root as predictions
    from odbench.data.paths import default_data_root, resolve_data_root
    from odbench.feature_cache import FeatureCache

    base = tmp_path_factory.getbasetemp()
    folders = [predictions(), FeatureCache().folder, resolve_data_root(), default_data_root()]
    folders.append(Path(platformdirs.user_cache_dir("odbench")))  # the CLIP prior's default
    outside = [str(f) for f in folders if not _inside(f, base)]
    assert not outside, f"outside {base}: {outside}"


def test_eval_without_cache_dir_writes_under_pytests_tmp(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """``odbench eval`` with no --cache-dir: the maps land in the session's temporary cache."""
    from odbench.cache import cache_folders, default_cache_root

    args = ["eval", "--method", "center-prior", "--dataset", "toy", "--limit", "2"]
    r = CliRunner().invoke(main, [*args, "--results-dir", str(tmp_path / "res")])
    assert r.exit_code == 0, r.output
    (folder,) = [f for f in cache_folders(default_cache_root()) if f.method == "center-prior"]
    assert _inside(folder.path, tmp_path_factory.getbasetemp()) and folder.n_entries >= 2
