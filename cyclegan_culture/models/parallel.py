"""Data-parallel training pieces: DistributedDataParallel wrapping and batch norm synchronised across processes."""

from __future__ import annotations

import inspect

import torch
import torch.distributed as dist
from torch import nn


class _SumOverProcesses(torch.autograd.Function):
    """Sum a tensor over all processes; its gradient is the sum of the processes' gradients (each process's
    loss depends on every process's contribution)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        total = grad.clone()
        dist.all_reduce(total)
        return total


class AllReduceBatchNorm2d(nn.BatchNorm2d):
    """Batch norm whose training statistics are those of the whole batch over all processes, for CPU (gloo):
    PyTorch's nn.SyncBatchNorm runs on accelerators only. The sums are all-reduced with a differentiable
    sum, so gradients flow through the shared statistics exactly as in one process with the whole batch.
    In eval mode it is plain batch norm with the running statistics."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        channels = x.shape[1]
        xf = x.float()
        dims = (0, 2, 3)
        local = torch.cat([xf.sum(dims), (xf * xf).sum(dims), xf.new_tensor([x.numel() // channels])])
        total = _SumOverProcesses.apply(local)
        count = total[-1]
        mean = total[:channels] / count
        var = total[channels:2 * channels] / count - mean * mean
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                unbiased = var * count / (count - 1).clamp(min=1)
                self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                self.running_var.mul_(1 - factor).add_(unbiased.detach(), alpha=factor)
        y = (xf - mean[None, :, None, None]) * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)


def synchronize_batch_norm(net: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm2d of ``net`` by a synchronised one (nn.SyncBatchNorm on CUDA, AllReduceBatchNorm2d
    on CPU) holding the same parameter and buffer tensors, so optimizers and checkpoints are unaffected."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(net)
    for name, child in net.named_children():
        if type(child) is nn.BatchNorm2d:
            sync = AllReduceBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                        child.track_running_stats)
            if child.affine:
                sync.weight, sync.bias = child.weight, child.bias
            sync.running_mean, sync.running_var = child.running_mean, child.running_var
            sync.num_batches_tracked = child.num_batches_tracked
            sync.train(child.training)
            setattr(net, name, sync)
        else:
            synchronize_batch_norm(child, device)
    return net


def data_parallel(net: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel around ``net``: gradients are averaged over all processes during backward.

    Buffers are not re-broadcast at each call: the only buffers are batch norm's running statistics, which
    synchronised batch norm keeps identical on every rank already.
    """
    ddp = nn.parallel.DistributedDataParallel
    # torch >= 2.14 renames broadcast_buffers (and warns on the old name); older versions know only that one
    no_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(ddp).parameters
               else {"broadcast_buffers": False})
    return ddp(net, device_ids=[device.index] if device.type == "cuda" else None, **no_sync)
