"""Synchronized BatchNorm for any process group backend (gloo on CPU included).

``torch.nn.SyncBatchNorm`` runs only on GPU-like devices. :class:`GroupBatchNorm` normalises a
training batch with the mean and variance of the GLOBAL batch (all processes of the group): one
all-reduce of per-channel sums in the forward pass and one in the backward pass. With it, N
processes that each take ``rank::N`` of every batch compute the single-process forward and
gradients up to float rounding (per-process BatchNorm normalises over batch/N images instead).
Outside training, or without an initialized process group, it is a plain BatchNorm.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def _channel_dims(x: torch.Tensor) -> list[int]:
    return [0, *range(2, x.dim())]


def _per_channel(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.view(1, -1, *([1] * (x.dim() - 2)))


@torch.no_grad()
def _global_stats(x: torch.Tensor, group) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean (C,), biased variance (C,), count) of ``x`` over the samples of every process (float32)."""
    dims, channels = _channel_dims(x), x.shape[1]
    xf = x.float()
    count = torch.tensor([xf.numel() // channels], dtype=torch.float32, device=x.device)
    stats = torch.cat([xf.sum(dims), (xf * xf).sum(dims), count])  # (2C + 1,)
    dist.all_reduce(stats, group=group)
    n = stats[-1]
    mean = stats[:channels] / n
    var = (stats[channels : 2 * channels] / n - mean * mean).clamp_min(0)
    return mean, var, n


class _GroupBatchNormFunction(torch.autograd.Function):
    """y = (x - mean) * invstd * weight + bias with mean/invstd of the global batch (given).

    The backward pass is the gradient through mean and variance too: it needs the global sums of
    dy and dy * xhat, one more all-reduce.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, mean, invstd, n, group):
        xf = x.float()
        xhat = (xf - _per_channel(mean, xf)) * _per_channel(invstd, xf)
        ctx.save_for_backward(xhat, weight, invstd)
        ctx.n, ctx.group = n, group
        y = xhat if weight is None else xhat * _per_channel(weight.float(), xf) + _per_channel(bias.float(), xf)
        return y.to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        xhat, weight, invstd = ctx.saved_tensors
        dims, channels = _channel_dims(xhat), xhat.shape[1]
        g = grad_out.float()
        local = torch.cat([g.sum(dims), (g * xhat).sum(dims)])  # sum dy, sum dy * xhat (this process)
        grad_weight = grad_bias = None
        if weight is not None:  # this process's share; DDP averages parameter gradients over processes
            grad_bias, grad_weight = local[:channels].to(weight.dtype), local[channels:].to(weight.dtype)
        total = local.clone()
        dist.all_reduce(total, group=ctx.group)  # every process's loss depends on this one's x via mean/var
        mean_dy, mean_dy_xhat = total[:channels] / ctx.n, total[channels:] / ctx.n
        scale = invstd if weight is None else invstd * weight.float()
        grad_x = (g - _per_channel(mean_dy, g) - xhat * _per_channel(mean_dy_xhat, g)) * _per_channel(scale, g)
        return grad_x.to(grad_out.dtype), grad_weight, grad_bias, None, None, None, None


class GroupBatchNorm(_BatchNorm):
    """BatchNorm whose training statistics are those of the global batch of the process group.

    Same parameters, buffers and state_dict keys as ``nn.BatchNorm{1,2,3}d`` (checkpoints load into
    plain models). Running statistics get the global mean and the unbiased global variance.
    """

    def __init__(self, *args, process_group=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.process_group = process_group

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        synced = (self.training and dist.is_available() and dist.is_initialized()
                  and dist.get_world_size(self.process_group) > 1)
        if not synced:
            return super().forward(x)
        self._check_input_dim(x)
        mean, var, n = _global_stats(x, self.process_group)
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            with torch.no_grad():
                unbiased = var * n / (n - 1).clamp_min(1)
                self.running_mean.mul_(1 - factor).add_(mean.to(self.running_mean.dtype), alpha=factor)
                self.running_var.mul_(1 - factor).add_(unbiased.to(self.running_var.dtype), alpha=factor)
        invstd = torch.rsqrt(var + self.eps)
        return _GroupBatchNormFunction.apply(x, self.weight, self.bias, mean, invstd, n, self.process_group)


def convert_group_batchnorm(module: nn.Module, process_group=None) -> nn.Module:
    """Replace every BatchNorm layer of ``module`` by a :class:`GroupBatchNorm` with the same state."""
    if isinstance(module, _BatchNorm) and not isinstance(module, GroupBatchNorm):
        new = GroupBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                             module.track_running_stats, process_group=process_group)
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        new.to(next(iter(module.state_dict().values())).device)
        if module.affine:
            new.weight.requires_grad_(module.weight.requires_grad)
            new.bias.requires_grad_(module.bias.requires_grad)
        return new
    for name, child in module.named_children():
        module.add_module(name, convert_group_batchnorm(child, process_group))
    return module
