"""torch.distributed for calibration: every layer's activation statistics combined exactly over the
ranks (``all_reduce_stats``, called by ``calibrate.collect_stats``), and the calibration head that
calibrate-bias reads the same on every rank (``GatheredHead``). At the calibration layer (passes
may use it: it imports neither the emitter nor torch.fx); ``snncompile.distributed`` holds the
rest (evaluation, DDP helpers) and re-exports these. Does nothing in a single process."""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import torch
import torch.distributed as dist

from .errors import CalibrationError, ConfigError
from .stats import ActivationStats, _ceil_log2, _coarsen

__all__ = ["is_distributed", "all_reduce_stats", "GatheredHead"]


def is_distributed(group=None) -> bool:
    """True when torch.distributed is available and initialized and ``group`` (default: the world)
    has more than one rank; a single process (or a one-rank group) needs no collective."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def _comm_device(group) -> torch.device:
    """Where collectives of ``group`` take tensors: the current CUDA device for NCCL, else the CPU."""
    backend = str(dist.get_backend(group)).lower()
    if "nccl" in backend and "gloo" not in backend:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _all_reduce(t: torch.Tensor, op, group, comm: torch.device) -> torch.Tensor:
    """``t`` reduced over ``group`` with ``op``, back on ``t``'s device."""
    work = t.to(comm).contiguous()
    dist.all_reduce(work, op=op, group=group)
    return work.to(t.device)


def all_reduce_stats(stats: ActivationStats | Mapping[Any, ActivationStats] | Iterable[ActivationStats],
                     group=None):
    """Combine every rank's calibration statistics, in place; returns ``stats``.

    Takes one ``ActivationStats``, or a dict or list of them (one per layer, in the same order on
    every rank: every rank must call with the same layers). The ranks agree on each layer's max
    (all-reduce MAX), coarsen their histograms to the power-of-two range of that max (exactly, as
    ``ActivationStats.merge`` does), then sum histograms, zero counts and counts and take the max
    of the per-channel maxima. Afterwards every rank holds, bit for bit, the statistics (histogram,
    max, zeros, count, hence every percentile) one process would hold after seeing all ranks'
    data. A rank that saw nothing for a layer takes part with zeros and receives the result too;
    a layer no rank saw stays empty. Without an initialized group of more than one rank it does
    nothing. Raises ``CalibrationError`` (on every rank alike) when the ranks give different
    numbers of statistics, channel counts or ``bins``.
    """
    items = list(stats.values()) if isinstance(stats, Mapping) else [stats] if isinstance(stats, ActivationStats) \
        else list(stats)
    if any(not isinstance(st, ActivationStats) for st in items):
        raise ConfigError("all_reduce_stats: pass an ActivationStats, or a dict or list of them")
    if not is_distributed(group):
        return stats
    comm, maxop = _comm_device(group), dist.ReduceOp.MAX
    n = _all_reduce(torch.tensor([len(items), -len(items)], dtype=torch.float64), maxop, group, comm)
    if float(n[0]) != -float(n[1]):
        raise CalibrationError(f"all_reduce_stats: the ranks hold between {int(-n[1])} and {int(n[0])} statistics "
                               "objects — every rank must calibrate the same layers (the same model and pipeline)")
    inf = float("inf")
    meta = []  # per layer: max seen, channels, -channels, bins, -bins (a rank without data: the neutral values)
    for st in items:
        c = st.num_channels
        meta += [st._max_seen, c, -c, st.bins, -st.bins] if c is not None else [0.0, 0, -inf, st.bins, -st.bins]
    meta = _all_reduce(torch.tensor(meta, dtype=torch.float64), maxop, group, comm).view(-1, 5).tolist()
    here = next((st._hist.device for st in items if st._hist is not None), comm)
    for st, (top, c, neg_c, bins, neg_bins) in zip(items, meta):
        if c == 0:
            continue  # no rank saw this layer
        if c != -neg_c or bins != -neg_bins:
            raise CalibrationError(f"all_reduce_stats: the ranks' statistics of one layer differ in channels "
                                   f"({int(-neg_c)} vs {int(c)}) or bins ({int(-neg_bins)} vs {int(bins)}) — every "
                                   "rank must calibrate the same model with the same bins")
        c, exp = int(c), _ceil_log2(top)
        if st._hist is None:
            hist = torch.zeros(c, st.bins, dtype=torch.int64, device=here)
            zeros, cmax, count = torch.zeros(c, dtype=torch.int64, device=here), torch.zeros(c, device=here), 0
        else:
            hist, zeros, cmax, count = _coarsen(st._hist, exp - st._exp), st._zeros, st._cmax, st.count
        flat = torch.cat([hist.reshape(-1), zeros, torch.tensor([count], dtype=torch.int64, device=hist.device)])
        flat = _all_reduce(flat, dist.ReduceOp.SUM, group, comm)
        st._hist, st._zeros = flat[: c * st.bins].view(c, st.bins).clone(), flat[c * st.bins: -1].clone()
        st._cmax = _all_reduce(cmax.to(torch.float32), maxop, group, comm)
        st.count, st._exp, st._max_seen = int(flat[-1]), exp, top
    return stats


class GatheredHead:
    """Calibration data for a pass that needs only its first rows, under torch.distributed:
    ``calibrate.calibration_head`` returns one, and ``calibrate.iter_batches`` reads it through
    ``batches``. Every rank yields the same batches: rank 0's first rows, then rank 1's, ... (at
    most ``max(rows, batch_size)`` of each rank, checked as ``iter_batches`` checks them); with
    contiguous shards (rank 0 the first rows of the whole set, rank 1 the next, ...) these are the
    first rows one process would read from the whole set. A batch travels (broadcast from its
    rank) only when the pass reads it: a pass that stops after ``batch_size`` rows moves no more."""

    def __init__(self, data: Any, rows: int, group=None):
        self.data, self.rows, self.group = data, int(rows), group

    def batches(self, read: Callable, batch_size: int, **options):
        """Yield every rank's first rows, in rank order, as ``read(data, batch_size, **options)``
        yields batches (a tensor, or a tuple of tensors for a model of several inputs), each on
        the device of this rank's own data."""
        mine = self._own(read(self.data, batch_size, **options), max(self.rows, int(batch_size)))
        first = next(mine)  # (every rank reads its own first batch: where batches go, and its form)
        device, single = first[0].device, max(int(options.get("n_inputs", 1)), 1) == 1
        me = dist.get_rank(self.group)
        for src in range(dist.get_world_size(self.group)):
            turn = True
            while True:
                if me == src:
                    batch, turn = (first if turn else next(mine, None)), False
                    box = [None if batch is None else tuple(x.cpu() for x in batch)]
                else:
                    box = [None]
                glob = src if self.group is None else dist.get_global_rank(self.group, src)
                dist.broadcast_object_list(box, src=glob, group=self.group)
                if box[0] is None:
                    break
                batch = tuple(x.to(device) for x in box[0])
                yield batch[0] if single else batch

    @staticmethod
    def _own(batches, limit: int):
        """This rank's first ``limit`` rows, as tuples of tensors, batch by batch."""
        seen = 0
        for xs in batches:
            xs = tuple(x[: limit - seen] for x in (xs if isinstance(xs, tuple) else (xs,)))
            seen += xs[0].shape[0]
            yield xs
            if seen >= limit:
                return


