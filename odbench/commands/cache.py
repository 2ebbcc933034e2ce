"""``odbench cache info|clear``: where the prediction cache is, what it holds, and emptying it."""

from __future__ import annotations

from pathlib import Path

import click

_CACHE_DIR = click.option(
    "--cache-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Prediction cache root (default: $ODBENCH_CACHE/predictions or the user cache folder).",
)


@click.group("cache")
def cache() -> None:
    """The per-image prediction cache of `odbench eval`."""


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


@cache.command("info")
@_CACHE_DIR
def info(cache_dir: Path | None) -> None:
    """Where the cache is and, per method and key, how many maps it holds."""
    from odbench.cache import cache_dir_option, cache_folders, default_cache_root

    root = cache_dir or default_cache_root()
    folders = cache_folders(root)
    click.echo(f"cache: {root}{'' if root.is_dir() else ' (empty: not created yet)'}")
    for f in folders:
        click.echo(f"  {f.method}/{f.key}: {f.n_entries} maps, {_size(f.n_bytes)}")
    total = sum(f.n_bytes for f in folders)
    click.echo(
        f"{len(folders)} folder(s), {_size(total)}; clear with: odbench cache clear"
        + cache_dir_option(cache_dir)
    )


@cache.command("clear")
@click.option("--method", "methods", multiple=True, help="Only this method's maps (repeatable).")
@_CACHE_DIR
def clear(methods: tuple[str, ...], cache_dir: Path | None) -> None:
    """Delete cached maps (all, or those of --method)."""
    from odbench.cache import clear_cache, default_cache_root

    root = cache_dir or default_cache_root()
    removed = clear_cache(root, methods)
    if methods and not removed:  # a typo in --method: one line listing the valid names
        from odbench.registry import METHODS

        for name in methods:
            METHODS.canonical(name)
    n = sum(f.n_entries for f in removed)
    click.echo(f"removed {len(removed)} folder(s), {n} maps, from {root}")
