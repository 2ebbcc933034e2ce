"""The phased runner (predict -> score -> summarize), the Python API, the prediction cache's
code identity, output checks, result file names and the post-processing pool."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from realdata import REAL_DATA

import odbench
from odbench.cache import PredictionCache, cache_folders, code_identity, quantize
from odbench.cards import method_card
from odbench.cli import main
from odbench.data.base import Dataset, Sample, create_dataset
from odbench.imageio import read_gray
from odbench.methods.base import Method
from odbench.methods.center_prior import CenterPrior
from odbench.metrics.protocols import get_protocol
from odbench.phases import EvalError, evaluate
from odbench.results import read_results
from odbench.runner import CallableMethod, run
from odbench.summarize import summarize

README = Path(__file__).resolve().parents[1] / "README.md"


def _mean_gray(images: list[np.ndarray]) -> list[np.ndarray]:
    return [im.mean(axis=2) / 255 for im in images]


# ----------------------------------------------------------------------------- Python API


def test_readme_python_example_runs_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    text = README.read_text()
    block = text.split("## Python API", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert len(block.strip().splitlines()) == 3 and "lambda" in block
    exec(compile(block, "README.md", "exec"), {})
    printed = capsys.readouterr().out.split()
    # The lambda's numbers, checked from the definitions (odbench protocol, toy dataset).
    acc = []
    for s in create_dataset("toy"):
        p = quantize(s.image.mean(axis=2) / 255) / 65535
        acc.append(np.mean((p > 0.5) == (s.mask >= 128)))
    result = odbench.evaluate(lambda ims: _mean_gray(ims), "toy")
    assert result.metrics["saliency"]["acc"] == pytest.approx(np.mean(acc), abs=1e-12)
    assert float(printed[0]) == pytest.approx(result.metrics["saliency"]["max_fbeta"])
    assert float(printed[1]) == pytest.approx(result.metrics["localization"]["corloc"])


def test_api_takes_names_methods_and_datasets_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ODBENCH_CACHE", str(tmp_path / "cache"))
    by_name = odbench.evaluate("center-prior", "toy", limit=5)
    method = CenterPrior(method_card("center-prior"))
    method.name = "center-prior"
    by_object = odbench.evaluate(method, create_dataset("toy"), limit=5, protocol="tokencut")
    assert by_name.metrics["saliency"]["acc"] == by_object.metrics["saliency"]["acc"]
    assert by_object.protocol_name == "tokencut" and by_name.path is None
    assert by_name.records.saliency is not None and len(by_name.records.ids) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]  # no results written
    plain = odbench.evaluate(_mean_gray, "toy", limit=2)
    assert plain.method_name == "_mean_gray" and plain.info["cache"] is None
    whole = odbench.evaluate(_mean_gray, "toy", limit=100)  # more than the 16 images: no subset
    assert whole.limit is None and whole.n_evaluated == 16


def test_api_takes_its_folders_as_strings(tmp_path: Path) -> None:
    """``cache_dir``, ``results_dir`` and ``save_preds`` given as str, as ``data_root`` may
    be (``cache_dir`` was a TypeError traceback)."""
    kw = {"cache_dir": str(tmp_path / "c"), "save_preds": str(tmp_path / "p")}
    first = odbench.evaluate("center-prior", "toy", limit=2, results_dir=str(tmp_path / "r"), **kw)
    again = odbench.evaluate("center-prior", "toy", limit=2, **kw)
    assert first.info["n_predicted"] == 2 and again.info["n_cached"] == 2
    assert first.path is not None and first.path.parent == tmp_path / "r"
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == [
        "boxes.json",
        "toy_00000.png",
        "toy_00001.png",
    ]


class _Twice(Dataset):
    """A dataset whose ids() names one sample twice (a custom loader's bug)."""

    name = "twice"

    def ids(self) -> list[str]:
        return ["toy_00000", "toy_00001", "toy_00000"]

    def load(self, sample_id: str) -> Sample:
        return create_dataset("toy").load(sample_id)


def test_a_dataset_listing_an_id_twice_is_one_line_before_any_work(tmp_path: Path) -> None:
    """It was evaluated and scored twice, weighting it double in every metric, silently."""
    with pytest.raises(EvalError, match="lists the sample id 'toy_00000' more than once"):
        odbench.evaluate(CallableMethod(_mean_gray), _Twice(), cache_dir=tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_import_odbench_is_cheap() -> None:
    code = (
        "import sys, odbench; "
        "print([m for m in sys.modules if m.split('.')[0] in ('numpy', 'torch', 'PIL') "
        "or m.startswith('odbench.')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- phases


def test_phases_compose_to_the_run(tmp_path: Path) -> None:
    """evaluate (predict + score) -> summarize by hand, from the cache, gives the run's records
    and metrics exactly; --save-preds' PNGs are the cached maps."""
    ds = create_dataset("toy", n=6)
    proto = get_protocol("odbench")
    method = CenterPrior(method_card("center-prior"))
    method.name = "center-prior"
    whole = run(method, ds, proto, dataset_name="toy", cache_dir=tmp_path, results_dir=None)
    cache = PredictionCache(Path(whole.info["cache"]))
    assert cache.ids() == ds.ids()
    seen: list[tuple[str, bool]] = []
    tasks = ["saliency", "localization"]
    records = evaluate(
        method,
        ds,
        ds.ids(),
        cache,
        proto,
        tasks,
        workers=2,
        on_image=lambda i, cached: seen.append((i, cached)),
        save_preds=tmp_path / "png",
    )
    assert seen == [(i, True) for i in ds.ids()]
    assert records.ids == whole.records.ids
    for k, v in records.arrays().items():
        np.testing.assert_array_equal(v, whole.records.arrays()[k])
    assert summarize(records, proto) == whole.metrics
    png = read_gray(tmp_path / "png" / "toy_00001.png")
    np.testing.assert_array_equal(cache.read_map("toy_00001"), png / 65535.0)


def test_skipped_ids_are_left_out_and_recorded(tmp_path: Path) -> None:
    ds = create_dataset("toy", n=5)
    method = CallableMethod(_mean_gray)
    out = run(
        method,
        ds,
        get_protocol("odbench"),
        dataset_name="toy",
        skip_ids=["toy_00001", "nope"],
        use_cache=False,
        results_dir=tmp_path,
    )
    assert out.records.ids == ("toy_00000", "toy_00002", "toy_00003", "toy_00004")
    saved = json.loads(Path(str(out.path)).read_text())
    assert saved["dataset"]["skipped_ids"] == ["toy_00001"]
    assert saved["dataset"]["n_evaluated"] == 4


def test_device_auto_picks_cuda_when_torch_sees_one(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    import odbench.distributed as distributed

    if not distributed._gpu_device_nodes():  # no GPU device node: CPU, without importing torch
        code = (
            "import sys; from odbench.distributed import resolve_device; "
            "print(resolve_device('auto'), 'torch' in sys.modules)"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.stdout.split() == ["cpu", "False"], out.stderr
    monkeypatch.setattr(distributed, "_gpu_device_nodes", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert distributed.resolve_device("auto") == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert distributed.resolve_device("auto") == "cpu"
    result = CliRunner().invoke(main, ["eval", "--help"])
    assert "--device" in result.output and "auto (CUDA when torch sees" in result.output


# ----------------------------------------------------------------------------- cache


def _write_package(root: Path, factor: str, helper_offset: str) -> None:
    pkg = root / "odbtmp_pkg"
    pkg.mkdir(exist_ok=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "helper.py").write_text(f"OFFSET = {helper_offset}\n")
    (pkg / "meth.py").write_text(
        textwrap.dedent(
            f"""
            import numpy as np
            from odbench.methods.center_prior import CenterPrior, center_gaussian


            class Scaled(CenterPrior):
                def predict(self, images):
                    from odbtmp_pkg.helper import OFFSET

                    s = float(self.hparams["sigma"]) * {factor} + OFFSET
                    return [center_gaussian(*im.shape[:2], s) for im in images]
            """
        )
    )


def _scaled(root: Path, factor: str, offset: str) -> Method:
    import importlib

    import odbench.cache as cache_module

    _write_package(root, factor, offset)
    for name in [m for m in sys.modules if m.startswith("odbtmp_pkg")]:
        del sys.modules[name]
    importlib.invalidate_caches()
    cache_module._modules_sha256.cache_clear()  # a new process would start without it
    module = importlib.import_module("odbtmp_pkg.meth")
    method: Method = module.Scaled(method_card("center-prior"))
    method.name = "scaled"
    return method


def test_editing_a_methods_code_never_serves_stale_maps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16.1: doubling sigma in the method's code (or in a module it imports) predicts
    again and gives the new number."""
    monkeypatch.syspath_prepend(str(tmp_path))
    ds = create_dataset("toy", n=4)
    kw: dict[str, Any] = {"dataset_name": "toy", "cache_dir": tmp_path / "c", "results_dir": None}
    proto = get_protocol("odbench")
    first = run(_scaled(tmp_path, "1.0", "0.0"), ds, proto, **kw)
    again = run(_scaled(tmp_path, "1.0", "0.0"), ds, proto, **kw)
    assert again.info["n_cached"] == 4 and again.metrics == first.metrics
    doubled = run(_scaled(tmp_path, "2.0", "0.0"), ds, proto, **kw)
    assert doubled.info["n_predicted"] == 4
    assert doubled.metrics["saliency"]["acc"] != first.metrics["saliency"]["acc"]
    helper = run(_scaled(tmp_path, "1.0", "0.25"), ds, proto, **kw)
    assert helper.info["n_predicted"] == 4  # an imported module changed
    ident = code_identity(CenterPrior)
    assert ident["odbench"] == odbench.__version__ and len(ident["sources_sha256"]) == 64


class Failing(CenterPrior):
    def predict(self, images: list[np.ndarray]) -> list[np.ndarray]:
        raise RuntimeError("boom")


def test_failed_run_leaves_no_cache_folder(tmp_path: Path) -> None:
    method = Failing(method_card("center-prior"))
    method.name = "failing"
    with pytest.raises(EvalError, match="failed on image 'toy_00000': RuntimeError: boom"):
        run(
            method,
            create_dataset("toy", n=2),
            get_protocol("odbench"),
            dataset_name="toy",
            cache_dir=tmp_path / "cache",
            results_dir=None,
        )
    assert cache_folders(tmp_path / "cache") == []
    assert not list((tmp_path).rglob("key.json"))


def test_cache_info_and_clear(tmp_path: Path) -> None:
    args = ["--cache-dir", str(tmp_path / "cache")]
    out = CliRunner().invoke(
        main,
        ["eval", "--method", "center-prior", "--dataset", "toy", "--limit", "3", *args]
        + ["--results-dir", str(tmp_path / "r")],
    )
    assert out.exit_code == 0, out.output
    assert f"cache: {tmp_path / 'cache' / 'center-prior'}" in out.output
    info = CliRunner().invoke(main, ["cache", "info", *args])
    assert info.exit_code == 0 and "center-prior/" in info.output and ": 3 maps" in info.output
    cleared = CliRunner().invoke(main, ["cache", "clear", "--method", "wctr", *args])
    assert "removed 0 folder(s)" in cleared.output
    cleared = CliRunner().invoke(main, ["cache", "clear", *args])
    assert "removed 1 folder(s), 3 maps" in cleared.output
    assert cache_folders(tmp_path / "cache") == []


def test_cache_clear_leaves_folders_that_are_not_cache_entries(tmp_path: Path) -> None:
    """``cache clear --cache-dir DIR`` deleted every ``DIR/*/*`` folder: pointed by mistake at a
    project folder it removed ``reproduce``'s results and checkpoints; only folders holding a
    cache ``key.json`` are the cache's."""
    args = ["--cache-dir", str(tmp_path)]
    (tmp_path / "repro" / "results").mkdir(parents=True)
    (tmp_path / "repro" / "results" / "run.json").write_text("{}")
    (tmp_path / "runs" / "unet").mkdir(parents=True)
    (tmp_path / "runs" / "unet" / "checkpoint.safetensors").write_bytes(b"w")
    out = CliRunner().invoke(
        main,
        ["eval", "--method", "center-prior", "--dataset", "toy", "--limit", "2", *args]
        + ["--results-dir", str(tmp_path / "r")],
    )
    assert out.exit_code == 0, out.output
    assert [f.method for f in cache_folders(tmp_path)] == ["center-prior"]
    cleared = CliRunner().invoke(main, ["cache", "clear", *args])
    assert "removed 1 folder(s), 2 maps" in cleared.output, cleared.output
    assert (tmp_path / "repro" / "results" / "run.json").is_file()
    assert (tmp_path / "runs" / "unet" / "checkpoint.safetensors").is_file()
    assert not (tmp_path / "center-prior").exists()


def test_cache_hints_repeat_the_cache_dir(tmp_path: Path) -> None:
    """Issue 26 item 10: ``cache info --cache-dir X`` said "clear with: odbench cache clear",
    which empties the default cache, not X; every hint now repeats --cache-dir."""
    import shlex

    from odbench.cache import default_cache_root

    mine = tmp_path / "my cache"  # a space: the hint must quote it
    base = ["eval", "--method", "center-prior", "--dataset", "toy", "--limit", "2"]
    base += ["--results-dir", str(tmp_path / "r")]
    assert CliRunner().invoke(main, base).exit_code == 0  # the default cache (pytest's tmp)
    out = CliRunner().invoke(main, [*base, "--cache-dir", str(mine)])
    assert out.exit_code == 0, out.output
    quoted = shlex.quote(str(mine))
    assert f"odbench cache info --cache-dir {quoted};" in out.output
    assert f"odbench cache clear --method center-prior --cache-dir {quoted})" in out.output
    info = CliRunner().invoke(main, ["cache", "info", "--cache-dir", str(mine)])
    hint = info.output.strip().splitlines()[-1].split("clear with: ", 1)[1]
    assert hint == f"odbench cache clear --cache-dir {quoted}"
    following = CliRunner().invoke(main, shlex.split(hint)[1:])  # what the user would type
    assert following.exit_code == 0 and "removed 1 folder(s), 2 maps" in following.output
    assert cache_folders(mine) == [] and len(cache_folders(default_cache_root())) >= 1
    assert (
        CliRunner()
        .invoke(main, ["cache", "info"])
        .output.strip()
        .endswith("clear with: odbench cache clear")
    )


def test_records_have_a_length() -> None:
    result = odbench.evaluate("center-prior", "toy", limit=3, use_cache=False)
    assert len(result.records) == 3 == len(result.records.ids)


# ----------------------------------------------------------------------------- outputs


@pytest.mark.parametrize("option", ["--results-dir", "--cache-dir", "--save-preds"])
def test_output_under_a_file_fails_before_any_work(tmp_path: Path, option: str) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    args = ["eval", "--method", "center-prior", "--dataset", "toy", "--limit", "2"]
    paths = {"--results-dir": tmp_path / "r", "--cache-dir": tmp_path / "c"}
    paths[option] = blocker / "sub"
    for flag, value in paths.items():
        args += [flag, str(value)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        f"error: {option} {blocker / 'sub'}: {blocker} is a file, not a folder"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_leaderboard_out_under_a_file_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = CliRunner().invoke(
        main, ["leaderboard", "--out", str(blocker / "board.md"), "--results-dir", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"error: --out {blocker / 'board.md'}: {blocker} is a file, not a folder"
    )


def test_stats_out_under_a_file_is_one_line_before_any_work(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = CliRunner().invoke(main, ["stats", "toy", "--out", str(blocker / "stats")])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == (
        f"error: --out {blocker / 'stats'}: {blocker} is a file, not a folder"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_results_file_names_never_collide(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 16.11: another run writing the same file name while ours is being written (as a
    second process finishing in the same second does) keeps its file; ours gets ``-2``."""
    from datetime import UTC, datetime

    fixed = datetime(2026, 1, 1, tzinfo=UTC)
    import odbench.runner as runner

    monkeypatch.setattr(runner, "utc_now", lambda: fixed)
    stem = "center-prior__toy__odbench__20260101T000000Z"
    import tempfile

    real = tempfile.mkstemp
    calls: list[str] = []

    def racing(*args: Any, **kwargs: Any) -> Any:
        """The other run finishes just as ours writes its second file (the JSON)."""
        if Path(str(kwargs.get("dir"))) == tmp_path:
            calls.append("x")
            if len(calls) == 2:
                (tmp_path / f"{stem}.json").write_text('{"other": "run"}')
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", racing)
    out = odbench.evaluate("center-prior", "toy", limit=2, results_dir=tmp_path)
    assert (tmp_path / f"{stem}.json").read_text() == '{"other": "run"}'
    assert out.path == tmp_path / f"{stem}-2.json"
    assert read_results(out.path).records.ids == ("toy_00000", "toy_00001")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# ----------------------------------------------------------------------------- printing


def test_degenerate_runs_say_why_the_threshold_is_meaningless() -> None:
    from odbench.summary import format_metrics

    base = {"acc": 0.5, "iou": 0.1, "max_fbeta": 0.3, "mae": 0.5, "best_threshold": 0.0}
    flat = format_metrics({"saliency": base | {"fbeta_curve": [0.3] * 255}})[0]
    assert "threshold 0.000" not in flat and "same at every threshold" in flat
    zero = format_metrics({"saliency": base | {"max_fbeta": 0.0, "fbeta_curve": [0.0] * 255}})
    assert "threshold 0.000" not in zero[0] and "0 at every threshold" in zero[0]
    curve = [0.1] * 100 + [0.4] + [0.2] * 154
    normal = format_metrics({"saliency": base | {"best_threshold": 0.392, "fbeta_curve": curve}})
    assert "(best threshold 0.392)" in normal[0]


def test_eval_metrics_list_prints_those_and_stores_what_was_computed(tmp_path: Path) -> None:
    args = ["eval", "--method", "center-prior", "--dataset", "toy", "--limit", "3"]
    args += ["--results-dir", str(tmp_path / "res"), "--cache-dir", str(tmp_path / "cache")]
    out = CliRunner().invoke(main, [*args, "--metrics", "s_measure,mae"])
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("saliency:"))
    shown = " ".join(lines[start : start + 2]).split()  # basic metrics' line, the family's
    assert shown[0] == "saliency:" and shown[1::2] == ["mae", "S"], lines
    assert lines[start + 2].startswith("localization:")  # toy has boxes too
    (path,) = (tmp_path / "res").glob("*.json")
    stored = json.loads(path.read_text())["metrics"]["saliency"]
    assert shown[2] == f"{stored['mae']:.4f}" and shown[4] == f"{stored['s_measure']:.4f}"
    assert "weighted_fbeta" in stored and "curves" in stored  # the store keeps all computed
    bad = CliRunner().invoke(main, [*args, "--metrics", "s_mesure", "--results-dir", "x"])
    assert bad.exit_code == 2 and "did you mean s_measure?" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not Path("x").exists()


def test_python_api_takes_metric_names_and_refuses_unknown_ones() -> None:
    from odbench.metrics.selection import MetricsSpecError

    out = odbench.evaluate(_mean_gray, "toy", limit=2, metrics_set="s_measure,mae")
    assert "s_measure" in out.metrics["saliency"] and "weighted_fbeta" in out.metrics["saliency"]
    plain = odbench.evaluate(_mean_gray, "toy", limit=2, metrics_set="mae")
    assert "s_measure" not in plain.metrics["saliency"]
    with pytest.raises(MetricsSpecError, match="did you mean s_measure"):
        odbench.evaluate(_mean_gray, "toy", limit=2, metrics_set="smeasure")


def test_folder_datasets_are_named_by_their_folder(tmp_path: Path) -> None:
    from odbench.imageio import write_png

    for sub in ("images", "masks"):
        (tmp_path / "SOD" / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    write_png(tmp_path / "SOD" / "images" / "x.png", image)
    write_png(tmp_path / "SOD" / "masks" / "x.png", image[..., 0])
    out = odbench.evaluate(_mean_gray, "folder", data_root=tmp_path / "SOD")
    assert out.dataset_name == "folder:SOD"


@pytest.mark.parametrize("into", ["masks", "images"])
def test_save_preds_into_the_dataset_s_own_folder_is_refused(tmp_path: Path, into: str) -> None:
    """--save-preds naming the GT mask folder overwrote the GT masks with the maps (named by
    sample id, x.png): the next run scored the predictions against themselves (acc 1.0)."""
    from odbench.imageio import write_png

    for sub in ("images", "masks"):
        (tmp_path / "SOD" / sub).mkdir(parents=True)
    image = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    write_png(tmp_path / "SOD" / "images" / "x.png", image)
    write_png(tmp_path / "SOD" / "masks" / "x.png", (image[..., 0] > 127).astype(np.uint8) * 255)
    before = {p: p.read_bytes() for p in (tmp_path / "SOD").rglob("*.png")}
    args = ["eval", "--method", "center-prior", "--dataset", "folder", "--workers", "1"]
    args += ["--data-root", str(tmp_path / "SOD"), "--results-dir", str(tmp_path / "r")]
    args += ["--cache-dir", str(tmp_path / "c"), "--save-preds", str(tmp_path / "SOD" / into)]
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 2, out.output
    assert out.stderr.startswith(f"error: --save-preds {tmp_path / 'SOD' / into}: is the folder")
    assert {p: p.read_bytes() for p in (tmp_path / "SOD").rglob("*.png")} == before
    assert not (tmp_path / "r").exists() and not (tmp_path / "c").exists()


_STOPPED_AT_THE_THIRD = """
import os, signal, sys
from odbench.cli import main
from odbench.methods.center_prior import CenterPrior
real, calls = CenterPrior.predict, []
def predict(self, images):
    calls.append(1)
    if len(calls) == 3 and sys.argv[1] == "SIGTERM":
        os.kill(os.getpid(), signal.SIGTERM)
    if len(calls) == 3 and sys.argv[1] == "Ctrl-C":
        raise KeyboardInterrupt
    return real(self, images)
CenterPrior.predict = predict
main(sys.argv[2:])
"""


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
@pytest.mark.parametrize("how", ["SIGTERM", "Ctrl-C"])
def test_eval_stopped_by_sigterm_or_ctrl_c_is_one_line_and_resumes(
    tmp_path: Path, how: str
) -> None:
    """SIGTERM (a time limit, a pre-emption, `timeout`) ended eval at once, silently, the
    claim of the image in flight left behind; now, as Ctrl-C, one line once it has cleaned up."""
    cache = tmp_path / "c"
    args = ["eval", "--method", "center-prior", "--dataset", "toy", "--limit", "6"]
    args += ["--workers", "1", "--results-dir", str(tmp_path / "r"), "--cache-dir", str(cache)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", _STOPPED_AT_THE_THIRD, how, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 2, (out.returncode, out.stderr)
    said = "terminated (SIGTERM)" if how == "SIGTERM" else "interrupted"
    (line,) = [x for x in out.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith(f"error: {said}; the images finished are cached")
    assert "Traceback" not in out.stderr
    assert not [p for p in cache.rglob("*") if p.suffix in (".claim", ".holder")]
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    (path,) = (tmp_path / "r").glob("*.json")
    assert json.loads(path.read_text())["n_cached"] == 2


# ----------------------------------------------------------------------------- post-processing


class Pooled(CenterPrior):
    """center-prior split into forward (the Gaussian) + postprocess (1 - g, in a worker); each
    postprocess call leaves a file named by its process id in ``hparams["pids"]``; forward in
    the main process, as a model's."""

    in_workers = False

    def forward(self, images: list[np.ndarray]) -> list[Any]:
        return super().predict(images)

    @staticmethod
    def postprocess(image: np.ndarray, raw: Any, hparams: dict[str, Any]) -> np.ndarray:
        (Path(hparams["pids"]) / str(os.getpid())).touch()
        return (1.0 - np.asarray(raw)).astype(np.float32)

    def predict(self, images: list[np.ndarray]) -> list[np.ndarray]:
        return [1.0 - g for g in super().predict(images)]


def test_postprocess_runs_in_worker_processes(tmp_path: Path) -> None:
    method = Pooled(method_card("center-prior"))
    method.name = "pooled"
    method.hparams["pids"] = str(tmp_path)
    assert Pooled.has_postprocess() and not CenterPrior.has_postprocess()
    ds = create_dataset("toy", n=12)
    kw: dict[str, Any] = {"dataset_name": "toy", "results_dir": None, "use_cache": False}
    pooled = run(method, ds, get_protocol("odbench"), workers=2, **kw)
    direct = run(CallableMethod(method.predict), ds, get_protocol("odbench"), **kw)
    assert pooled.metrics == direct.metrics
    pids = {int(p.name) for p in tmp_path.iterdir()}
    assert pids - {os.getpid()}, "no image was post-processed in a worker process"


@pytest.mark.skipif(not (REAL_DATA / "ECSSD").is_dir(), reason=f"{REAL_DATA}/ECSSD absent")
def test_bench_runner_reports_both_ratios() -> None:
    result = CliRunner().invoke(
        main,
        ["bench", "runner", "--n", "4", "--rounds", "1", "--memory-n", "20"]
        + ["--method-images", "0", "--data-root", str(REAL_DATA)],
    )
    assert result.exit_code == 0, result.output
    assert "1 worker vs decode:" in result.output and "2 workers vs 1:" in result.output
    assert "identical across worker counts: yes" in result.output
    assert "center-prior" in result.output and "MiB on 20" in result.output
