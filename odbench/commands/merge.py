"""``odbench merge``: the shards of a run -> the results JSON + records one unsharded run writes."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click

from odbench.cli import UserError, results_dir_option, user_errors


@click.command("merge")
@click.argument("shard_jsons", nargs=-1, required=True, type=click.Path(path_type=Path))
@results_dir_option("Where the merged results JSON + records go.")
def merge_cmd(shard_jsons: tuple[Path, ...], results_dir: Path) -> None:
    """Merge the results JSONs of `odbench eval --shard I/N` (all N of them) into the one
    results JSON + per-image records that an unsharded run writes: same metrics, same records
    in the same order.  Shards of different settings, protocol or dataset, or with overlapping
    or missing ids, are refused."""
    from odbench.merge import MergeError, Part, merge
    from odbench.results import ResultsError, RunResult, read_results, results_stem, write_results

    with user_errors():
        try:
            if results_dir.exists() and not results_dir.is_dir():
                raise UserError(f"--results-dir {results_dir}: exists and is not a folder")
            parts = []
            for path in shard_jsons:
                run = read_results(path)
                parts.append(Part(run.to_json(), run.records.arrays(), str(path)))
            results, records = merge(parts)
            when = datetime.fromisoformat(results["date"])
            stem = results_stem(
                results["method"]["name"],
                results["dataset"]["name"],
                results["protocol"]["name"],
                when,
            )
            path = write_results(RunResult.from_json(results, records=records), results_dir, stem)
        except (MergeError, ResultsError) as e:
            raise UserError(str(e)) from e
    click.echo(f"merged {len(parts)} shards ({len(records['ids'])} images): {path}")
