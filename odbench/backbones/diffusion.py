"""Stable Diffusion backbone: loading, DDIM inversion (Eq. 7), capture of attention and features
(Eqs. 2, 8), and text-to-image generation.  DiffusionSeg (Ma et al. 2023), Secs. 3.1, 3.2, 3.3.1.

Interface (stable; consumers: AttentionCut, the synthesis stage, DiffusionSeg)::

    bb = load_backbone("sd-v1-4" | "sd-tiny" | "sd-v1-4-random", device="cpu", dtype="fp32")
    # optional: revision=, local_path= (diffusers folder), resolution= (e.g. 32: fast tiny tests)
    prompt, idx = bb.class_prompt("tabby cat")          # "a photo of a tabby cat", [5, 6]
    out = bb.invert(images, prompt, idx, num_steps=40)  # InversionOutput
    out.captures.cross        # {layer: (B, s, s)}   class-token cross-attention, mean over steps
    out.captures.self_attn    # {s: (B, s*s, s*s)}   self-attention, mean over layers and steps
    out.captures.features     # {block: (B, C, s, s)} Eq. 8 features, mean over reverse steps
    out.latent_error, out.pixel_error, out.finite     # did the inversion work?
    gen = bb.generate(["a photo of a dog"], [5], num_steps=40, guidance=7.5)  # GenerationOutput
    with bb.capturing(Capture()) as session: ...       # capture around your own UNet calls

Conventions
-----------
* Images are resized (bilinear, antialiased) to ``bb.resolution`` square (512 for sd-v1-4, 64 for
  sd-tiny); maps are returned at their own side ``s``; consumers upsample them to the image size.
* Token indices are positions in the 77-token sequence INCLUDING the BOS token at position 0
  (``bb.token_indices(prompt, phrase)`` finds all sub-tokens of a multi-token phrase).
  The class map of a layer is the mean over the class's sub-token maps.
* Maps per layer are kept so that a consumer can rank layers (e.g. top-k by std, Eq. 2).
* Default captured resolutions: the map sides of the down-path transformer blocks
  (64, 32, 16 for sd-v1-4 at 512 px; 32, 16 for sd-tiny at 64 px).

DDIM (Eq. 7), eta = 0, both directions with the same step
``x_to = sqrt(ā_to) f + sqrt(1 - ā_to) ε,  f = (x_from - sqrt(1 - ā_from) ε) / sqrt(ā_from)``
where ``ε = ε_θ(x_from, t_from, y)``.  The levels are ``[0] + timesteps`` with the "leading"
spacing of SD's scheduler (t = 1, 26, ..., 976 for T = 40, ``steps_offset=1``) and ā at level 0 =
``alphas_cumprod[0]`` (SD's ``set_alpha_to_one=False``); no clipping of f (``clip_sample=False``).
Inversion therefore evaluates ε at 0, 1, ..., 951 and the reverse pass at 976, ..., 1: T UNet
passes each.  Inversion uses guidance 1 (the conditional ε only): classifier-free guidance > 1
breaks the approximation ε(x_t) ≈ ε(x_{t+1}) that inversion relies on, and reconstructions fail.
The reverse pass from the inverted latent (also guidance 1) is where attention and features are
captured.  DDIM arithmetic runs in fp32 whatever the UNet dtype.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from odbench.backbones.attention import AttentionStore, capture_attention
from odbench.backbones.capture import NO_CAPTURE, Capture, Captures, CaptureSession
from odbench.backbones.ddim import (
    EpsFn,
    alphas_cumprod,
    ddim_invert,
    ddim_reverse,
    ddim_step,
    ddim_timesteps,
)
from odbench.backbones.sd_configs import (
    DTYPES,
    MAX_TOKENS,
    PROMPT_TEMPLATE,
    RANDOM_CONFIGS,
    SCHEDULER_CONFIG,
    BackboneSpec,
)
from odbench.backbones.tokens import class_prompt, clip_tokenizer, find_token_indices
from odbench.features.weights import WeightsNotFoundError, hub_snapshot

#: Re-exported for the callers of the module before the split (configs, capture, tokens, DDIM,
#: errors).
__all__ = [
    "DTYPES",
    "MAX_TOKENS",
    "PROMPT_TEMPLATE",
    "RANDOM_CONFIGS",
    "SCHEDULER_CONFIG",
    "BackboneSpec",
    "Capture",
    "Captures",
    "CaptureSession",
    "DiffusionBackbone",
    "EpsFn",
    "GenerationOutput",
    "InversionOutput",
    "NO_CAPTURE",
    "WeightsNotFoundError",
    "class_prompt",
    "clip_tokenizer",
    "ddim_invert",
    "ddim_reverse",
    "ddim_step",
    "ddim_timesteps",
    "find_token_indices",
    "load_backbone",
]


@dataclass
class InversionOutput:
    """Result of :meth:`DiffusionBackbone.invert`.

    ``latents_T`` inverted noise, ``latents_0`` the VAE latents of the inputs, ``latents_rec``
    the reverse pass's output (B, 4, h, w) float32; ``latent_error`` (B,) relative L2 error
    ||rec - x0|| / ||x0||; ``pixel_error`` (B,) mean absolute error in [0, 1] units between the
    decoded reconstruction and the (resized) input, None without decoding; ``finite`` (B,) bool,
    False where NaN/inf appeared (e.g. fp16 overflow)."""

    latents_T: torch.Tensor
    latents_0: torch.Tensor
    latents_rec: torch.Tensor
    captures: Captures
    latent_error: torch.Tensor
    pixel_error: torch.Tensor | None
    finite: torch.Tensor
    timesteps: list[int]
    prompts: list[str]
    token_indices: list[list[int]]


@dataclass
class GenerationOutput:
    """Result of :meth:`DiffusionBackbone.generate`: images (B, R, R, 3) uint8, final latents,
    the captures of the conditional branch, and the inputs."""

    images: np.ndarray
    latents: torch.Tensor
    captures: Captures
    finite: torch.Tensor
    timesteps: list[int]
    prompts: list[str]
    token_indices: list[list[int]]
    guidance: float
    seed: int | list[int]


# --------------------------------------------------------------------------- the backbone


class DiffusionBackbone:
    """Frozen SD components plus inversion / generation with capture (see module docstring)."""

    def __init__(
        self,
        spec: BackboneSpec,
        unet: Any,
        vae: Any,
        text_encoder: Any,
        tokenizer: Any,
        device: str = "cpu",
        dtype: str = "fp32",
    ) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        self.spec = spec
        self.device = torch.device(device)
        self.dtype_name = dtype
        self.dtype = DTYPES[dtype]
        self.unet, self.vae, self.text_encoder = (
            _frozen(m, self.device, self.dtype) for m in (unet, vae, text_encoder)
        )
        self.tokenizer = tokenizer
        self.alphas_cumprod = alphas_cumprod()
        self.vae_scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.resolution = spec.resolution
        multiple = self.vae_scale * 2 ** (len(self.unet.config.block_out_channels) - 1)
        if self.resolution % multiple:
            raise ValueError(
                f"{spec.name}: resolution {self.resolution} is not a multiple of {multiple}"
            )

    # -- description / geometry
    def describe(self) -> dict[str, Any]:
        """Identity of the backbone for results JSON."""
        import diffusers

        return {
            "name": self.spec.name,
            "repo_id": self.spec.repo_id,
            "revision": self.spec.revision,
            "dtype": self.dtype_name,
            "device": str(self.device),
            "resolution": self.resolution,
            "scheduler": "DDIM eta=0 clip_sample=False leading spacing, steps_offset=1",
            "diffusers": diffusers.__version__,
        }

    @property
    def latent_side(self) -> int:
        return self.resolution // self.vae_scale

    def default_sides(self) -> tuple[int, ...]:
        """Map sides of the down-path transformer blocks (descending)."""
        sides = {self.latent_side // 2**lvl for lvl in self._down_attention_levels()}
        return tuple(sorted(sides, reverse=True))

    def feature_blocks(self) -> tuple[str, ...]:
        """Default Eq. 8 blocks: every Transformer2DModel on the down path."""
        return tuple(
            f"down_blocks.{i}.attentions.{j}"
            for i, block in enumerate(self.unet.down_blocks)
            for j in range(len(getattr(block, "attentions", [])))
        )

    def _down_attention_levels(self) -> list[int]:
        return [i for i, b in enumerate(self.unet.down_blocks) if getattr(b, "attentions", None)]

    # -- text
    def class_prompt(self, cls: str, template: str = PROMPT_TEMPLATE) -> tuple[str, list[int]]:
        """The prompt y for a class (Sec. 3.3.1) and the positions of the class's sub-tokens.

        An empty class (the "w/o prior" ablation) gives the empty prompt and no indices."""
        return class_prompt(self.tokenizer, cls, template)

    def token_indices(self, prompt: str, phrase: str) -> list[int]:
        """Positions (BOS at 0) of all sub-tokens of ``phrase`` inside ``prompt`` (last match)."""
        return find_token_indices(self.tokenizer, prompt, phrase)

    @torch.no_grad()
    def encode_text(self, prompts: Sequence[str]) -> torch.Tensor:
        """(B, 77, D) text embeddings (last hidden state) for the UNet's cross-attention."""
        ids = self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=MAX_TOKENS,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(self.device)
        return self.text_encoder(ids)[0]  # type: ignore[no-any-return]

    # -- images
    def preprocess(self, images: Any) -> torch.Tensor:
        """uint8 (B, H, W, 3) array / tensor or list of (H, W, 3) arrays -> (B, 3, R, R) in [-1, 1]."""
        if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 3:
            images = [images]
        out = []
        for img in images:
            t = torch.tensor(np.asarray(img))  # a copy: read-only arrays (decoded images) too
            if t.ndim != 3 or t.shape[-1] != 3 or t.dtype != torch.uint8:
                raise ValueError(f"expected (H, W, 3) uint8 images, got {tuple(t.shape)} {t.dtype}")
            x = t.permute(2, 0, 1)[None].float() / 127.5 - 1.0
            if x.shape[-2:] != (self.resolution, self.resolution):
                x = torch.nn.functional.interpolate(
                    x, size=(self.resolution,) * 2, mode="bilinear", antialias=True
                ).clamp(-1, 1)
            out.append(x)
        return torch.cat(out).to(self.device)

    @torch.no_grad()
    def encode_images(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, R, R) in [-1, 1] -> (B, 4, R/f, R/f) fp32 latents (posterior mean, scaled)."""
        dist = self.vae.encode(x.to(self.dtype)).latent_dist
        return dist.mean.float() * self.vae.config.scaling_factor  # type: ignore[no-any-return]

    @torch.no_grad()
    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Latents -> (B, 3, R, R) fp32 images in [-1, 1]."""
        x = self.vae.decode((z / self.vae.config.scaling_factor).to(self.dtype)).sample
        return x.float().clamp(-1, 1)  # type: ignore[no-any-return]

    # -- UNet
    @torch.no_grad()
    def eps(self, x: torch.Tensor, t: int, text: torch.Tensor) -> torch.Tensor:
        """One UNet pass ε_θ(x_t, t, y) in the model dtype, returned in fp32."""
        tt = torch.full((x.shape[0],), t, device=self.device, dtype=torch.long)
        out = self.unet(x.to(self.dtype), tt, encoder_hidden_states=text, return_dict=False)[0]
        return out.float()  # type: ignore[no-any-return]

    @contextmanager
    def capturing(
        self,
        capture: Capture = Capture(),  # noqa: B008 (frozen)
        cfg: bool = False,
    ) -> Iterator[CaptureSession]:
        """Install capture on the UNet for the calls made inside (restored on exit).

        ``cfg``: the UNet batch is [unconditional; conditional]; only the second half is recorded.
        :meth:`invert` and :meth:`generate` use this around their reverse pass; it is public for
        callers that drive the UNet themselves (benchmarks)."""
        side = self.latent_side
        cross = (capture.cross_sides or self.default_sides()) if capture.cross else ()
        self_ = (capture.self_sides or self.default_sides()) if capture.self_attn else ()
        blocks = (capture.feature_blocks or self.feature_blocks()) if capture.features else ()
        store = AttentionStore(
            self_device=capture.self_device, self_dtype=DTYPES[capture.self_dtype], cfg=cfg
        )
        session = CaptureSession(self.unet, blocks, store, cfg)
        try:
            with capture_attention(self.unet, store, side, tuple(cross), tuple(self_)):
                yield session
        finally:
            session.remove()

    def _captures(
        self, session: CaptureSession, capture: Capture, idx: list[list[int]]
    ) -> Captures:
        store = session.store
        out = Captures(num_steps=session.count, cross_side=dict(store.cross_side))
        all_maps = store.cross_mean()
        if all(idx):  # without class tokens only the all-token maps are kept
            for name, m in all_maps.items():
                out.cross[name] = torch.stack(
                    [m[b, :, :, ix].mean(-1) for b, ix in enumerate(idx)]
                ).cpu()
        if capture.keep_all_tokens:
            out.cross_all = {k: v.cpu() for k, v in all_maps.items()}
        # on the CPU like every other capture, whatever device the running sums lived on
        out.self_attn = {k: v.cpu() for k, v in store.self_mean().items()}
        out.features = session.mean()
        out.feature_strides = {k: self.resolution // v.shape[-1] for k, v in out.features.items()}
        return out

    # -- inversion (Eq. 7) + reverse pass with capture (Eqs. 2, 8)
    @torch.no_grad()
    def invert(
        self,
        images: Any,
        prompts: str | Sequence[str],
        token_indices: Sequence[int] | Sequence[Sequence[int]] | None = None,
        num_steps: int = 40,
        capture: Capture = Capture(),  # noqa: B008 (frozen)
        decode: bool = True,
    ) -> InversionOutput:
        """DDIM-invert images under prompt y (guidance 1), then run the reverse pass from the
        inverted latent and capture attention and features there.

        ``prompts``: one prompt or one per image; ``token_indices``: class token positions, one
        list for all images or one list per image (see :meth:`class_prompt`)."""
        if isinstance(images, torch.Tensor) and images.is_floating_point():
            x = images.to(self.device)  # already (B, 3, R, R) in [-1, 1]
        else:
            x = self.preprocess(images)
        n = x.shape[0]
        prompt_list = _broadcast_prompts(prompts, n)
        idx = _check_indices(capture, _broadcast_indices(token_indices, n))
        text = self.encode_text(prompt_list)
        x0 = self.encode_images(x)
        steps = ddim_timesteps(num_steps)
        ac = self.alphas_cumprod

        def eps_fn(z: torch.Tensor, t: int) -> torch.Tensor:
            return self.eps(z, t, text)

        xT = ddim_invert(eps_fn, x0, steps, ac)
        with self.capturing(capture) as session:
            rec = ddim_reverse(session.counting(eps_fn), xT, steps, ac)
        caps = self._captures(session, capture, idx)
        lat_err = (rec - x0).flatten(1).norm(dim=1) / x0.flatten(1).norm(dim=1).clamp_min(1e-12)
        pix_err = None
        if decode:
            pix_err = (self.decode_latents(rec) - x.float()).abs().flatten(1).mean(1) / 2.0
        finite = torch.isfinite(xT).flatten(1).all(1) & torch.isfinite(rec).flatten(1).all(1)
        if not bool(finite.all()):
            warnings.warn(
                f"{self.spec.name}: non-finite latents in inversion ({self.dtype_name}); "
                "use dtype='fp32'",
                RuntimeWarning,
                stacklevel=2,
            )
        return InversionOutput(
            latents_T=xT.cpu(),
            latents_0=x0.cpu(),
            latents_rec=rec.cpu(),
            captures=caps,
            latent_error=lat_err.cpu(),
            pixel_error=None if pix_err is None else pix_err.cpu(),
            finite=finite.cpu(),
            timesteps=steps,
            prompts=prompt_list,
            token_indices=idx,
        )

    # -- generation (synthesis stage, Sec. 3.2.1)
    @torch.no_grad()
    def generate(
        self,
        prompts: str | Sequence[str],
        token_indices: Sequence[int] | Sequence[Sequence[int]] | None = None,
        num_steps: int = 40,
        guidance: float = 7.5,
        seed: int | Sequence[int] = 0,
        capture: Capture = Capture(),  # noqa: B008 (frozen)
    ) -> GenerationOutput:
        """Text -> image with deterministic DDIM (eta 0) and classifier-free guidance, one batch.

        The initial noise comes from ``torch.Generator().manual_seed(seed)`` on the CPU, so it
        does not depend on the device; ``seed`` may also be one seed per prompt (each image's
        noise then depends on its own seed only, not on the batch it is in).  Captures come
        from the conditional branch only."""
        prompt_list = [prompts] if isinstance(prompts, str) else list(prompts)
        n = len(prompt_list)
        idx = _check_indices(capture, _broadcast_indices(token_indices, n))
        cond = self.encode_text(prompt_list)
        use_cfg = guidance != 1.0
        text = torch.cat([self.encode_text([""] * n), cond]) if use_cfg else cond
        side = self.latent_side
        shape = (self.unet.config.in_channels, side, side)
        if isinstance(seed, int):
            xT = torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed))
        elif len(seed) == n:
            xT = torch.stack(
                [torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seed]
            )
        else:
            raise ValueError(f"got {len(seed)} seeds for {n} prompts")
        xT = xT.to(self.device)

        def eps_fn(z: torch.Tensor, t: int) -> torch.Tensor:
            if not use_cfg:
                return self.eps(z, t, text)
            e_u, e_c = self.eps(torch.cat([z, z]), t, text).chunk(2)
            return e_u + guidance * (e_c - e_u)

        steps = ddim_timesteps(num_steps)
        with self.capturing(capture, cfg=use_cfg) as session:
            z0 = ddim_reverse(session.counting(eps_fn), xT, steps, self.alphas_cumprod)
        caps = self._captures(session, capture, idx)
        img = self.decode_latents(z0)
        images = ((img + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
        return GenerationOutput(
            images=images.permute(0, 2, 3, 1).cpu().numpy(),
            latents=z0.cpu(),
            captures=caps,
            finite=torch.isfinite(z0).flatten(1).all(1).cpu(),
            timesteps=steps,
            prompts=prompt_list,
            token_indices=idx,
            guidance=guidance,
            seed=seed if isinstance(seed, int) else [int(s) for s in seed],
        )


def _frozen(module: Any, device: torch.device, dtype: torch.dtype) -> Any:
    module = module.to(device=device).eval().requires_grad_(False)
    return module if module.dtype == dtype else module.to(dtype=dtype)


def _check_indices(capture: Capture, idx: list[list[int]]) -> list[list[int]]:
    if capture.cross and not capture.keep_all_tokens and any(not i for i in idx):
        raise ValueError(
            "cross-attention capture needs class token indices for every image "
            "(or Capture(keep_all_tokens=True) / Capture(cross=False))"
        )
    bad = [i for ix in idx for i in ix if not 0 <= i < MAX_TOKENS]
    if bad:
        raise ValueError(f"token indices must be in [0, {MAX_TOKENS}), got {bad}")
    return idx


def _broadcast_prompts(prompts: str | Sequence[str], n: int) -> list[str]:
    if isinstance(prompts, str):
        return [prompts] * n
    out = list(prompts)
    if len(out) != n:
        raise ValueError(f"got {len(out)} prompts for {n} images")
    return out


def _broadcast_indices(
    idx: Sequence[int] | Sequence[Sequence[int]] | None, n: int
) -> list[list[int]]:
    if idx is None:
        return [[] for _ in range(n)]
    items: list[Any] = list(idx)
    if all(isinstance(i, (int, np.integer)) for i in items):
        return [[int(i) for i in items] for _ in range(n)]
    if len(items) != n:
        raise ValueError(f"got {len(items)} token index lists for {n} images")
    return [[int(i) for i in ix] for ix in items]


# --------------------------------------------------------------------------- loading


def _build_random(key: str, seed: int = 0) -> tuple[Any, Any, Any, Any]:
    """Seeded random-weight components from ``RANDOM_CONFIGS[key]`` (global RNG untouched)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    unet_cfg, vae_cfg, text_cfg = RANDOM_CONFIGS[key]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**unet_cfg)
        vae = AutoencoderKL(**vae_cfg)
        text = CLIPTextModel(CLIPTextConfig(**text_cfg))
    return unet, vae, text, clip_tokenizer()


def _load_pretrained(
    source: str, revision: str | None, spec: BackboneSpec
) -> tuple[Any, Any, Any, Any]:
    """Components of a diffusers folder: ``source`` itself, or its hub snapshot (safetensors,
    configs and tokenizer files only) found by :func:`odbench.features.weights.hub_snapshot`."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    if Path(source).is_dir():
        folder = Path(source)
    else:
        folder = hub_snapshot(
            source,
            revision,
            ("*.json", "*.txt", "unet/*.safetensors", "vae/*.safetensors", "text_encoder/*"),
            ignore=("*fp16*", "*.bin", "*.ckpt", "*non_ema*"),
            size=spec.size,
        )
    try:
        with warnings.catch_warnings():
            # diffusers passes huggingface_hub an argument it deprecated; not the user's concern
            warnings.filterwarnings("ignore", ".*local_dir_use_symlinks", UserWarning)
            kw: dict[str, Any] = {"use_safetensors": True, "local_files_only": True}
            unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", **kw)
            vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", **kw)
            text = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", **kw)
            tok = CLIPTokenizer.from_pretrained(
                folder, subfolder="tokenizer", local_files_only=True
            )
    except (OSError, ValueError) as e:  # an incomplete folder
        raise WeightsNotFoundError(
            f"{folder}: not a complete diffusers folder ({type(e).__name__}); size {spec.size}; "
            f"fetch with: hf download {spec.repo_id or source} --include '*.json' '*.txt' "
            "'*.safetensors' --exclude '*fp16*'"
        ) from e
    return unet, vae, text, tok


def backbone_spec(name: str, revision: str | None = None) -> BackboneSpec:
    """The :class:`BackboneSpec` of an sd-family extractor's registry entry (repo, pinned
    revision, download size, resolution, random configs), or of a diffusers repo id / local
    folder (512 px); any other name: :class:`~odbench.registry.UnknownNameError` listing the
    sd-family names."""
    from odbench.features import extractor_spec, extractors_of

    known = extractors_of("sd")
    if name in known:
        entry = extractor_spec(name)
        cfg = entry.config
        resolution = int(entry.resolution or 512)
        repo, rev = cfg.get("repo_id"), cfg.get("revision")
        return BackboneSpec(name, repo, rev, resolution, str(cfg["size"]), entry.random)
    if "/" in name or Path(name).is_dir():
        return BackboneSpec(name, name, revision, 512, "unknown")
    from odbench.registry import UnknownNameError

    raise UnknownNameError(
        f"unknown backbone {name!r}; known: {', '.join(known)} "
        "(or a diffusers repo id / local folder)"
    )


def load_backbone(
    name: str = "sd-v1-4",
    device: str = "cpu",
    dtype: str = "fp32",
    revision: str | None = None,
    local_path: str | os.PathLike[str] | None = None,
    resolution: int | None = None,
) -> DiffusionBackbone:
    """Load a backbone by the name of an sd-family extractor (``odbench list features``),
    diffusers repo id or local folder (see :func:`backbone_spec`).

    ``sd-tiny`` and ``sd-v1-4-random`` are built from configs in code (seeded random weights, no
    download; the latter has SD-1.4's real architecture, for benchmarks).  Real weights
    are read through diffusers/transformers ``from_pretrained`` with safetensors only, at the
    pinned revision unless ``revision`` is given; ``HF_HUB_OFFLINE=1`` is respected.  Missing
    weights raise :class:`WeightsNotFoundError` with a one-line fix.  ``resolution`` overrides
    the variant's image side (a multiple of 8 x the VAE factor; e.g. 32 for fast sd-tiny tests)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    spec = backbone_spec(name, revision)
    if resolution is not None:
        spec = replace(spec, resolution=resolution)
    if spec.random is not None:
        parts = _build_random(spec.random)
    else:
        rev = revision or spec.revision
        spec = replace(spec, revision=rev)
        source = str(local_path) if local_path is not None else str(spec.repo_id)
        parts = _load_pretrained(source, rev, spec)
    return DiffusionBackbone(spec, *parts, device=device, dtype=dtype)
