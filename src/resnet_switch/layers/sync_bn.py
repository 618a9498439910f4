"""BatchNorm statistics over the batch of every DDP process, for every BN kind we have, on any device.

``torch.nn.SyncBatchNorm`` runs on CUDA only, and its ``convert_sync_batchnorm`` replaces every
``_BatchNorm`` subclass by a plain one (a slimmable BN would become a full-width BN). Here:
:func:`convert_sync_bn` swaps each plain ``nn.BatchNorm2d`` for :class:`SyncedBatchNorm2d` (same
parameters and buffers, so state dicts do not change) and switches on ``sync_stats`` of our own BN
layers. Every private BN set is converted on its own and only the active set runs, so each set's
statistics are synchronised among themselves and stay private. In eval mode nothing is synchronised.

Training-mode forward (:func:`synced_batch_norm`): the global mean from an all-reduce of per-channel
sums and counts, then the global biased variance from an all-reduce of squared deviations (two
passes, as ``F.batch_norm``); both all-reduces are differentiable (their backward all-reduces the
gradients), so the gradients equal those of one process holding the whole batch. Running
statistics get the unbiased variance, as ``nn.BatchNorm2d``. Cost: two small all-reduces per BN
layer in the forward and two in the backward.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ..training.distributed import world_size


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes; the gradient of every input is the sum of the outputs' gradients."""

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        out = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out)
        return out


def all_reduce(tensor: Tensor) -> Tensor:
    """Differentiable sum of ``tensor`` over all processes."""
    return _AllReduceSum.apply(tensor)


def sync_active() -> bool:
    return world_size() > 1


def synced_batch_norm(x: Tensor, running_mean: Tensor | None, running_var: Tensor | None,
                      weight: Tensor | None, bias: Tensor | None, momentum: float, eps: float) -> Tensor:
    """Training-mode batch norm of ``x`` (B, C, ...) with statistics over all processes; updates
    ``running_mean``/``running_var`` in place (they may be views, e.g. a slimmable layer's slice)."""
    c = x.shape[1]
    dims = [0] + list(range(2, x.dim()))
    shape = [1, c] + [1] * (x.dim() - 2)
    xs = x if x.dtype in (torch.float32, torch.float64) else x.float()  # statistics in float32 at least
    count = xs.new_full((1,), x.numel() // c)
    totals = all_reduce(torch.cat([xs.sum(dims), count]))
    n = totals[c]
    mean = totals[:c] / n
    centred = xs - mean.view(shape)
    var = all_reduce((centred * centred).sum(dims)) / n
    if running_mean is not None and running_var is not None:
        with torch.no_grad():
            unbiased = var.detach() * (n / (n - 1).clamp_min(1))
            running_mean.mul_(1 - momentum).add_(mean.detach().to(running_mean.dtype), alpha=momentum)
            running_var.mul_(1 - momentum).add_(unbiased.to(running_var.dtype), alpha=momentum)
    out = centred * torch.rsqrt(var + eps).view(shape)
    if weight is not None:
        out = out * weight.view(shape) + bias.view(shape)
    return out.to(x.dtype)


def batch_norm_train(x: Tensor, running_mean: Tensor | None, running_var: Tensor | None,
                     weight: Tensor | None, bias: Tensor | None, momentum: float, eps: float,
                     sync: bool) -> Tensor:
    """Training-mode batch norm, synchronised over processes when ``sync`` and a group of > 1 runs."""
    if sync and sync_active():
        return synced_batch_norm(x, running_mean, running_var, weight, bias, momentum, eps)
    return F.batch_norm(x, running_mean, running_var, weight, bias, True, momentum, eps)


class SyncedBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose training-mode statistics cover every DDP process (see module doc)."""

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and self.track_running_stats and sync_active()):
            return super().forward(x)
        self.num_batches_tracked.add_(1)
        momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        return synced_batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, momentum, self.eps)


def convert_sync_bn(module: nn.Module) -> nn.Module:
    """Make every BN of ``module`` synchronise its training statistics across DDP processes (in
    place; the module is returned). Plain ``nn.BatchNorm2d`` (exactly that type) becomes
    :class:`SyncedBatchNorm2d`; our layers with a ``sync_stats`` attribute get it set."""
    for child in module.modules():
        if type(child) is nn.BatchNorm2d:
            child.__class__ = SyncedBatchNorm2d  # same parameters, buffers and state-dict keys
        elif hasattr(child, "sync_stats"):
            child.sync_stats = True
    return module
