"""Issue 26 item 2: an image a method fails on (wCtr's 49.7 GiB ``MemoryError`` on a textured
COCO photo) is one error line naming the image, the images before it cached, or with
``--on-error skip`` a recorded skip; never a traceback that loses the run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import odbench
from odbench.cli import main
from odbench.data.base import create_dataset
from odbench.methods.center_prior import CenterPrior
from odbench.phases import EvalError, ImageError

OOM = "Unable to allocate 49.7 GiB for an array with shape (47137, 47137, 3) and data type float64"


def _fails_on(bad: np.ndarray, predict: Any) -> Any:
    """``predict`` that raises numpy's out-of-memory error when its batch holds ``bad``."""

    def wrapped(self: Any, images: list[np.ndarray]) -> list[np.ndarray]:
        if any(im.shape == bad.shape and np.array_equal(im, bad) for im in images):
            raise MemoryError(OOM)
        return list(predict(self, images))

    return wrapped


def _maps(_self: Any, images: list[np.ndarray]) -> list[np.ndarray]:
    return [np.linspace(0, 1, im.shape[0] * im.shape[1]).reshape(im.shape[:2]) for im in images]


def _toy(k: int) -> tuple[list[str], np.ndarray]:
    ds = create_dataset("toy")
    ids = ds.ids()[:5]
    return ids, ds.load(ids[k]).image


def test_a_failing_image_stops_the_run_with_one_line_naming_it() -> None:
    ids, bad = _toy(2)
    fn = _fails_on(bad, _maps)
    with pytest.raises(ImageError, match=rf"failed on image '{ids[2]}': MemoryError: {OOM[:20]}"):
        odbench.evaluate(lambda images: fn(None, images), "toy", limit=5, batch_size=4)


def test_on_error_skip_leaves_the_image_out_and_records_it() -> None:
    ids, bad = _toy(2)
    fn = _fails_on(bad, _maps)
    result = odbench.evaluate(
        lambda images: fn(None, images), "toy", limit=5, batch_size=4, on_error="skip"
    )
    assert result.dataset["failed_ids"] == {ids[2]: f"MemoryError: {OOM}"}
    assert result.n_evaluated == 4 and list(result.records.ids) == ids[:2] + ids[3:]
    alone = odbench.evaluate(lambda images: _maps(None, images), "toy", limit=5, skip_ids=[ids[2]])
    assert result.metrics == alone.metrics  # the other images, scored exactly as without it


def test_on_error_skip_when_every_image_fails_is_one_line() -> None:
    def never(images: list[np.ndarray]) -> list[np.ndarray]:
        raise MemoryError(OOM)

    with pytest.raises(EvalError, match=r"failed on all 3 image\(s\) of toy \(the first"):
        odbench.evaluate(never, "toy", limit=3, on_error="skip")


def test_on_error_skip_refuses_a_shard() -> None:
    from odbench.distributed import Shard

    with pytest.raises(EvalError, match="--on-error skip: a shard"):
        odbench.evaluate("center-prior", "toy", limit=4, on_error="skip", shard=Shard(0, 2))


def _eval(tmp_path: Path, *extra: str) -> Any:
    args = ["eval", "--method", "center-prior", "--dataset", "toy", "--limit", "5"]
    args += ["--batch-size", "2", "--workers", "1"]
    args += ["--results-dir", str(tmp_path / "res"), "--cache-dir", str(tmp_path / "cache")]
    return CliRunner().invoke(main, [*args, *extra])


def test_eval_names_the_image_keeps_what_came_before_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids, bad = _toy(3)
    original = CenterPrior.predict
    monkeypatch.setattr(CenterPrior, "predict", _fails_on(bad, original))
    r = _eval(tmp_path)
    assert r.exit_code == 2
    line = r.output.strip().splitlines()[-1]  # after the progress bar
    assert r.output.count("error:") == 1 and "Traceback" not in r.output
    assert line.startswith("error: method 'center-prior' failed on image 'toy_00003': MemoryError")
    assert "--on-error skip" in line and not (tmp_path / "res").exists()

    r = _eval(tmp_path, "--on-error", "skip")
    assert r.exit_code == 0, r.output
    assert "failed on 1 image(s), left out" in r.output and "toy_00003" in r.output
    assert "5/5" in r.output  # the progress bar counts the skipped image
    assert "3 from cache" in r.output  # the images before it were stored by the failed run
    (path,) = (tmp_path / "res").glob("*.json")
    data = json.loads(path.read_text())
    assert data["dataset"]["n_evaluated"] == 4
    assert data["dataset"]["failed_ids"] == {"toy_00003": f"MemoryError: {OOM}"}

    monkeypatch.setattr(CenterPrior, "predict", original)
    r = _eval(tmp_path)  # fixed: the failed image is predicted, the others come from the cache
    assert r.exit_code == 0, r.output
    assert "(5 images," in r.output and "1 predicted, 4 from cache" in r.output
