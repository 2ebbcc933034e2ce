"""Where the tests find real benchmark data (ECSSD, DUTS-TR-1k, tiny_coco).

``$ODBENCH_TEST_DATA``, else ``$ODBENCH_DATA`` (the data root odbench itself uses), else
``../shared/data`` beside the checkout.  Tests that need a dataset skip, naming this folder,
when it is absent there.
"""

from __future__ import annotations

import os
from pathlib import Path

BESIDE_CHECKOUT = Path(__file__).resolve().parents[2] / "shared" / "data"


def real_data_root() -> Path:
    """The folder holding ``ECSSD/``, ``DUTS-TR-1k/``, ``tiny_coco/`` for the real-data tests."""
    for var in ("ODBENCH_TEST_DATA", "ODBENCH_DATA"):
        value = os.environ.get(var, "")
        if value:
            return Path(value).expanduser().resolve()
    return BESIDE_CHECKOUT


REAL_DATA = real_data_root()
