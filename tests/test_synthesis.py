"""Synthesis stage (Sec. 3.2): prompt bank, generation + AttentionCut + filters, resume, shards.

All runs use the tiny random SD at 32 px with T = 2 (a few seconds each); one reference run made
through the CLI is shared by the tests that compare folders byte for byte."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from odbench.cli import main
from odbench.synthesis.pipeline import (
    MaskRules,
    OptionError,
    Synthesizer,
    SynthInterrupted,
    SynthOptions,
)
from odbench.synthesis.prompts import PromptBank, PromptError, read_prompts
from odbench.synthesis.store import SynthStoreError, merge

TINY = ["--backbone", "sd-tiny", "--resolution", "32", "--steps", "2", "--batch-size", "2"]


def _opts(**kw: Any) -> SynthOptions:
    base: dict[str, Any] = dict(
        n=6, backbone="sd-tiny", resolution=32, num_steps=2, batch_size=2, workers=0, device="cpu"
    )
    return SynthOptions(**{**base, **kw})


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Any:
    """One intra-op thread: the tiny UNet's ops are too small to split, and on a shared, busy
    CPU two spinning OpenMP threads made each tiny generate() ~15x slower (0.4 s -> 6 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def backbone() -> Any:
    from odbench.backbones.diffusion import load_backbone

    return load_backbone("sd-tiny", resolution=32)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``odbench synth --n 6`` through the CLI, every sample kept (--filter none)."""
    out = tmp_path_factory.mktemp("synth") / "ref"
    args = ["synth", "--n", "6", "--out", str(out), "--filter", "none", "--workers", "0", *TINY]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "6 kept of 6 generated" in result.output
    return out


def files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_cli_run_records_everything_and_loads(reference: Path) -> None:
    from odbench.backbones.diffusion import clip_tokenizer
    from odbench.data.synthetic import SyntheticDataset

    lines = [json.loads(x) for x in (reference / "manifest.jsonl").read_text().splitlines()]
    assert [r["index"] for r in lines] == list(range(6))
    assert len({r["id"] for r in lines}) == 6
    rules = MaskRules(0.02, 0.9, True)
    tok = clip_tokenizer()
    for r in lines:
        assert r["kept"] and r["reason"] is None  # --filter none keeps every sample ...
        mask = np.asarray(__import__("PIL.Image").Image.open(reference / r["mask"])) > 127
        verdict, info = rules.verdict(mask)  # ... but records what the rules say of its mask
        assert r["checks"]["mask"] == {**info, "verdict": verdict or "ok"}
        ids = tok(r["prompt"]).input_ids  # the class words' tokens drive A_c
        assert tok.decode([ids[i] for i in r["token_indices"]]) == r["class"].lower()
        assert r["model"]["name"] == "sd-tiny" and r["odbench"]
    gen = json.loads((reference / "manifest.json").read_text())["generator"]
    assert gen["counts"]["generated"] == 6 and gen["counts"]["kept"] == 6
    assert gen["config"]["guidance"] == 7.5  # the card's value
    ds = SyntheticDataset(reference)
    assert ds.ids() == sorted(r["id"] for r in lines)
    sample = ds.load(ds.ids()[0])
    assert sample.image.shape == (32, 32, 3)


def test_stats_reads_synthetic_folder(reference: Path) -> None:
    result = CliRunner().invoke(main, ["stats", f"synthetic:{reference}", "--vs", "toy"])
    assert result.exit_code == 0, result.output
    assert "synthetic vs toy" in result.output and "(6 shapes)" in result.output


def test_kill_and_resume_is_byte_identical(reference: Path, backbone: Any, tmp_path: Path) -> None:
    """A run of 4 killed after 3 samples, resumed with --n 6 (a run also grows): exactly the
    files of one uninterrupted run of 6."""
    out = tmp_path / "run"
    opts = _opts(n=4, filter="none")
    first = Synthesizer(opts, out, backbone=backbone, progress=False, fail_after=3)
    with pytest.raises(SynthInterrupted):
        first.run()
    assert len(list((out / "records").glob("*.json"))) == 3
    (out / "records" / ".s0-0000004.json.x.tmp").write_bytes(b"half")  # a write the kill cut off
    (out / "images" / "s0-0000005.png").write_bytes(b"no record yet")
    summary = Synthesizer(_opts(filter="none"), out, backbone=backbone, progress=False).run()
    assert summary["timings_s"]["samples"] == 3  # only the missing ones were made
    assert files(out) == files(reference)


def test_two_shards_merge_into_one_run(reference: Path, backbone: Any, tmp_path: Path) -> None:
    for i in (0, 1):
        opts = _opts(filter="none", shard=(i, 2), workers=1)  # the worker-thread queue path
        Synthesizer(opts, tmp_path / f"shard{i}", backbone=backbone, progress=False).run()
    shard0 = json.loads((tmp_path / "shard0" / "manifest.json").read_text())
    assert [s["id"] for s in shard0["samples"]] == ["s0-0000000", "s0-0000002", "s0-0000004"]
    with pytest.raises(SynthStoreError, match="shards 0..1"):
        merge([tmp_path / "shard0"], tmp_path / "bad")
    result = CliRunner().invoke(
        main,
        [
            "synth",
            "merge",
            str(tmp_path / "shard0"),
            str(tmp_path / "shard1"),
            "--out",
            str(tmp_path / "m"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert files(tmp_path / "m") == files(reference)
    # A damaged shard is refused before anything is written: no half-merged --out.
    import shutil

    shards = [tmp_path / "shard0", tmp_path / "damaged"]
    shutil.copytree(tmp_path / "shard1", shards[1])
    (shards[1] / "images" / "s0-0000003.png").unlink()
    with pytest.raises(SynthStoreError, match="s0-0000003.png: missing, but .* says the sample"):
        merge(shards, tmp_path / "m2")
    shutil.copy(tmp_path / "shard1" / "images" / "s0-0000003.png", shards[1] / "images")
    record = shards[1] / "records" / "s0-0000005.json"
    record.write_text(record.read_text()[:40])  # a truncated record
    with pytest.raises(SynthStoreError, match="s0-0000005.json: unreadable"):
        merge(shards, tmp_path / "m2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged", "m", "shard0", "shard1"]
    with pytest.raises(SynthStoreError, match=r"\(1/2 missing\); make it with odbench synth"):
        merge(shards[:1], tmp_path / "m2")


class _Rank:
    """A rank of a 2-process launch, run one after the other in this process: barriers are
    no-ops, and ``gather`` hands rank 0 what rank 1 gathered before it."""

    size = 2
    shared: dict[int, Any] = {}

    def __init__(self, rank: int) -> None:
        self.rank = rank
        self.is_main = rank == 0

    def barrier(self) -> None:
        pass

    def gather(self, obj: Any) -> list[Any] | None:
        self.shared[self.rank] = obj
        return [self.shared[r] for r in range(self.size)] if self.is_main else None


def test_launched_ranks_share_one_folder(reference: Path, backbone: Any, tmp_path: Path) -> None:
    """Under a launcher each rank makes its part into the same folder; rank 0 writes the
    manifests at the end: the folder of one process."""
    out = tmp_path / "launched"
    ranks = [
        Synthesizer(_opts(filter="none"), out, backbone=backbone, progress=False, world=_Rank(r))
        for r in (0, 1)  # rank 0 opens the folder first (the others wait at a barrier)
    ]
    assert [r.todo() for r in ranks] == [[0, 2, 4], [1, 3, 5]]
    ranks[1].run()
    assert not (out / "manifest.jsonl").read_text()  # rank 1 never writes the manifests
    summary = ranks[0].run()
    assert summary["timings_s"]["samples"] == 6 and summary["processes"] == 2
    assert files(out) == files(reference)


def test_resume_refuses_other_options(reference: Path, backbone: Any, tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(reference, out)
    with pytest.raises(SynthStoreError, match="another config"):
        Synthesizer(_opts(filter="none", seed=1), out, backbone=backbone, progress=False)
    with pytest.raises(OptionError, match="up to index 5; a run only grows"):
        Synthesizer(_opts(n=5, filter="none"), out, backbone=backbone, progress=False)
    result = CliRunner().invoke(
        main, ["synth", "--n", "6", "--out", str(out), "--filter", "mask", *TINY]
    )
    assert result.exit_code == 2 and "another config" in result.output
    assert "Traceback" not in result.output
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    result = CliRunner().invoke(main, ["synth", "--n", "2", "--out", str(tmp_path / "other")])
    assert result.exit_code == 2 and "not an odbench synth folder" in result.output
    assert sorted(p.name for p in (tmp_path / "other").iterdir()) == ["notes.txt"]


def _aligned_prior(target: str, classes: tuple[str, str]) -> Any:
    """A tiny CLIP over ``classes`` whose image tower embeds every image onto ``target``'s text
    embedding, so it always answers ``target`` (as in the prior's tests)."""
    from odbench.backbones.clip_prior import ClipPrior, CoarseGroups

    prior = ClipPrior.tiny(templates=("a photo of a {}.",), groups=CoarseGroups(classes, classes))
    classifier = prior.text_classifier()
    t = classifier[:, classes.index(target)]
    visual = prior.model.visual
    b = torch.randn(visual.ln_post.bias.shape[0], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        visual.ln_post.weight.zero_()
        visual.ln_post.bias.copy_(b)
        visual.proj.copy_(torch.outer(b, t) / b.dot(b))
    return prior


def test_clip_disagreement_is_rejected(backbone: Any, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        '{"class": "dog", "prompt": "a photo of a dog on a sofa"}\n'
        '{"class": "banana", "prompt": "two ripe bananas", "class_words": "bananas"}\n'
    )
    prior = _aligned_prior("dog", ("dog", "banana"))
    opts = _opts(n=2, filter="clip", prompts=prompts)
    summary = Synthesizer(
        opts, tmp_path / "out", backbone=backbone, prior=prior, progress=False
    ).run()
    recs = [json.loads(x) for x in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert [r["checks"]["clip"]["predicted"] for r in recs] == ["dog", "dog"]
    assert recs[1]["reason"] == "clip_disagrees" and not recs[1]["kept"]
    assert recs[0]["reason"] != "clip_disagrees" and "mask" in recs[0]["checks"]
    ids = backbone.tokenizer(recs[1]["prompt"]).input_ids
    words = backbone.tokenizer.decode([ids[i] for i in recs[1]["token_indices"]])
    assert recs[1]["class_words"] == words == "bananas"
    assert summary["counts"]["rejected"]["clip_disagrees"] == 1
    assert not (tmp_path / "out" / "images" / f"{recs[1]['id']}.png").exists()


@pytest.mark.parametrize(
    ("fg", "reason"),
    [
        ((0, 0, 0, 0), "mask_empty"),
        ((5, 6, 5, 6), "mask_tiny"),  # 1 of 100 pixels < 2 %
        ((0, 10, 0, 10), "mask_nearly_full"),
        ((0, 10, 3, 6), None),  # a column touching top and bottom only
    ],
)
def test_mask_rules(fg: tuple[int, int, int, int], reason: str | None) -> None:
    mask = np.zeros((10, 10), bool)
    mask[fg[0] : fg[1], fg[2] : fg[3]] = True
    assert MaskRules(0.02, 0.9, True).verdict(mask)[0] == reason


def test_mask_touching_all_borders() -> None:
    mask = np.zeros((10, 10), bool)
    mask[0, :] = mask[:, 0] = mask[-1, :] = mask[:, -1] = True  # a frame: 36 % of the image
    assert MaskRules(0.02, 0.9, True).verdict(mask) == (
        "mask_all_borders",
        {"foreground": 0.36, "borders": 4},
    )
    assert MaskRules(0.02, 0.9, False).verdict(mask)[0] is None


def test_prompt_bank_is_per_index_and_composed() -> None:
    from odbench.synthesis.pipeline import card_settings

    bank = PromptBank.from_card(card_settings()["prompts"], ("otter", "dog", "aeroplane"))
    a = [bank.spec(0, i) for i in range(50)]
    assert a == [bank.spec(0, i) for i in range(50)]  # a pure function of (seed, index)
    assert a != [bank.spec(1, i) for i in range(50)]
    assert {s.cls for s in a} == {"otter", "dog", "aeroplane"}
    assert all(s.cls in s.prompt and s.class_words == s.cls for s in a)
    assert any("an otter" in s.prompt or "an aeroplane" in s.prompt for s in a)
    assert len({s.prompt for s in a}) > 40  # composed, not one template


def test_prompt_file_errors_name_the_line(tmp_path: Path) -> None:
    p = tmp_path / "p.jsonl"
    p.write_text('{"class": "dog", "prompt": "a dog"}\n{"class": "cat", "prompt": "a kitten"}\n')
    with pytest.raises(PromptError, match=r"p.jsonl:2: class words 'cat' do not occur"):
        read_prompts(p)
    p.write_text('{"class": "dog", "prompt": "a dog"}\nnot json\n')
    with pytest.raises(PromptError, match=r"p.jsonl:2: not JSON"):
        read_prompts(p)
