"""Batch normalisation over the global batch of a data-parallel run, on any backend.

Data-parallel training splits every global batch across ranks; a plain ``BatchNorm2d`` would
then normalise each rank's share by its own statistics, so a run on ``W`` processes would not
follow the optimisation of one process with the same global batch.  torch's
``nn.SyncBatchNorm`` fixes this on GPUs only (it refuses CPU tensors, so not on gloo).
:class:`GlobalBatchNorm2d` computes the same statistics with two all-reduces that work on every
backend (gloo and NCCL alike): the per-channel sum and count, then the sum of squared deviations
from the global mean (two passes, as ``BatchNorm2d`` computes them on one process, rather than
``E[x²] − E[x]²``, which loses digits).  The all-reduce is differentiable (:class:`_AllReduce`:
its backward all-reduces the gradients), so autograd gives each rank the gradient of the sum of
every rank's loss through the shared statistics (Ioffe & Szegedy, ICML 2015, Algorithm 1 over the
union of the ranks' samples).

Outside training, or without a process group of more than one process, it is ``BatchNorm2d``;
its parameters and buffers have the same names, so checkpoints are interchangeable.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn


class _AllReduce(torch.autograd.Function):
    """Sum over ranks, differentiable: ``y = Σ_r x_r`` on every rank, so ``∂(Σ_r L_r)/∂x_r =
    Σ_r' ∂L_r'/∂y`` — the backward is the same all-reduce of the incoming gradients."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        g = grad.clone()
        dist.all_reduce(g)
        return g


def all_reduce(x: torch.Tensor) -> torch.Tensor:
    return _AllReduce.apply(x)  # type: ignore[no-any-return]


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` whose training statistics are those of the global batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not dist.is_initialized() or dist.get_world_size() == 1:
            return super().forward(x)

        count_local = x.shape[0] * x.shape[2] * x.shape[3]
        sums = all_reduce(torch.cat([x.sum((0, 2, 3)), x.new_tensor([count_local])]))
        count = sums[-1].detach()
        mean = sums[:-1] / count
        centred = x - mean[None, :, None, None]
        var = all_reduce((centred * centred).sum((0, 2, 3))) / count
        y = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        if self.track_running_stats and self.running_mean is not None:
            assert self.running_var is not None and self.num_batches_tracked is not None
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (
                    1.0 / float(self.num_batches_tracked)
                    if self.momentum is None
                    else self.momentum
                )
                unbiased = var.detach() * count / (count - 1).clamp(min=1)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased, alpha=m)
        return y


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every ``BatchNorm2d`` replaced by a :class:`GlobalBatchNorm2d` holding the
    same parameters and buffers (in place where possible; returns the root)."""
    if type(module) is nn.BatchNorm2d:
        bn = GlobalBatchNorm2d(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
            device=module.weight.device if module.affine else None,
        )
        bn.load_state_dict(module.state_dict())
        bn.train(module.training)
        return bn
    for name, child in module.named_children():
        setattr(module, name, convert_batchnorm(child))
    return module
