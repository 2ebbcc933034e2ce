"""``odbench score-detections``: class-agnostic COCO AP / AR of a COCO-results file (the command
line of :mod:`odbench.scoring.detections`); no torch imported."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

#: COCO's summary lines, in its order (what ``COCOeval.summarize`` prints for each number).
_LINES = {
    "AP": ("0.50:0.95", "   all", "{m}"),
    "AP50": ("0.50     ", "   all", "{m}"),
    "AP75": ("0.75     ", "   all", "{m}"),
    "APs": ("0.50:0.95", " small", "{m}"),
    "APm": ("0.50:0.95", "medium", "{m}"),
    "APl": ("0.50:0.95", " large", "{m}"),
    "AR1": ("0.50:0.95", "   all", "1"),
    "AR10": ("0.50:0.95", "   all", "10"),
    "AR100": ("0.50:0.95", "   all", "{m}"),
    "ARs": ("0.50:0.95", " small", "{m}"),
    "ARm": ("0.50:0.95", "medium", "{m}"),
    "ARl": ("0.50:0.95", " large", "{m}"),
}


@click.command("score-detections")
@click.option(
    "--pred",
    "pred_path",
    required=True,
    type=click.Path(path_type=Path),
    help="COCO results JSON: a list of {image_id, score, bbox [x,y,w,h], segmentation RLE}.",
)
@click.option(
    "--gt",
    "gt_path",
    required=True,
    type=click.Path(path_type=Path),
    help="COCO-format instances JSON (e.g. annotations/instances_val2017.json).",
)
@click.option(
    "--iou-type",
    type=click.Choice(["bbox", "segm"]),
    default="bbox",
    show_default=True,
    help="Match boxes or masks.",
)
@click.option(
    "--max-dets",
    type=click.IntRange(min=10),
    default=None,
    help="Detections per image (default 100, the coco-agnostic protocol; LVIS: 300).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the 12 numbers as one JSON object.")
def score_detections_cmd(
    pred_path: Path, gt_path: Path, iou_type: str, max_dets: int | None, as_json: bool
) -> None:
    """Class-agnostic COCO AP / AR of a COCO-results file (every category as one).

    \b
    The 12 numbers of pycocotools' COCOeval summary, under COCO's names:
    AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl
    (AR100 is AR at --max-dets detections; null / NaN where COCO prints -1: no GT of that size).
    Crowd regions are ignored as COCO ignores them; detections with equal scores are ordered by
    box, then mask, never by their order in the file (protocol coco-agnostic).
    """
    from odbench.scoring.detections import score_detections

    result = score_detections(pred_path, gt_path, iou_type, max_dets)  # type: ignore[arg-type]
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    if as_json:
        click.echo(json.dumps({k: None if math.isnan(v) else v for k, v in result.metrics.items()}))
        return
    m = result.protocol.max_dets
    click.echo(
        f"{result.n_detections} detections on {result.n_images} images, {iou_type}, "
        f"protocol {result.protocol.name}"
    )
    for key, value in result.metrics.items():
        iou, area, dets = _LINES[key]
        kind = "Average Precision (AP)" if key.startswith("AP") else "Average Recall    (AR)"
        shown = "  n/a" if math.isnan(value) else f"{value:.3f}"
        click.echo(
            f" {kind} @[ IoU={iou} | area={area} | maxDets={dets.format(m=m):>4} ] = {shown}  {key}"
        )
