"""``found``: FOUND (Siméoni, Sekkat, Puy, Vobecky, Zablocki, Pérez, "Unsupervised Object
Localization: Observing the Background to Discover Objects", CVPR 2023; valeoai/FOUND).

Training-free part (Sec. 3.1; their ``bkg_seg.py``), on one image's last-layer ViT output — the
attention ``A`` (heads × patches) of the CLS token and the keys ``k`` (patches × D, heads
concatenated):

1. head weights (CroW-style sparsity): ``τ`` = mean of ``A`` over heads and patches,
   ``Q_h`` = share of patches with ``A_h > τ``, ``β_h = log(Σ_h' (Q_h' + ε) / (Q_h + ε))``,
   ε = 1e-10;
2. background seed: the patch of least weighted attention, ``argmin_j Σ_h β_h A_hj``;
3. the keys weighted per head by ``β_h``, L2-normalised; the background is every patch whose
   cosine similarity to the seed exceeds ``bkg_th`` = 0.3;
4. the object mask is the complement.

The head (Sec. 3.2; ``model.py``): one 1×1 conv from the keys to a logit per patch
(:class:`odbench.models.found.FoundHead`), trained with ``odbench train --method found``
(:mod:`odbench.training.found`: the loss and schedule) or loaded from FOUND's released
``decoder_weights.pt`` (``--checkpoint``).  Evaluation as their ``evaluation/saliency.py``: the
full image, zero-padded (after normalisation) to a multiple of the patch size; logits upsampled
bilinearly by the patch size, cropped, sigmoid; ``single`` mode keeps the largest connected
component of the map binarised at 0.5, ``multi`` the soft map.  ``+BS``: their bilateral-solver
post-processing (:func:`found_bilateral`) of the binarised map.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from odbench.cards import MethodCard
from odbench.checkpoint import CheckpointError, file_sha256
from odbench.methods.base import Method
from odbench.methods.bilateral_solver import bilateral_solve

EPS = 1e-10
#: FOUND's bilateral-solver settings (their ``misc.py`` / ``bilateral_solver.py``): σ spatial,
#: luma, chroma.
BS_SIGMAS = (16.0, 16.0, 8.0)
BS_LAMBDA = 256.0
BS_CONFIDENCE = 0.999
BS_IOU = 0.5
#: Where FOUND's released head lives (not downloaded by odbench: pass the file to --checkpoint).
RELEASED_HEAD = "https://github.com/valeoai/FOUND/raw/main/data/weights/decoder_weights.pt"


def head_weights(attention: np.ndarray) -> np.ndarray:
    """Step 1: ``β_h`` of the (heads, N) CLS attention to the patches."""
    a = np.asarray(attention, dtype=np.float64)
    share = (a > a.mean()).mean(axis=1)
    return np.asarray(np.log((share + EPS).sum() / (share + EPS)))


def background_mask(
    attention: np.ndarray, keys: np.ndarray, threshold: float, weighted: bool = True
) -> tuple[np.ndarray, int]:
    """Steps 1-3: the (N,) bool background of one image and its seed patch, from the (heads, N)
    CLS attention and the (N, D) keys (D = heads × head dim, heads outermost)."""
    a = np.asarray(attention, dtype=np.float64)
    heads, n = a.shape
    beta = head_weights(a) if weighted else np.ones(heads)
    k = np.asarray(keys, dtype=np.float64).reshape(n, heads, -1) * beta[None, :, None]
    k = k.reshape(n, -1)
    k /= np.maximum(np.linalg.norm(k, axis=1, keepdims=True), 1e-12)
    seed = int(np.argmin((a * beta[:, None]).sum(axis=0)))
    return k @ k[seed] > threshold, seed


def single_component(mask: np.ndarray) -> np.ndarray:
    """FOUND's ``single`` mode: the largest 4-connected component of the foreground (sizes
    ordered by ``np.argsort`` with the background label set aside, as their evaluation does);
    an empty mask stays empty."""
    from scipy import ndimage

    labels, count = ndimage.label(mask)
    if count == 0:
        return np.asarray(mask, dtype=bool)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    order = np.argsort(sizes)
    background = int(np.flatnonzero(order == 0)[0]) if sizes[0] > 0 else 0
    return np.asarray(labels == np.delete(order, background)[-1])


def found_bilateral(
    image: np.ndarray, mask: np.ndarray, all_components: bool
) -> tuple[np.ndarray, bool]:
    """FOUND's ``apply_bilateral_solver`` on a binary (H, W) mask: the solver (σ 16/16/8, λ 256,
    confidence 0.999), ``> 0.5``, holes filled; then every component but the largest
    (``all_components``: multi mode and training) or the second largest label (single mode),
    kept only if its IoU with the mask exceeds 0.5.  Returns (mask, whether the solver's was
    kept)."""
    from scipy import ndimage

    target = np.asarray(mask, dtype=np.float64)
    spatial, luma, chroma = BS_SIGMAS
    soft = bilateral_solve(
        image,
        target,
        np.full(target.shape, BS_CONFIDENCE),
        sigma_spatial=spatial,
        sigma_luma=luma,
        sigma_chroma=chroma,
        lam=BS_LAMBDA,
    )
    labels, count = ndimage.label(ndimage.binary_fill_holes(soft > 0.5))
    order = np.argsort(np.bincount(labels.ravel(), minlength=count + 1))
    if all_components:
        solved = np.isin(labels, order[::-1][1:])
    elif count >= 1:
        solved = labels == order[-2]
    else:
        solved = np.ones(target.shape, dtype=bool)
    before = target > 0.5
    union = int((before | solved).sum())
    if union and (before & solved).sum() / union > BS_IOU:
        return solved.astype(np.float32), True
    return target.astype(np.float32), False


def _refuse(path: Path, why: str) -> CheckpointError:
    return CheckpointError(
        f"{path}: {why}; pass FOUND's released decoder_weights.pt, its safetensors conversion "
        f"(decoder.weight, decoder.bias) or an `odbench train --method found` run folder"
    )


def _load_error(e: Exception) -> str:
    """torch's reason in one line, without its advice to re-load with ``weights_only=False``
    (never for a file from elsewhere): the ``WeightsUnpickler error`` detail when it gives one."""
    text = " ".join(str(e).split())
    _, found, detail = text.partition("WeightsUnpickler error:")
    if found and detail.strip():
        return (
            "holds more than tensors, or is damaged ("
            + detail.split(" Please use ")[0].split(" Check the ")[0].strip()
            + ")"
        )
    return text.split(". ")[0] if text else type(e).__name__


def _released_state(path: Path) -> dict[str, Any]:
    """FOUND's ``{"decoder": conv.state_dict()}`` (``.pt``, read with ``weights_only=True``) or
    its safetensors conversion (``decoder.weight``, ``decoder.bias``), as our keys."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            flat = load_file(str(path))
        except Exception as e:  # safetensors' own error types for a damaged header
            raise _refuse(path, f"not a readable safetensors file ({e})") from e
        inner = {k.removeprefix("decoder."): v for k, v in flat.items()}
    else:
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # UnpicklingError for any payload but tensors and containers
            raise _refuse(
                path, f"refused by torch.load(weights_only=True): {_load_error(e)}"
            ) from e
        decoder = blob.get("decoder") if isinstance(blob, dict) else None
        if not isinstance(decoder, dict):
            raise _refuse(path, "holds no 'decoder' state dict")
        inner = decoder
    if set(inner) != {"weight", "bias"} or not all(torch.is_tensor(v) for v in inner.values()):
        raise _refuse(path, f"expected the tensors weight and bias, found {sorted(inner)}")
    w, b = inner["weight"], inner["bias"]
    if w.ndim != 4 or tuple(w.shape[::2]) != (1, 1) or w.shape[3] != 1 or tuple(b.shape) != (1,):
        raise _refuse(path, f"weight {tuple(w.shape)} / bias {tuple(b.shape)} is not a 1x1 conv")
    if not (torch.isfinite(w).all() and torch.isfinite(b).all()):
        raise _refuse(path, "its weights hold NaN or inf (a diverged or damaged head)")
    return {"conv.weight": w.float(), "conv.bias": b.float()}


def load_head(source: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The head's state dict (our keys) and what identifies it: an ``odbench train --method
    found`` run (folder or ``checkpoint.safetensors``), FOUND's released ``.pt`` or its
    safetensors conversion.  Anything else is one :class:`CheckpointError` line."""
    from odbench.checkpoint import checkpoint_path, load_checkpoint, read_config

    path = checkpoint_path(source)
    info: dict[str, Any] = {"path": str(path.resolve()), "sha256": file_sha256(path)}
    if path.suffix == ".safetensors":
        try:
            read_config(path)
        except CheckpointError:  # no odbench config: FOUND's head, converted
            return _released_state(path), {**info, "format": "found-safetensors"}
        config, state, _ = load_checkpoint(path)
        if config.get("card", {}).get("name") != "found":
            raise CheckpointError(
                f"{path}: trained for method {config.get('card', {}).get('name')!r}, not "
                f"'found'; evaluate it with that method"
            )
        extractor = config.get("extractor") or {}
        info |= {
            "format": "odbench",
            "step": config.get("step"),
            "extractor": extractor.get("name"),
            "extractor_options": extractor.get("options", {}),
        }
        return state, info
    return _released_state(path), {**info, "format": "found-pt"}


class Found(Method):
    """FOUND on a ViT extractor (hyperparameter ``backbone``; patch size from the extractor).
    ``head = false``: the training-free masks; else the 1×1-conv head of ``checkpoint``."""

    def __init__(
        self, card: MethodCard | None = None, device: str = "cpu", **overrides: Any
    ) -> None:
        super().__init__(card, device, **overrides)
        self._fx: Any = None
        self.head: Any = None
        self.head_info: dict[str, Any] | None = None
        hp = self.hparams
        if hp["head"]:
            if not hp["checkpoint"]:
                raise CheckpointError(
                    f"method {self.card.name if self.card else 'found'} needs the head's "
                    f"weights: --checkpoint RUN_DIR from `odbench train --method found --data "
                    f"duts_tr --out RUN_DIR`, or FOUND's released head ({RELEASED_HEAD})"
                )
            state, self.head_info = load_head(str(hp["checkpoint"]))
            trained_on = self.head_info.get("extractor")
            if trained_on and trained_on != hp["backbone"]:
                raise CheckpointError(
                    f"{self.head_info['path']}: head trained on {trained_on} keys, evaluated "
                    f"with --backbone {hp['backbone']}; use --backbone {trained_on}"
                )
            from odbench.models.found import FoundHead

            self.head = FoundHead(int(state["conv.weight"].shape[1]))
            self.head.load_state_dict(state)
            self.head.eval().to(device)

    def extractor(self) -> Any:
        """The backbone, built on first use: with the options of the ``odbench train`` run the
        head comes from, else ``weights='field'`` where the extractor has FOUND's checkpoint
        and ``field_weights`` is on; refuses one whose keys the head does not fit."""
        if self._fx is None:
            from odbench.features import extractor_spec, load_extractor

            name = str(self.hparams["backbone"])
            options: dict[str, Any] = {}
            if self.hparams["field_weights"] and "field_url" in extractor_spec(name).config:
                options["weights"] = "field"
            if self.head_info is not None and "extractor_options" in self.head_info:
                options = dict(self.head_info["extractor_options"])
            fx = load_extractor(name, device=self.device, **options)
            if not hasattr(fx, "keys_and_attention"):
                raise CheckpointError(f"backbone {name!r} gives no attention: use a ViT extractor")
            if self.head is not None and self.head.conv.in_channels != fx.channels[0]:
                raise CheckpointError(
                    f"{self.head_info and self.head_info['path']}: the head takes "
                    f"{self.head.conv.in_channels} channels, backbone {name} has "
                    f"{fx.channels[0]}; use the backbone it was trained on"
                )
            self._fx = fx
        return self._fx

    def weights_identity(self) -> Any:
        return {
            "backbone": self.extractor().identity,
            "head": self.head_info["sha256"] if self.head_info else None,
        }

    def forward(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Per image, the (H, W) float32 map before post-processing: the head's sigmoid, or the
        training-free object mask resized to the image (bilinear, > 0.5)."""
        import torch
        import torch.nn.functional as F

        from odbench.features.vit import IMAGENET_MEAN
        from odbench.methods.keyfeatures import padded_batch

        fx = self.extractor()
        p = fx.patch_size
        out = []
        for image in images:
            h, w = image.shape[:2]
            keys, attn = fx.keys_and_attention(padded_batch(image, p, IMAGENET_MEAN))
            if self.head is not None:
                with torch.no_grad():
                    logits = self.head([keys.to(self.device)])
                    up = F.interpolate(logits, scale_factor=p, mode="bilinear", align_corners=False)
                    soft = torch.sigmoid(up[0, 0, :h, :w].float()).cpu().numpy()
            else:
                grid = tuple(keys.shape[2:])
                bkg, _ = background_mask(
                    attn[0].flatten(1).cpu().numpy(),
                    keys[0].flatten(1).T.cpu().numpy(),
                    float(self.hparams["bkg_th"]),
                    bool(self.hparams["weighted"]),
                )
                obj = torch.from_numpy((~bkg).reshape(grid).astype(np.float32))[None, None]
                up = F.interpolate(obj, size=(h, w), mode="bilinear", align_corners=False)
                soft = (up[0, 0] > 0.5).float().numpy()
            out.append(np.ascontiguousarray(soft, dtype=np.float32))
        return out

    @staticmethod
    def postprocess(image: np.ndarray, raw: Any, hparams: dict[str, Any]) -> np.ndarray:
        """``single``: the largest component of ``raw > 0.5``; ``multi``: ``raw``; with
        ``bilateral_solver``: :func:`found_bilateral` of ``raw > 0.5`` instead."""
        soft = np.asarray(raw, dtype=np.float32)
        binary = soft > 0.5
        multi = hparams["mode"] == "multi"
        if hparams["bilateral_solver"]:
            return found_bilateral(image, binary, all_components=multi)[0]
        return soft if multi else single_component(binary).astype(np.float32)

    def predict(self, images: list[np.ndarray]) -> list[np.ndarray]:
        raws = self.forward(images)
        return [self.postprocess(im, r, self.hparams) for im, r in zip(images, raws)]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "head": self.head_info}
