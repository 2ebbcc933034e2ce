"""ProMerge against the original algorithm (facebookresearch/ProMerge ``promerge/promerge.py``:
``calculate_affinity_matrix``, ``generate_dino_affinities``, ``cascade_filter``, the background
vote and the merging loop of ``__call__``; ``utils.py``: ``check_num_fg_sides``,
``dino_similarity``, ``IoU``; ``crf.py``), re-implemented below step by step as the authors wrote
them (torch on the CPU instead of ``.cuda()``, the ViT-B assertions on 768 channels left out) and
run on the same features: random ones, planted ones, and the tiny ViT's keys of an image end to
end.  The reference also counts how often each rule decided something, so that the cases below
are known to exercise every rule (breaking one changes the masks)."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from odbench.methods.base import create_method
from odbench.methods.promerge import Settings, promerge_patch_masks

# ------------------------------------------------------------------- the original, re-implemented

ARGS = {  # run_script.sh
    "stride": 4,
    "bipartition_tau": 0.2,
    "cc_maskarea_tau": 0.5,
    "iou_filter_tau": 0.8,
    "foreground_include_tau": 0.1,
    "intersection_merge_tau": 0.5,
    "merge_ioa_tau": 0.1,
    "dino_merge_tau": 0.1,
}


def ref_affinity(dino_features: torch.Tensor, seed: torch.Tensor, eps: float = 1e-5) -> Any:
    """``calculate_affinity_matrix``."""
    seed = seed.unsqueeze(-1).unsqueeze(-1)
    dino_features = dino_features / (torch.linalg.norm(dino_features, axis=0) + eps)
    seed = seed / (torch.linalg.norm(seed, axis=0) + eps)
    return (dino_features * seed).sum(dim=0)


def ref_num_fg_sides(mask: torch.Tensor) -> Any:
    """``utils.check_num_fg_sides``."""
    width, height = mask.shape[0], mask.shape[1]
    top = torch.sum(mask[:1, :]) / width
    right = torch.sum(mask[:, -1:]) / height
    bottom = torch.sum(mask[-1:, :]) / width
    left = torch.sum(mask[:, :1]) / height
    return torch.round(top) + torch.round(right) + torch.round(bottom) + torch.round(left)


def ref_generate(dino_features: torch.Tensor, args: Any, stats: Counter) -> tuple[list, list]:
    """``generate_dino_affinities``."""
    fg, bg = [], []
    feat_w, feat_h = dino_features.shape[1], dino_features.shape[2]
    for i in range(0, feat_w, args.stride):
        for j in range(0, feat_h, args.stride):
            affinity = ref_affinity(dino_features, dino_features[:, i, j])
            masked = (affinity > args.bipartition_tau).float()
            if ref_num_fg_sides(masked) > 1:
                bg.append(masked)
                continue
            ccs, n = ndimage.label(masked.cpu().numpy())
            sizes = [(k, np.sum(ccs[ccs == k]) / k) for k in range(1, n + 1)]
            base = sizes[ccs[i, j] - 1][1]
            sizes.sort(key=lambda x: x[1], reverse=True)
            taken = 0
            for idx, size in sizes:
                if size < args.cc_maskarea_tau * base:
                    stats["component too small"] += 1
                    break
                cc = np.zeros_like(ccs)
                cc[ccs == idx] = 1
                t = torch.from_numpy(cc)
                fg.append((t, torch.sum(t)))
                taken += 1
            stats["prompt split in several"] += taken > 1
    stats["background candidates"] += len(bg)
    return fg, bg


def ref_cascade(
    fg: list, nf: torch.Tensor, background: torch.Tensor, args: Any, stats: Counter
) -> list:
    """``ProMerge.cascade_filter`` (= ``foreground_filtering.filter_cascade_v1``)."""
    out = []
    fg.sort(key=lambda x: x[1])
    combined = torch.zeros_like(background)
    bg_mean = torch.mean(nf[:, background.bool()], dim=-1)
    for mask, _ in fg:
        new = torch.clone(mask)
        new[combined > 0] = 0
        mean = torch.mean(nf[:, mask.bool()], dim=-1)
        share = torch.sum(new * background) / torch.sum(new)
        if share < args.iou_filter_tau and mean @ bg_mean < args.foreground_include_tau:
            combined += mask
            out.append((mask > 0).to(torch.uint8))
        elif torch.isnan(share):
            stats["filtered: no new patch"] += 1
        elif not share < args.iou_filter_tau:
            stats["filtered: background share"] += 1
        else:
            stats["filtered: like the background"] += 1
    return out


def ref_similar(m1: torch.Tensor, m2: torch.Tensor, nf: torch.Tensor, tau: float) -> bool:
    """``utils.dino_similarity``."""
    a = torch.mean(nf[:, m1.bool()], dim=-1)
    b = torch.mean(nf[:, m2.bool()], dim=-1)
    return not bool(a @ b < tau)


def ref_promerge(dino_features: torch.Tensor, args: Any, stats: Counter) -> list[tuple]:
    """``ProMerge.__call__`` from the features to the clustered masks, with each cluster's number
    of merged proposals tracked beside (odbench's ``votes``; not in the original)."""
    fg, bg = ref_generate(dino_features, args, stats)
    if len(fg) == 0:
        stats["image: no foreground"] += 1
        return []
    nf = dino_features / (torch.linalg.norm(dino_features, axis=0) + 1e-5)
    if len(bg):
        background = (torch.mean(torch.stack(bg), axis=0) > 0.5).to(torch.int)
    else:
        stats["image: no background"] += 1
        return []
    if torch.sum(background) / (background.shape[0] * background.shape[1]) < 0.1:
        stats["image: background too small"] += 1
        return []
    masks = ref_cascade(fg, nf, background, args, stats)
    clustered: set = set()
    votes: dict[int, int] = {}
    masks.sort(key=lambda x: torch.sum(x), reverse=True)
    for mask in masks:
        if torch.sum(mask) == 0:
            continue
        if len(clustered) == 0:
            clustered.add(mask)
            votes[id(mask)] = 1
            continue
        to_combine = []
        for cluster in clustered:
            inter = torch.sum(cluster & mask)
            if inter == 0:
                continue
            ioa = inter / torch.sum(mask)
            if ioa > args.intersection_merge_tau:
                to_combine.append(cluster)
                stats["merged: overlap"] += 1
            elif ioa > args.merge_ioa_tau and ref_similar(mask, cluster, nf, args.dino_merge_tau):
                to_combine.append(cluster)
                stats["merged: overlap and features"] += 1
            elif ioa > args.merge_ioa_tau:
                stats["not merged: features differ"] += 1
        if len(to_combine) == 0:
            clustered.add(mask)
            votes[id(mask)] = 1
        else:
            combined = torch.zeros_like(mask)
            count = 1
            for c in to_combine:
                clustered.remove(c)
                combined += c
                count += votes[id(c)]
            combined += mask
            combined = (combined > 0).to(torch.uint8)
            clustered.add(combined)
            votes[id(combined)] = count
    stats["clusters"] += len(clustered)
    return [(c.numpy().astype(bool), votes[id(c)]) for c in clustered]


def ref_densecrf(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``crf.densecrf`` (its MAP)."""
    import pydensecrf.densecrf as dcrf
    import pydensecrf.utils as utils

    h, w = mask.shape
    fg = mask.reshape(1, h, w).astype(float)
    logits = torch.from_numpy(np.concatenate((1 - fg, fg), axis=0))
    logits = F.interpolate(logits.unsqueeze(0), size=image.shape[:2], mode="bilinear").squeeze()
    probs = F.softmax(logits, dim=0).cpu().numpy()
    d = dcrf.DenseCRF2D(w, h, 2)
    d.setUnaryEnergy(np.ascontiguousarray(utils.unary_from_softmax(probs)))
    d.addPairwiseGaussian(sxy=3, compat=7)
    d.addPairwiseBilateral(sxy=50, srgb=5, rgbim=np.ascontiguousarray(image), compat=10)
    q = np.array(d.inference(10)).reshape((2, h, w))
    return np.argmax(q, axis=0).reshape((h, w)).astype(np.float32)


def ref_iou(m1: torch.Tensor, m2: torch.Tensor) -> float:
    """``utils.IoU``."""
    a, b = (m1 > 0.5).to(torch.bool), (m2 > 0.5).to(torch.bool)
    inter = torch.sum(a * (a == b), dim=[-1, -2]).squeeze()
    union = torch.sum(a + b, dim=[-1, -2]).squeeze()
    return float((inter.to(torch.float) / union).mean().item())


# ---------------------------------------------------------------------------------------- helpers


def ours(features: np.ndarray, **changes: Any) -> list[tuple[np.ndarray, int]]:
    return promerge_patch_masks(torch.from_numpy(features), Settings(**{**ARGS, **changes}))


def ref(features: np.ndarray, stats: Counter, **changes: Any) -> list[tuple[np.ndarray, int]]:
    return ref_promerge(torch.from_numpy(features), SimpleNamespace(**{**ARGS, **changes}), stats)


def canonical(found: list[tuple[np.ndarray, int]]) -> list[tuple[bytes, int]]:
    """Clusters as a sorted list (the original keeps them in a set of tensors)."""
    return sorted((m.astype(bool).tobytes(), int(v)) for m, v in found)


def smooth_features(seed: int, side: int = 16, dim: int = 24, sigma: float = 1.5) -> np.ndarray:
    """(dim, side, side) random features, spatially smoothed so that prompts find blobs."""
    rng = np.random.default_rng(seed)
    f = ndimage.gaussian_filter(rng.standard_normal((side, side, dim)), (sigma, sigma, 0))
    return np.ascontiguousarray(f.transpose(2, 0, 1)).astype(np.float32)


# ------------------------------------------------------------------------------------------ tests

RANDOM_CASES = [  # (seed, settings changed from the defaults): thresholds that make rules bite
    (s, c)
    for s in range(6)
    for c in (
        {"stride": 2},
        {"stride": 2, "bipartition_tau": 0.35, "foreground_include_tau": 0.3},
        {"stride": 3, "bipartition_tau": 0.1, "iou_filter_tau": 0.5, "dino_merge_tau": 0.3},
    )
]


def test_patch_masks_equal_the_originals_on_random_features() -> None:
    stats: Counter = Counter()
    counts = []
    for seed, changes in RANDOM_CASES:
        feats = smooth_features(seed)
        got, want = ours(feats, **changes), ref(feats, stats, **changes)
        assert canonical(got) == canonical(want), (seed, changes)
        counts.append(len(got))
    # every rule decided something on these cases (so breaking it changes some case above)
    for event in (
        "prompt split in several", "component too small", "background candidates",
        "filtered: background share", "filtered: like the background", "filtered: no new patch",
        "merged: overlap", "merged: overlap and features", "not merged: features differ",
    ):  # fmt: skip
        assert stats[event] > 0, (event, stats)
    assert sum(c > 0 for c in counts) >= len(counts) // 2 and max(counts) >= 3, counts


def orthogonal(n: int, dim: int, seed: int) -> np.ndarray:
    """``n`` orthogonal feature centres of norm sqrt(dim) (cosine 0 between any two)."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, n)))
    return np.asarray(q.T * np.sqrt(dim))


def to_features(per_patch: np.ndarray, seed: int, noise: float = 0.25) -> np.ndarray:
    """(h, w, D) centres + Gaussian noise -> (D, h, w) float32."""
    rng = np.random.default_rng(seed)
    f = per_patch + noise * rng.standard_normal(per_patch.shape)
    return np.ascontiguousarray(f.transpose(2, 0, 1)).astype(np.float32)


def planted(seed: int, side: int = 16) -> tuple[np.ndarray, list[np.ndarray]]:
    """Background features plus three objects of orthogonal feature centres."""
    objs = [np.zeros((side, side), bool) for _ in range(3)]
    objs[0][2:8, 2:7] = True
    objs[1][9:14, 8:14] = True
    objs[2][3:6, 10:13] = True
    label = np.zeros((side, side), int)
    for i, o in enumerate(objs):
        label[o] = i + 1
    return to_features(orthogonal(4, 32, seed)[label], seed), objs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planted_objects_are_found_one_mask_each(seed: int) -> None:
    feats, objs = planted(seed)
    stats: Counter = Counter()
    got = ours(feats, stride=1)
    assert canonical(got) == canonical(ref(feats, stats, stride=1))
    # one prompt per patch: each object's prompts propose the object itself, kept once (later
    # copies add no new patch), so each object is one mask with one vote
    assert sorted(m.tobytes() for m, _ in got) == sorted(o.tobytes() for o in objs)
    assert stats["background candidates"] == 256 - sum(int(o.sum()) for o in objs)
    assert all(v == 1 for _, v in got) and stats["filtered: no new patch"] > 0


def test_votes_count_the_proposals_merged_into_each_mask() -> None:
    """A chain A1 - A2 - A3 (A2's features halfway between A1's and A3's, which are orthogonal):
    A1's prompts propose A1 + A2, A3's propose A2 + A3, A2's all three; the cascade keeps A2 + A3
    and A1 + A2 (all three adds no new patch), which merge (IoA 0.5, similar features): one mask
    of two votes; a separate object keeps its one vote."""
    e = orthogonal(4, 32, 0)
    label = np.zeros((16, 16), int)
    label[4:10, 2:6], label[4:10, 6:8], label[4:10, 8:10] = 1, 2, 3
    label[12:15, 12:15] = 4
    centres = np.stack([e[0], e[1], (e[1] + e[2]) / np.sqrt(2), e[2], e[3]])
    feats = to_features(centres[label], 0, noise=0.1)
    stats: Counter = Counter()
    got = ours(feats, stride=1)
    assert canonical(got) == canonical(ref(feats, stats, stride=1))
    assert canonical(got) == canonical([(np.isin(label, (1, 2, 3)), 2), (label == 4, 1)])
    assert stats["merged: overlap and features"] == 1 and stats["filtered: no new patch"] > 0


def test_a_small_overlap_is_not_merged_even_with_similar_features() -> None:
    """The same chain with a wide A1 (54 patches), a one-column A2 (6) and a wide A3 (60):
    A1 + A2 overlaps A2 + A3 by IoA 6 / 60 = 0.1 (not above merge_ioa_tau), so the two stay
    apart although their mean features are similar (dot product ~0.13 >= dino_merge_tau)."""
    e = orthogonal(3, 32, 0)
    label = np.zeros((24, 24), int)
    label[4:10, 1:10], label[4:10, 10], label[4:10, 11:21] = 1, 2, 3
    centres = np.stack([e[0], e[1], (e[1] + e[2]) / np.sqrt(2), e[2]])
    feats = to_features(centres[label], 0, noise=0.1)
    stats: Counter = Counter()
    got = ours(feats, stride=1)
    assert canonical(got) == canonical(ref(feats, stats, stride=1))
    want = [(np.isin(label, (1, 2)), 1), (np.isin(label, (2, 3)), 1)]
    assert canonical(got) == canonical(want)
    assert not stats["merged: overlap and features"] and not stats["not merged: features differ"]


@pytest.mark.parametrize("width", [1, 2])
def test_an_image_without_enough_background_gets_no_masks(width: int) -> None:
    """The top rows and left columns share one feature (the background candidates: two sides);
    every other patch has its own (each its own proposal).  Width 1: 39 / 400 patches < 10 %,
    no masks; width 2: 76 / 400, masks."""
    side = 20
    label = np.arange(side * side).reshape(side, side) + 1
    label[:width, :] = 0
    label[:, :width] = 0
    feats = to_features(np.random.default_rng(0).standard_normal((side * side + 1, 512))[label], 0)
    stats: Counter = Counter()
    got, want = ours(feats, stride=1), ref(feats, stats, stride=1)
    assert canonical(got) == canonical(want)
    assert stats["background candidates"] == int((label == 0).sum())
    assert (len(got) > 100) == (width == 2) == (not stats["image: background too small"])


def test_no_background_candidate_or_no_foreground_gives_no_masks() -> None:
    rng = np.random.default_rng(0)
    lone = rng.standard_normal((256, 12, 12)).astype(np.float32)  # every prompt's mask: itself
    stats: Counter = Counter()
    assert ours(lone, stride=2) == [] == ref(lone, stats, stride=2)
    assert stats["image: no background"] == 1
    same = np.ones((8, 12, 12), np.float32)  # every prompt's mask: the whole grid (background)
    assert ours(same, stride=2) == [] == ref(same, stats, stride=2)
    assert stats["image: no foreground"] == 1


def ref_pipeline(method: Any, image: np.ndarray) -> list[np.ndarray]:
    """``ProMerge.__call__`` on one image with the method's extractor, to the masks at the
    image's size (resized as CutLER's annotation writer: bicubic, threshold at half the max)."""
    from PIL import Image

    size, p = int(method.hparams["fixed_size"]), method.extractor().patch_size
    resized = Image.fromarray(image).resize((size, size), Image.LANCZOS)
    w, h = resized.size
    nw, nh = int(round(w / p)) * p, int(round(h / p)) * p
    resized = resized.resize((nw, nh), resample=Image.LANCZOS)
    x = torch.from_numpy(np.array(resized)).permute(2, 0, 1).float().div(255).unsqueeze(0)
    raw = method.extractor().keys(x)[0].flatten(1)  # (D, h * w), as ViTFeat's "k"
    feats = raw.reshape((raw.shape[0], nw // p, nh // p)).float().contiguous()
    args = SimpleNamespace(**{k: method.hparams[k] for k in ARGS})
    out = []
    for cluster, _ in ref_promerge(feats, args, Counter()):
        up = F.interpolate(
            torch.from_numpy(cluster.astype(np.uint8))[None, None],
            size=(size, size),
            mode="nearest",
        ).squeeze()
        pseudo = np.float32(up >= 1)
        if method.hparams["crf"]:
            crf = ndimage.binary_fill_holes(ref_densecrf(np.array(resized), pseudo) >= 0.5)
            if ref_iou(torch.from_numpy(crf), torch.from_numpy(pseudo)) < 0.5:
                continue
        else:
            crf = pseudo > 0
        a = np.asarray(
            Image.fromarray(np.uint8(crf * 255)).resize((image.shape[1], image.shape[0]))
        )
        a = a > a.max() / 2.0
        if a.sum() >= 1:
            out.append(a)
    return out


def toy_image(i: int) -> np.ndarray:
    from odbench.data.base import create_dataset

    ds = create_dataset("toy")
    return ds.load(ds.ids()[i]).image


#: The tiny random ViT finds several masks on toy image 1 with these (the card's thresholds
#: are for DINO ViT-B/8 features); 10 x 10 patches, one prompt per patch.
TINY = {"backbone": "dino-tiny", "fixed_size": 160, "stride": 1, "bipartition_tau": 0.5}


@pytest.mark.parametrize("crf", [True, False])
def test_pipeline_on_the_tiny_vit_equals_the_original(crf: bool) -> None:
    import pycocotools.mask as mask_util

    method: Any = create_method("promerge", crf=crf, **TINY)
    image = toy_image(1)
    (inst,) = method.predict_instances([image], [np.zeros(image.shape[:2], np.float32)])
    masks = [mask_util.decode(r).astype(bool) for r in inst.masks]
    want = ref_pipeline(method, image)
    assert len(masks) == len(want) == (1 if crf else 4)  # with the CRF, 3 of 4 are dropped
    assert sorted(m.tobytes() for m in masks) == sorted(m.tobytes() for m in want)
    for box, m in zip(inst.boxes, masks):
        ys, xs = np.nonzero(m)
        assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_scores_are_vote_shares_or_equal() -> None:
    image = toy_image(1)
    method: Any = create_method("promerge", crf=False, **TINY)
    keys = method.extractor().keys(method.network_input(image)[1])[0].float().contiguous()
    found = promerge_patch_masks(keys, Settings.of(method.hparams))
    (inst,) = method.predict_instances([image], [np.zeros(image.shape[:2], np.float32)])
    total = sum(v for _, v in found)
    assert len(inst) == len(found)  # none empty at the image's size
    for m, v in found:  # each mask's score: its share of the kept proposals
        rle = mask_util_encode(m, image.shape[:2])
        (i,) = [k for k, r in enumerate(inst.masks) if r["counts"] == rle["counts"]]
        assert inst.scores[i] == v / total
    assert sorted(set(inst.scores.tolist())) == [0.2, 0.4]
    (equal,) = create_method("promerge", crf=False, score="equal", **TINY).predict_instances(
        [image], [np.zeros(image.shape[:2], np.float32)]
    )
    assert equal.scores.tolist() == [1.0] * len(inst)


def mask_util_encode(mask: np.ndarray, size: tuple[int, int]) -> Any:
    """A patch mask as the method writes it: nearest to the network input, resized to the
    image (bicubic, half the maximum), RLE."""
    import pycocotools.mask as mask_util

    from odbench.methods.maskcut import resize_to_image, upsample_nearest

    full = resize_to_image(upsample_nearest(mask, (160, 160)), size)
    return mask_util.encode(np.asfortranarray(full.astype(np.uint8)))


def test_a_fixed_size_off_the_patch_grid_runs_on_the_network_input() -> None:
    """fixed_size 100 with patch 16: the network input is 96² (the original's resize_pil), the
    CRF runs on it and the masks are upsampled to it (the original fails here: its mask is at
    fixed_size, its CRF image at 96)."""
    from PIL import Image

    image = toy_image(1)
    method: Any = create_method("promerge", **{**TINY, "fixed_size": 100})
    net, x = method.network_input(image)
    fixed = Image.fromarray(image).resize((100, 100), Image.LANCZOS)
    assert np.array_equal(net, np.array(fixed.resize((96, 96), Image.LANCZOS)))
    assert tuple(x.shape) == (1, 3, 96, 96)
    (inst,) = method.predict_instances([image], [np.zeros(image.shape[:2], np.float32)])
    assert len(inst) >= 1 and all(r["size"] == list(image.shape[:2]) for r in inst.masks)
