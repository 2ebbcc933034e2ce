"""Where a result comes from, as results JSON and checkpoints record it: the versions of the
packages that computed it (:func:`package_versions`), the git commit of the checkout odbench
runs from (:func:`git_commit`) and the date (:func:`utc_now`).

Versions and commit are read once per process and remembered: reading them costs ~10 ms each
(package metadata found on ``sys.path``; two ``git`` subprocesses), paid by every ``odbench
eval`` run otherwise, which on a dozen images is a few percent of the run (``odbench bench
runner``).  What they describe does not change under a running interpreter: an installed
package's version is that of the code already imported, and the code a process runs is the one
it loaded from the checkout.  An edit or a commit made while a process runs is seen by the next
process, as with the prediction cache's code identity (:func:`odbench.cache.code_identity`).
"""

from __future__ import annotations

import platform
import subprocess
import sys
from datetime import UTC, datetime
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

#: Packages whose version is recorded when they are imported in the running process.
TRACKED_PACKAGES = tuple(
    "numpy scipy pillow torch torchvision diffusers transformers open_clip_torch timm "
    "opencv-python PyMaxflow".split()
)
_IMPORT_NAME = {
    "pillow": "PIL",
    "open_clip_torch": "open_clip",
    "opencv-python": "cv2",
    "PyMaxflow": "maxflow",
}


def package_versions() -> dict[str, str]:
    """odbench's version and those of the tracked packages that this process imported (which
    ones is checked at each call; each version is read once per process)."""
    versions = {"odbench": _version("odbench"), "python": platform.python_version()}
    for dist in TRACKED_PACKAGES:
        if _IMPORT_NAME.get(dist, dist) in sys.modules or dist == "numpy":
            versions[dist] = _version(dist)
    return versions


@cache
def _version(dist: str) -> str:
    """The installed version of distribution ``dist`` (``unknown`` when not installed), read
    once per process: the packages a process has imported do not change version under it."""
    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"


def git_commit(path: Path | None = None) -> str | None:
    """The commit of the checkout odbench runs from (``+dirty`` when it has local changes), or
    ``None`` outside a git checkout; read once per process (and folder ``path``): the code this
    process runs is the one it loaded then."""
    return _git_commit((path or Path(__file__).resolve().parent.parent).resolve())


@cache
def _git_commit(cwd: Path) -> str | None:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def utc_now() -> datetime:
    """Now, in UTC (a run's date)."""
    return datetime.now(UTC)
