"""Deterministic DDIM (Song et al. 2021) in both directions, DiffusionSeg Eq. 7: the timestep
grid, one step, inversion and the reverse pass (see :mod:`odbench.backbones.diffusion`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import lru_cache

import torch

from odbench.backbones.sd_configs import SCHEDULER_CONFIG

# --------------------------------------------------------------------------- DDIM math (Eq. 7)


def ddim_timesteps(num_steps: int, num_train_timesteps: int = 1000, offset: int = 1) -> list[int]:
    """Ascending DDIM timesteps with SD's "leading" spacing: offset + i * (N // T)."""
    if not 1 <= num_steps <= num_train_timesteps:
        raise ValueError(f"num_steps must be in [1, {num_train_timesteps}], got {num_steps}")
    ratio = num_train_timesteps // num_steps
    return [offset + i * ratio for i in range(num_steps)]


def ddim_step(x: torch.Tensor, eps: torch.Tensor, a_from: float, a_to: float) -> torch.Tensor:
    """One deterministic DDIM step (Eq. 7) from cumulative alpha ``a_from`` to ``a_to``.

    f = (x - sqrt(1 - ā_from) ε) / sqrt(ā_from) is the predicted clean sample; the same formula
    moves up (inversion) or down (reverse process)."""
    f = (x - math.sqrt(1.0 - a_from) * eps) / math.sqrt(a_from)
    return math.sqrt(a_to) * f + math.sqrt(1.0 - a_to) * eps


EpsFn = Callable[[torch.Tensor, int], torch.Tensor]


def ddim_invert(
    eps_fn: EpsFn, x0: torch.Tensor, timesteps: Sequence[int], alphas_cumprod: torch.Tensor
) -> torch.Tensor:
    """DDIM inversion (Eq. 7, first line): x_0 -> x_T through the levels [0] + timesteps.

    Each step evaluates ε at the CURRENT level (x_t, t) and moves to the next level."""
    levels = [0, *timesteps]
    x = x0
    for t_from, t_to in zip(levels[:-1], levels[1:]):
        eps = eps_fn(x, t_from)
        x = ddim_step(x, eps, float(alphas_cumprod[t_from]), float(alphas_cumprod[t_to]))
    return x


def ddim_reverse(
    eps_fn: EpsFn, xT: torch.Tensor, timesteps: Sequence[int], alphas_cumprod: torch.Tensor
) -> torch.Tensor:
    """Deterministic DDIM sampling (Eq. 7, second line, eta = 0): x_T -> x_0, exact inverse of
    :func:`ddim_invert` when ε(x_t, t) is the same at both ends of each step."""
    levels = [0, *timesteps]
    x = xT
    for t_from, t_to in zip(levels[:0:-1], levels[-2::-1]):
        eps = eps_fn(x, t_from)
        x = ddim_step(x, eps, float(alphas_cumprod[t_from]), float(alphas_cumprod[t_to]))
    return x


@lru_cache(maxsize=1)
def alphas_cumprod() -> torch.Tensor:
    from diffusers import DDIMScheduler

    return DDIMScheduler(**SCHEDULER_CONFIG).alphas_cumprod.double()  # type: ignore[no-any-return]
