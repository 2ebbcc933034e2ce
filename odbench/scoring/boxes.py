"""CorLoc of saved boxes (``odbench score-boxes``): JSON files read and checked, one meter.

Predictions are ``{image_id: [x1, y1, x2, y2]}`` (or ``null``), GT boxes ``{image_id: [[x1, y1,
x2, y2], ...]}`` in continuous pixel coordinates; an image missing from the predictions (or
predicted as ``null``) counts as a miss.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from odbench.scoring import ScoringError

MAX_NAMED = 5  # ids listed in one error line


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ScoringError(f"{path}: file not found") from e
    except OSError as e:  # a folder, no permission...
        raise ScoringError(f"{path}: cannot read ({e.strerror or e})") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ScoringError(f"{path}: not valid JSON ({e})") from e


def _box(value: Any, where: str) -> list[float]:
    ok = (
        isinstance(value, list)
        and len(value) == 4
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        and all(math.isfinite(v) for v in value)
    )
    if not ok:
        raise ScoringError(
            f"{where}: expected a box [x1, y1, x2, y2] of 4 finite numbers, got {value!r}"
        )
    if value[2] < value[0] or value[3] < value[1]:  # e.g. [x, y, w, h] given for corners
        raise ScoringError(
            f"{where}: box {value!r} has x2 < x1 or y2 < y1; boxes are corners [x1, y1, x2, y2]"
        )
    return [float(v) for v in value]


def score_box_files(pred_path: Path, gt_path: Path) -> dict[str, Any]:
    """CorLoc of ``pred_path`` ({id: box or null}) against ``gt_path`` ({id: [box, ...]})."""
    from odbench.metrics.boxes import CorLocMeter

    preds = _load_json(Path(pred_path))
    gts = _load_json(Path(gt_path))
    for path, data in ((pred_path, preds), (gt_path, gts)):
        if not isinstance(data, dict):
            raise ScoringError(f"{path}: expected a JSON object mapping image ids to boxes")
    extra = sorted(preds.keys() - gts.keys())
    if extra:
        shown = ", ".join(extra[:MAX_NAMED]) + (" ..." if len(extra) > MAX_NAMED else "")
        raise ScoringError(f"{pred_path}: {len(extra)} image id(s) not in {gt_path}: {shown}")
    if not gts:
        raise ScoringError(f"{gt_path}: no images")
    meter = CorLocMeter()
    for image_id in sorted(gts):
        boxes = gts[image_id]
        if not isinstance(boxes, list):
            raise ScoringError(f"{gt_path}: {image_id}: expected a list of boxes, got {boxes!r}")
        gt_boxes = [_box(b, f"{gt_path}: {image_id}") for b in boxes]
        pred = preds.get(image_id)
        pred_box = None if pred is None else _box(pred, f"{pred_path}: {image_id}")
        meter.update(pred_box, gt_boxes, image_id)
    return meter.compute()
