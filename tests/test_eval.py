"""``odbench eval``: the runner, its per-image cache (resume), results files and bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from realdata import REAL_DATA
from scipy import ndimage

from odbench.cache import CacheError, PredictionCache, image_digest, quantize, safe_name
from odbench.cards import method_card, method_cards
from odbench.cli import main
from odbench.commands.evaluate import parse_set
from odbench.data.base import create_dataset
from odbench.errors import UserError
from odbench.imageio import write_png
from odbench.methods.center_prior import CenterPrior, center_gaussian
from odbench.metrics.protocols import get_protocol
from odbench.results import SCHEMA_VERSION, read_results
from odbench.runner import EvalError
from odbench.runner import run as evaluate


def _run(args: list[str]) -> Any:
    return CliRunner().invoke(main, args, catch_exceptions=False)


def _eval_args(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "eval",
        "--method",
        "center-prior",
        "--dataset",
        "toy",
        "--results-dir",
        str(tmp_path / "results"),
        "--cache-dir",
        str(tmp_path / "cache"),
        *extra,
    ]


def _independent_scores(sigma: float = 0.25) -> dict[str, float]:
    """Acc, IoU, MAE (odbench protocol) and CorLoc of center-prior on toy, computed here from
    the definitions: GT >= 128, prediction (uint16 / 65535) > 0.5, box of the largest
    8-connected component (scipy.ndimage), hit = IoU >= 0.5."""
    ds = create_dataset("toy")
    acc, iou, mae, hits = [], [], [], []
    for s in ds:
        p = quantize(center_gaussian(*s.image.shape[:2], sigma)).astype(np.float64) / 65535
        g = s.mask >= 128
        f = p > 0.5
        acc.append(np.mean(f == g))
        union = np.sum(f | g)
        iou.append(np.sum(f & g) / union if union else 1.0)
        mae.append(np.mean(np.abs(p - g)))
        lab, n = ndimage.label(f, structure=np.ones((3, 3)))
        big = np.argmax(np.bincount(lab.ravel())[1:]) + 1
        ys, xs = np.nonzero(lab == big)
        box = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        gx1, gy1, gx2, gy2 = s.boxes[0]
        iw = max(0.0, min(box[2], gx2) - max(box[0], gx1))
        ih = max(0.0, min(box[3], gy2) - max(box[1], gy1))
        inter = iw * ih
        a = (box[2] - box[0]) * (box[3] - box[1]) + (gx2 - gx1) * (gy2 - gy1) - inter
        hits.append(inter / a >= 0.5)
    return {
        "acc": float(np.mean(acc)),
        "iou": float(np.mean(iou)),
        "mae": float(np.mean(mae)),
        "corloc": 100.0 * float(np.mean(hits)),
    }


def test_eval_center_prior_toy_end_to_end(tmp_path: Path) -> None:
    preds = tmp_path / "preds"
    result = _run(_eval_args(tmp_path, "--save-preds", str(preds)))
    assert result.exit_code == 0, result.output
    assert "saliency:" in result.output and "corloc" in result.output
    files = sorted((tmp_path / "results").iterdir())
    jsons = [p for p in files if p.suffix == ".json"]
    assert len(jsons) == 1 and not [p for p in files if p.name.startswith(".")]
    assert jsons[0].name.startswith("center-prior__toy__odbench__")
    assert json.loads(jsons[0].read_text())["schema_version"] == SCHEMA_VERSION
    r = read_results(jsons[0])
    assert r.method["card_sha256"] == method_card("center-prior").sha256
    assert r.method["hyperparameters"] == {"sigma": 0.25}
    assert r.dataset_name == "toy" and r.n_evaluated == 16
    assert r.protocol["definition"]["gt_rule"] == "ge128"
    info = r.info
    assert info["packages"]["odbench"] and info["packages"]["numpy"] == np.__version__
    assert info["device"] == "cpu" and info["wall_time_s"] > 0 and info["images_per_s"] > 0
    assert info["n_predicted"] == 16 and info["n_cached"] == 0
    ref = _independent_scores()
    sal, loc = r.metrics["saliency"], r.metrics["localization"]
    for key in ("acc", "iou", "mae"):
        assert sal[key] == pytest.approx(ref[key], abs=1e-12)
    assert loc["corloc"] == pytest.approx(ref["corloc"])
    rec = r.records
    assert rec.saliency is not None and rec.localization is not None
    assert list(rec.ids) == create_dataset("toy").ids()
    assert rec.saliency.fbeta.shape == (16, 255)
    assert sal["max_fbeta"] == pytest.approx(rec.saliency.fbeta.mean(axis=0).max())
    # --save-preds: 16-bit PNGs named by id that score the same with `odbench score`'s reader.
    png = np.asarray(Image.open(preds / "toy_00003.png"))
    assert png.dtype == np.uint16 and png.shape == (96, 128)
    np.testing.assert_array_equal(png, quantize(center_gaussian(96, 128, 0.25)))
    boxes = json.loads((preds / "boxes.json").read_text())
    np.testing.assert_allclose(boxes["toy_00003"], rec.localization.pred_box[3])


class FlakyPrior(CenterPrior):
    """center-prior that records what it predicts and raises after ``fail_after`` images
    (predicting in batches, in the main process, as a model does)."""

    in_workers = False

    def __init__(self, fail_after: int | None = None, **kw: Any) -> None:
        super().__init__(method_card("center-prior"), **kw)
        self.name = "center-prior"
        self.fail_after = fail_after
        self.seen: list[tuple[int, int]] = []

    def predict(self, images: list[np.ndarray]) -> list[np.ndarray]:
        if self.fail_after is not None and len(self.seen) + len(images) > self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.seen.extend(im.shape[:2] for im in images)
        return super().predict(images)


def test_interrupted_run_resumes(tmp_path: Path) -> None:
    ds = create_dataset("toy", n=10)
    proto = get_protocol("odbench")
    kw: dict[str, Any] = {"dataset_name": "toy", "batch_size": 3, "cache_dir": tmp_path / "c"}
    first = FlakyPrior(fail_after=7)
    with pytest.raises(KeyboardInterrupt):
        evaluate(first, ds, proto, results_dir=tmp_path / "r", **kw)
    assert len(first.seen) == 6  # two batches of 3 were predicted and cached
    assert not (tmp_path / "r").exists()  # nothing half-written
    second = FlakyPrior()
    resumed = evaluate(second, ds, proto, results_dir=tmp_path / "r", **kw)
    assert len(second.seen) == 4
    assert (resumed.info["n_predicted"], resumed.info["n_cached"]) == (4, 6)
    fresh = evaluate(
        FlakyPrior(), ds, proto, results_dir=None, **{**kw, "cache_dir": tmp_path / "d"}
    )
    assert fresh.info["n_predicted"] == 10
    assert resumed.metrics == fresh.metrics
    # A --limit run and a full run share the maps.
    limited = evaluate(
        FlakyPrior(), ds, proto, results_dir=None, **{**kw, "cache_dir": tmp_path / "e", "limit": 4}
    )
    full = evaluate(
        FlakyPrior(), ds, proto, results_dir=None, **{**kw, "cache_dir": tmp_path / "e"}
    )
    counts = (limited.info["n_predicted"], full.info["n_predicted"], full.info["n_cached"])
    assert counts == (4, 6, 4)
    assert full.metrics == fresh.metrics
    # Another protocol re-scores the cached maps without predicting; new hyperparameters do not.
    third = FlakyPrior(fail_after=0)
    evaluate(third, ds, get_protocol("tokencut"), results_dir=None, **kw)
    with pytest.raises(KeyboardInterrupt):
        evaluate(FlakyPrior(fail_after=0, sigma=0.3), ds, proto, results_dir=None, **kw)


def test_same_relative_data_root_elsewhere_is_not_served_from_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache key holds the dataset's absolute folders: ``--data-root data`` run from two
    working folders is two datasets, even with the same ids and image sizes."""
    rng = np.random.default_rng(0)
    for project in ("a", "b"):
        for sub in ("images", "masks"):
            (tmp_path / project / "data" / sub).mkdir(parents=True)
        image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        write_png(tmp_path / project / "data" / "images" / "x.png", image)
        write_png(tmp_path / project / "data" / "masks" / "x.png", image[..., 0])
    runs = []
    for project in ("a", "b"):
        monkeypatch.chdir(tmp_path / project)
        ds = create_dataset("folder", data_root="data")
        runs.append(
            evaluate(
                FlakyPrior(),
                ds,
                get_protocol("odbench"),
                dataset_name="folder",
                cache_dir=tmp_path / "cache",
                results_dir=None,
            )
        )
    assert [r.info["n_predicted"] for r in runs] == [1, 1]
    assert runs[1].dataset["images"] == str(tmp_path / "b" / "data" / "images")


def test_a_damaged_cache_entry_is_predicted_again(tmp_path: Path) -> None:
    """Issue 26 item 14: an unreadable entry (its CRC fails), or one holding a map of another
    size, is predicted again and superseded (as the feature cache recomputes a damaged file),
    not an error the user must clear by hand."""
    ds = create_dataset("toy", n=3)
    kw: dict[str, Any] = {"dataset_name": "toy", "cache_dir": tmp_path, "results_dir": None}
    first = evaluate(FlakyPrior(), ds, get_protocol("odbench"), **kw)
    folder = Path(first.info["cache"])
    pack = PredictionCache(folder).path("toy_00000")
    data = bytearray(pack.read_bytes())
    data[data.index(b'"toy_00000"') + 500] ^= 0xFF  # a byte of toy_00000's map: damaged
    pack.write_bytes(data)
    with pytest.raises(CacheError, match=f"{pack}: corrupt cache entry of 'toy_00000'"):
        PredictionCache(folder).get("toy_00000")  # read directly (reports): one line
    method = FlakyPrior()
    again = evaluate(method, ds, get_protocol("odbench"), **kw)
    assert len(method.seen) == 1 and again.info["n_predicted"] == 1
    source = image_digest(ds.load("toy_00001").image)  # of the image, as eval stores it
    PredictionCache(folder).put("toy_00001", np.zeros((5, 5), np.uint16), None, source=source)
    method = FlakyPrior()
    third = evaluate(method, ds, get_protocol("odbench"), **kw)
    assert len(method.seen) == 1 and third.info["n_predicted"] == 1
    assert again.metrics == third.metrics == first.metrics
    cache = PredictionCache(folder)
    assert cache.ids() == ["toy_00000", "toy_00001", "toy_00002"]
    assert cache.get("toy_00000")[0].shape == cache.get("toy_00001")[0].shape == (96, 128)


class WrongShape(CenterPrior):
    def predict(self, images: list[np.ndarray]) -> list[np.ndarray]:
        return [np.zeros((5, 5), np.float32) for _ in images]


def test_method_output_shape_is_checked(tmp_path: Path) -> None:
    method = WrongShape(method_card("center-prior"))
    method.name = "wrong"
    with pytest.raises(EvalError, match="returned a map of shape"):
        evaluate(
            method,
            create_dataset("toy", n=1),
            get_protocol("odbench"),
            dataset_name="toy",
            cache_dir=tmp_path,
            results_dir=None,
        )


def test_set_override_and_limit(tmp_path: Path) -> None:
    result = _run(_eval_args(tmp_path, "--set", "sigma=0.4", "--limit", "5"))
    assert result.exit_code == 0, result.output
    (path,) = (tmp_path / "results").glob("*.json")
    r = read_results(path)
    assert r.method["hyperparameters"]["sigma"] == 0.4
    assert r.overrides == {"sigma": 0.4}
    assert r.limit == 5 and r.n_evaluated == 5


def test_parse_set_literals() -> None:
    got = parse_set(["a=3", "b=0.5", "c=true", 'd="x y"', "e=[1, 2]", "f=plain text", "g={}"])
    assert got == {"a": 3, "b": 0.5, "c": True, "d": "x y", "e": [1, 2], "f": "plain text", "g": {}}
    with pytest.raises(UserError, match="expected key=value"):
        parse_set(["novalue"])


def test_safe_name() -> None:
    assert safe_name("2007_000032") == "2007_000032"
    odd = [safe_name(i) for i in ("a/b", "a_b", "a:b", "../x", ".hidden")]
    assert len(set(odd)) == len(odd)
    assert all("/" not in n and not n.startswith(".") for n in odd)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--method", "center-priorr"],
            "unknown method 'center-priorr'. Did you mean 'center-prior'?",
        ),
        (["--dataset", "nope"], "unknown dataset 'nope'"),
        (["--protocol", "tokenkut"], "unknown protocol 'tokenkut'. Did you mean 'tokencut'?"),
        (["--set", "sigmaa=1"], "unknown hyperparameter(s) sigmaa for method center-prior"),
        (["--set", "sigma"], "--set 'sigma': expected key=value"),
        (["--set", "sigma=abc"], "hyperparameter sigma of method center-prior takes a value"),
        (["--set", "sigma=true"], "like 0.25 (float), got True"),
        (["--backbone", "sd-tiny"], "method center-prior takes no --backbone"),
        (["--device", "tpu"], "--device 'tpu': expected auto, cpu or cuda"),
        (["--limit", "0"], "--limit must be >= 1"),
        (["--batch-size", "0"], "--batch-size must be >= 1"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path: Path, extra: list[str], message: str) -> None:
    args = _eval_args(tmp_path)
    for flag, value in zip(extra[::2], extra[1::2]):
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    if "unknown" in message and "hyperparameter" not in message:
        assert "Valid:" in lines[0]
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("option", ["--results-dir", "--save-preds"])
def test_output_folder_that_is_a_file_fails_before_predicting(tmp_path: Path, option: str) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    args = _eval_args(tmp_path)
    if option in args:
        args[args.index(option) + 1] = str(blocker)
    else:
        args += [option, str(blocker)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert result.output.strip() == f"error: {option} {blocker}: exists and is not a folder"
    assert not (tmp_path / "cache").exists()


BACKBONE_METHODS = sorted(n for n, c in method_cards().items() if "backbone" in c.hyperparameters)


@pytest.mark.skipif(not BACKBONE_METHODS, reason="no method card has a backbone hyperparameter")
def test_backbone_option_overrides_the_hyperparameter(monkeypatch: pytest.MonkeyPatch) -> None:
    import odbench.methods.base as base
    import odbench.runner as runner

    seen: dict[str, Any] = {}
    monkeypatch.setattr(base, "create_method", lambda name, device, **o: seen.update(o) or name)
    monkeypatch.setattr(runner, "run", lambda method, *a, **kw: kw["overrides"])
    name = BACKBONE_METHODS[0]
    overrides = runner.run_eval(name, "toy", backbone="sd-v1-4-random", overrides={})
    assert seen == overrides == {"backbone": "sd-v1-4-random"}


SHARED_DATA = REAL_DATA


@pytest.mark.skipif(not (SHARED_DATA / "ECSSD").is_dir(), reason="shared/data/ECSSD absent")
def test_eval_on_real_ecssd(tmp_path: Path) -> None:
    """center-prior on 8 real ECSSD images through the CLI; Acc checked from the definition."""
    args = _eval_args(tmp_path, "--limit", "8", "--data-root", str(SHARED_DATA))
    args[args.index("toy")] = "ecssd"
    result = _run(args)
    assert result.exit_code == 0, result.output
    (path,) = (tmp_path / "results").glob("center-prior__ecssd__odbench__*.json")
    r = read_results(path)
    assert r.tasks == ["saliency"] and r.n_evaluated == 8
    ds = create_dataset("ecssd", data_root=SHARED_DATA)
    acc = []
    for sample_id in ds.ids()[:8]:
        s = ds.load(sample_id)
        p = quantize(center_gaussian(*s.image.shape[:2], 0.25)) / 65535 > 0.5
        acc.append(np.mean(p == (s.mask >= 128)))
    assert r.metrics["saliency"]["acc"] == pytest.approx(np.mean(acc), abs=1e-12)


def test_eval_metrics_all_adds_the_family_curves_and_records(tmp_path: Path) -> None:
    from odbench.metrics.sod import SOD_KEYS, FamilyMeter

    result = _run(_eval_args(tmp_path, "--metrics", "all"))
    assert result.exit_code == 0, result.output
    assert "S " in result.output and "maxE" in result.output
    (path,) = (tmp_path / "results").glob("*.json")
    r = read_results(path)
    sal = r.metrics["saliency"]
    meter = FamilyMeter("odbench")
    for s in create_dataset("toy"):
        meter.update(quantize(center_gaussian(*s.image.shape[:2], 0.25)), s.mask, s.id)
    ref = meter.compute()
    for key in SOD_KEYS:  # summarised again from the stored records: equal to streaming
        assert sal[key] == pytest.approx(ref[key], abs=1e-12), key
    for name in ("precision", "recall", "fpr", "e_measure", "fbeta"):
        np.testing.assert_allclose(sal["curves"][name], ref["curves"][name], atol=1e-12)
    fam = r.records.sod
    assert fam is not None and fam.tp.shape == (16, 255)
    assert fam.s_measure.mean() == pytest.approx(sal["s_measure"], abs=1e-12)
    # the basic run keeps its keys only (the family is opt-in) and reuses the cached maps
    assert _run(_eval_args(tmp_path)).exit_code == 0
    plain = [p for p in (tmp_path / "results").glob("*.json") if p != path]
    assert len(plain) == 1 and "s_measure" not in read_results(plain[0]).metrics["saliency"]
    assert read_results(plain[0]).records.sod is None
