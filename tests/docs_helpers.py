"""Helpers of the documentation tests: build the site, copy the checkout, read a page's code
blocks.  A guide's code block runs in the tests: ``python`` blocks without a title are executed,
titled blocks (```` ```python title="odbench/methods/x.py" ````) are files the test writes, and a
``bash`` block runs when the line above it is ``<!-- tested -->``."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

_FENCE = re.compile(r"^```(\w+)(?:\s+title=\"([^\"]*)\")?\s*\n(.*?)^```\s*$", re.M | re.S)


@dataclass
class Block:
    lang: str
    title: str
    code: str
    tested: bool  # a bash block marked <!-- tested -->


def code_blocks(page: str) -> list[Block]:
    """The fenced code blocks of ``docs/<page>``, in order."""
    text = (DOCS / page).read_text(encoding="utf-8")
    out = []
    for m in _FENCE.finditer(text):
        before = text[: m.start()].rstrip().rsplit("\n", 1)[-1].strip()
        out.append(Block(m.group(1), m.group(2) or "", m.group(3), before == "<!-- tested -->"))
    return out


def titled(page: str, title: str) -> str:
    """The code of the block titled ``title`` on ``page``."""
    found = [b.code for b in code_blocks(page) if b.title == title]
    assert len(found) == 1, f"{page}: {len(found)} blocks titled {title!r}"
    return found[0]


def commands(page: str) -> list[str]:
    """The command lines of the page's ``<!-- tested -->`` bash blocks."""
    lines = [
        line.split("  #")[0].strip()
        for b in code_blocks(page)
        if b.lang == "bash" and b.tested
        for line in b.code.splitlines()
    ]
    return [line for line in lines if line]


def copy_repo(dest: Path) -> Path:
    """A copy of what the package and the site are built from (no .git, no caches)."""
    for name in ("odbench", "methods", "datasets", "leaderboard", "docs"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("mkdocs.yml", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    return dest


def run_odbench(repo: Path, cwd: Path, line: str, timeout: float = 300) -> str:
    """``line`` (an ``odbench ...`` or ``python -c``-free command) with ``repo``'s code, in
    ``cwd``, the prediction cache under ``cwd``; its output (it must exit 0)."""
    import shlex

    argv = shlex.split(line)
    assert argv[0] == "odbench", line
    env = {**os.environ, "PYTHONPATH": str(repo), "ODBENCH_CACHE": str(cwd / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "odbench", *argv[1:]],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"{line}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def build_site(root: Path, out: Path, **extra_env: str) -> float:
    """``mkdocs build --strict`` of the checkout ``root`` into ``out``; seconds taken."""
    env = {**os.environ, **extra_env, "PYTHONPATH": str(root), "NO_MKDOCS_2_WARNING": "1"}
    env["DISABLE_MKDOCS_2_WARNING"] = "true"
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(out)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return time.perf_counter() - start
