"""torch.distributed for snncompile: calibration exact across ranks, sharded evaluation, DDP training.

Nothing here starts or schedules processes: a launcher (``torchrun``) starts the ranks and the
user joins them with ``torch.distributed.init_process_group``; snncompile adds collectives where
its results would otherwise depend on how the data was split. Once a process group of more than
one rank is initialized,
- ``snncompile.compile(model, my_shard, T=...)`` sums every layer's activation statistics over
  the ranks (``all_reduce_stats``, called by ``calibrate.collect_stats``), so the thresholds are
  those of one process over all shards, and calibrate-bias (compile's default at T <= 16) runs
  on every rank on the same batch: the first rows of the ranks' shards in rank order
  (``GatheredHead``, at most max(1024, the pass's batch) rows from each rank);
- ``evaluate`` shards a dataset with ``DistributedSampler`` and counts each sample once;
- ``torch.nn.parallel.DistributedDataParallel(snn)`` trains a ``to_trainable`` SNN (``snn(x)``
  resets the neurons at every call; the run state is per thread, never a buffer, so nothing of
  it is broadcast or goes stale); batch norm is per rank, as in plain torch, unless
  ``sync_batchnorm(snn)`` (``nn.SyncBatchNorm.convert_sync_batchnorm`` does not see the emitted
  batch norm). DDP synchronizes what runs through ``forward``: for the losses of
  snncompile.losses wrap the SNN in ``SequenceOutput``.
Communication runs on the backend's device (CUDA for NCCL, the CPU otherwise); results come back
to where each tensor lives.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from .distributed_stats import GatheredHead, _all_reduce, _comm_device, all_reduce_stats, is_distributed
from .errors import ConfigError

__all__ = ["is_distributed", "all_reduce_stats", "GatheredHead", "evaluate", "sync_batchnorm", "SyncBatchNorm",
           "SequenceOutput"]


def _steps(T_values, snn) -> list[int]:
    if T_values is None:
        T_values = [getattr(snn, "T", None)]
    T_values = [T_values] if isinstance(T_values, int) else list(T_values)
    if not T_values or any(isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in T_values):
        raise ConfigError(f"evaluate: T_values must be positive ints (the steps to report accuracy at, e.g. "
                          f"[1, 4, 16, 32]), got {T_values!r}")
    return list(dict.fromkeys(T_values))


def evaluate(snn: Callable, dataset, *, T_values=None, batch_size: int = 256, group=None) -> dict[int, float]:
    """Top-1 accuracy of ``snn`` on ``dataset`` at each T in ``T_values``: ``{T: accuracy}``.

    ``dataset`` is a torch Dataset (``len`` and indexing) of ``(x, y)`` items, ``y`` an integer
    class; ``snn`` a SpikingModule (anything called as ``snn(x, T=T, return_all_steps=True)``
    giving the running average ``[T, N, classes]``; its mode is left as it is; a DDP wrapper is
    unwrapped). One run at ``max(T_values)`` (default: ``snn.T``) gives every T. Under torch.distributed (``group``,
    default the world) each rank runs its shard (``DistributedSampler``, no shuffling) and the
    integer counts are summed; the samples the sampler repeats to pad the last shard are not
    counted, so N ranks give exactly the counts of one process (the accuracies are equal when
    each sample's output does not depend on the batch it runs in). Every rank returns the same
    dict. Raises ``ConfigError`` for an empty dataset, items that are not ``(x, y)`` or bad T.
    """
    from torch.utils.data import DataLoader, DistributedSampler

    if isinstance(snn, nn.parallel.DistributedDataParallel):
        snn = snn.module  # (its forward would broadcast buffers: ranks run different numbers of batches)
    Ts, n = _steps(T_values, snn), len(dataset)
    if n == 0 or isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"evaluate: need a non-empty dataset and a batch_size >= 1 (got {n} samples, "
                          f"batch_size={batch_size!r})")
    sampler, real = None, n
    if is_distributed(group):
        world, rank = dist.get_world_size(group), dist.get_rank(group)
        sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=False, drop_last=False)
        mine = list(range(rank, n, world))  # this rank's real samples; the sampler appends the padding
        real = len(mine)
        if list(sampler)[:real] != mine:
            raise ConfigError("evaluate: DistributedSampler(shuffle=False) did not give this rank indices "
                              f"{rank}, {rank}+{world}, ... first; this torch version shards differently — report it")
    device = next((t.device for t in [*snn.parameters(), *snn.buffers()]), None) if isinstance(snn, nn.Module) else None
    correct, seen = torch.zeros(len(Ts), dtype=torch.int64), 0
    pick = torch.tensor([t - 1 for t in Ts])
    with torch.no_grad():
        for batch in DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False):
            if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                raise ConfigError("evaluate: the dataset's items must be (x, y) pairs (e.g. a TensorDataset(x, y))")
            keep = min(int(batch[0].shape[0]), real - seen)
            if keep <= 0:
                break
            x, y = batch[0][:keep], batch[1][:keep]
            out = snn(x if device is None else x.to(device), T=max(Ts), return_all_steps=True)
            pred = out[pick.to(out.device)].argmax(-1).cpu()  # [len(Ts), N]
            correct += (pred == y.reshape(1, -1).to(pred.dtype)).sum(1)
            seen += keep
    counts = torch.cat([correct, torch.tensor([seen], dtype=torch.int64)])
    if is_distributed(group):
        counts = _all_reduce(counts, dist.ReduceOp.SUM, group, _comm_device(group))
    total = int(counts[-1])
    return {t: int(counts[k]) / total for k, t in enumerate(Ts)}


class _SumOverRanks(torch.autograd.Function):
    """All-reduce SUM whose backward all-reduces the gradient (each rank's statistics feed every
    rank's loss)."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        out = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx, grad):
        out = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, group=ctx.group)
        return out, None


class SyncBatchNorm(nn.Module):
    """The emitted batch norm (over dim 1, T folded into the batch) with its training statistics
    taken over every rank's batch: mean and biased variance of the union for normalizing,
    running statistics updated with the union's unbiased variance, gradients through both (as
    ``nn.SyncBatchNorm``, on any backend, CPU/gloo included). In eval mode, or with no group of
    more than one rank, it is the plain batch norm. Holds the same Parameter and buffer objects
    as the module it replaces (an optimizer made before keeps training them; same state_dict)."""

    def __init__(self, bn: nn.Module, group=None):
        super().__init__()
        self.eps, self.momentum, self.group = float(bn.eps), float(bn.momentum), group
        self.weight, self.bias = bn.weight, bn.bias
        self.register_buffer("running_mean", bn.running_mean)
        self.register_buffer("running_var", bn.running_var)
        self.train(bn.training)

    def extra_repr(self) -> str:
        return f"{self.running_mean.numel()}, eps={self.eps:g}, synchronized over ranks"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_distributed(self.group)):
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, self.training,
                                self.momentum, self.eps)
        dims, shape = [d for d in range(x.dim()) if d != 1], [1, -1] + [1] * (x.dim() - 2)
        n = torch.tensor([x.numel() // x.shape[1]], dtype=torch.float64, device=x.device)
        dist.all_reduce(n, group=self.group)
        n = float(n)
        mean = _SumOverRanks.apply(x.sum(dims), self.group) / n
        centred = x - mean.reshape(shape)
        var = _SumOverRanks.apply((centred * centred).sum(dims), self.group) / n
        with torch.no_grad():
            self.running_mean.mul_(1 - self.momentum).add_(mean.detach(), alpha=self.momentum)
            self.running_var.mul_(1 - self.momentum).add_(var.detach() * (n / max(n - 1, 1)), alpha=self.momentum)
        y = centred * torch.rsqrt(var + self.eps).reshape(shape)
        if self.weight is not None:
            y = y * self.weight.reshape(shape)
        return y if self.bias is None else y + self.bias.reshape(shape)


def sync_batchnorm(snn: nn.Module, group=None) -> nn.Module:
    """Make every batch norm the emitter made in ``snn`` a ``SyncBatchNorm`` over ``group``
    (default: the world), in place; returns ``snn`` (``DDP(sync_batchnorm(snn))``). Parameters,
    buffers and state_dict keys stay the same. An SNN without batch norm is returned unchanged;
    ``nn.BatchNorm*`` inside opaque (leaf) modules is left to ``nn.SyncBatchNorm.convert_sync_batchnorm``."""
    from .emit import _BatchNorm

    if not isinstance(snn, nn.Module):
        raise ConfigError(f"sync_batchnorm: pass the SNN (an nn.Module), got {type(snn).__name__}")
    for name, m in list(snn.named_modules()):
        if isinstance(m, _BatchNorm):
            owner, _, attr = name.rpartition(".")
            setattr(snn.get_submodule(owner), attr, SyncBatchNorm(m, group))
    return snn


class SequenceOutput(nn.Module):
    """``forward(*inputs, T=None)`` is ``snn.run_sequence``: the readout at every step ``[T, N, ...]``
    through ``forward``, which is what DDP synchronizes — ``DDP(SequenceOutput(snn))`` for the
    losses of snncompile.losses (``DDP(snn)`` gives ``snn(x)``, the mean over T)."""

    def __init__(self, snn: nn.Module):
        super().__init__()
        self.snn = snn

    def forward(self, *inputs: torch.Tensor, T: int | None = None) -> torch.Tensor:
        return self.snn.run_sequence(*inputs, T=T)
