"""Where datasets live: ``--data-root`` > ``$ODBENCH_DATA`` > the user cache dir.

The data root holds one folder per dataset (``ECSSD/``, ``DUTS-TE/``, ``VOC2007/`` ...), a
``.downloads/`` folder with the fetched archives, and ``odbench-lock.json`` with the sha256 of
every archive odbench downloaded (see :mod:`odbench.data.download`).
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "ODBENCH_DATA"


def default_data_root() -> Path:
    """The per-user cache folder (``platformdirs.user_cache_dir("odbench") / "data"``)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("odbench")) / "data"


def resolve_data_root(data_root: str | Path | None = None) -> Path:
    """The data root: the explicit argument, else ``$ODBENCH_DATA``, else the user cache dir.

    The folder is not created here (a loader that only reads must not create folders)."""
    if data_root is not None and str(data_root) != "":
        return Path(data_root).expanduser().resolve()
    env = os.environ.get(ENV_VAR, "")
    if env:
        return Path(env).expanduser().resolve()
    return default_data_root()
