"""``promerge``: point prompts on DINO key features, background voting, cascade filtering and
merging, several objects per image, training-free (Li and Shin, "ProMerge: Prompt and Merge for
Unsupervised Instance Segmentation", ECCV 2024; the authors' ``promerge/promerge.py``,
``utils.py`` and ``crf.py``, facebookresearch/ProMerge).

On one image, resized to ``fixed_size``² (Lanczos) and then to the nearest multiple of the
backbone's patch size (as MaskCut, :meth:`odbench.methods.maskcut.MaskCut.network_input`), with
the h × w last-layer keys ``F`` of the ViT and ``F̂ = F / (‖F‖ + 1e-5)`` per patch:

1. **Prompts**: every ``stride``-th patch in both directions, row-major, is a point prompt ``p``;
   its mask is ``F̂ · p / (‖p‖ + 1e-5) > bipartition_tau``.
2. **Background prompts**: a mask holding more than half of the patches of two or more of the
   grid's four sides is a background candidate; the background is the patches in more than
   half of the candidates (a strict majority vote).  No candidate, or a background under 10 % of
   the grid (a constant of the code): the image gets no masks.
3. **Foreground proposals**: any other mask is split into its 4-connected components; those of
   at least ``cc_maskarea_tau`` × the size of the prompt's own component are proposals, in
   order of size (largest first, ties in ``scipy.ndimage.label``'s order), prompt by prompt.
4. **Cascade filter** (proposals by size, smallest first, stable): a proposal is kept when
   (a) of its patches not yet covered by kept proposals, the share lying in the background is
   below ``iou_filter_tau`` (none new: dropped), and (b) the dot product of its mean ``F̂`` with
   the background's mean ``F̂`` is below ``foreground_include_tau``.
5. **Merge** (kept proposals by size, largest first, stable): a proposal joins, with every
   cluster it overlaps such that the intersection over the proposal's area exceeds
   ``intersection_merge_tau`` — or exceeds ``merge_ioa_tau`` while the dot product of the two
   masks' mean ``F̂`` is at least ``dino_merge_tau`` — one new cluster (their union); a
   proposal that matches no cluster starts its own.
6. Each cluster, upsampled (nearest) to the network input, goes through the dense CRF of
   ``crf.py`` (the same as MaskCut's, :func:`odbench.methods.maskcut.crf_refine`) with holes
   filled, and is dropped when its IoU with its input is below 0.5; it is then resized to the
   image (bicubic on 0/255, threshold at half its maximum, as CutLER's annotation writer).

Where odbench differs from the released code, and why (the card says the same):

- ``promerge.py`` is CUDA-only and never writes its masks (only figures); the resize to the
  image and the threshold above are the annotation path of its ``annotations.py`` / CutLER's
  ``maskcut.py``.  odbench runs on any device.
- The cluster is upsampled to the network input's size, not to ``fixed_size``²: the same when
  ``fixed_size`` is a multiple of the patch size (480 and 8 in the paper); otherwise the
  original fails (the CRF's image and the mask differ in size).
- A side counts when more than half of ITS patches are in the mask; the original divides a
  row's count by the number of rows (the same on the square grids both use).
- A prompt outside its own mask (a zero key) proposes nothing; the original then indexes the
  last component, or fails when there is none.
- Merging follows the code (IoA, or IoA above ``merge_ioa_tau`` AND similar features), where
  summaries of the paper read IoA or similar features; the README's numbers were made by it.
- Scores: the original writes 1.0 for every mask (``annotations.py``).  ``score = "votes"``
  (the card's default) scores a mask by the share of the kept proposals merged into it (the
  number of prompts that agree on it), so AP never rests on a tie rule; ``"equal"`` gives every
  mask 1.0, the authors' evaluation, and leaves the order to the scorer's tie policy.

The numerical steps (cosines, means, dot products, thresholds) run in float32 in torch as the
original writes them, on the features' device, so that the masks equal the original's on the
same features bit for bit (``tests/test_promerge.py`` runs both).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from odbench.methods.maskcut import MaskCut, crf_refine, image_instances, upsample_nearest
from odbench.metrics.instances import Instances

#: ``calculate_affinity_matrix``'s and the normalised features' epsilon (``promerge.py``).
EPS = 1e-5
#: An image whose voted background covers less than this share of the grid gets no masks.
MIN_BACKGROUND = 0.1


@dataclass(frozen=True)
class Settings:
    """ProMerge's thresholds, named as the original's arguments; defaults: its ``run_script.sh``."""

    stride: int = 4
    bipartition_tau: float = 0.2
    cc_maskarea_tau: float = 0.5
    iou_filter_tau: float = 0.8
    foreground_include_tau: float = 0.1
    intersection_merge_tau: float = 0.5
    merge_ioa_tau: float = 0.1
    dino_merge_tau: float = 0.1

    @classmethod
    def of(cls, hparams: dict[str, Any]) -> Settings:
        """The settings from a card's hyperparameters (same names)."""
        return cls(**{k: hparams[k] for k in cls.__dataclass_fields__})


def _share(part: int, whole: int) -> Any:
    """``part / whole`` as the original computes it: a float32 torch scalar (int64 / int64), so
    that comparing it with a threshold rounds as the original's comparison does."""
    import torch

    return torch.tensor(part) / torch.tensor(whole)


def normalised(features: Any) -> Any:
    """(D, h, w) -> each patch's feature divided by its norm + 1e-5."""
    import torch

    return features / (torch.linalg.norm(features, axis=0) + EPS)


def prompt_mask(features: Any, unit: Any, i: int, j: int, tau: float) -> np.ndarray:
    """The (h, w) bool mask of the prompt at patch (i, j): cosine with every patch > ``tau``
    (the prompt normalised on its own, as ``calculate_affinity_matrix``)."""
    import torch

    seed = features[:, i, j].unsqueeze(-1).unsqueeze(-1)
    seed = seed / (torch.linalg.norm(seed, axis=0) + EPS)
    return np.asarray(((unit * seed).sum(dim=0) > tau).cpu().numpy())


def sides_in(mask: np.ndarray) -> int:
    """How many of the grid's four sides have more than half of their patches in ``mask``."""
    return sum(2 * int(s.sum()) > s.size for s in (mask[0], mask[:, -1], mask[-1], mask[:, 0]))


def prompt_proposals(
    features: Any, unit: Any, s: Settings
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(foreground proposals, background candidates), (h, w) bool masks in prompt order
    (steps 1-3 of the module doc)."""
    from scipy import ndimage

    _, h, w = features.shape
    foreground, background = [], []
    for i in range(0, h, s.stride):
        for j in range(0, w, s.stride):
            mask = prompt_mask(features, unit, i, j, s.bipartition_tau)
            if sides_in(mask) > 1:
                background.append(mask)
                continue
            labels, n = ndimage.label(mask)
            own = int(labels[i, j])
            if not own:  # a zero key: see the module doc
                continue
            sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
            for k in sorted(range(n), key=lambda k: -sizes[k]):  # stable: ties by label
                if sizes[k] < s.cc_maskarea_tau * sizes[own - 1]:
                    break
                foreground.append(labels == k + 1)
    return foreground, background


def vote_background(candidates: list[np.ndarray]) -> np.ndarray | None:
    """The patches in more than half of the background candidates; None without candidates or
    when they cover less than :data:`MIN_BACKGROUND` of the grid (the image gets no masks)."""
    if not candidates:
        return None
    background = 2 * np.sum(candidates, axis=0) > len(candidates)
    if bool(_share(int(background.sum()), background.size) < MIN_BACKGROUND):
        return None
    return np.asarray(background)


def _mean(unit: Any, mask: np.ndarray) -> Any:
    """The mean normalised feature (D,) over the patches of ``mask``."""
    import torch

    return torch.mean(unit[:, torch.from_numpy(mask).to(unit.device)], dim=-1)


def cascade_filter(
    proposals: list[np.ndarray], unit: Any, background: np.ndarray, s: Settings
) -> list[np.ndarray]:
    """The proposals kept by step 4 of the module doc, in the order they were kept (by size,
    smallest first)."""
    covered = np.zeros_like(background)
    background_mean = _mean(unit, background)
    kept = []
    for mask in sorted(proposals, key=lambda m: int(m.sum())):
        new = mask & ~covered
        n_new = int(new.sum())
        if not n_new or not bool(_share(int((new & background).sum()), n_new) < s.iou_filter_tau):
            continue
        if not bool(_mean(unit, mask) @ background_mean < s.foreground_include_tau):
            continue
        covered |= mask
        kept.append(mask)
    return kept


def merge(masks: list[np.ndarray], unit: Any, s: Settings) -> list[tuple[np.ndarray, int]]:
    """Step 5 of the module doc: the clusters, each with the number of proposals merged into
    it (its votes), in the order they were last formed."""
    clusters: list[tuple[np.ndarray, int]] = []
    for mask in sorted(masks, key=lambda m: -int(m.sum())):  # stable: largest first
        area = int(mask.sum())
        if not area:
            continue
        hits = []
        for c, (cluster, _) in enumerate(clusters):
            inter = int((cluster & mask).sum())
            if not inter:
                continue
            ioa = _share(inter, area)
            if bool(ioa > s.intersection_merge_tau) or (
                bool(ioa > s.merge_ioa_tau)
                and not bool(_mean(unit, mask) @ _mean(unit, cluster) < s.dino_merge_tau)
            ):
                hits.append(c)
        union, votes = mask.copy(), 1
        for c in hits:
            union |= clusters[c][0]
            votes += clusters[c][1]
        clusters = [x for c, x in enumerate(clusters) if c not in hits] + [(union, votes)]
    return clusters


def promerge_patch_masks(features: Any, settings: Settings) -> list[tuple[np.ndarray, int]]:
    """ProMerge's (h, w) bool patch masks with their votes (steps 1-5 of the module doc).
    ``features``: the (D, h, w) float32 keys, a torch tensor on any device."""
    unit = normalised(features)
    proposals, candidates = prompt_proposals(features, unit, settings)
    if not proposals:
        return []
    background = vote_background(candidates)
    if background is None:
        return []
    return merge(cascade_filter(proposals, unit, background, settings), unit, settings)


class ProMerge(MaskCut):
    """ProMerge with a timm DINO backbone (hyperparameter ``backbone``): MaskCut's input resize,
    CRF, union map (:meth:`predict`) and instance reuse, its own patch masks and scores."""

    def network_input(self, image: np.ndarray) -> tuple[np.ndarray, Any]:
        """(the network input as uint8 RGB, the ViT's [0, 1] batch): MaskCut's resize (to
        ``fixed_size``², then to the nearest multiple of the patch size, Lanczos both); the CRF
        runs on the network input, as the original's does."""
        fixed, x = super().network_input(image)
        side = int(x.shape[-1])
        if fixed.shape[0] == side:  # Pillow's resize to the same size returns a copy
            return fixed, x
        net = (x[0].permute(1, 2, 0) * 255.0).round().numpy().astype(np.uint8)  # exact
        return np.ascontiguousarray(net), x

    def instances(self, image: np.ndarray) -> Instances:
        """ProMerge's masks of one (H, W, 3) uint8 RGB image, with boxes and scores."""
        hp = self.hparams
        net, x = self.network_input(image)
        keys = self.extractor().keys(x)[0].float().contiguous()  # (D, h, w)
        found = promerge_patch_masks(keys, Settings.of(hp))
        kept = sum(votes for _, votes in found)
        masks = [upsample_nearest(m, net.shape[:2]) for m, _ in found]
        if hp["crf"]:
            masks = crf_refine(net, masks)
        scores = [votes / kept if hp["score"] == "votes" else 1.0 for _, votes in found]
        return image_instances(masks, scores, image.shape[:2])
