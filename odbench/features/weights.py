"""The one weight resolver of odbench: every pretrained file (hub id, URL or local path) is found
here, and every failure is one :class:`WeightsNotFoundError` line naming the command that fetches
the file.

Priority (as timm's): an explicit local path > the Hugging Face cache > the hub (or the URL).
``HF_HUB_OFFLINE=1`` stops at the cache.  When the hub is not cached and the host does not answer
a TCP connect within :data:`CONNECT_TIMEOUT` seconds, the error comes at once instead of after
huggingface_hub's retries (which took ~30 s per file).

Never unpickles: callers read safetensors, or ``torch.load(weights_only=True)`` for the field's
``.pth`` checkpoints (DINO ViT-S/8, MoCo v3), see :func:`load_state_dict`.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from odbench.errors import OdbenchError

#: Seconds to wait for the hub / a URL's host to accept a connection.
CONNECT_TIMEOUT = 3.0


class WeightsNotFoundError(OdbenchError, FileNotFoundError):
    """Weights that are neither at the given path, nor cached, nor downloadable now.  The message
    is one line with the command that fetches them (a FileNotFoundError, so the CLI prints it as
    one line, exit 2)."""


def offline() -> bool:
    """``HF_HUB_OFFLINE`` set to a true value."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def reachable(url: str, timeout: float = CONNECT_TIMEOUT) -> bool:
    """Whether ``url``'s host accepts a TCP connection within ``timeout`` seconds."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def hub_command(repo_id: str, files: tuple[str, ...] = (), revision: str | None = None) -> str:
    """The ``hf download`` command (huggingface_hub >= 0.34 CLI) that fetches ``files``."""
    rev = f" --revision {revision}" if revision else ""
    if files and all("*" not in f for f in files):
        return f"hf download {repo_id} {' '.join(files)}{rev}"
    inc = "".join(f" --include '{f}'" for f in files)
    return f"hf download {repo_id}{rev}{inc}"


def _missing(what: str, why: str, fix: str, size: str | None) -> WeightsNotFoundError:
    sz = f"; size {size}" if size else ""
    return WeightsNotFoundError(f"{what} not available ({why}){sz}; fetch with: {fix}")


def hub_file(
    repo_id: str, filename: str, revision: str | None = None, *, size: str | None = None
) -> Path:
    """Local path of ``filename`` in hub repo ``repo_id`` (cache first, then download)."""
    from huggingface_hub import hf_hub_download

    fix = hub_command(repo_id, (filename,), revision) + " (or give a local file)"
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, local_files_only=True))
    except Exception:  # not cached: below
        pass
    if offline():
        raise _missing(f"{repo_id}/{filename}", "not cached and HF_HUB_OFFLINE=1", fix, size)
    if not reachable(hub_endpoint()):
        raise _missing(f"{repo_id}/{filename}", f"{hub_endpoint()} unreachable", fix, size)
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision))
    except Exception as e:  # hub errors come in many classes; all mean "not here"
        raise _missing(f"{repo_id}/{filename}", type(e).__name__, fix, size) from e


def hub_snapshot(
    repo_id: str,
    revision: str | None,
    patterns: tuple[str, ...],
    *,
    ignore: tuple[str, ...] = (),
    size: str | None = None,
) -> Path:
    """Local folder of a hub repo snapshot restricted to ``patterns`` (cache first)."""
    from huggingface_hub import snapshot_download

    fix = hub_command(repo_id, patterns, revision) + " (or pass a local folder)"
    kw: dict[str, Any] = {
        "revision": revision,
        "allow_patterns": list(patterns),
        "ignore_patterns": list(ignore) or None,
    }
    try:
        return Path(snapshot_download(repo_id, local_files_only=True, **kw))
    except Exception:
        pass
    if offline():
        raise _missing(repo_id, "not cached and HF_HUB_OFFLINE=1", fix, size)
    if not reachable(hub_endpoint()):
        raise _missing(repo_id, f"{hub_endpoint()} unreachable", fix, size)
    try:
        return Path(snapshot_download(repo_id, **kw))
    except Exception as e:
        raise _missing(repo_id, type(e).__name__, fix, size) from e


def url_file(url: str, *, size: str | None = None) -> Path:
    """Local path of a checkpoint published at ``url`` (cached under the torch hub folder)."""
    import torch.hub

    target = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
    fix = f"curl -L --create-dirs -o {target} {url} (or give the local file)"
    if target.is_file():
        return target
    if offline():
        raise _missing(url, "not cached and HF_HUB_OFFLINE=1", fix, size)
    if not reachable(url):
        raise _missing(url, f"{urlparse(url).hostname} unreachable", fix, size)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(target), progress=True)
    except Exception as e:
        raise _missing(url, type(e).__name__, fix, size) from e
    return target


def local_file(path: str | os.PathLike[str], what: str) -> Path:
    """An explicitly given file, which must exist."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise WeightsNotFoundError(f"{what}: no file at {p}; give the path of the downloaded file")
    return p


def load_state_dict(path: Path) -> dict[str, Any]:
    """Tensors of a checkpoint: safetensors, or a torch pickle read with ``weights_only=True``
    (tensors and plain containers only: no code runs)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path)))
    import torch

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)  # type: ignore[no-any-return]
    except Exception as e:
        raise WeightsNotFoundError(
            f"{path}: not a readable checkpoint with weights_only=True ({type(e).__name__}); "
            "download it again"
        ) from e
