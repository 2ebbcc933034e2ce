"""``odbench merge``: the shards of a run -> the results JSON + records one unsharded run writes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from odbench.commands import options

if TYPE_CHECKING:
    from odbench.merge import Part


@click.command("merge")
@click.argument("shard_jsons", nargs=-1, required=True, type=click.Path(path_type=Path))
@options.results_dir("Where the merged results JSON + records go.")
def merge_cmd(shard_jsons: tuple[Path, ...], results_dir: Path) -> None:
    """Merge the results JSONs of `odbench eval --shard I/N` (all N of them) into the one
    results JSON + per-image records that an unsharded run writes: same metrics, same records
    in the same order.  Shards of different settings, protocol or dataset, or with overlapping
    or missing ids, are refused."""
    from odbench.merge import merge
    from odbench.outputs import check_output_folder
    from odbench.results import RunResult, write_results

    check_output_folder(results_dir, "--results-dir")
    parts = [_read_shard(path) for path in shard_jsons]
    results, records = merge(parts)
    path = write_results(RunResult.from_json(results, records=records), results_dir)
    click.echo(f"merged {len(parts)} shards ({len(records['ids'])} images): {path}")


def _read_shard(path: Path) -> Part:
    """One shard's results and records; a path that is not a readable shard results JSON is one
    line naming it and the fix."""
    from odbench.merge import RERUN_SHARD, MergeError, Part
    from odbench.results import ResultsError, read_results

    if path.is_dir():
        raise MergeError(
            f"{path}: is a folder; pass the shard results JSONs in it ({path}/*__shard-*.json)"
        )
    if path.name.endswith(".records.npz"):
        raise MergeError(
            f"{path}: a per-image records file; pass the shards' .json files (merge reads the "
            "records beside them)"
        )
    try:
        run = read_results(path)
        return Part(run.to_json(), run.records.arrays(), str(path))
    except ResultsError as e:
        if not path.exists() or "re-run" in str(e):
            raise
        raise MergeError(f"{e}; {RERUN_SHARD}") from e
