"""The documentation site: ``mkdocs build --strict`` passes (broken links, missing pages and
docstrings that do not render fail it), the built site loads nothing from the network, the
generated pages list everything registered, and in headless Chromium the zoo page shows every
method, search answers offline and nothing logs an error."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from docs_helpers import ROOT, build_site
from realdata import REAL_DATA

from odbench.cli import BENCHMARKS, COMMANDS
from odbench.docsite.markdown import anchor
from odbench.registry import DATASETS, FEATURES, METHODS

pytest.importorskip("mkdocs", reason='the docs extra is not installed (pip install -e ".[docs]")')
pytest.importorskip("material", reason='the docs extra is not installed (pip install -e ".[docs]")')


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("docs") / "site"
    seconds = build_site(ROOT, out, ODBENCH_DOCS_DATA=str(REAL_DATA))
    print(f"mkdocs build --strict: {seconds:.1f} s")
    return out


def _ids(page: Path) -> set[str]:
    return set(re.findall(r'\bid="([^"]+)"', page.read_text(encoding="utf-8")))


def test_every_page_of_the_nav_is_built(site: Path) -> None:
    import yaml

    class _Loader(yaml.SafeLoader):
        pass

    _Loader.add_multi_constructor("", lambda loader, suffix, node: None)  # !!python/name tags
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=_Loader)

    def pages(nav: object) -> Iterator[str]:
        if isinstance(nav, str):
            yield nav
        elif isinstance(nav, list):
            for item in nav:
                yield from pages(item)
        elif isinstance(nav, dict):
            for value in nav.values():
                yield from pages(value)

    paths = list(pages(config["nav"]))
    assert len(paths) >= 8
    for path in paths:
        assert (site / path).with_suffix(".html").is_file(), path


def test_the_site_loads_nothing_from_the_network(site: Path) -> None:
    """No CDN script, stylesheet or font: the site works offline (theme.font: false)."""
    remote = re.compile(r"<(script|link|img|iframe)\b[^>]*\b(src|href)=\"(https?:)?//", re.I)
    pages = list(site.rglob("*.html"))
    assert len(pages) >= 8
    found = {str(p.relative_to(site)): remote.findall(p.read_text()) for p in pages}
    assert not {k: v for k, v in found.items() if v}
    css = "".join(p.read_text() for p in site.rglob("*.css"))
    assert "fonts.googleapis" not in css and "@import url(http" not in css


def test_generated_pages_list_everything_registered(site: Path) -> None:
    ref = site / "reference"
    assert {anchor(n) for n in METHODS.names()} <= _ids(ref / "zoo.html")
    assert {anchor(n) for n in DATASETS.names()} <= _ids(ref / "datasets.html")
    features = (ref / "features.html").read_text()
    assert all(f"<code>{n}</code>" in features for n in FEATURES.names())
    cli = _ids(ref / "cli.html")
    assert {f"odbench-{n}" for n in COMMANDS} <= cli
    assert {f"odbench-bench-{n}" for n in BENCHMARKS} <= cli


def test_the_built_site_opens_from_disk(site: Path) -> None:
    """Links name .html files (use_directory_urls: false), so file:// navigation works."""
    index = (site / "index.html").read_text()
    assert 'href="reference/zoo.html"' in index
    assert not re.search(r'href="[^"#:]+/"', index)  # no folder links (index.html needed)


# ----------------------------------------------------------------------------- numbers


def _row(page: Path, label: str) -> list[str]:
    """The cells of the table row of ``page`` whose first cell contains ``label``."""
    for row in re.findall(r"<tr>(.*?)</tr>", page.read_text(), re.S):
        cells = [
            re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td>(.*?)</td>", row, re.S)
        ]
        if cells and label in cells[0]:
            return cells[1:]
    raise AssertionError(f"{page}: no row {label!r}")


def test_numbers_page_agrees_with_odbench_score(site: Path, tmp_path: Path) -> None:
    """The page's "8-bit PNG" row, recomputed through ``odbench.score`` on PNG files: the page's
    numbers are the ones odbench's public scoring gives, at four decimals."""
    import numpy as np
    from PIL import Image

    import odbench
    from odbench.cache import quantize
    from odbench.docsite import numbers
    from odbench.imageio import read_gray

    gt_dir = REAL_DATA / "ECSSD" / "ground_truth_mask"
    if not gt_dir.is_dir():
        pytest.skip(f"real ECSSD not found at {gt_dir}: the page says so instead")
    page = site / "why-numbers-differ.html"
    row = _row(page, "maps saved as 8-bit PNG")
    keys = ["acc", "iou", "max_fbeta", "mean_fbeta", "mae"]
    assert len(row) == len(keys) * len(numbers.SOURCES)
    for i, (source, make) in enumerate(numbers.SOURCES.items()):
        preds = tmp_path / source
        preds.mkdir()
        for path in numbers.subset(gt_dir):
            stored = quantize(make(read_gray(path)))  # as eval caches it, then as 8 bits
            Image.fromarray(np.round(stored / 65535 * 255).astype(np.uint8)).save(preds / path.name)
        run = odbench.score(preds, gt_dir, subset_of_gt=True, show_progress=False)
        got = run.metrics["saliency"]
        shown = [cell.split(" ")[0] for cell in row[i * len(keys) : (i + 1) * len(keys)]]
        for key, text in zip(keys, shown):
            if key == "mean_fbeta":
                continue  # not a key odbench score reports; the mean of its curve
            assert f"{got[key]:.4f}" == text, (source, key)
    assert f"on {len(numbers.subset(gt_dir))} ECSSD images" in page.read_text()


# ----------------------------------------------------------------------------- browser


def _chromium() -> str | None:
    for name in (os.environ.get("ODBENCH_CHROMIUM"), "chromium", "chromium-browser"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.slow
def test_site_in_headless_chromium(site: Path, tmp_path: Path) -> None:
    """Opened from disk (file://, every request to the network refused): the zoo page shows
    every registered method in its table and as a section; search finds a method (material's
    offline plugin ships the index as a script); the protocols page renders its tables; no page
    logs an error.  A screenshot: tmp_path/zoo.png."""
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    executable = _chromium()
    if executable is None:
        pytest.skip("no chromium on PATH (apt-get install chromium, or set ODBENCH_CHROMIUM)")
    errors: list[str] = []

    def refuse(route: Any) -> None:
        errors.append(f"network request: {route.request.url}")
        route.abort()

    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.route(re.compile(r"^(https?|wss?)://"), refuse)
        page = context.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto((site / "reference" / "zoo.html").as_uri())
        shown = page.eval_on_selector_all("h2[id], h3[id]", "els => els.map(e => e.id)")
        assert {anchor(n) for n in METHODS.names()} <= set(shown)
        first_column = page.evaluate(
            "[...document.querySelector('article table').tBodies[0].rows]"
            ".map(r => r.cells[0].innerText)"
        )
        assert first_column == METHODS.names()
        page.screenshot(path=str(tmp_path / "zoo.png"))
        page.goto((site / "index.html").as_uri())
        page.fill("input[data-md-component=search-query]", "attentioncut")
        hits = page.locator(".md-search-result__item")
        hits.first.wait_for(timeout=15000)
        assert "attentioncut" in hits.first.inner_text().lower()
        page.goto((site / "reference" / "protocols.html").as_uri())
        assert page.locator("article table").count() >= 2
        browser.close()
    assert errors == []


def test_readme_points_into_the_site() -> None:
    """The README is short and names site pages that exist (and are in the nav)."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme) < 6000
    assert 'pip install -e ".[docs]" && mkdocs build --strict' in readme
    named = set(re.findall(r"docs/([\w-]+\.md)", readme))
    assert {"quickstart.md", "usage.md", "cluster.md"} <= named
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in named:
        assert (ROOT / "docs" / page).is_file() and f": {page}" in nav, page
