"""Every guide's code is a real example that runs: the quick start's commands and Python, the
three ways to evaluate your own method (a callable, saved maps, a plugin package declared by
entry point), and the add-a-method / dataset / feature-extractor guides, whose files are written
into a copy of the repository exactly as the guide shows them."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from docs_helpers import ROOT, code_blocks, commands, copy_repo, run_odbench, titled
from PIL import Image

pytestmark = pytest.mark.slow


def _exec_blocks(page: str, where: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Run the page's untitled python blocks in order, in one namespace, in ``where``."""
    monkeypatch.chdir(where)
    monkeypatch.setenv("ODBENCH_CACHE", str(where / "cache"))
    namespace: dict = {"__name__": "__guide__"}
    blocks = [b for b in code_blocks(page) if b.lang == "python" and not b.title]
    assert blocks, page
    for block in blocks:
        exec(compile(block.code, f"docs/{page}", "exec"), namespace)
    return namespace


def test_quick_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = commands("quickstart.md")
    assert any(line.startswith("odbench eval") for line in lines)
    for line in lines:
        run_odbench(ROOT, tmp_path, line)
    assert list((tmp_path / "leaderboard" / "results").glob("center-prior__toy__*.json"))
    assert "center-prior" in (tmp_path / "my-leaderboard.md").read_text()
    ns = _exec_blocks("quickstart.md", tmp_path, monkeypatch)
    assert 0 < ns["result"].metrics["saliency"]["max_fbeta"] <= 1


def test_evaluate_your_method_callable_and_saved_maps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ns = _exec_blocks("evaluate-your-method.md", tmp_path, monkeypatch)
    assert set(ns["result"].metrics["saliency"]) >= {"acc", "iou", "max_fbeta", "mae"}
    assert len(ns["result"].records) == 8
    assert 0 <= ns["run"].metrics["saliency"]["s_measure"] <= 1


def test_evaluate_your_method_as_a_plugin_package(tmp_path: Path) -> None:
    """The guide's module and entry point, installed as a distribution on the path."""
    page = "evaluate-your-method.md"
    site = tmp_path / "site-packages"
    site.mkdir()
    (site / "my_plugin.py").write_text(titled(page, "my_plugin.py"))
    project = tomllib.loads(titled(page, "pyproject.toml (of your package)"))
    group = project["project"]["entry-points"]["odbench.methods"]
    info = site / "my_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-plugin\nVersion: 0.1\n")
    lines = "".join(f"{name} = {target}\n" for name, target in group.items())
    (info / "entry_points.txt").write_text(f"[odbench.methods]\n{lines}")
    env = {
        **os.environ,
        "PYTHONPATH": f"{site}{os.pathsep}{ROOT}",
        "ODBENCH_CACHE": str(tmp_path / "cache"),
    }

    def odbench(*args: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "odbench", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    assert "my-plugin" in odbench("list", "methods")
    out = odbench("eval", "--method", "my-plugin", "--dataset", "toy", "--limit", "4")
    assert "maxF" in out


def test_adding_a_method(tmp_path: Path) -> None:
    page = "adding-a-method.md"
    repo = copy_repo(tmp_path / "repo")
    for path in ("odbench/methods/border_contrast.py", "methods/border-contrast.toml"):
        (repo / path).write_text(titled(page, path))
    outputs = [run_odbench(repo, tmp_path, line) for line in commands(page)]
    assert "border-contrast" in outputs[0]
    assert "maxF" in outputs[-1]
    (result,) = (tmp_path / "leaderboard" / "results").glob("border-contrast__toy__*.json")
    assert '"border": 4' in result.read_text()


def test_adding_a_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from odbench.data.toy import ToyDataset

    page = "adding-a-dataset.md"
    repo = copy_repo(tmp_path / "repo")
    (repo / "datasets" / "my_saliency.toml").write_text(titled(page, "datasets/my_saliency.toml"))
    folder = tmp_path / "data" / "MySaliency"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for sample in ToyDataset(n=4):
        Image.fromarray(sample.image).save(folder / "images" / f"{sample.id}.jpg")
        Image.fromarray(sample.mask).save(folder / "masks" / f"{sample.id}.png")
    (line,) = commands(page)
    assert "maxF" in run_odbench(repo, tmp_path, line)
    assert list((tmp_path / "leaderboard" / "results").glob("center-prior__my_saliency__*.json"))
    ns = _exec_blocks(page, tmp_path, monkeypatch)  # the Dataset class, evaluated
    sample = ns["Stripes"]().load("stripe_2")
    assert sample.mask is not None and np.array_equal(sample.mask[:, 28:40] > 0, np.ones((48, 12)))


def test_adding_a_feature_extractor(tmp_path: Path) -> None:
    page = "adding-a-feature-extractor.md"
    repo = copy_repo(tmp_path / "repo")
    specs = repo / "odbench" / "features" / "specs.py"
    text = specs.read_text()
    start = text.index("SPECS: tuple[ExtractorSpec, ...] = (")
    end = text.index("\n)\n", start)
    entry = titled(page, "odbench/features/specs.py (inside SPECS)")
    specs.write_text(text[:end] + "\n" + entry.rstrip("\n") + text[end:])
    (line,) = commands(page)
    listed = run_odbench(repo, tmp_path, line)
    assert "dino-vitb16 " in listed and "dino-vitb16-random" in listed
    (code,) = [b.code for b in code_blocks(page) if b.lang == "python" and not b.title]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "(1, 768, 14, 14)" in proc.stdout
