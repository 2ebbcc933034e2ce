"""Training checkpoints: one safetensors file plus a readable JSON copy of its config.

A run folder (``odbench train --out RUN_DIR``) holds

- ``checkpoint.safetensors``: the model's tensors (``model.<name>``), the optimizer's state
  tensors (``optim.<param index>.<key>``); the JSON config
  (model spec, card, extractor, data manifest, step, seeds, optimizer hyperparameters, history)
  in the file's metadata under ``"config"``.  One file, replaced by one atomic rename, so a crash
  never leaves weights from one step beside a config from another.
- ``config.json``: the same config, for people and tools (never read back by training).

No pickle anywhere (safetensors only).  Loading a folder that is not a run, or a file that is
not an odbench checkpoint, is one :class:`CheckpointError` line naming the path and the fix.
Where a run folder is expected, ``hf:owner/repo[@revision]`` names a published checkpoint on the
Hugging Face hub (its ``checkpoint.safetensors``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from odbench.errors import OdbenchError
from odbench.imageio import UMASK, atomic_write_bytes

CHECKPOINT_FILE = "checkpoint.safetensors"
CONFIG_FILE = "config.json"
CHECKPOINT_KIND = "odbench-checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(OdbenchError, ValueError):
    """A checkpoint that cannot be used; the message names the path and the fix."""


def checkpoint_path(run_dir: str | Path) -> Path:
    """The checkpoint file of a run folder, a file path, or a ``hf:owner/repo`` hub id."""
    return _resolve(run_dir)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(
    run_dir: str | Path,
    config: dict[str, Any],
    model_state: dict[str, Any],
    optimizer_state: dict[str, Any] | None = None,
) -> Path:
    """Write ``checkpoint.safetensors`` atomically (temp file + rename), then ``config.json``.

    ``optimizer_state`` is a ``torch.optim.Optimizer.state_dict()``: its tensors go into the file,
    its ``param_groups`` (plain numbers) into the config under ``"optimizer_param_groups"``."""
    import torch
    from safetensors.torch import save_file

    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().contiguous().cpu() for k, v in model_state.items()}
    config = {"kind": CHECKPOINT_KIND, "version": CHECKPOINT_VERSION, **config}
    if optimizer_state is not None:
        for index, state in optimizer_state["state"].items():
            for key, value in state.items():
                t = value if torch.is_tensor(value) else torch.tensor(value)
                tensors[f"optim.{index}.{key}"] = t.detach().contiguous().cpu()
        config["optimizer_param_groups"] = optimizer_state["param_groups"]
    metadata = {"config": json.dumps(config, sort_keys=True)}
    fd, tmp = tempfile.mkstemp(dir=run, prefix=".checkpoint-", suffix=".tmp")
    os.close(fd)
    try:
        _save_file(save_file, tensors, tmp, metadata)
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp makes 0600: a run others can read, as config.json
        os.replace(tmp, run / CHECKPOINT_FILE)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    atomic_write_bytes(run / CONFIG_FILE, json.dumps(config, indent=2, sort_keys=True).encode())
    return run / CHECKPOINT_FILE


def _save_file(
    save_file: Callable[..., None], tensors: dict[str, Any], path: str, metadata: dict[str, str]
) -> None:
    """safetensors' ``save_file``; its I/O failures (a full disk: ``SafetensorError: Error while
    serializing: I/O error: No space left on device (os error 28)``) as the ``OSError`` they
    are, naming ``path``, so that callers handle them as any other write error."""
    from safetensors import SafetensorError

    try:
        save_file(tensors, path, metadata=metadata)
    except SafetensorError as e:
        code = re.search(r"\(os error (\d+)\)", str(e))
        if code is None:
            raise
        number = int(code.group(1))
        raise OSError(number, os.strerror(number), path) from e


HUB_PREFIX = "hf:"


def _from_hub(source: str) -> Path:
    """``hf:owner/repo[@revision]``: the repository's ``checkpoint.safetensors`` through the
    Hugging Face cache (honours ``HF_HUB_OFFLINE``)."""
    repo, _, revision = source.removeprefix(HUB_PREFIX).partition("@")
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo, CHECKPOINT_FILE, revision=revision or None))
    except Exception as e:  # offline, not cached, no such repo: all the same to the user
        raise CheckpointError(
            f"{source}: {CHECKPOINT_FILE} is not in the Hugging Face cache and cannot be "
            f"downloaded ({type(e).__name__}); fetch it on a connected machine or give a RUN_DIR"
        ) from e


def _resolve(run_dir: str | Path) -> Path:
    if str(run_dir).startswith(HUB_PREFIX):
        return _from_hub(str(run_dir))
    path = Path(run_dir).expanduser()
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{path}: no checkpoint here; make one with `odbench train ... --out {Path(run_dir)}`"
        )
    return path


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """The config stored in a run's checkpoint (reads only the file header)."""
    from safetensors import safe_open

    path = _resolve(run_dir)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({e})") from e
    try:
        config = json.loads(meta["config"])
    except (KeyError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: safetensors file without an odbench config") from e
    if config.get("kind") != CHECKPOINT_KIND:
        raise CheckpointError(f"{path}: not an odbench checkpoint (kind {config.get('kind')!r})")
    if config.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {config.get('version')} (this odbench reads "
            f"{CHECKPOINT_VERSION}); retrain with `odbench train`"
        )
    return config  # type: ignore[no-any-return]


def load_checkpoint(
    run_dir: str | Path, *, with_optimizer: bool = False
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
    """``(config, model_state, optimizer_state or None)``.

    The optimizer state is rebuilt in ``torch.optim.Optimizer.state_dict()`` form."""
    from safetensors import safe_open

    path = _resolve(run_dir)
    config = read_config(path)
    model: dict[str, Any] = {}
    optim: dict[int, dict[str, Any]] = {}
    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
            kind, _, rest = key.partition(".")
            if kind == "model":
                model[rest] = f.get_tensor(key)
            elif kind == "optim" and with_optimizer:
                index, _, name = rest.partition(".")
                optim.setdefault(int(index), {})[name] = f.get_tensor(key)
    optimizer_state = None
    if with_optimizer:
        groups = config.get("optimizer_param_groups")
        if groups is None:
            raise CheckpointError(f"{path}: checkpoint has no optimizer state; cannot resume")
        optimizer_state = {"state": optim, "param_groups": groups}
    return config, model, optimizer_state
