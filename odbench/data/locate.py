"""Finding a named dataset on disk, in any of the layouts the field uses, and downloading it
when it is absent.

A card's ``[layout] folders`` lists the dataset folder names searched under the data root (the
first one is what ``odbench data download`` creates); the data root itself, or an explicit
``path``, may also be the dataset folder.  Each loader supplies a ``match(folder)`` function that
recognises its layouts and a one-line description of what it expected, used in the error that
lists what was found instead.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from odbench.cards import DatasetCard
from odbench.data.base import DatasetError
from odbench.data.paths import resolve_data_root

M = TypeVar("M")


def listing(folder: Path) -> str:
    """``a/, b/, c.txt`` (visible entries, folders first), for error messages."""
    try:
        entries = sorted(
            (not p.is_dir(), p.name + ("/" if p.is_dir() else ""))
            for p in folder.iterdir()
            if not p.name.startswith(".")
        )
    except OSError:
        return "(unreadable)"
    names = [name for _, name in entries]
    shown = ", ".join(names[:12]) + (f", ... ({len(names)} entries)" if len(names) > 12 else "")
    return shown or "nothing"


def candidate_folders(card: DatasetCard, root: Path) -> list[Path]:
    folders = card.raw.get("layout", {}).get("folders", [])
    return [root / f for f in folders] + [root]


def locate_dataset(
    card: DatasetCard,
    data_root: str | Path | None,
    path: str | Path | None,
    match: Callable[[Path], M | None],
    expected: str,
    *,
    download: bool = False,
    progressbar: bool = True,
) -> tuple[Path, M]:
    """Return ``(dataset folder, match result)`` or raise one clear :class:`DatasetError`.

    With ``path``: that folder must match.  Otherwise the card's folders under the data root are
    tried, then the data root itself; if none exists and ``download`` is true (only
    ``odbench data download`` asks for it), the dataset is downloaded (see
    :mod:`odbench.data.download`).  Without ``download`` nothing is created anywhere: the error
    names the folders and layouts looked for and the command that downloads."""
    if path is not None:
        folder = Path(path).expanduser().resolve()  # absolute: describe() keys the cache
        if not folder.is_dir():
            raise DatasetError(f"{folder}: {card.name} folder not found")
        found = match(folder)
        if found is None:
            raise DatasetError(
                f"{folder}: not a {card.name} layout: expected {expected}; found: {listing(folder)}"
            )
        return folder, found
    root = resolve_data_root(data_root)
    candidates = candidate_folders(card, root)
    for folder in candidates:
        if folder.is_dir():
            found = match(folder)
            if found is not None:
                return folder, found
    existing = [f for f in candidates[:-1] if f.is_dir()]
    if existing:  # the folder is there but holds something else: say what
        folder = existing[0]
        raise DatasetError(
            f"{folder}: wrong {card.name} layout: expected {expected}; found: {listing(folder)}"
        )
    from odbench.data.download import download_dataset, download_target, file_specs

    if download and file_specs(card):
        target = download_target(card)
        folders = card.raw.get("layout", {}).get("folders", [])
        inside = [
            f.removeprefix(target).lstrip("/")
            for f in folders
            if f == target or f.startswith(target + "/")
        ]

        def check(built: Path) -> None:
            if not any(match(built / rel) is not None for rel in inside if (built / rel).is_dir()):
                raise DatasetError(
                    f"{card.name}: wrong layout in the downloaded archives: expected {expected}; "
                    f"found: {listing(built)}"
                )

        download_dataset(card, root, progressbar=progressbar, check=check)
        for folder in candidates:
            found = match(folder) if folder.is_dir() else None
            if found is not None:
                return folder, found
        raise DatasetError(
            f"{root / target}: wrong {card.name} layout after download"
        )  # pragma: no cover
    names = ", ".join(f"{f}/" for f in card.raw.get("layout", {}).get("folders", []))
    where = f" --data-root {shlex.quote(str(root))}"  # where it was looked for
    hint = (
        f"download it with `odbench data download {card.name}{where}`" if file_specs(card) else ""
    )
    raise DatasetError(
        f"{card.name}: not found under {root} (looked for {names or 'a dataset folder'} "
        f"holding {expected}); {hint + ', ' if hint else ''}or pass --data-root pointing at "
        "the folder that holds it"
    )
