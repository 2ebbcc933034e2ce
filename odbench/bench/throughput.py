"""Per-method throughput of ``odbench eval`` against each method's natural reference loop (part of
``odbench bench runner``): the original repository's per-image loop — read the image with PIL,
normalise and pad, a timm forward with a hook on the last block's ``qkv`` (as TokenCut's and
LOST's code capture the keys), then that repository's own solver — written here, run on the same
images with the same random full-size weights, in the same process, torch at its default threads.

* ``tokencut`` (``dino-vits16-random``): reference = TokenCut's ``ncut``:
  ``scipy.linalg.eigh(D - A, D, subset_by_index=[1, 2])`` on the dense affinity, mean split,
  the seed's connected component (``scipy.ndimage.label``), upsampled.
* ``lost`` (``dino-vits16-random``): reference = LOST's seed (lowest degree), expansion over the
  ``k`` lowest-degree patches, the seed's component of the summed correlations, its box.

odbench's side is ``eval`` end to end with an empty cache (decode, predict, store and score every
image): it does more than the reference loop, which only computes the masks.  Reported: images/s
of each and eval / reference (target >= 1x on CPU).  Methods not measured say why.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from odbench.bench import interleaved

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: What is not measured here, and why (printed with the figures).
NOT_MEASURED = {
    "attentioncut (sd-v1-4-random)": "no reference loop written yet (DiffusionSeg's inversion + "
    "capture + cut); its pieces: odbench bench features (1.002x diffusers' DDIM loop) and "
    "odbench bench attentioncut",
    "dino-decoder / clip-decoder / moco-decoder": "trained decoders: no reference repository "
    "loop (the decoders are DiffusionSeg's, trained by odbench train)",
    "dsm": "landed while this benchmark was written: no reference loop yet",
    "found": "not on main when this benchmark was written",
}


def _keys_reference(model: Any, path: Path, patch: int) -> tuple[np.ndarray, tuple[int, int], Any]:
    """The original repositories' input path: PIL read, ToTensor + Normalize, zero padding (after
    normalisation) to multiples of the patch size, forward with a hook on the last ``qkv``."""
    import torch
    from PIL import Image

    with Image.open(path) as im:
        image = np.asarray(im.convert("RGB"))
    x = torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255.0
    x = (x - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    h, w = -(-x.shape[1] // patch) * patch, -(-x.shape[2] // patch) * patch
    padded = torch.zeros((3, h, w))
    padded[:, : x.shape[1], : x.shape[2]] = x
    out: dict[str, Any] = {}
    hook = model.blocks[-1].attn.qkv.register_forward_hook(lambda m, i, o: out.update(qkv=o))
    with torch.no_grad():
        model.forward_features(padded[None])
    hook.remove()
    qkv = out["qkv"]
    n, d3 = qkv.shape[1], qkv.shape[2]
    k = qkv.reshape(1, n, 3, d3 // 3)[0, :, 1]
    k = k[int(model.num_prefix_tokens) :]
    return k.numpy(), (h // patch, w // patch), image.shape[:2]


def tokencut_reference(model: Any, path: Path, patch: int, tau: float, eps: float) -> np.ndarray:
    import torch
    from scipy import ndimage
    from scipy.linalg import eigh

    feats, dims, size = _keys_reference(model, path, patch)
    f = torch.nn.functional.normalize(torch.from_numpy(feats), p=2, dim=1)
    a = (f @ f.T).numpy() > tau
    a = np.where(a.astype(float) == 0, eps, a)
    d = np.diag(np.sum(a, axis=1))
    _, vecs = eigh(d - a, d, subset_by_index=[1, 2])
    second = vecs[:, 0]
    part = second > np.sum(second) / len(second)
    seed = int(np.argmax(np.abs(second)))
    if not part[seed]:
        part = ~part
    objects, _ = ndimage.label(part.reshape(dims))
    mask = objects == objects[np.unravel_index(seed, dims)]
    up = np.repeat(np.repeat(mask, patch, axis=0), patch, axis=1)
    return up[: size[0], : size[1]]


def lost_reference(model: Any, path: Path, patch: int, k_patches: int) -> np.ndarray:
    from scipy import ndimage

    feats, dims, size = _keys_reference(model, path, patch)
    a = feats @ feats.T
    sorted_patches = np.argsort((a >= 0).sum(axis=1), kind="stable")
    seed = int(sorted_patches[0])
    potentials = sorted_patches[:k_patches]
    similars = potentials[a[seed, potentials] > 0.0]
    m = a[similars, :].sum(axis=0) >= 0
    objects, _ = ndimage.label(m.reshape(dims))
    mask = objects == objects[np.unravel_index(seed, dims)]
    ys, xs = np.nonzero(mask)
    box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) * patch
    up = np.repeat(np.repeat(mask, patch, axis=0), patch, axis=1)
    _ = box
    return up[: size[0], : size[1]]


def method_rows(
    root: Path, n_images: int, rounds: int, echo: Callable[[str], None]
) -> list[dict[str, Any]]:
    """One row per measured method: images/s of eval (1 and 2 workers) and of the reference."""
    from odbench.data.base import create_dataset

    dataset = create_dataset("ecssd", data_root=root)
    ids = dataset.ids()[:n_images]
    rows = [
        _measure(name, "dino-vits16-random", dataset, ids, rounds, echo)
        for name in ("tokencut", "lost")
    ]
    for what, why in NOT_MEASURED.items():
        echo(f"  {what}: not measured ({why})")
    return rows


def _measure(
    name: str, backbone: str, dataset: Any, ids: list[str], rounds: int, echo: Callable[[str], None]
) -> dict[str, Any]:
    from odbench.methods.base import create_method
    from odbench.metrics.protocols import DEFAULT_PROTOCOL, get_protocol
    from odbench.runner import run

    files = [dataset.mask_files(i)[0] for i in ids]
    protocol = get_protocol(DEFAULT_PROTOCOL)
    method: Any = create_method(name, backbone=backbone)
    fx = method.extractor()
    model, patch, hp = fx.model, fx.patch_size, method.hparams

    def ref(f: Path) -> Any:
        if name == "tokencut":
            return tokencut_reference(model, f, patch, float(hp["tau"]), float(hp["eps"]))
        return lost_reference(model, f, patch, int(hp["k_patches"]))

    def reference() -> None:
        for f in files:
            ref(f)

    def evaluate(workers: int) -> Callable[[], None]:
        def go() -> None:
            getattr(method, "_cache", {}).clear()  # LOST remembers the images it has seen
            with tempfile.TemporaryDirectory(prefix="odbench-bench-") as tmp:
                run(
                    method,
                    dataset,
                    protocol,
                    dataset_name="ecssd",
                    limit=len(ids),
                    workers=workers,
                    cache_dir=Path(tmp),
                    results_dir=None,
                )

        return go

    ref(files[0])  # warm-up: weights paged in, torch's kernels chosen
    fns = {"reference": reference, "eval 1": evaluate(1), "eval 2": evaluate(2)}
    speed = {k: len(ids) / v[0] for k, v in interleaved(fns, rounds).items()}
    label = f"{name} ({backbone})"
    echo(
        f"  {label:30s} reference {speed['reference']:.3f} img/s; eval, 1 worker "
        f"{speed['eval 1']:.3f} img/s = {speed['eval 1'] / speed['reference']:.2f}x; 2 workers "
        f"{speed['eval 2']:.3f} img/s = {speed['eval 2'] / speed['reference']:.2f}x (target >= 1x)"
    )
    return {"method": label, **speed}
