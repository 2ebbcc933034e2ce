"""mkdocs hooks (``mkdocs.yml``: ``hooks``): the docstrings' Sphinx roles shown as code.

odbench's docstrings cross-reference with Sphinx roles (``:class:`~odbench.x.Y```), which
mkdocstrings renders as the role's text followed by the target in code; this shows the target
alone (its last name for ``~``), as Sphinx would.
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:class|func|mod|meth|attr|data|exc|obj):<code>(~?)([\w.]+)</code>")


def _short(match: re.Match[str]) -> str:
    target = match.group(2)
    return f"<code>{target.rsplit('.', 1)[-1] if match.group(1) else target}</code>"


def on_post_page(output: str, page: Any, config: Any) -> str:
    """Sphinx roles in a built page, as code."""
    return _ROLE.sub(_short, output)
